"""What data a run reads, as a fingerprint: part of the run's identity (docs/reliability.md, "Data identity").

A run's name hashes the settings that change what it computes; the data it
reads is one of them. :func:`fingerprint` names the source a run would read,
without loading it, and the content of that source:

========================  ==========================================================
source                    content
========================  ==========================================================
``--archive`` file        SHA-256 of the file (cached by path, size and mtime)
``--archive`` folder      SHA-256 of the batch files the reader takes from it
TFDS (prepared folder)    builder name and version (``tfds:cifar100/3.0.2``)
Keras's cache             SHA-256 of the cached archive (the official checksum)
not there yet             the official checksum: a download is checked against it
image folder              SHA-1 over the sorted relative paths and sizes of its files
synthetic                 its generator's parameters
========================  ==========================================================

The content alone makes the identity (:attr:`DataFingerprint.id`), so the
same archive under another path is the same run, and another archive under
the same path is another run. The paper's data (the official CIFAR archives,
by their published checksums, or TFDS's build of them) and the built-in
synthetic data are *canonical*: their runs keep the plain names
(``wrn22x2_R_g2-s0``); any other data adds its id to the run name's hash. The sizes and the seeded subset selection are
settings of the run (``train_size``, ``val_size``, ``test_size``, ``seed``)
and already part of its name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from kdkeras.data.hashing import CACHE_VARIABLE, cache_dir, file_sha256  # noqa: F401 (re-exported)

#: Bump when a content string's meaning changes: every fingerprint changes with it.
VERSION = 1


@dataclasses.dataclass(frozen=True)
class DataFingerprint:
    """The data a run reads.

    Attributes:
        dataset: the dataset name (``cifar100``, ``cifar10``, ``synthetic``, ``folder``).
        source: ``archive``, ``archive-folder``, ``tfds``, ``keras-cache``,
            ``download`` (not there yet), ``folder`` or ``synthetic``.
        content: what identifies the data itself (see the module docstring).
        where: the path read, for people (not part of the identity).
    """

    dataset: str
    source: str
    content: str
    where: str | None = None

    @property
    def id(self) -> str:
        """12 hex digits of the dataset and content: the data's part of a run's identity."""
        text = json.dumps({"v": VERSION, "dataset": self.dataset, "content": self.content}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    @property
    def canonical(self) -> bool:
        """The paper's data (an official CIFAR archive or TFDS's build of it) or the synthetic generator."""
        from kdkeras.data.download import CHECKSUMS

        if self.source in ("tfds", "synthetic"):
            return True
        return self.content.startswith("sha256:") and self.content[len("sha256:"):] in CHECKSUMS.values()

    def to_dict(self) -> dict:
        return {"id": self.id, "dataset": self.dataset, "source": self.source, "content": self.content,
                "where": self.where}

    def describe(self) -> str:
        """One line for people: ``cifar100 data 1a2b3c4d5e6f (archive /data/cifar-100-python.tar.gz)``."""
        return f"{self.dataset} data {self.id} ({self.source}{' ' + self.where if self.where else ''})"


def _files_digest(paths) -> str:
    """SHA-256 over the named SHA-256s of several files (their base names and contents)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{os.path.basename(path)}={file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _archive_fingerprint(dataset: str, spec, archive) -> DataFingerprint:
    """The source that :func:`kdkeras.data.archive.read_archive` reads at ``archive``, and its content."""
    from kdkeras.data.download import CHECKSUMS

    path = os.path.abspath(os.path.expanduser(os.fspath(archive)))
    if os.path.isfile(path):
        return DataFingerprint(dataset, "archive", f"sha256:{file_sha256(path)}", path)
    if os.path.isdir(path):
        candidates = [path] if os.path.basename(os.path.normpath(path)) == spec.folder else []
        candidates.append(os.path.join(path, spec.folder))
        folder = next((c for c in candidates if os.path.isdir(c)), None)
        if folder is not None:
            names = (spec.meta_file,) + tuple(f for split in spec.split_files for f in split)
            files = [os.path.join(folder, n) for n in names]
            if all(os.path.isfile(f) for f in files):
                return DataFingerprint(dataset, "archive-folder", f"files:{_files_digest(files)}", folder)
        tar = os.path.join(path, spec.archive_file)
        if os.path.isfile(tar):
            return DataFingerprint(dataset, "archive", f"sha256:{file_sha256(tar)}", tar)
    if os.path.basename(path) == spec.archive_file:  # downloaded there on first use, checked against this
        return DataFingerprint(dataset, "download", f"sha256:{CHECKSUMS[spec.archive_file]}", path)
    # Nothing readable there: the run will stop with the reader's one-line error; the name still differs.
    return DataFingerprint(dataset, "missing", f"missing:{path}", path)


_tfds_found: dict = {}


def _tfds_fingerprint(dataset: str, spec, data_dir) -> DataFingerprint | None:
    """The prepared TFDS dataset in ``data_dir`` (TFDS's default folder when ``None``), or ``None``.

    Looked up once per process and folder (TFDS's import and lookup take about a second).
    """
    key = (spec.tfds_name, None if data_dir is None else os.path.abspath(os.fspath(data_dir)))
    if key not in _tfds_found:
        _tfds_found[key] = _find_tfds(dataset, spec, data_dir)
    return _tfds_found[key]


def _find_tfds(dataset: str, spec, data_dir) -> DataFingerprint | None:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return None
    try:
        builder = tfds.builder(spec.tfds_name, data_dir=None if data_dir is None else os.fspath(data_dir),
                               try_gcs=False)
        prepared = os.path.isfile(os.path.join(builder.data_dir, "dataset_info.json"))
    except Exception:  # noqa: BLE001  (TFDS signals "not there" in several ways)
        return None
    if not prepared:
        return None
    return DataFingerprint(dataset, "tfds", f"tfds:{spec.tfds_name}/{builder.version}", builder.data_dir)


def _folder_fingerprint(data_dir) -> DataFingerprint:
    """An image folder: SHA-1 over the sorted relative paths and sizes of every file under it."""
    root = os.path.realpath(os.path.expanduser(os.fspath(data_dir)))
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue  # the statistics cache and other hidden files are not data
            path = os.path.join(folder, name)
            try:
                size = os.path.getsize(path)
            except OSError:
                continue
            entries.append(f"{os.path.relpath(path, root)}\0{size}")
    digest = hashlib.sha1("\n".join(sorted(entries)).encode("utf-8", "surrogateescape")).hexdigest()
    return DataFingerprint("folder", "folder", f"files:{digest}", root)


def fingerprint(dataset: str, archive=None, data_dir=None) -> DataFingerprint:
    """The data a run with these settings reads, without loading it.

    Follows the loaders' order (:func:`kdkeras.data.load_splits`): for CIFAR,
    ``archive`` when given, else a prepared TFDS folder, else Keras's cache,
    else the official archive that would be downloaded.
    """
    if dataset == "synthetic":
        from kdkeras.data.specs import IMAGE_SHAPE, SYNTHETIC_CLASSES, SYNTHETIC_SEED

        content = (f"synthetic:templates+noise seed={SYNTHETIC_SEED} classes={SYNTHETIC_CLASSES} "
                   f"shape={'x'.join(map(str, IMAGE_SHAPE))}")
        return DataFingerprint(dataset, "synthetic", content)
    if dataset == "folder":
        return _folder_fingerprint(data_dir)
    from kdkeras.data.download import CHECKSUMS, cached_archive
    from kdkeras.data.specs import SPECS

    spec = SPECS[dataset]
    if archive is not None:
        return _archive_fingerprint(dataset, spec, archive)
    tfds_found = _tfds_fingerprint(dataset, spec, data_dir)
    if tfds_found is not None:
        return tfds_found
    cached = cached_archive(spec)
    if cached is not None:
        if os.path.isfile(cached):  # cached_archive has checked it against the official checksum
            return DataFingerprint(dataset, "keras-cache", f"sha256:{CHECKSUMS[spec.archive_file]}", cached)
        return _archive_fingerprint(dataset, spec, cached)
    return DataFingerprint(dataset, "download", f"sha256:{CHECKSUMS[spec.archive_file]}", None)


def of_config(config) -> DataFingerprint:
    """The fingerprint of a :class:`kdkeras.config.RunConfig`'s data settings."""
    return fingerprint(config.dataset, archive=config.archive, data_dir=config.data_dir)
