"""Penultimate-layer embeddings: TensorBoard projector files, PCA / t-SNE scatters.

The paper's Figure 2 shows the penultimate-layer features (the global average
pooling output, layer ``avg_pool``) of a few classes for a residual teacher,
the R and NR baselines and the NR student distilled from the teacher. This
module computes those features for finished runs and draws them::

    model = runs.load_run_model(run)
    embeddings, logits = compute_embeddings(model, images)
    score = separation_score(embeddings, labels)       # silhouette, full space
    write_projector(run.path("tensorboard/projector"), embeddings, labels, class_names)
    plot_embeddings(run.path("embeddings.png"), [Panel(run.label, embeddings, labels, score)],
                    class_names)

:func:`embed_runs` does all of it for one or several runs on the same
examples (``scripts/embed.py``); :class:`EmbeddingProjector` writes the
projector files of the model being trained at the end of ``fit``.

Where TensorBoard finds the projector files: its projector plugin reads
``projector_config.pbtxt`` from the folder of each TensorBoard *run* (a folder
holding event files) and only accepts ``tensor_path`` / ``metadata_path``
that resolve inside that folder. :func:`write_projector` therefore writes the
config, the vectors, the metadata and a small event file (the separation
score and a description) into one folder of its own, by default
``<run>/tensorboard/projector/``; TensorBoard started on ``logs/``, on the
run folder or on its ``tensorboard/`` folder lists it as the run
``.../tensorboard/projector`` in its Projector tab.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import os

import keras
import numpy as np

from kdkeras.io_utils import atomic_write_text

#: Name of the penultimate (global average pooling) layer of kdkeras models.
EMBEDDING_LAYER = "avg_pool"
#: Projector folder of a run folder, inside its TensorBoard folder.
PROJECTOR_SUBDIR = os.path.join("tensorboard", "projector")
#: The scatter PNG of ``scripts/embed.py --run``, in the run folder.
PNG_FILE = "embeddings.png"
PROJECTOR_CONFIG_FILE = "projector_config.pbtxt"  # the name the projector plugin reads
TENSORS_FILE = "tensors.tsv"
METADATA_FILE = "metadata.tsv"
#: Suffix of the event files written here (older ones are replaced).
EVENTS_SUFFIX = ".projector"
#: Classes shown when none are chosen: the first run's worst ``DEFAULT_WORST``.
DEFAULT_WORST = 3
DEFAULT_NUM_POINTS = 500
METHODS = ("pca", "tsne")
_METHOD_TITLES = {"pca": "PCA", "tsne": "t-SNE"}
SPLITS = ("test", "train")


# --- embeddings ---------------------------------------------------------------------------------


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
        raise ValueError(f"Model '{model.name}' is not a built functional or Sequential model with "
                         f"one output, so its penultimate layer cannot be read.")
    names = [layer.name for layer in model.layers]
    if EMBEDDING_LAYER in names:
        embedding = model.get_layer(EMBEDDING_LAYER).output
    else:
        embedding = model.layers[-1].input
    if isinstance(embedding, (list, tuple)) or len(embedding.shape) != 2:
        raise ValueError(f"The penultimate output of model '{model.name}' has shape "
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


# --- choosing classes and examples -----------------------------------------------------------


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
        raise ValueError(f"--worst={k} must be between 1 and {len(present)}, the number of classes "
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
        raise ValueError(f"Unknown class {', '.join(repr(n) for n in unknown)}. The dataset has "
                         f"{len(class_names)} classes: {shown}{', ...' if len(class_names) > 8 else ''}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"Class {', '.join(repr(n) for n in repeated)} is listed more than once.")
    if len(names) < 2:
        raise ValueError(f"Pick at least 2 classes (the separation score compares clusters). "
                         f"Received: {', '.join(names) or 'none'}.")
    return [lookup[n] for n in names]


def _check_num_points(num_points, n_classes):
    if num_points < n_classes:
        raise ValueError(f"--num_points={num_points} is smaller than the number of classes "
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
            raise ValueError(f"Class {c} has no examples in this split.")
        take = min(base + (1 if i < extra else 0), members.size)
        chosen.append(np.sort(rng.permutation(members)[:take]))
    return np.concatenate(chosen)


# --- the separation score -----------------------------------------------------------------


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
        raise ValueError(f"The separation score needs 2 to {len(labels) - 1} classes among "
                         f"{len(labels)} examples. Received: {n_classes}.")
    return float(silhouette_score(np.asarray(embeddings, dtype=np.float64), labels, metric="euclidean"))


# --- TensorBoard projector -------------------------------------------------------------------


def _clean(text) -> str:
    return " ".join(str(text).split())


def write_projector(directory, embeddings, labels, class_names, *, predictions=None,
                    example_ids=None, tensor_name: str = EMBEDDING_LAYER, scalars=None,
                    description: str = "", step: int = 0) -> str:
    """Writes TensorBoard projector files for ``embeddings`` into ``directory``.

    Files (each written atomically; the config last)::

        tensors.tsv             one row of tab-separated floats per example
        metadata.tsv            header + one row per example: example, label,
                                class (and predicted, correct)
        projector_config.pbtxt  text ProjectorConfig, paths relative to it
        events.out.tfevents.*.projector   ``scalars`` and ``description``

    The event file makes ``directory`` a TensorBoard run, whose folder the
    projector plugin searches for ``projector_config.pbtxt``; event files of
    an earlier call are removed, so the folder shows the latest embedding.

    Args:
        directory: a folder of its own (created), e.g.
            ``<run>/tensorboard/projector``.
        embeddings: ``(N, D)`` vectors.
        labels: ``(N,)`` integer labels.
        class_names: names indexed by label.
        predictions: optional ``(N,)`` predicted labels (adds the columns
            ``predicted`` and ``correct``).
        example_ids: optional ``(N,)`` indices of the examples in their split
            (default ``0..N-1``).
        tensor_name: the embedding's name in the projector.
        scalars: optional ``{tag: value}`` logged at ``step``, e.g. the
            separation score.
        description: text logged with the tag ``embeddings/description``.
        step: summary step (e.g. the epoch).

    Returns:
        The path of ``projector_config.pbtxt``.

    Raises:
        ValueError: ``embeddings`` not 2-D, or lengths that disagree.
    """
    from google.protobuf import text_format
    from tensorboard.plugins import projector

    embeddings = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if embeddings.ndim != 2 or len(labels) != len(embeddings):
        raise ValueError(f"Expected embeddings (N, D) and labels (N,). Received shapes "
                         f"{embeddings.shape} and {labels.shape}.")
    ids = np.arange(len(labels)) if example_ids is None else np.asarray(example_ids)
    for name, values in (("predictions", predictions), ("example_ids", ids)):
        if values is not None and len(values) != len(labels):
            raise ValueError(f"{name} has {len(values)} entries for {len(labels)} embeddings.")
    os.makedirs(directory, exist_ok=True)

    buffer = io.StringIO()
    np.savetxt(buffer, embeddings, fmt="%.6g", delimiter="\t")
    atomic_write_text(os.path.join(directory, TENSORS_FILE), buffer.getvalue())

    header = ["example", "label", "class"] + (["predicted", "correct"] if predictions is not None else [])
    rows = ["\t".join(header)]
    for i in range(len(labels)):
        row = [str(int(ids[i])), str(int(labels[i])), _clean(class_names[labels[i]])]
        if predictions is not None:
            p = int(predictions[i])
            row += [_clean(class_names[p]), "yes" if p == labels[i] else "no"]
        rows.append("\t".join(row))
    atomic_write_text(os.path.join(directory, METADATA_FILE), "\n".join(rows) + "\n")

    _write_events(directory, scalars or {}, description, step)

    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = tensor_name
    embedding.tensor_path = TENSORS_FILE
    embedding.metadata_path = METADATA_FILE
    embedding.tensor_shape.extend(embeddings.shape)
    path = os.path.join(directory, PROJECTOR_CONFIG_FILE)
    atomic_write_text(path, text_format.MessageToString(config))
    return path


def _write_events(directory, scalars, description, step):
    import tensorflow as tf

    for old in glob.glob(os.path.join(directory, f"events.out.tfevents.*{EVENTS_SUFFIX}")):
        os.remove(old)
    writer = tf.summary.create_file_writer(directory, filename_suffix=EVENTS_SUFFIX)
    with writer.as_default():
        for tag, value in scalars.items():
            tf.summary.scalar(tag, float(value), step=int(step))
        tf.summary.text("embeddings/description", description or "penultimate-layer embeddings",
                        step=int(step))
    writer.close()


def read_projector_config(directory):
    """The ``ProjectorConfig`` message of ``directory/projector_config.pbtxt``."""
    from google.protobuf import text_format
    from tensorboard.plugins import projector

    with open(os.path.join(directory, PROJECTOR_CONFIG_FILE)) as f:
        return text_format.Parse(f.read(), projector.ProjectorConfig())


# --- 2-D views and the figure -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Panel:
    """One column of the figure: a model's embeddings of the chosen examples.

    Attributes:
        title: the column title (e.g. ``"NR: wrn22x2_NR_g16"``).
        embeddings: ``(N, D)`` vectors.
        labels: ``(N,)`` labels.
        score: its :func:`separation_score` (shown under the title).
    """

    title: str
    embeddings: np.ndarray
    labels: np.ndarray
    score: float | None = None


def project_2d(embeddings, method: str = "pca", seed: int = 0) -> np.ndarray:
    """A 2-D view of ``embeddings``: ``"pca"`` or ``"tsne"`` (scikit-learn).

    t-SNE uses a PCA start, ``perplexity = min(30, (N - 1) / 3)``,
    ``random_state=seed`` and one OpenMP thread.

    Raises:
        ValueError: an unknown method, or fewer than 3 examples.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if method not in METHODS:
        raise ValueError(f"Unknown projection '{method}'. Valid choices: {', '.join(METHODS)}.")
    if len(x) < 3:
        raise ValueError(f"A 2-D view needs at least 3 examples. Received: {len(x)}.")
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


def _class_colors(n):
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](i / max(n - 1, 1)) for i in range(n)]


def plot_embeddings(path, panels, class_names, *, classes=None, methods=METHODS, seed: int = 0,
                    title: str | None = None, log=None) -> str:
    """Draws the panels side by side: one column per panel, one row per method.

    Every point is coloured by its class (one legend of class names for the
    figure); each column is titled with its panel's title and separation
    score. The figure is drawn with the Agg canvas and written atomically.

    Args:
        path: the PNG file.
        panels: :class:`Panel` list (the same examples, for comparisons).
        class_names: names indexed by label.
        classes: the labels in legend order (default: the labels present).
        methods: rows, from :data:`METHODS`.
        seed: t-SNE seed.
        title: optional figure title.
        log: optional function printing progress (one line per projection).

    Returns:
        ``path``.
    """
    from matplotlib.lines import Line2D

    from kdkeras.plotting import new_figure, save_png

    if not panels:
        raise ValueError("plot_embeddings needs at least one panel.")
    if classes is None:
        classes = sorted({int(c) for p in panels for c in np.unique(p.labels)})
    colors = dict(zip(classes, _class_colors(len(classes))))
    fig = new_figure(4.2 * len(panels), 4.0 * len(methods) + 0.8)
    axes = fig.subplots(len(methods), len(panels), squeeze=False)
    for col, panel in enumerate(panels):
        for row, method in enumerate(methods):
            if log:
                log(f"  {_METHOD_TITLES[method]} of {panel.title} ({len(panel.labels)} points)")
            view = project_2d(panel.embeddings, method, seed)
            ax = axes[row, col]
            for c in classes:
                mask = np.asarray(panel.labels) == c
                ax.scatter(view[mask, 0], view[mask, 1], s=9, alpha=0.75, color=colors[c],
                           linewidths=0)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                score = "" if panel.score is None else f"\nsilhouette {panel.score:.3f}"
                ax.set_title(f"{panel.title}{score}", fontsize=9)
            if col == 0:
                ax.set_ylabel(_METHOD_TITLES[method])
    handles = [Line2D([], [], marker="o", linestyle="", color=colors[c], label=str(class_names[c]))
               for c in classes]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(classes), 6), frameon=False,
               fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06 if len(methods) > 1 else 0.1, 1, 0.97 if title else 1))
    return save_png(fig, path)


# --- whole runs ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunEmbedding:
    """One run's embeddings of the chosen examples.

    Attributes:
        run: the :class:`kdkeras.analysis.runs.Run`.
        embeddings: ``(N, D)`` penultimate features.
        logits: ``(N, num_classes)``.
        score: :func:`separation_score` of ``embeddings``.
        accuracy: top-1 accuracy on the chosen examples.
    """

    run: object
    embeddings: np.ndarray
    logits: np.ndarray
    score: float
    accuracy: float

    @property
    def panel_title(self) -> str:
        return f"{self.run.kind}: {self.run.label}"


@dataclasses.dataclass(frozen=True)
class Selection:
    """The examples every run is embedded on.

    Attributes:
        classes: the chosen labels, in legend order.
        indices: the examples' indices in the split.
        labels: their labels.
        class_names: the dataset's class names.
        split: ``"test"`` or ``"train"``.
        class_accuracy: the first run's accuracy of each chosen class over
            the whole split (``None`` when the classes were named and not
            measured).
    """

    classes: list
    indices: np.ndarray
    labels: np.ndarray
    class_names: tuple
    split: str
    class_accuracy: dict | None = None


def embed_runs(runs, *, classes=None, worst=None, num_points: int = DEFAULT_NUM_POINTS,
               split: str = "test", seed: int = 0, batch_size: int = 256, log=print, verbose=0):
    """Embeds the same examples of a few classes with every run's model.

    Classes: the ``classes`` names, else the ``worst`` (default
    :data:`DEFAULT_WORST`) classes of the first run by top-1 accuracy on the
    whole split (one forward pass over it). Examples: ``num_points`` of them,
    class-balanced, chosen from ``seed``. The data is the first run's split
    (its dataset and subset), given to every run.

    Args:
        runs: :class:`kdkeras.analysis.runs.Run` list (finished, one dataset).
        classes: class names, or ``None``.
        worst: number of worst classes, or ``None``.
        num_points: examples in all (at least one per class).
        split: ``"test"`` or ``"train"``.
        seed: example choice.
        batch_size: images per forward pass.
        log: function printing progress.
        verbose: ``predict`` verbosity.

    Returns:
        ``(selection, [RunEmbedding, ...])`` in the order of ``runs``.

    Raises:
        ValueError: both ``classes`` and ``worst``, an unknown split or class,
            ``worst`` above the class count, too few ``num_points``, runs on
            different datasets.
    """
    from kdkeras.analysis import runs as runs_lib

    if not runs:
        raise ValueError("No runs given.")
    if classes and worst is not None:
        raise ValueError("Pass --classes or --worst, not both.")
    if split not in SPLITS:
        raise ValueError(f"Unknown split '{split}'. Valid choices: {', '.join(SPLITS)}.")
    datasets = {run.config.dataset for run in runs}
    if len(datasets) > 1:
        listing = ", ".join(f"{run.name} ({run.config.dataset})" for run in runs)
        raise ValueError(f"The runs are on different datasets: {listing}; compare runs of one dataset.")
    if num_points < 1:
        raise ValueError(f"--num_points must be a positive integer. Received: {num_points}.")

    first = runs[0]
    images, labels, class_names = runs_lib.split_arrays(first.config, split)
    chosen = class_indices(classes, class_names) if classes else None
    if chosen is None:
        k = min(DEFAULT_WORST, len(class_names)) if worst is None else int(worst)
        if not 1 <= k <= len(class_names):
            raise ValueError(f"--worst={k} must be between 1 and {len(class_names)}, the number of "
                             f"classes of {first.config.dataset}.")
    _check_num_points(num_points, k if chosen is None else len(chosen))

    class_accuracy = None
    full_pass = None
    if chosen is None:
        log(f"Ranking the classes of {first.name}: {len(labels)} {split} images")
        full_pass = compute_embeddings(runs_lib.load_run_model(first), images, batch_size, verbose)
        accuracy = per_class_accuracy(full_pass[1], labels, len(class_names))
        chosen = worst_classes(full_pass[1], labels, k, len(class_names))
        class_accuracy = {c: float(accuracy[c]) for c in chosen}
        log(f"Worst {k} classes of {first.name}: " + ", ".join(
            f"{class_names[c]} ({class_accuracy[c]:.2f})" for c in chosen))
    indices = sample_examples(labels, chosen, num_points, seed)
    selection = Selection(classes=list(chosen), indices=indices, labels=labels[indices],
                          class_names=tuple(class_names), split=split, class_accuracy=class_accuracy)

    results = []
    for i, run in enumerate(runs):
        if i == 0 and full_pass is not None:
            embeddings, logits = full_pass[0][indices], full_pass[1][indices]
        else:
            log(f"Embedding {len(indices)} {split} images with {run.name}")
            embeddings, logits = compute_embeddings(runs_lib.load_run_model(run), images[indices],
                                                    batch_size, verbose)
        accuracy = float(np.mean(np.argmax(logits, -1) == selection.labels))
        score = separation_score(embeddings, selection.labels)
        results.append(RunEmbedding(run=run, embeddings=embeddings, logits=logits, score=score,
                                    accuracy=accuracy))
    return selection, results


def describe(selection: Selection, result: RunEmbedding) -> str:
    """One line on what was embedded (for the projector's description)."""
    names = ", ".join(selection.class_names[c] for c in selection.classes)
    return (f"{len(selection.indices)} {selection.split} images of {names}; "
            f"{EMBEDDING_LAYER} of {result.run.label} ({result.run.kind}); "
            f"silhouette {result.score:.4f}, accuracy {result.accuracy:.4f}")


def write_run_outputs(selection: Selection, result: RunEmbedding, *, seed: int = 0, log=print):
    """The projector files (``<run>/tensorboard/projector/``) and ``<run>/embeddings.png``.

    Returns:
        ``(projector_directory, png_path)``.
    """
    run = result.run
    directory = run.path(PROJECTOR_SUBDIR)
    write_projector(directory, result.embeddings, selection.labels, selection.class_names,
                    predictions=np.argmax(result.logits, -1), example_ids=selection.indices,
                    scalars={"embeddings/silhouette": result.score,
                             "embeddings/accuracy": result.accuracy},
                    description=describe(selection, result))
    png = plot_embeddings(run.path(PNG_FILE), [Panel(result.panel_title, result.embeddings,
                                                     selection.labels, result.score)],
                          selection.class_names, classes=selection.classes, seed=seed, log=log)
    return directory, png


def compare_output_path(runs) -> str:
    """Default PNG of a comparison: ``<dataset folder>/embeddings_<A>_vs_<B>....png``.

    The dataset folder is the first run's parent (``<logdir>/<dataset>``);
    a name longer than 200 characters is shortened with a hash.
    """
    import hashlib

    names = [run.name for run in runs]
    stem = "_vs_".join(names)
    if len(stem) > 200:
        digest = hashlib.sha1(stem.encode()).hexdigest()[:8]
        stem = f"{names[0]}_vs_{len(names) - 1}_runs-{digest}"
    folder = os.path.dirname(os.path.normpath(runs[0].directory))
    return os.path.join(folder, f"embeddings_{stem}.png")


# --- during training -------------------------------------------------------------------------


class EmbeddingProjector(keras.callbacks.Callback):
    """Writes the projector files of the trained model at the end of ``fit``.

    The embeddings of ``images`` (the student's, when the model being
    trained is a :class:`kdkeras.distiller.Distiller`) go to ``log_dir`` with
    :func:`write_projector`, with the separation score and accuracy as
    scalars at the last epoch; ``png`` also draws the PCA / t-SNE scatter.

    ```python
    images, labels, names = runs.split_arrays(config, "test", size=300)
    keep = np.isin(labels, [3, 42, 88])
    callback = EmbeddingProjector(images[keep], labels[keep], names,
                                  os.path.join(run_dir, "tensorboard", "projector"))
    train_and_evaluate(config, logdir, callbacks=[callback])
    ```

    Args:
        images: ``(N, H, W, C)`` normalised images.
        labels: ``(N,)`` labels (at least 2 classes).
        class_names: names indexed by label.
        log_dir: a folder of its own (see :func:`write_projector`).
        png: optional path of the scatter PNG.
        batch_size: images per forward pass.
        seed: t-SNE seed.

    Attributes:
        score: the last separation score written (``None`` before).
    """

    def __init__(self, images, labels, class_names, log_dir, *, png=None, batch_size=256, seed=0):
        super().__init__()
        self.images = np.asarray(images)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = tuple(class_names)
        self.log_dir = log_dir
        self.png = png
        self.batch_size = batch_size
        self.seed = seed
        self.score = None
        self._epochs = 0
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels.")
        n_classes = len(np.unique(self.labels))
        if not 2 <= n_classes < len(self.labels):
            raise ValueError(f"EmbeddingProjector needs 2 to {len(self.labels) - 1} classes among its "
                             f"{len(self.labels)} examples. Received: {n_classes}.")

    def on_epoch_end(self, epoch, logs=None):
        self._epochs = epoch + 1

    def on_train_end(self, logs=None):
        model = _unwrap(self.model)
        embeddings, logits = compute_embeddings(model, self.images, self.batch_size)
        self.score = separation_score(embeddings, self.labels)
        accuracy = float(np.mean(np.argmax(logits, -1) == self.labels))
        classes = sorted(int(c) for c in np.unique(self.labels))
        names = ", ".join(self.class_names[c] for c in classes)
        write_projector(self.log_dir, embeddings, self.labels, self.class_names,
                        predictions=np.argmax(logits, -1),
                        scalars={"embeddings/silhouette": self.score, "embeddings/accuracy": accuracy},
                        description=f"{len(self.labels)} images of {names}; {EMBEDDING_LAYER} of "
                                    f"{model.name} after epoch {self._epochs}; silhouette "
                                    f"{self.score:.4f}",
                        step=self._epochs)
        if self.png:
            plot_embeddings(self.png, [Panel(f"{model.name}, epoch {self._epochs}", embeddings,
                                             self.labels, self.score)],
                            self.class_names, classes=classes, seed=self.seed)
