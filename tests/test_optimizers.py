"""PyTorchSGD against a NumPy transcription of torch.optim.SGD's update."""

import keras
import numpy as np
import pytest

from kdkeras.optimizers import PyTorchSGD


def torch_sgd_reference(w0, grads, lrs, momentum, weight_decay, nesterov=False):
    """torch.optim.SGD (dampening 0) step by step, in float64."""
    w, buf = w0.astype(np.float64), None
    for g, lr in zip(grads, lrs):
        d = g + weight_decay * w
        buf = d.copy() if buf is None else momentum * buf + d
        w = w - lr * (d + momentum * buf if nesterov else buf)
    return w


@pytest.mark.parametrize("nesterov", [False, True])
def test_matches_pytorch_update_with_changing_lr(nesterov):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4)).astype("float32")
    grads = [rng.normal(size=(3, 4)).astype("float32") for _ in range(6)]
    # A step schedule: 0.1 for 3 steps, then 0.02 (changing lr is where the
    # PyTorch and Keras momentum forms differ).
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([2], [0.1, 0.02])
    lrs = [0.1, 0.1, 0.1, 0.02, 0.02, 0.02]
    var = keras.Variable(w0)
    opt = PyTorchSGD(schedule, momentum=0.9, weight_decay=4e-4, nesterov=nesterov)
    for g in grads:
        opt.apply([g], [var])
    expected = torch_sgd_reference(w0, grads, lrs, 0.9, 4e-4, nesterov)
    # float32 element-wise updates against float64, 6 steps on weights of size ~1 (seen 1.6e-7 absolute):
    # 1e-5 relative, and 1e-6 absolute (1e-6 of the weights' size) for a weight near 0.
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_differs_from_keras_sgd_when_lr_changes():
    w0 = np.ones((2,), "float32")
    grads = [np.array([1.0, -1.0], "float32")] * 4
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([1], [0.1, 0.01])
    ours, theirs = keras.Variable(w0), keras.Variable(w0)
    a = PyTorchSGD(schedule, momentum=0.9)
    b = keras.optimizers.SGD(schedule, momentum=0.9)
    for g in grads:
        a.apply([g], [ours])
        b.apply([g], [theirs])
    expected = torch_sgd_reference(w0, grads, [0.1, 0.1, 0.01, 0.01], 0.9, 0.0)
    # float32 against float64 on weights of size ~1, far from 0 (seen 7e-8 relative); Keras's form ends ~0.3 away.
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-6)
    assert not np.allclose(theirs.numpy(), expected, rtol=1e-4)


def test_config_round_trip_and_validation():
    opt = PyTorchSGD(0.05, momentum=0.8, weight_decay=1e-3, nesterov=True)
    clone = PyTorchSGD.from_config(opt.get_config())
    assert (clone.momentum, clone.coupled_weight_decay, clone.nesterov) == (0.8, 1e-3, True)
    with pytest.raises(ValueError, match="momentum"):
        PyTorchSGD(momentum=1.5)
    with pytest.raises(ValueError, match="weight_decay"):
        PyTorchSGD(weight_decay=-1)
