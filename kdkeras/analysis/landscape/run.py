"""Landscapes of finished runs (``scripts/landscape.py``): the examples, the stored result, the figure."""

from __future__ import annotations

import dataclasses
import os

from kdkeras.analysis.landscape.plots import plot_1d, plot_2d, plot_compare
from kdkeras.analysis.landscape.store import (
    DEFAULT_NUM_EXAMPLES,
    Landscape,
    Settings,
    file_digest,
    load_stored,
    result_paths,
    weights_files,
)
from kdkeras.analysis.landscape.surface import (
    LOSS_DEFINITION,
    axis_grid,
    path_1d,
    path_alphas,
    random_directions,
    surface_1d,
    surface_2d,
)
from kdkeras.errors import UsageError


def check_run(run, settings: Settings) -> None:
    """Fails early (one line) when the run cannot give this landscape."""
    from kdkeras.analysis import runs

    if settings.mode == "path" and not os.path.exists(run.path(runs.INITIAL_WEIGHTS_FILE)):
        runs.load_initial_model(run)  # raises its one-line FileNotFoundError


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
    expected = {**settings.metadata(), "weights_digest": file_digest(weights_files(run, settings.mode))}
    stored = None if recompute else load_stored(npz_path, expected)
    if stored is not None:
        log(f"Reusing {npz_path} (same settings and model)")
        landscape = stored
    else:
        x, y, _ = data or runs.split_arrays(run.config, settings.split, size=settings.num_examples, seed=0)
        if len(y) < settings.num_examples:
            raise UsageError(f"num_examples={settings.num_examples} is more than the {settings.split} "
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
    """Default PNG of a comparison: ``<dataset folder>/landscape-<settings>_<A>_vs_<B>....png``.

    See :func:`kdkeras.analysis.runs.compare_output_path`.
    """
    from kdkeras.analysis.runs import compare_output_path as output_path

    return output_path(run_list, f"landscape-{settings.resolved().stem()}")


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
        raise UsageError("--compare overlays 1-D curves: use --mode=1d or --mode=path.")
    if not run_list:
        raise UsageError("--compare needs at least one run folder.")
    datasets = sorted({run.config.dataset for run in run_list})
    if len(datasets) > 1:
        listing = ", ".join(f"{run.name}: {run.config.dataset}" for run in run_list)
        raise UsageError(f"--compare needs runs on one dataset; these are on {', '.join(datasets)} "
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
