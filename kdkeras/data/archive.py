"""The original CIFAR archives (``cifar-*-python.tar.gz``, or their extracted folder), read safely.

The tar is read directly, without extracting it to disk; the pickles are read
with an unpickler that only accepts the few globals a NumPy array needs."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import zlib
from typing import Sequence

import numpy as np

from kdkeras.data.specs import (
    CIFAR_URL,
    SPECS,
    SPLITS,
    DataError,
    DatasetSpec,
    short_error,
    validate_arrays,
)

_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes pickled by Python 3 with protocol 2
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except NumPy array reconstruction."""

    def find_class(self, module, name):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            # NumPy 2 moved numpy.core to numpy._core; avoid the deprecated alias.
            module = "numpy._core." + module[len("numpy.core.") :]
        return super().find_class(module, name)


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        obj = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # any unpickling failure means a damaged file
        raise DataError(
            f"{where} is not a readable CIFAR pickle ({short_error(exc)}); "
            f"download the archive again from {CIFAR_URL}"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{where} holds a {type(obj).__name__}, expected a CIFAR dict")
    return obj


def _decode_batch(obj: dict, spec: DatasetSpec, where: str):
    """Converts one unpickled batch dict into NHWC images and labels."""
    if b"data" not in obj or spec.label_key not in obj:
        other = _other_spec(spec)
        if b"data" in obj and other.label_key in obj:
            raise DataError(
                f"{where} holds {other.title} labels, not {spec.title}; "
                f"use --dataset={other.key} or the {spec.archive_file} archive"
            )
        raise DataError(
            f"{where} lacks the keys b'data' / {spec.label_key!r}; it is not a "
            f"{spec.title} batch file"
        )
    data = np.asarray(obj[b"data"])
    n = data.shape[0] if data.ndim else 0
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{where}: b'data' has shape {data.shape}, expected (N, 3072) "
            f"(32x32 RGB, channel-major); the file is corrupt or not {spec.title}"
        )
    if data.dtype != np.uint8:
        if not np.issubdtype(data.dtype, np.integer) or (
            n and (data.min() < 0 or data.max() > 255)
        ):
            raise DataError(f"{where}: b'data' has dtype {data.dtype}, expected uint8 pixels")
        data = data.astype(np.uint8)
    # Channel-major rows (1024 R, 1024 G, 1024 B, each row-major 32x32) -> NHWC.
    images = data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.asarray(obj[spec.label_key])
    return validate_arrays(images, labels, spec, where)


def _decode_names(obj: dict, spec: DatasetSpec, where: str) -> tuple[str, ...]:
    names = obj.get(spec.names_key)
    if names is None or len(names) != spec.num_classes:
        raise DataError(
            f"{where} lacks {spec.num_classes} class names under {spec.names_key!r}; "
            f"it is not the {spec.title} meta file"
        )
    return tuple(
        n.decode("utf-8", errors="replace") if isinstance(n, bytes) else str(n) for n in names
    )


def _wrong_dataset(spec: DatasetSpec, where: str, found: DatasetSpec) -> DataError:
    return DataError(
        f"{where} contains {found.title} ({found.folder}/), not {spec.title}; "
        f"pass --dataset={found.key} or the {spec.title} archive {spec.archive_file} "
        f"(from {CIFAR_URL})"
    )


def _other_spec(spec: DatasetSpec) -> DatasetSpec:
    return SPECS["cifar10"] if spec is SPECS["cifar100"] else SPECS["cifar100"]


def _read_tar(path: str, spec: DatasetSpec, wanted: set[str]) -> dict[str, bytes]:
    """Reads the members ``<folder>/<name>`` for ``name in wanted`` in one pass."""
    other = _other_spec(spec)
    found: dict[str, bytes] = {}
    # Damaged archives surface as any of these, at open time or while reading.
    damaged = (tarfile.TarError, EOFError, OSError, zlib.error, gzip.BadGzipFile)
    try:
        tar = tarfile.open(path, mode="r:*")
    except damaged as exc:
        # tarfile's ReadError lists every compression it tried: too long to show.
        detail = "not a gzip/bzip2/xz/tar file"
        if not isinstance(exc, tarfile.ReadError):
            detail = short_error(exc)
        raise DataError(
            f"{path!r} is not a readable tar archive ({detail}); pass the original "
            f"{spec.archive_file} (from {CIFAR_URL}) or its extracted folder"
        ) from None
    try:
        with tar:
            # Stream sequentially (seeking backwards in a .tar.gz re-decompresses)
            # and read to the end, so that a truncated download is always noticed.
            for member in tar:
                parts = member.name.replace("\\", "/").strip("/").split("/")
                if len(parts) < 2:
                    continue
                folder, base = parts[-2], parts[-1]
                if folder == other.folder and not found:
                    raise _wrong_dataset(spec, f"archive {path!r}", other)
                if folder != spec.folder or base not in wanted or not member.isfile():
                    continue
                handle = tar.extractfile(member)
                found[base] = handle.read() if handle is not None else b""
                if len(found[base]) != member.size:
                    raise EOFError(f"{member.name} is cut short")
    except DataError:
        raise
    except damaged as exc:
        raise DataError(
            f"archive {path!r} is corrupt or truncated ({short_error(exc)}); download "
            f"{spec.archive_file} again from {CIFAR_URL}"
        ) from None
    missing = sorted(wanted - set(found))
    if missing:
        raise DataError(
            f"archive {path!r} lacks {', '.join(spec.folder + '/' + m for m in missing)}; "
            f"expected the original {spec.archive_file} from {CIFAR_URL}"
        )
    return found


def _read_folder(folder: str, wanted: set[str]) -> dict[str, bytes]:
    found = {}
    missing = []
    for name in sorted(wanted):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            missing.append(name)
            continue
        try:
            with open(path, "rb") as f:
                found[name] = f.read()
        except OSError as exc:
            raise DataError(
                f"cannot read {path!r} ({short_error(exc)}); check its permissions"
            ) from None
    if missing:
        raise DataError(
            f"folder {folder!r} lacks {', '.join(missing)}; extract the complete "
            f"original archive there (from {CIFAR_URL})"
        )
    return found


def read_archive(path, spec: DatasetSpec, splits: Sequence[str]):
    """Loads ``splits`` and the class names from an archive path.

    Returns:
        ``({split: (images, labels)}, class_names)``.
    """
    path = os.path.expanduser(os.fspath(path))
    if not os.path.exists(path):
        raise DataError(
            f"archive path {path!r} does not exist; pass --archive=/path/to/"
            f"{spec.archive_file} (from {CIFAR_URL}) or its extracted folder"
        )
    split_files = {s: spec.split_files[SPLITS.index(s)] for s in splits}
    wanted = {spec.meta_file}.union(*split_files.values())
    other = _other_spec(spec)

    if os.path.isdir(path):
        candidates = [path] if os.path.basename(os.path.normpath(path)) == spec.folder else []
        candidates.append(os.path.join(path, spec.folder))
        folder = next((c for c in candidates if os.path.isdir(c)), None)
        tar_in_dir = os.path.join(path, spec.archive_file)
        if folder is not None:
            blobs = _read_folder(folder, wanted)
            source = folder
        elif os.path.isfile(tar_in_dir):
            blobs = _read_tar(tar_in_dir, spec, wanted)
            source = tar_in_dir
        elif os.path.basename(os.path.normpath(path)) == other.folder or os.path.isdir(
            os.path.join(path, other.folder)
        ):
            raise _wrong_dataset(spec, f"folder {path!r}", other)
        else:
            raise DataError(
                f"folder {path!r} contains neither {spec.folder}/ nor {spec.archive_file}; "
                f"pass --archive=/path/to/{spec.archive_file} (from {CIFAR_URL}) "
                "or its extracted folder"
            )
    else:
        blobs = _read_tar(path, spec, wanted)
        source = path

    where = _where(source, spec.meta_file)
    names = _decode_names(_unpickle(blobs.pop(spec.meta_file), where), spec, where)
    out = {}
    for split, files in split_files.items():
        parts = []
        for fname in files:
            where = _where(source, fname)
            parts.append(_decode_batch(_unpickle(blobs.pop(fname), where), spec, where))
        if len(parts) == 1:
            out[split] = parts[0]
        else:
            out[split] = (
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
            )
    return out, names


def _where(source: str, fname: str) -> str:
    return f"{fname!r} in {source!r}"
