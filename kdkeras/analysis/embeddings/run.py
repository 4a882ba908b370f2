"""Embeddings of finished runs (``scripts/embed.py``) and of the model being trained (:class:`EmbeddingProjector`)."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from kdkeras.analysis.embeddings.compute import (
    EMBEDDING_LAYER,
    _check_num_points,
    _unwrap,
    class_indices,
    compute_embeddings,
    per_class_accuracy,
    sample_examples,
    separation_score,
    worst_classes,
)
from kdkeras.analysis.embeddings.plots import Panel, plot_embeddings
from kdkeras.analysis.embeddings.projector import PROJECTOR_SUBDIR, write_projector
from kdkeras.errors import UsageError

#: The scatter PNG of ``scripts/embed.py --run``, in the run folder.
PNG_FILE = "embeddings.png"

#: Classes shown when none are chosen: the first run's worst ``DEFAULT_WORST``.
DEFAULT_WORST = 3

DEFAULT_NUM_POINTS = 500



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
    #: The examples' (normalised) images, for the projector's thumbnails.
    images: np.ndarray | None = None


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
        raise UsageError("No runs given.")
    if classes and worst is not None:
        raise UsageError("Pass --classes or --worst, not both.")
    runs_lib.check_split(split, runs[0].config)
    datasets = {run.config.dataset for run in runs}
    if len(datasets) > 1:
        listing = ", ".join(f"{run.name} ({run.config.dataset})" for run in runs)
        raise UsageError(f"The runs are on different datasets: {listing}; compare runs of one dataset.")
    if num_points < 1:
        raise UsageError(f"--num_points must be a positive integer. Received: {num_points}.")

    first = runs[0]
    images, labels, class_names = runs_lib.split_arrays(first.config, split)
    chosen = class_indices(classes, class_names) if classes else None
    if chosen is None:
        k = min(DEFAULT_WORST, len(class_names)) if worst is None else int(worst)
        if not 1 <= k <= len(class_names):
            raise UsageError(f"--worst={k} must be between 1 and {len(class_names)}, the number of "
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
                          class_names=tuple(class_names), split=split, class_accuracy=class_accuracy,
                          images=images[indices])

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
                    images=selection.images, scalars={"embeddings/silhouette": result.score,
                             "embeddings/accuracy": result.accuracy},
                    description=describe(selection, result))
    png = plot_embeddings(run.path(PNG_FILE), [Panel(result.panel_title, result.embeddings,
                                                     selection.labels, result.score)],
                          selection.class_names, classes=selection.classes, seed=seed, log=log)
    return directory, png


def compare_output_path(runs) -> str:
    """Default PNG of a comparison: ``<dataset folder>/embeddings_<A>_vs_<B>....png``.

    See :func:`kdkeras.analysis.runs.compare_output_path`.
    """
    from kdkeras.analysis.runs import compare_output_path as output_path

    return output_path(runs, "embeddings")


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
                                  os.path.join(run_dir, PROJECTOR_SUBDIR))
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
            raise UsageError(f"EmbeddingProjector needs 2 to {len(self.labels) - 1} classes among its "
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
                        predictions=np.argmax(logits, -1), images=self.images,
                        scalars={"embeddings/silhouette": self.score, "embeddings/accuracy": accuracy},
                        description=f"{len(self.labels)} images of {names}; {EMBEDDING_LAYER} of "
                                    f"{model.name} after epoch {self._epochs}; silhouette "
                                    f"{self.score:.4f}",
                        step=self._epochs)
        if self.png:
            plot_embeddings(self.png, [Panel(f"{model.name}, epoch {self._epochs}", embeddings,
                                             self.labels, self.score)],
                            self.class_names, classes=classes, seed=self.seed)
