"""The original CIFAR archives on first use: found in Keras's cache, or downloaded there with a checksum.

When a CIFAR dataset is asked for without an archive and no prepared TFDS
folder holds it (:mod:`~kdkeras.data.loading`), :func:`find_or_download`
looks for the original ``cifar-*-python.tar.gz`` in Keras's dataset cache
(``$KERAS_HOME/datasets``, else ``~/.keras/datasets``) and otherwise
downloads it there with ``keras.utils.get_file``, checked against the
SHA-256 that Keras's own ``keras.datasets.cifar100`` / ``cifar10`` check
(:data:`CHECKSUMS`). The file is then read like ``--archive``.

* ``--nodownload`` (``RunConfig.download=False``) or the environment
  variable ``KDKERAS_NODOWNLOAD=1`` turns downloads off.
* ``--data_mirror=URL`` (``RunConfig.data_mirror``) or
  ``KDKERAS_DATA_MIRROR=URL`` downloads ``URL/<archive file>`` instead of
  the original address; the checksum is the same. urllib also honours
  ``https_proxy`` / ``http_proxy``.
* Offline, a quick probe of the address (at most :data:`PROBE_TIMEOUT_S`
  seconds, name lookup included) fails first, so the run stops within
  seconds with a one-line :class:`DataError` saying how to provide the data.
* The download goes to a temporary name and is renamed only once its
  checksum matches: an interrupted, truncated or wrong download never
  stays in the cache.

The download settings of the process are :func:`configure` /
:func:`using`; every function also takes them as arguments.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request

from kdkeras.data.specs import DataError, DatasetSpec, short_error

#: Where the archives are published (the archive's file name is appended).
ORIGIN = "https://www.cs.toronto.edu/~kriz/"

#: SHA-256 of each archive: the values ``keras.datasets.cifar100`` / ``cifar10``
#: check (the CIFAR page publishes their MD5s: cifar-100-python.tar.gz
#: eb9058c3a382ffc7106e4002c42a8d85, cifar-10-python.tar.gz
#: c58f30108f718f92721af3b95e74349a).
CHECKSUMS = {
    "cifar-100-python.tar.gz": "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
    "cifar-10-python.tar.gz": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
}

#: Environment variable: base URL of a mirror (``--data_mirror`` wins over it).
MIRROR_VARIABLE = "KDKERAS_DATA_MIRROR"
#: Environment variable: any value but ``0`` turns downloads off, whatever the flags say.
NODOWNLOAD_VARIABLE = "KDKERAS_NODOWNLOAD"
#: Longest wait for the first answer of the server (name lookup and connection included).
PROBE_TIMEOUT_S = 8.0
#: Longest stall while downloading (a socket timeout, per read).
READ_TIMEOUT_S = 60.0
#: Sub-folder of the Keras home that holds the archives (as ``keras.datasets`` uses).
CACHE_SUBDIR = "datasets"

_SCHEMES = ("http", "https", "file")
_settings = {"enabled": True, "mirror": None}


def configure(enabled: bool | None = None, mirror: str | None = None) -> dict:
    """Sets the process's download settings; ``None`` keeps a setting. Returns the previous ones.

    Args:
        enabled: download a missing archive (``False``: fail instead).
        mirror: base URL to download from instead of :data:`ORIGIN`
            (``""`` clears it).
    """
    previous = dict(_settings)
    if enabled is not None:
        _settings["enabled"] = bool(enabled)
    if mirror is not None:
        _settings["mirror"] = check_mirror(mirror) if mirror else None
    return previous


@contextlib.contextmanager
def using(enabled: bool | None = None, mirror: str | None = None):
    """:func:`configure` for the duration of a ``with`` block."""
    previous = configure(enabled, mirror)
    try:
        yield
    finally:
        _settings.update(previous)


def check_mirror(mirror: str) -> str:
    """Returns ``mirror`` if it is an ``http(s)://`` or ``file://`` URL; raises :class:`DataError` otherwise."""
    text = str(mirror).strip()
    if urllib.parse.urlsplit(text).scheme not in _SCHEMES:
        raise DataError(f"data mirror {mirror!r} is not a URL; pass a base URL such as "
                        f"https://example.org/cifar/ (the archive's file name is appended)")
    return text


def downloads_enabled(enabled: bool | None = None) -> bool:
    """Whether a missing archive is downloaded: ``enabled`` (``None``: the process setting), unless $KDKERAS_NODOWNLOAD."""
    if os.environ.get(NODOWNLOAD_VARIABLE, "").strip() not in ("", "0"):
        return False
    return _settings["enabled"] if enabled is None else bool(enabled)


def archive_url(spec: DatasetSpec, mirror: str | None = None) -> str:
    """The URL of ``spec``'s archive: ``mirror`` (or the process's, or $KDKERAS_DATA_MIRROR) + file name, else :data:`ORIGIN`."""
    base = mirror or _settings["mirror"] or os.environ.get(MIRROR_VARIABLE, "").strip() or None
    base = ORIGIN if base is None else check_mirror(base)
    return base.rstrip("/") + "/" + spec.archive_file


def cache_dir() -> str:
    """Keras's dataset cache, as ``keras.utils.get_file`` picks it (read at each call).

    ``$KERAS_HOME/datasets``, else ``~/.keras/datasets``; ``/tmp/.keras/datasets``
    when that home cannot be written.
    """
    home = os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))
    with contextlib.suppress(OSError):
        os.makedirs(home, exist_ok=True)
    if not os.access(home, os.W_OK):
        home = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return os.path.join(home, CACHE_SUBDIR)


def sha256(path: str) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_archive(spec: DatasetSpec) -> str | None:
    """The cached copy of ``spec``'s data, or ``None``.

    The archive ``<cache>/<archive file>`` counts when its checksum matches;
    so does a complete extracted folder left by Keras's own loaders
    (``<cache>/cifar-100-python-target/cifar-100-python/``, or
    ``<cache>/cifar-100-python/`` of older Keras versions).
    """
    folder = cache_dir()
    path = os.path.join(folder, spec.archive_file)
    if os.path.isfile(path):
        from kdkeras.data.hashing import file_sha256  # cached by path, size and mtime

        if file_sha256(path) == CHECKSUMS[spec.archive_file]:
            return path
    files = (spec.meta_file,) + tuple(f for split in spec.split_files for f in split)
    for extracted in (os.path.join(folder, spec.folder + "-target", spec.folder), os.path.join(folder, spec.folder)):
        if all(os.path.isfile(os.path.join(extracted, f)) for f in files):
            return extracted
    return None


def _how(spec: DatasetSpec) -> str:
    """How to provide the data (short: the whole message must fit the scripts' one-line limit)."""
    return (f"Provide it with --archive=/path/to/{spec.archive_file}, --data_dir=<folder from "
            f"`tfds build {spec.tfds_name}`> or a mirror (--data_mirror=URL), or use --dataset=synthetic "
            "for a smoke run.")


def _off_reason() -> str:
    if os.environ.get(NODOWNLOAD_VARIABLE, "").strip() not in ("", "0"):
        return f"downloads are off (${NODOWNLOAD_VARIABLE} is set)"
    return "downloads are off (--nodownload)"


def _probe(url: str, timeout: float) -> str | None:
    """``None`` if ``url`` answers within ``timeout`` seconds (any HTTP status but 404/410), else why not.

    A HEAD request in a daemon thread, so that a hanging name lookup is
    bounded too.
    """
    result: dict = {}

    def attempt():
        try:
            request = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(request, timeout=timeout):
                pass
        except urllib.error.HTTPError as exc:
            result["status"] = exc.code
        except Exception as exc:  # URLError, timeouts, refused connections: unreachable
            result["error"] = getattr(exc, "reason", None) or exc

    thread = threading.Thread(target=attempt, name="kdkeras-download-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return f"cannot reach {url} (no answer within {timeout:g} s)"
    if "error" in result:
        error = result["error"]
        detail = short_error(error, 80) if isinstance(error, BaseException) else str(error)[:80]
        return f"cannot reach {url} ({detail})"
    if result.get("status") in (404, 410):
        return f"{url} does not exist (HTTP {result['status']})"
    return None


def download(spec: DatasetSpec, directory: str | None = None, *, mirror: str | None = None,
             missing: str = "") -> str:
    """Downloads ``spec``'s archive into ``directory`` (default :func:`cache_dir`), checked; returns its path.

    Does not look at the download settings (see :func:`find_or_download`).
    ``missing`` starts the message of an unreachable server (where the data
    was looked for).

    Raises:
        DataError: the server cannot be reached, the download fails, or the
            file's SHA-256 differs from :data:`CHECKSUMS` (nothing is kept).
    """
    import keras

    url = archive_url(spec, mirror)
    directory = os.path.abspath(directory or cache_dir())
    problem = _probe(url, PROBE_TIMEOUT_S)
    if problem:
        raise DataError(f"{missing or spec.title + ' is missing'}, and {problem}. {_how(spec)}")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the download folder {directory!r} ({short_error(exc)}); "
                        f"set KERAS_HOME to a writable folder. {_how(spec)}") from None
    if not os.access(directory, os.W_OK):
        raise DataError(f"cannot download {spec.archive_file} into {directory!r}: the folder is not "
                        f"writable. {_how(spec)}")
    expected = CHECKSUMS[spec.archive_file]
    final = os.path.join(directory, spec.archive_file)
    partial = f"{spec.archive_file}.{os.getpid()}.part"  # renamed once checked
    partial_path = os.path.join(directory, partial)
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(READ_TIMEOUT_S)  # urllib's download below takes no timeout of its own
    try:
        keras.utils.get_file(fname=partial, origin=url, file_hash=expected, hash_algorithm="sha256",
                             cache_dir=directory, cache_subdir="")
        os.replace(partial_path, final)
    except ValueError:  # get_file: the hash differs
        raise DataError(f"the file downloaded from {url} does not match the SHA-256 of {spec.archive_file} "
                        f"({expected[:16]}...): a damaged download, or the mirror serves another file; "
                        f"nothing was kept. Try again. {_how(spec)}") from None
    except Exception as exc:  # get_file reports network failures as a bare Exception
        raise DataError(f"downloading {url} failed ({short_error(exc, 120)}); nothing was kept. "
                        f"{_how(spec)}") from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
        with contextlib.suppress(OSError):
            os.remove(partial_path)
    return final


def find_or_download(spec: DatasetSpec, *, looked_in: str = "", enabled: bool | None = None,
                     mirror: str | None = None) -> str:
    """``spec``'s data from Keras's cache, downloaded there first when missing; returns a path for ``read_archive``.

    Args:
        spec: a CIFAR dataset spec.
        looked_in: where the data was looked for already (for the message),
            e.g. ``"TFDS data_dir '~/tensorflow_datasets'"``.
        enabled: download when missing (``None``: the process setting).
        mirror: base URL to download from (``None``: the process setting,
            then $KDKERAS_DATA_MIRROR, then :data:`ORIGIN`).

    Raises:
        DataError: missing and not downloadable (one line: why, and how to
            provide the data).
    """
    cached = cached_archive(spec)
    if cached is not None:
        return cached
    where = f"{looked_in} or " if looked_in else ""
    missing = f"{spec.title} not found in {where}the Keras cache '{cache_dir()}'"
    if not downloads_enabled(enabled):
        raise DataError(f"{missing}, and {_off_reason()}. {_how(spec)}")
    return download(spec, mirror=mirror, missing=missing)


def archive_at(path, spec: DatasetSpec, *, enabled: bool | None = None, mirror: str | None = None):
    """``path`` of ``--archive``, downloaded there first when it is missing and named like the original archive.

    ``--archive=cifar-100-python.tar.gz`` in a fresh folder thus fetches the
    archive once (checked like :func:`download`); any other missing path is
    left to the archive reader's "does not exist" message.
    """
    full = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if (os.path.exists(full) or os.path.basename(full) != spec.archive_file
            or not os.path.isdir(os.path.dirname(full)) or not downloads_enabled(enabled)):
        return path
    return download(spec, os.path.dirname(full), mirror=mirror,
                    missing=f"archive path {os.fspath(path)!r} does not exist")
