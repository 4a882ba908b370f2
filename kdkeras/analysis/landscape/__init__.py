"""Loss landscapes of a trained model: random-direction surfaces and the training path.

The paper argues that KD starts a non-residual (NR) student in a better,
non-chaotic region of the loss landscape. This package measures that region
with the method of Li et al. (2018), "Visualizing the Loss Landscape of
Neural Nets", split by concern:

* :mod:`~kdkeras.analysis.landscape.surface`: the maths. Filter-normalised
  random directions (:func:`random_directions`), the loss and accuracy at
  ``theta + a d1 (+ b d2)`` (:func:`surface_1d`, :func:`surface_2d`) and along
  the straight line from the initial to the trained weights (:func:`path_1d`);
* :mod:`~kdkeras.analysis.landscape.store`: the settings of a result and its
  ``.npz`` file in the run folder (reused when the settings match);
* :mod:`~kdkeras.analysis.landscape.plots`: the figures;
* :mod:`~kdkeras.analysis.landscape.run`: finished runs
  (:func:`landscape_for_run`, :func:`compare_runs`, ``scripts/landscape.py``).

The loss is the mean sparse categorical cross-entropy of the logits over a
fixed set of examples, without the weight-decay term. The model runs in
inference mode: BatchNorm uses its moving statistics, which the random
directions never perturb, and dropout is off. Every grid point assigns the
weights in place; the original weights are restored afterwards, also after an
error or an interrupt. See docs/analysis.md."""

from kdkeras.analysis.landscape.plots import plot_1d, plot_2d, plot_compare
from kdkeras.analysis.landscape.run import (
    check_run,
    compare_output_path,
    compare_runs,
    landscape_for_run,
)
from kdkeras.analysis.landscape.store import (
    DEFAULT_NUM_EXAMPLES,
    LANDSCAPE_DIR,
    Landscape,
    Settings,
    result_paths,
)
from kdkeras.analysis.landscape.surface import (
    DEFAULT_RESOLUTION,
    LOSS_DEFINITION,
    MODES,
    PATH_MARGIN,
    axis_grid,
    evaluate,
    filter_axes,
    normalize_filters,
    path_1d,
    path_alphas,
    random_directions,
    surface_1d,
    surface_2d,
)
from kdkeras.analysis.runs import SPLITS

__all__ = [
    "DEFAULT_NUM_EXAMPLES", "DEFAULT_RESOLUTION", "LANDSCAPE_DIR", "LOSS_DEFINITION", "MODES", "PATH_MARGIN",
    "SPLITS", "Landscape", "Settings", "axis_grid", "check_run", "compare_output_path", "compare_runs",
    "evaluate", "filter_axes", "landscape_for_run", "normalize_filters", "path_1d", "path_alphas", "plot_1d",
    "plot_2d", "plot_compare", "random_directions", "result_paths", "surface_1d", "surface_2d",
]
