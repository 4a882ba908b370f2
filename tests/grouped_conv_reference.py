"""An independent grouped convolution in NumPy: forward pass and both gradients, in float64.

Used by tests/test_layers.py (every GroupedConv2D implementation) and by the
subprocess script of tests/test_onednn.py (each oneDNN setting).
"""

import numpy as np

from tests.helpers import relative_error  # noqa: F401  (re-exported for the tests of grouped convolutions)


def _pads(size, kernel, stride):
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def np_grouped_conv2d(x, kernel, stride, groups):
    """'same' grouped convolution (TensorFlow's SAME padding rule).

    x: (N, H, W, Cin); kernel: (kh, kw, Cin / groups, Cout) -> (N, Ho, Wo, Cout), float64.
    """
    return np_grouped_conv2d_with_grads(x, kernel, stride, groups)[0]


def np_grouped_conv2d_with_grads(x, kernel, stride, groups, upstream=None):
    """Forward pass and, for ``loss = sum(y * upstream)``, the gradients ``(y, dloss/dx, dloss/dkernel)``.

    The gradients are the sums that define them, loop by loop: each output
    position ``(i, j)`` of group ``g`` reads the input window ``xp[:, i*s:i*s+kh, j*s:j*s+kw,
    g*cin_g:(g+1)*cin_g]``, so ``dkernel += window^T upstream`` and ``dwindow += upstream kernel^T``.
    """
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    n, h, w, cin = x.shape
    kh, kw, cin_g, cout = kernel.shape
    assert cin == cin_g * groups and cout % groups == 0
    cout_g = cout // groups
    ho, top, bottom = _pads(h, kh, stride)
    wo, left, right = _pads(w, kw, stride)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    y = np.zeros((n, ho, wo, cout))
    dxp = np.zeros_like(xp)
    dk = np.zeros_like(kernel)
    for g in range(groups):
        cin_slice, cout_slice = slice(g * cin_g, (g + 1) * cin_g), slice(g * cout_g, (g + 1) * cout_g)
        ks = kernel[..., cout_slice]  # (kh, kw, cin_g, cout_g)
        for i in range(ho):
            for j in range(wo):
                rows, cols = slice(i * stride, i * stride + kh), slice(j * stride, j * stride + kw)
                window = xp[:, rows, cols, cin_slice]  # (N, kh, kw, cin_g)
                y[:, i, j, cout_slice] = np.einsum("nhwc,hwco->no", window, ks)
                if upstream is not None:
                    up = np.asarray(upstream[:, i, j, cout_slice], np.float64)  # (N, cout_g)
                    dk[..., cout_slice] += np.einsum("nhwc,no->hwco", window, up)
                    dxp[:, rows, cols, cin_slice] += np.einsum("no,hwco->nhwc", up, ks)
    dx = dxp[:, top:top + h, left:left + w, :]
    return y, dx, dk

