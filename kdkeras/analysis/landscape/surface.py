"""Landscape maths: filter-normalised directions, grids, and the loss and accuracy over them (Li et al. 2018)."""

from __future__ import annotations

import contextlib

import numpy as np

from kdkeras.errors import UsageError

#: The modes of :func:`landscape_for_run`: random 1-D / 2-D surfaces, or the initial-to-final path.
MODES = ("1d", "2d", "path")

#: Grid points per axis when no resolution is given.
DEFAULT_RESOLUTION = {"1d": 51, "2d": 21, "path": 31}

#: Extra stretch of the path beyond both ends (in units of ``theta1 - theta0``).
PATH_MARGIN = 0.25

#: What the stored loss is (kept in every result file).
LOSS_DEFINITION = ("mean sparse categorical cross-entropy of the logits on hard labels, "
                   "inference mode, no weight-decay term")

_EPS = 1e-10


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


def axis_grid(resolution: int, extent: float = 1.0) -> np.ndarray:
    """Coefficients of one random direction: ``resolution`` points around 0, 0 included.

    An odd resolution spans ``[-extent, extent]`` symmetrically with 0 in
    the middle, exactly. An even one keeps the same spacing
    ``2 extent / (resolution - 1)`` but is shifted by half a step so that 0
    is still a grid point (it spans ``[-extent - step/2, extent - step/2]``).
    """
    if resolution < 2:
        raise UsageError(f"resolution must be at least 2 (odd resolutions include the origin "
                         f"symmetrically). Received: {resolution}.")
    if not extent > 0:
        raise UsageError(f"range must be positive. Received: {extent}.")
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
        raise UsageError(f"resolution must be at least 2. Received: {resolution}.")
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
            raise UsageError(f"batch_size must be a positive integer. Received: {batch_size}.")
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
        raise UsageError("initial_model and final_model have different architectures "
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
