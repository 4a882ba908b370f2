"""Embedding maths: penultimate features, class and example choice, separation score, 2-D projections."""

from __future__ import annotations

import keras
import numpy as np

from kdkeras.errors import UsageError

#: Name of the penultimate (global average pooling) layer of kdkeras models.
EMBEDDING_LAYER = "avg_pool"

METHODS = ("pca", "tsne")


def _unwrap(model):
    """The student of a :class:`kdkeras.distiller.Distiller`, else ``model`` itself."""
    from kdkeras.distiller import Distiller

    return model.student if isinstance(model, Distiller) else model


def penultimate_model(model) -> keras.Model:
    """A model mapping images to ``(embeddings, logits)`` in one pass.

    The embedding is the output of the layer named ``avg_pool`` (the global
    average pooling of every kdkeras model); a model without one uses the
    input of its last layer. A :class:`kdkeras.distiller.Distiller` stands
    for its student.

    Args:
        model: a functional or Sequential ``keras.Model`` (built).

    Returns:
        A ``keras.Model`` sharing ``model``'s layers and weights, with the
        outputs ``[embeddings (batch, D), logits (batch, num_classes)]``.

    Raises:
        ValueError: ``model`` has no symbolic inputs (an unbuilt or
            subclassed model), or its embedding is not a 2-D tensor.
    """
    model = _unwrap(model)
    try:
        inputs = model.inputs
        outputs = model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs or len(outputs) != 1:
        raise UsageError(f"Model '{model.name}' is not a built functional or Sequential model with "
                         f"one output, so its penultimate layer cannot be read.")
    names = [layer.name for layer in model.layers]
    if EMBEDDING_LAYER in names:
        embedding = model.get_layer(EMBEDDING_LAYER).output
    else:
        embedding = model.layers[-1].input
    if isinstance(embedding, (list, tuple)) or len(embedding.shape) != 2:
        raise UsageError(f"The penultimate output of model '{model.name}' has shape "
                         f"{getattr(embedding, 'shape', None)}, not (batch, features); add a "
                         f"global pooling layer named '{EMBEDDING_LAYER}'.")
    return keras.Model(inputs, [embedding, outputs[0]], name=f"{model.name}_penultimate")


def compute_embeddings(model, images, batch_size: int = 256, verbose=0):
    """Penultimate-layer features and logits of ``images`` (inference mode).

    Args:
        model: a ``keras.Model`` or a :class:`~kdkeras.distiller.Distiller`
            (its student is used); see :func:`penultimate_model`.
        images: ``(N, H, W, C)`` array, normalised as in training.
        batch_size: images per forward pass.
        verbose: ``predict`` verbosity (1: a progress bar).

    Returns:
        ``(embeddings, logits)``: ``float32`` arrays ``(N, D)`` and
        ``(N, num_classes)`` from the same forward pass.
    """
    extractor = penultimate_model(model)
    embeddings, logits = extractor.predict(images, batch_size=int(batch_size), verbose=verbose)
    return np.asarray(embeddings, dtype=np.float32), np.asarray(logits, dtype=np.float32)


def per_class_accuracy(logits, labels, num_classes: int) -> np.ndarray:
    """Top-1 accuracy of each class (``NaN`` for a class without examples).

    Args:
        logits: ``(N, num_classes)`` scores.
        labels: ``(N,)`` integer labels.
        num_classes: length of the result.
    """
    labels = np.asarray(labels, dtype=np.int64)
    correct = (np.argmax(np.asarray(logits), axis=-1) == labels).astype(np.float64)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    hits = np.bincount(labels, weights=correct, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def worst_classes(logits, labels, k: int, num_classes: int | None = None) -> list[int]:
    """The ``k`` classes with the lowest top-1 accuracy, worst first.

    Classes without examples are skipped; equal accuracies go by label.

    Raises:
        ValueError: ``k < 1`` or ``k`` larger than the number of classes with
            examples.
    """
    logits = np.asarray(logits)
    num_classes = int(num_classes or logits.shape[-1])
    accuracy = per_class_accuracy(logits, labels, num_classes)
    present = np.flatnonzero(np.isfinite(accuracy))
    if k < 1 or k > len(present):
        raise UsageError(f"--worst={k} must be between 1 and {len(present)}, the number of classes "
                         f"in the examples.")
    order = present[np.lexsort((present, accuracy[present]))]
    return [int(c) for c in order[:k]]


def class_indices(names, class_names) -> list[int]:
    """The labels of the class ``names`` (in the order given).

    Raises:
        ValueError: a name that is not a class of the dataset (the message
            lists some valid names and their count), a name given twice, or
            fewer than 2 names (the separation score compares clusters).
    """
    lookup = {name: i for i, name in enumerate(class_names)}
    names = [str(n).strip() for n in names if str(n).strip()]
    unknown = [n for n in names if n not in lookup]
    if unknown:
        shown = ", ".join(class_names[:8])
        raise UsageError(f"Unknown class {', '.join(repr(n) for n in unknown)}. The dataset has "
                         f"{len(class_names)} classes: {shown}{', ...' if len(class_names) > 8 else ''}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"Class {', '.join(repr(n) for n in repeated)} is listed more than once.")
    if len(names) < 2:
        raise UsageError(f"Pick at least 2 classes (the separation score compares clusters). "
                         f"Received: {', '.join(names) or 'none'}.")
    return [lookup[n] for n in names]


def _check_num_points(num_points, n_classes):
    if num_points < n_classes:
        raise UsageError(f"--num_points={num_points} is smaller than the number of classes "
                         f"({n_classes}); use at least {n_classes}, e.g. {100 * n_classes}.")


def sample_examples(labels, classes, num_points: int, seed: int = 0) -> np.ndarray:
    """A seeded, class-balanced choice of examples of ``classes``.

    Each class gets ``num_points // len(classes)`` examples (the first classes
    one more for the remainder), or all it has when that is fewer.

    Returns:
        Indices into ``labels``, grouped by class in the order of
        ``classes``, ascending within a class.

    Raises:
        ValueError: ``num_points`` smaller than the number of classes, or a
            class without examples.
    """
    labels = np.asarray(labels)
    _check_num_points(num_points, len(classes))
    rng = np.random.default_rng(seed)
    base, extra = divmod(int(num_points), len(classes))
    chosen = []
    for i, c in enumerate(classes):
        members = np.flatnonzero(labels == c)
        if members.size == 0:
            raise UsageError(f"Class {c} has no examples in this split.")
        take = min(base + (1 if i < extra else 0), members.size)
        chosen.append(np.sort(rng.permutation(members)[:take]))
    return np.concatenate(chosen)


def separation_score(embeddings, labels) -> float:
    """Silhouette score of the class clusters, in the full embedding space.

    Mean over the examples of ``(b - a) / max(a, b)`` with ``a`` the mean
    Euclidean distance to the examples of the same class and ``b`` that to
    the nearest other class: near 1 for tight, well-separated classes, near
    0 for overlapping ones, negative when examples sit closer to another
    class. Computed on the ``D``-dimensional embeddings, not on a 2-D view.

    Raises:
        ValueError: fewer than 2 classes, or as many classes as examples.
    """
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    n_classes = len(np.unique(labels))
    if not 2 <= n_classes < len(labels):
        raise UsageError(f"The separation score needs 2 to {len(labels) - 1} classes among "
                         f"{len(labels)} examples. Received: {n_classes}.")
    return float(silhouette_score(np.asarray(embeddings, dtype=np.float64), labels, metric="euclidean"))


def project_2d(embeddings, method: str = "pca", seed: int = 0) -> np.ndarray:
    """A 2-D view of ``embeddings``: ``"pca"`` or ``"tsne"`` (scikit-learn).

    t-SNE uses a PCA start, ``perplexity = min(30, (N - 1) / 3)``,
    ``random_state=seed`` and one OpenMP thread.

    Raises:
        ValueError: an unknown method, or fewer than 3 examples.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if method not in METHODS:
        raise UsageError(f"Unknown projection '{method}'. Valid choices: {', '.join(METHODS)}.")
    if len(x) < 3:
        raise UsageError(f"A 2-D view needs at least 3 examples. Received: {len(x)}.")
    if method == "pca":
        from sklearn.decomposition import PCA

        components = min(2, x.shape[1])
        view = PCA(n_components=components, random_state=seed).fit_transform(x)
        return np.pad(view, ((0, 0), (0, 2 - components)))
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = min(30.0, (len(x) - 1) / 3.0)
    # One OpenMP thread: several spin-waiting threads slow t-SNE down by an
    # order of magnitude on a busy machine, and a few thousand points take
    # seconds on one.
    with threadpool_limits(limits=1, user_api="openmp"):
        return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                    random_state=seed).fit_transform(x)
