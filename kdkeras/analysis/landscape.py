"""Loss landscapes of a trained model: random-direction surfaces and the training path.

The paper argues that KD starts a non-residual (NR) student in a better,
non-chaotic region of the loss landscape. This module measures that region
with the method of Li et al. (2018), "Visualizing the Loss Landscape of
Neural Nets":

* :func:`random_directions`: Gaussian directions, one tensor per trainable
  weight, *filter-normalised*: each filter of the direction is rescaled to
  the norm of the same filter of the weights, so that landscapes of networks
  of different scales (and with BatchNorm's scale invariance) compare.
  Biases and BatchNorm ``gamma`` / ``beta`` get a zero direction unless
  ``include_bias_bn``.
* :func:`surface_1d` / :func:`surface_2d`: the loss and accuracy at
  ``theta + a d1 (+ b d2)`` over a grid of ``a`` (and ``b``).
* :func:`path_1d`: the loss and accuracy along the straight line from the
  weights before the first training step to the trained weights,
  ``theta(a) = theta0 + a (theta1 - theta0)``.

The loss is the mean sparse categorical cross-entropy of the logits over a
fixed set of examples, without the weight-decay term (so it is the data term
of the training objective of a baseline run; a distilled run was trained on
the KD loss, but is measured here on the hard labels too). The model runs in
inference mode: BatchNorm uses its moving statistics, which the random
directions never perturb, and dropout is off.

Every grid point assigns the weights in place and runs one compiled forward
pass per batch; the original weights are restored afterwards, also after an
error or an interrupt. :func:`landscape_for_run` adds the run-folder layer
used by ``scripts/landscape.py``: the examples, the ``.npz`` result file
(reused when its settings match) and the plot.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os

import numpy as np

#: The modes of :func:`landscape_for_run`: random 1-D / 2-D surfaces, or the initial-to-final path.
MODES = ("1d", "2d", "path")
#: Grid points per axis when no resolution is given.
DEFAULT_RESOLUTION = {"1d": 51, "2d": 21, "path": 31}
#: Examples evaluated when no number is given (fewer when the split is smaller).
DEFAULT_NUM_EXAMPLES = 512
#: Extra stretch of the path beyond both ends (in units of ``theta1 - theta0``).
PATH_MARGIN = 0.25
#: Folder of a run's landscape files.
LANDSCAPE_DIR = "landscape"
#: What the stored loss is (kept in every result file).
LOSS_DEFINITION = ("mean sparse categorical cross-entropy of the logits on hard labels, "
                   "inference mode, no weight-decay term")
SPLITS = ("train", "test")
_KIND_COLORS = {"R": "tab:blue", "NR": "tab:red", "distilled": "tab:green"}
_LINESTYLES = ("-", "--", ":", "-.")
_EPS = 1e-10


# --------------------------------------------------------------------------- directions


def _layer_of_variables(model) -> dict:
    """``{id(variable): innermost layer that holds it}`` for the model's variables."""
    owners = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for variable in layer.weights:
            owners[id(variable)] = layer  # pre-order: deeper layers come later and win
    return owners


def filter_axes(layer, variable) -> tuple[int, ...] | None:
    """The axes one filter of a weight tensor spans (its norm is taken over them).

    A Keras convolution or dense kernel keeps its output channels (filters)
    on the last axis, so a filter spans all other axes. A depthwise kernel
    ``(kh, kw, in_channels, multiplier)`` has one filter per input channel
    and multiplier: it spans the spatial axes only. A transposed-convolution
    kernel ``(kh, kw, filters, in_channels)`` keeps its filters on axis -2.

    Args:
        layer: the layer holding ``variable``.
        variable: one of its weights.

    Returns:
        The axes of one filter, or ``None`` for a vector or scalar (a bias,
        BatchNorm ``gamma`` / ``beta``), which has no filters.
    """
    import keras

    ndim = len(variable.shape)
    if ndim <= 1:
        return None
    depthwise = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
    transposed = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
                  keras.layers.Conv3DTranspose)
    if variable.name == "depthwise_kernel" or (isinstance(layer, depthwise) and variable.name == "kernel"):
        return tuple(range(ndim - 2))
    if isinstance(layer, transposed) and variable.name == "kernel":
        return tuple(a for a in range(ndim) if a != ndim - 2)
    return tuple(range(ndim - 1))


def normalize_filters(direction: np.ndarray, weight: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Rescales each filter of ``direction`` to the norm of the same filter of ``weight``.

    Args:
        direction: a random tensor of the weight's shape.
        weight: the weight tensor.
        axes: the axes one filter spans (:func:`filter_axes`); ``()`` makes
            every element a filter, all axes make the whole tensor one.

    Returns:
        ``direction * ||weight_f|| / ||direction_f||`` per filter ``f``
        (``float32``); a filter of zero weights gets a zero direction.
    """
    direction = np.asarray(direction, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    d_norm = np.sqrt(np.sum(direction ** 2, axis=axes, keepdims=True))
    w_norm = np.sqrt(np.sum(weight ** 2, axis=axes, keepdims=True))
    return (direction * (w_norm / (d_norm + _EPS))).astype(np.float32)


def random_directions(model, count: int = 1, seed: int = 0, *, include_bias_bn: bool = False
                      ) -> list[list[np.ndarray]]:
    """Filter-normalised Gaussian directions in the space of the trainable weights.

    Direction ``k`` is the same for any ``count > k`` and any
    ``include_bias_bn`` (a Gaussian tensor is drawn for every weight in the
    same order), so the 1-D surface of a seed is the ``b = 0`` line of its
    2-D surface.

    Args:
        model: a built Keras model; its weights are read, not changed.
        count: how many directions.
        seed: the random seed (the same seed gives the same directions).
        include_bias_bn: also perturb vectors (biases, BatchNorm ``gamma``
            and ``beta``), each rescaled as a whole to the weight vector's
            norm. By default they get a zero direction (Li et al.'s choice).
            BatchNorm's moving statistics are never perturbed.

    Returns:
        ``count`` lists of ``float32`` arrays, aligned with
        ``model.trainable_variables``.
    """
    if count < 1:
        raise ValueError(f"count must be a positive integer. Received: {count}.")
    rng = np.random.default_rng(int(seed))
    owners = _layer_of_variables(model)
    variables = model.trainable_variables
    directions = []
    for _ in range(count):
        direction = []
        for variable in variables:
            weight = np.asarray(variable.numpy())
            noise = rng.standard_normal(weight.shape, dtype=np.float32)
            axes = filter_axes(owners.get(id(variable)), variable)
            if axes is None:
                if include_bias_bn:
                    direction.append(normalize_filters(noise, weight, tuple(range(weight.ndim))))
                else:
                    direction.append(np.zeros_like(weight, dtype=np.float32))
            else:
                direction.append(normalize_filters(noise, weight, axes))
        directions.append(direction)
    return directions


def _check_direction(model, direction, name="direction"):
    variables = model.trainable_variables
    if len(direction) != len(variables):
        raise ValueError(f"{name} has {len(direction)} tensors but the model has "
                         f"{len(variables)} trainable weights.")
    for d, v in zip(direction, variables):
        if tuple(np.shape(d)) != tuple(v.shape):
            raise ValueError(f"{name} tensor of shape {tuple(np.shape(d))} does not match weight "
                             f"'{v.path}' of shape {tuple(v.shape)}.")


# --------------------------------------------------------------------------- grids


def axis_grid(resolution: int, extent: float = 1.0) -> np.ndarray:
    """Coefficients of one random direction: ``resolution`` points around 0, 0 included.

    An odd resolution spans ``[-extent, extent]`` symmetrically with 0 in
    the middle, exactly. An even one keeps the same spacing
    ``2 extent / (resolution - 1)`` but is shifted by half a step so that 0
    is still a grid point (it spans ``[-extent - step/2, extent - step/2]``).
    """
    if resolution < 2:
        raise ValueError(f"resolution must be at least 2 (odd resolutions include the origin "
                         f"symmetrically). Received: {resolution}.")
    if not extent > 0:
        raise ValueError(f"range must be positive. Received: {extent}.")
    step = 2.0 * extent / (resolution - 1)
    return (np.arange(resolution) - resolution // 2) * step


def path_alphas(resolution: int = DEFAULT_RESOLUTION["path"], margin: float = PATH_MARGIN) -> np.ndarray:
    """Evenly spaced coefficients of the initial-to-final path, 0 and 1 included exactly.

    The ``resolution`` points cover ``[0, 1]`` in ``k`` equal steps and go
    ``m`` steps further on each side, with ``k + 2 m + 1 = resolution`` and
    ``m / k`` as close to ``margin`` as possible (31 points: ``[-0.25, 1.25]``
    in steps of 0.05).
    """
    if resolution < 2:
        raise ValueError(f"resolution must be at least 2. Received: {resolution}.")
    best = None
    for k in range(1, resolution):
        if (resolution - 1 - k) % 2:
            continue
        m = (resolution - 1 - k) // 2
        score = abs(m / k - margin)
        if best is None or score < best[0] - 1e-12:
            best = (score, k, m)
    _, k, m = best
    return (np.arange(resolution) - m) / k


# --------------------------------------------------------------------------- evaluation


class _Evaluator:
    """Mean loss and accuracy of a model on fixed batches, one compiled forward per batch."""

    def __init__(self, model, x, y, batch_size):
        import tensorflow as tf

        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(f"x and y must hold the same, non-zero number of examples. "
                             f"Received: {x.shape[0]} and {y.shape[0]}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer. Received: {batch_size}.")
        self.count = int(y.shape[0])
        self.batches = [(tf.constant(x[i:i + batch_size]), tf.constant(y[i:i + batch_size]))
                        for i in range(0, self.count, batch_size)]
        signature = [tf.TensorSpec((None, *x.shape[1:]), tf.float32), tf.TensorSpec((None,), tf.int64)]

        @tf.function(input_signature=signature)
        def forward(xb, yb):
            logits = tf.cast(model(xb, training=False), tf.float32)
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits)
            correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int64), yb)
            return tf.reduce_sum(losses), tf.reduce_sum(tf.cast(correct, tf.float32))

        self._forward = forward

    def __call__(self) -> tuple[float, float]:
        loss_sum, correct = 0.0, 0.0
        for xb, yb in self.batches:
            batch_loss, batch_correct = self._forward(xb, yb)
            loss_sum += float(batch_loss)
            correct += float(batch_correct)
        return loss_sum / self.count, correct / self.count


def evaluate(model, x, y, batch_size: int = 256) -> tuple[float, float]:
    """``(mean loss, accuracy)`` of ``model`` on ``(x, y)`` as the landscape measures it."""
    return _Evaluator(model, x, y, batch_size)()


class _Mover:
    """Sets variables to fixed linear combinations ``sum_i c_i T_i`` of tensors, compiled.

    ``log_space`` entries are combined as ``exp(sum_i c_i log T_i)`` in
    float64 (a geometric interpolation, which keeps variances positive).
    """

    def __init__(self, entries):
        import tensorflow as tf

        self.variables = [variable for variable, _, _ in entries]
        constants = []
        for variable, tensors, log_space in entries:
            dtype = tf.float64 if log_space else tf.float32
            values = [np.log(np.maximum(np.asarray(t, np.float64), np.finfo(np.float32).tiny))
                      if log_space else np.asarray(t, np.float32) for t in tensors]
            constants.append(([tf.constant(v, dtype) for v in values], log_space))

        @tf.function
        def move(coefficients):
            for variable, (tensors, log_space) in zip(self.variables, constants):
                c = tf.cast(coefficients, tensors[0].dtype)
                value = c[0] * tensors[0]
                for i in range(1, len(tensors)):
                    value = value + c[i] * tensors[i]
                if log_space:
                    value = tf.exp(value)
                variable.assign(tf.cast(value, variable.dtype))

        self._move = move

    def __call__(self, *coefficients):
        import tensorflow as tf

        self._move(tf.constant(coefficients, tf.float64))


@contextlib.contextmanager
def _restoring(variables):
    """Restores the variables' exact values on exit, also after an error or an interrupt."""
    saved = [np.array(v.numpy(), copy=True) for v in variables]
    try:
        yield
    finally:
        for variable, value in zip(variables, saved):
            variable.assign(value)


def _progbar(points, verbose):
    import keras

    return keras.utils.Progbar(points, verbose=verbose, unit_name="point") if verbose else None


def _scan(evaluator, mover, coefficient_rows, shape, verbose):
    loss = np.empty(len(coefficient_rows))
    accuracy = np.empty(len(coefficient_rows))
    bar = _progbar(len(coefficient_rows), verbose)
    for i, coefficients in enumerate(coefficient_rows):
        mover(*coefficients)
        loss[i], accuracy[i] = evaluator()
        if bar is not None:
            bar.update(i + 1, values=[("loss", loss[i])])
    return loss.reshape(shape), accuracy.reshape(shape)


def _direction_entries(model, directions):
    """``_Mover`` entries ``theta + sum_k a_k d_k`` for the weights with a non-zero direction."""
    entries = []
    for i, variable in enumerate(model.trainable_variables):
        parts = [np.asarray(d[i], np.float32) for d in directions]
        if any(np.any(p) for p in parts):
            entries.append((variable, [variable.numpy(), *parts], False))
    return entries


def surface_1d(model, x, y, direction, alphas, *, batch_size: int = 256, verbose: int = 0):
    """Loss and accuracy at ``theta + a d`` for every ``a`` in ``alphas``.

    Args:
        model: a Keras model that outputs logits; its weights are restored.
        x: inputs, e.g. ``float32 (N, 32, 32, 3)``.
        y: integer labels ``(N,)``.
        direction: tensors aligned with ``model.trainable_variables``
            (e.g. ``random_directions(model)[0]``).
        alphas: the coefficients ``a``.
        batch_size: examples per forward pass.
        verbose: 1 or 2 for a progress bar over the grid points.

    Returns:
        ``(loss, accuracy)``: ``float64`` arrays of shape ``(len(alphas),)``;
        the loss is the mean cross-entropy without the weight-decay term.
    """
    _check_direction(model, direction)
    alphas = np.asarray(alphas, dtype=np.float64)
    evaluator = _Evaluator(model, x, y, batch_size)
    entries = _direction_entries(model, [direction])
    with _restoring([variable for variable, _, _ in entries]):
        mover = _Mover(entries)
        rows = [(1.0, a) for a in alphas]
        return _scan(evaluator, mover, rows, alphas.shape, verbose)


def surface_2d(model, x, y, d1, d2, alphas, betas, *, batch_size: int = 256, verbose: int = 0):
    """Loss and accuracy at ``theta + a d1 + b d2`` over the grid ``alphas x betas``.

    Args:
        model: a Keras model that outputs logits; its weights are restored.
        x: inputs.
        y: integer labels.
        d1: first direction (tensors aligned with ``model.trainable_variables``).
        d2: second direction.
        alphas: coefficients ``a`` of ``d1``.
        betas: coefficients ``b`` of ``d2``.
        batch_size: examples per forward pass.
        verbose: 1 or 2 for a progress bar over the grid points.

    Returns:
        ``(loss, accuracy)``: ``float64`` arrays of shape
        ``(len(alphas), len(betas))``; ``loss[i, j]`` is at
        ``(alphas[i], betas[j])``.
    """
    _check_direction(model, d1, "d1")
    _check_direction(model, d2, "d2")
    alphas = np.asarray(alphas, dtype=np.float64)
    betas = np.asarray(betas, dtype=np.float64)
    evaluator = _Evaluator(model, x, y, batch_size)
    entries = _direction_entries(model, [d1, d2])
    with _restoring([variable for variable, _, _ in entries]):
        mover = _Mover(entries)
        rows = [(1.0, a, b) for a in alphas for b in betas]
        return _scan(evaluator, mover, rows, (len(alphas), len(betas)), verbose)


def _batch_norm_statistics(model):
    """``[(moving_mean, moving_variance), ...]`` of the model's BatchNormalization layers."""
    import keras

    return [(layer.moving_mean, layer.moving_variance)
            for layer in model._flatten_layers(include_self=True, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


def path_1d(initial_model, final_model, x, y, alphas=None, *, batch_size: int = 256, verbose: int = 0):
    """Loss and accuracy along ``theta(a) = theta0 + a (theta1 - theta0)``.

    ``theta0`` are the weights of ``initial_model`` (before the first
    training step), ``theta1`` those of ``final_model``; every trainable
    weight moves on the line, computed as ``(1 - a) theta0 + a theta1`` so
    that ``a = 0`` and ``a = 1`` give the two models exactly. BatchNorm's
    moving statistics move with them, so both ends are evaluated in
    inference mode as the models themselves are: the means linearly, the
    variances geometrically (``v0^(1-a) v1^a``, positive beyond both ends).

    Args:
        initial_model: the model with its initial weights (e.g.
            :func:`kdkeras.analysis.runs.load_initial_model`).
        final_model: the same architecture with the trained weights; it is
            the model evaluated, and its weights are restored.
        x: inputs.
        y: integer labels.
        alphas: the coefficients ``a`` (default :func:`path_alphas`, 31
            points over ``[-0.25, 1.25]``).
        batch_size: examples per forward pass.
        verbose: 1 or 2 for a progress bar over the grid points.

    Returns:
        ``(loss, accuracy)``: ``float64`` arrays of shape ``(len(alphas),)``.

    Raises:
        ValueError: the two models' weights differ in number or shape.
    """
    alphas = path_alphas() if alphas is None else np.asarray(alphas, dtype=np.float64)
    start, end = initial_model.trainable_variables, final_model.trainable_variables
    start_stats, end_stats = _batch_norm_statistics(initial_model), _batch_norm_statistics(final_model)
    if ([tuple(v.shape) for v in start] != [tuple(v.shape) for v in end]
            or len(start_stats) != len(end_stats)):
        raise ValueError("initial_model and final_model have different architectures "
                         "(their weights differ in number or shape).")
    entries = [(v1, [v0.numpy(), v1.numpy()], False) for v0, v1 in zip(start, end)]
    for (mean0, var0), (mean1, var1) in zip(start_stats, end_stats):
        entries.append((mean1, [mean0.numpy(), mean1.numpy()], False))
        entries.append((var1, [var0.numpy(), var1.numpy()], True))
    evaluator = _Evaluator(final_model, x, y, batch_size)
    with _restoring([variable for variable, _, _ in entries]):
        mover = _Mover(entries)
        rows = [(1.0 - a, a) for a in alphas]
        return _scan(evaluator, mover, rows, alphas.shape, verbose)


# --------------------------------------------------------------------------- results


@dataclasses.dataclass
class Landscape:
    """A computed landscape and how it was computed.

    Attributes:
        mode: ``"1d"``, ``"2d"`` or ``"path"``.
        alphas: coefficients along the (first) axis.
        betas: coefficients of the second direction (2-D only, else ``None``).
        loss: mean loss, ``(len(alphas),)`` or ``(len(alphas), len(betas))``.
        accuracy: accuracy, same shape.
        metadata: settings and provenance (seed, num_examples, split, run ...).
    """

    mode: str
    alphas: np.ndarray
    betas: np.ndarray | None
    loss: np.ndarray
    accuracy: np.ndarray
    metadata: dict = dataclasses.field(default_factory=dict)

    def at(self, alpha: float = 0.0, beta: float = 0.0) -> tuple[float, float]:
        """``(loss, accuracy)`` at the grid point ``(alpha, beta)`` (must be on the grid)."""
        i = int(np.argmin(np.abs(self.alphas - alpha)))
        if not np.isclose(self.alphas[i], alpha, atol=1e-9):
            raise ValueError(f"alpha={alpha} is not a grid point.")
        if self.betas is None:
            return float(self.loss[i]), float(self.accuracy[i])
        j = int(np.argmin(np.abs(self.betas - beta)))
        if not np.isclose(self.betas[j], beta, atol=1e-9):
            raise ValueError(f"beta={beta} is not a grid point.")
        return float(self.loss[i, j]), float(self.accuracy[i, j])

    def save(self, path: str) -> None:
        """Writes ``alphas``, ``betas`` (2-D), ``loss``, ``accuracy`` and the metadata to ``.npz``, atomically."""
        from kdkeras.io_utils import atomic_open

        arrays = {"mode": np.str_(self.mode), "alphas": self.alphas, "loss": self.loss,
                  "accuracy": self.accuracy}
        if self.betas is not None:
            arrays["betas"] = self.betas
        for key, value in self.metadata.items():
            arrays[f"meta_{key}"] = np.asarray(value)
        with atomic_open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str) -> Landscape:
        """Reads a file written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            metadata = {key[len("meta_"):]: data[key].item() for key in data.files if key.startswith("meta_")}
            return cls(mode=str(data["mode"]), alphas=data["alphas"],
                       betas=data["betas"] if "betas" in data.files else None,
                       loss=data["loss"], accuracy=data["accuracy"], metadata=metadata)


# --------------------------------------------------------------------------- plots


def _figure(width, height, panels):
    from kdkeras.plotting import new_figure

    fig = new_figure(width, height)
    return fig, fig.subplots(1, panels, squeeze=False)[0]


def _save(fig, path):
    from kdkeras.plotting import save_png

    fig.tight_layout()
    save_png(fig, path)


def _positive(loss):
    """Loss for a log axis: non-finite and non-positive values become NaN (left blank)."""
    loss = np.asarray(loss, dtype=np.float64).copy()
    loss[~np.isfinite(loss) | (loss <= 0)] = np.nan
    return loss


def _axis_label(mode):
    if mode == "path":
        return "a  (0: initial weights, 1: trained weights)"
    return "a  (filter-normalised direction)"


def plot_1d(path: str, alphas, loss, accuracy, *, title: str = "", mode: str = "1d",
            log_loss: bool = True) -> None:
    """Writes a PNG of loss (left) and accuracy (right) against ``a`` to ``path``, atomically.

    Args:
        path: the PNG file.
        alphas: coefficients.
        loss: the loss at each coefficient.
        accuracy: the accuracy at each coefficient.
        title: figure title.
        mode: ``"1d"`` or ``"path"`` (axis label; the path marks ``a = 0``
            and ``a = 1``).
        log_loss: logarithmic loss axis (losses far from the minimum span
            orders of magnitude).
    """
    plot_compare(path, [(title or "model", None, alphas, loss, accuracy)], title=title, mode=mode,
                 log_loss=log_loss, legend=False)


def plot_2d(path: str, alphas, betas, loss, accuracy=None, *, title: str = "", log_loss: bool = True,
            levels: int = 30) -> None:
    """Writes a filled contour plot of the loss surface (and accuracy) to ``path``, atomically.

    Args:
        path: the PNG file.
        alphas: coefficients of the first direction (x axis).
        betas: coefficients of the second direction (y axis).
        loss: ``(len(alphas), len(betas))``.
        accuracy: same shape; drawn in a second panel when given.
        title: figure title.
        log_loss: contour ``log10(loss)`` (default) instead of the loss.
        levels: number of filled contour levels.
    """
    loss = np.asarray(loss, dtype=np.float64)
    values = np.log10(_positive(loss)) if log_loss else np.where(np.isfinite(loss), loss, np.nan)
    panels = 1 if accuracy is None else 2
    fig, axes = _figure(6.2 * panels, 5.2, panels)
    grid_a, grid_b = np.meshgrid(alphas, betas, indexing="ij")
    data = [(values, "log10(loss)" if log_loss else "loss", "viridis")]
    if accuracy is not None:
        data.append((np.asarray(accuracy, dtype=np.float64), "accuracy", "magma"))
    for ax, (z, label, cmap) in zip(axes, data):
        z = np.ma.masked_invalid(z)
        if z.count() and float(z.max() - z.min()) > 0:
            filled = ax.contourf(grid_a, grid_b, z, levels=levels, cmap=cmap)
            ax.contour(grid_a, grid_b, z, levels=filled.levels[::3], colors="white", linewidths=0.5,
                       alpha=0.6)
            fig.colorbar(filled, ax=ax, label=label)
        else:
            ax.pcolormesh(grid_a, grid_b, z, cmap=cmap, shading="nearest")
        ax.plot([0], [0], marker="*", color="red", markersize=10, linestyle="none", label="trained weights")
        ax.set_xlabel("a  (direction 1)")
        ax.set_ylabel("b  (direction 2)")
        ax.set_title(label)
        ax.set_aspect("equal", adjustable="box")
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_compare(path: str, curves, *, title: str = "", mode: str = "1d", log_loss: bool = True,
                 legend: bool = True) -> None:
    """Overlays the 1-D curves of several runs (loss left, accuracy right) in one PNG, atomically.

    Args:
        path: the PNG file.
        curves: ``(label, kind, alphas, loss, accuracy)`` per run; ``kind``
            (``"R"``, ``"NR"``, ``"distilled"`` or ``None``) picks the colour,
            several runs of one kind differ in line style.
        title: figure title.
        mode: ``"1d"`` or ``"path"`` (axis label, and ``a = 0, 1`` marks).
        log_loss: logarithmic loss axis.
        legend: show the labels.
    """
    fig, (loss_ax, acc_ax) = _figure(12, 4.6, 2)
    seen = {}
    for label, kind, alphas, loss, accuracy in curves:
        n = seen[kind] = seen.get(kind, -1) + 1
        style = {"color": _KIND_COLORS.get(kind, f"C{len(seen) + 2}"),
                 "linestyle": _LINESTYLES[n % len(_LINESTYLES)], "label": label}
        loss_ax.plot(alphas, _positive(loss) if log_loss else loss, **style)
        acc_ax.plot(alphas, accuracy, **style)
    for ax, name in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        for mark in ((0.0, 1.0) if mode == "path" else (0.0,)):
            ax.axvline(mark, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel(_axis_label(mode))
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    if log_loss:
        loss_ax.set_yscale("log")
    acc_ax.set_ylim(-0.02, 1.02)
    if legend:
        loss_ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    _save(fig, path)


# --------------------------------------------------------------------------- run folders


@dataclasses.dataclass(frozen=True)
class Settings:
    """How a run's landscape is computed (what makes two result files the same).

    Attributes:
        mode: ``"1d"``, ``"2d"`` or ``"path"``.
        resolution: grid points per axis (``None``: :data:`DEFAULT_RESOLUTION`).
        extent: the random-direction grid spans about ``[-extent, extent]``
            (1-D / 2-D only).
        num_examples: examples evaluated (a fixed, class-balanced subset);
            ``None``: :data:`DEFAULT_NUM_EXAMPLES`, or the whole split when
            it is smaller.
        split: ``"train"`` or ``"test"``.
        seed: seed of the random directions (1-D / 2-D only).
        include_bias_bn: perturb biases and BatchNorm ``gamma`` / ``beta`` too.
        batch_size: examples per forward pass (speed only).
    """

    mode: str = "1d"
    resolution: int | None = None
    extent: float = 1.0
    num_examples: int | None = None
    split: str = "train"
    seed: int = 0
    include_bias_bn: bool = False
    batch_size: int = 256

    def resolved(self) -> Settings:
        """Checks the settings (one-line ``ValueError``) and fills in the default resolution."""
        if self.mode not in MODES:
            raise ValueError(f"Unknown mode '{self.mode}'. Valid choices: {', '.join(MODES)}.")
        if self.split not in SPLITS:
            raise ValueError(f"Unknown split '{self.split}'. Valid choices: {', '.join(SPLITS)}.")
        resolution = DEFAULT_RESOLUTION[self.mode] if self.resolution is None else int(self.resolution)
        if resolution < 2:
            raise ValueError(f"resolution must be at least 2 grid points per axis (an odd number puts "
                             f"the origin in the middle). Received: {resolution}.")
        if self.mode != "path" and not self.extent > 0:
            raise ValueError(f"range must be positive. Received: {self.extent}.")
        if self.num_examples is not None and self.num_examples < 1:
            raise ValueError(f"num_examples must be a positive integer. Received: {self.num_examples}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer. Received: {self.batch_size}.")
        return dataclasses.replace(self, resolution=resolution)

    def stem(self) -> str:
        """The result file name without extension, e.g. ``2d-r21-x1-n512-train-s0``."""
        if self.num_examples is None:
            raise ValueError("The number of examples is not known yet (num_examples=None).")
        parts = [self.mode, f"r{self.resolution}"]
        if self.mode != "path":
            parts.append(f"x{self.extent:g}")
        parts += [f"n{self.num_examples}", self.split]
        if self.mode != "path":
            parts.append(f"s{self.seed}")
            if self.include_bias_bn:
                parts.append("bn")
        return "-".join(parts)

    def metadata(self) -> dict:
        """The settings that determine the result (batch size excluded)."""
        meta = {"mode": self.mode, "resolution": self.resolution, "num_examples": self.num_examples,
                "split": self.split}
        if self.mode != "path":
            meta.update(range=float(self.extent), seed=self.seed, include_bias_bn=self.include_bias_bn)
        return meta


def _file_digest(paths) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _weights_files(run, mode):
    from kdkeras.analysis import runs

    files = [run.path(runs.MODEL_FILE)]
    return files + [run.path(runs.INITIAL_WEIGHTS_FILE)] if mode == "path" else files


def result_paths(run, settings: Settings) -> tuple[str, str]:
    """``(npz, png)`` paths of a run's landscape: ``<run>/landscape/<stem>.npz`` / ``.png``.

    ``settings.num_examples`` must be set (see :func:`landscape_for_run`).
    """
    stem = settings.resolved().stem()
    folder = run.path(LANDSCAPE_DIR)
    return os.path.join(folder, f"{stem}.npz"), os.path.join(folder, f"{stem}.png")


def check_run(run, settings: Settings) -> None:
    """Fails early (one line) when the run cannot give this landscape."""
    from kdkeras.analysis import runs

    if settings.mode == "path" and not os.path.exists(run.path(runs.INITIAL_WEIGHTS_FILE)):
        runs.load_initial_model(run)  # raises its one-line FileNotFoundError


def _stored(npz_path, expected):
    if not os.path.exists(npz_path):
        return None
    try:
        stored = Landscape.load(npz_path)
    except (OSError, ValueError, KeyError):
        return None
    same = all(stored.metadata.get(k) == v for k, v in expected.items())
    return stored if same else None


def _title(run, settings, n):
    what = {"1d": "1-D random direction", "2d": "2-D random directions",
            "path": "initial-to-final path"}[settings.mode]
    seed = f", seed {settings.seed}" if settings.mode != "path" else ""
    return f"{run.kind}: {run.label} - {what} ({n} {settings.split} examples{seed})"


def landscape_for_run(run, settings: Settings, *, recompute: bool = False, verbose: int = 0,
                      log=print) -> tuple[Landscape, str, str, bool]:
    """Computes (or reuses) a run's landscape, saves it and draws it.

    The result goes to ``<run>/landscape/<stem>.npz`` (see
    :meth:`Settings.stem`) with a PNG beside it. A stored file whose
    settings and model files (checksum) match is reused unless
    ``recompute``; the PNG is redrawn either way.

    Args:
        run: a finished :class:`kdkeras.analysis.runs.Run`.
        settings: how to compute it.
        recompute: ignore a stored result.
        verbose: progress bar over the grid points (0: none).
        log: prints progress messages.

    Returns:
        ``(landscape, npz_path, png_path, reused)``.

    Raises:
        ValueError: bad settings, or more examples than the split has.
        FileNotFoundError: path mode without ``initial.weights.h5``.
    """
    from kdkeras.analysis import runs

    settings = settings.resolved()
    check_run(run, settings)
    data = None
    if settings.num_examples is None:
        data = runs.split_arrays(run.config, settings.split, size=DEFAULT_NUM_EXAMPLES, seed=0)
        settings = dataclasses.replace(settings, num_examples=len(data[1]))
    npz_path, png_path = result_paths(run, settings)
    expected = {**settings.metadata(), "weights_digest": _file_digest(_weights_files(run, settings.mode))}
    stored = None if recompute else _stored(npz_path, expected)
    if stored is not None:
        log(f"Reusing {npz_path} (same settings and model)")
        landscape = stored
    else:
        x, y, _ = data or runs.split_arrays(run.config, settings.split, size=settings.num_examples, seed=0)
        if len(y) < settings.num_examples:
            raise ValueError(f"num_examples={settings.num_examples} is more than the {settings.split} "
                             f"split of run '{run.name}' has ({len(y)}); use at most {len(y)}.")
        model = runs.load_run_model(run)
        options = {"batch_size": settings.batch_size, "verbose": verbose}
        betas = None
        what = f"{settings.mode} landscape of {run.label}"
        if settings.mode == "path":
            alphas = path_alphas(settings.resolution)
            log(f"Computing the {what}: {len(alphas)} points on {len(y)} {settings.split} examples")
            loss, accuracy = path_1d(runs.load_initial_model(run), model, x, y, alphas, **options)
        else:
            alphas = axis_grid(settings.resolution, settings.extent)
            count = 1 if settings.mode == "1d" else 2
            directions = random_directions(model, count, settings.seed,
                                           include_bias_bn=settings.include_bias_bn)
            points = len(alphas) ** count
            log(f"Computing the {what}: {points} points on {len(y)} {settings.split} examples")
            if settings.mode == "1d":
                loss, accuracy = surface_1d(model, x, y, directions[0], alphas, **options)
            else:
                betas = alphas.copy()
                loss, accuracy = surface_2d(model, x, y, *directions, alphas, betas, **options)
        metadata = {**expected, "run": run.name, "model": run.config.model, "kind": run.kind,
                    "label": run.label, "dataset": run.config.dataset, "loss_definition": LOSS_DEFINITION}
        landscape = Landscape(settings.mode, alphas, betas, loss, accuracy, metadata)
        landscape.save(npz_path)
    title = _title(run, settings, settings.num_examples)
    if settings.mode == "2d":
        plot_2d(png_path, landscape.alphas, landscape.betas, landscape.loss, landscape.accuracy, title=title)
    else:
        plot_1d(png_path, landscape.alphas, landscape.loss, landscape.accuracy, title=title,
                mode=settings.mode)
    return landscape, npz_path, png_path, stored is not None


def compare_output_path(run_list, settings: Settings) -> str:
    """Default PNG of a comparison: ``<dataset folder of the first run>/landscape-compare-<stem>-<hash>.png``.

    ``settings.num_examples`` must be set.
    """
    settings = settings.resolved()
    names = ",".join(os.path.abspath(run.directory) for run in run_list)
    tag = hashlib.sha256(names.encode()).hexdigest()[:8]
    folder = os.path.dirname(os.path.normpath(run_list[0].directory))
    return os.path.join(folder, f"landscape-compare-{settings.stem()}-{tag}.png")


def compare_runs(run_list, settings: Settings, output: str | None = None, *, recompute: bool = False,
                 verbose: int = 0, log=print) -> tuple[str, list]:
    """Overlays the 1-D (or path) landscapes of several runs in one PNG.

    Each run's landscape is computed or reused as by
    :func:`landscape_for_run`; the runs must be on the same dataset.

    Returns:
        ``(png_path, [(run, landscape, npz_path), ...])``.

    Raises:
        ValueError: 2-D mode, no runs, or runs on different datasets.
    """
    settings = settings.resolved()
    if settings.mode == "2d":
        raise ValueError("--compare overlays 1-D curves: use --mode=1d or --mode=path.")
    if not run_list:
        raise ValueError("--compare needs at least one run folder.")
    datasets = sorted({run.config.dataset for run in run_list})
    if len(datasets) > 1:
        listing = ", ".join(f"{run.name}: {run.config.dataset}" for run in run_list)
        raise ValueError(f"--compare needs runs on one dataset; these are on {', '.join(datasets)} "
                         f"({listing}).")
    for run in run_list:
        check_run(run, settings)
    results, curves = [], []
    for run in run_list:
        landscape, npz_path, _, _ = landscape_for_run(run, settings, recompute=recompute,
                                                      verbose=verbose, log=log)
        results.append((run, landscape, npz_path))
        curves.append((f"{run.kind}: {run.label}", run.kind, landscape.alphas, landscape.loss,
                       landscape.accuracy))
    counts = sorted({int(landscape.metadata["num_examples"]) for _, landscape, _ in results})
    output = output or compare_output_path(run_list, dataclasses.replace(settings, num_examples=counts[0]))
    what = "initial-to-final paths" if settings.mode == "path" else f"1-D random directions (seed {settings.seed})"
    examples = "/".join(str(n) for n in counts)
    plot_compare(output, curves, mode=settings.mode,
                 title=f"{datasets[0]}: {what}, {examples} {settings.split} examples")
    return output, results
