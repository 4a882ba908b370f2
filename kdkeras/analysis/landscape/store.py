"""A landscape's settings and result files: ``<run>/landscape/<mode>-r<resolution>-...npz``, reused when the settings and the model match."""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from kdkeras.analysis.landscape.surface import DEFAULT_RESOLUTION, MODES
from kdkeras.analysis.runs import check_split
from kdkeras.errors import UsageError

#: Examples evaluated when no number is given (fewer when the split is smaller).
DEFAULT_NUM_EXAMPLES = 512

#: Folder of a run's landscape files.
LANDSCAPE_DIR = "landscape"



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
            raise UsageError(f"Unknown mode '{self.mode}'. Valid choices: {', '.join(MODES)}.")
        check_split(self.split)
        resolution = DEFAULT_RESOLUTION[self.mode] if self.resolution is None else int(self.resolution)
        if resolution < 2:
            raise UsageError(f"resolution must be at least 2 grid points per axis (an odd number puts "
                             f"the origin in the middle). Received: {resolution}.")
        if self.mode != "path" and not self.extent > 0:
            raise UsageError(f"range must be positive. Received: {self.extent}.")
        if self.num_examples is not None and self.num_examples < 1:
            raise UsageError(f"num_examples must be a positive integer. Received: {self.num_examples}.")
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be a positive integer. Received: {self.batch_size}.")
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


def file_digest(paths) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def weights_files(run, mode):
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


def load_stored(npz_path, expected):
    if not os.path.exists(npz_path):
        return None
    try:
        stored = Landscape.load(npz_path)
    except (OSError, ValueError, KeyError):
        return None
    same = all(stored.metadata.get(k) == v for k, v in expected.items())
    return stored if same else None
