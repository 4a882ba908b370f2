"""Penultimate-layer embeddings (the paper's Figure 2): features, TensorBoard projector files, PCA / t-SNE figures.

The paper's Figure 2 shows the penultimate-layer features (the global average
pooling output, layer ``avg_pool``) of a few classes for a residual teacher,
the R and NR baselines and the NR student distilled from the teacher. The
package is split by concern:

* :mod:`~kdkeras.analysis.embeddings.compute`: the features, the choice of
  classes and examples, the separation score and 2-D projections;
* :mod:`~kdkeras.analysis.embeddings.projector`: TensorBoard projector files;
* :mod:`~kdkeras.analysis.embeddings.plots`: the scatter figures;
* :mod:`~kdkeras.analysis.embeddings.run`: finished runs (:func:`embed_runs`,
  ``scripts/embed.py``) and the :class:`EmbeddingProjector` callback.

::

    model = runs.load_run_model(run)
    embeddings, logits = compute_embeddings(model, images)
    score = separation_score(embeddings, labels)       # silhouette, full space
    write_projector(run.path("tensorboard/projector"), embeddings, labels, class_names)
    plot_embeddings(run.path("embeddings.png"), [Panel(run.label, embeddings, labels, score)],
                    class_names)

See docs/analysis.md."""

from kdkeras.analysis.embeddings.compute import (
    EMBEDDING_LAYER,
    METHODS,
    class_indices,
    compute_embeddings,
    penultimate_model,
    per_class_accuracy,
    project_2d,
    sample_examples,
    separation_score,
    worst_classes,
)
from kdkeras.analysis.embeddings.plots import Panel, plot_embeddings
from kdkeras.analysis.embeddings.projector import (
    EVENTS_SUFFIX,
    METADATA_FILE,
    PROJECTOR_CONFIG_FILE,
    PROJECTOR_SUBDIR,
    SPRITE_FILE,
    TENSORS_FILE,
    read_projector_config,
    sprite_image,
    write_projector,
)
from kdkeras.analysis.embeddings.run import (
    DEFAULT_NUM_POINTS,
    DEFAULT_WORST,
    PNG_FILE,
    EmbeddingProjector,
    RunEmbedding,
    Selection,
    compare_output_path,
    describe,
    embed_runs,
    write_run_outputs,
)
from kdkeras.analysis.runs import SPLITS

__all__ = [
    "DEFAULT_NUM_POINTS", "DEFAULT_WORST", "EMBEDDING_LAYER", "EVENTS_SUFFIX", "METADATA_FILE", "METHODS",
    "PNG_FILE", "PROJECTOR_CONFIG_FILE", "PROJECTOR_SUBDIR", "SPLITS", "SPRITE_FILE", "TENSORS_FILE", "EmbeddingProjector",
    "Panel", "RunEmbedding", "Selection", "class_indices", "compare_output_path", "compute_embeddings",
    "describe", "embed_runs", "penultimate_model", "per_class_accuracy", "plot_embeddings", "project_2d",
    "read_projector_config", "sample_examples", "separation_score", "sprite_image", "worst_classes",
    "write_projector",
    "write_run_outputs",
]
