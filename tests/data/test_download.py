"""Downloading CIFAR on first use (kdkeras.data.download), offline: a local HTTP server plays the mirror.

A tiny archive in the original format (tests/cifar_archives.py) is served on
127.0.0.1 under its real file name; its checksum replaces the published one
in ``download.CHECKSUMS`` for the test. ``KERAS_HOME`` points at a temporary
folder, so the real ``~/.keras`` is never written.
"""

import hashlib
import http.server
import os
import socket
import subprocess
import threading
import urllib.request

import numpy as np
import pytest
from cifar_archives import CIFAR100, write_cifar
from helpers import error_lines, record_calls, script_command, script_env

from kdkeras import config as config_lib
from kdkeras import data
from kdkeras.data import download
from kdkeras.data.specs import DataError


@pytest.fixture
def closed_port_url():
    """``http://127.0.0.1:<port>`` where nothing listens: a port the OS gave this test, bound but not listening.

    Kept bound for the whole test, so no other process can take it; connecting to it is refused at once.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{held.getsockname()[1]}"


class _Server:
    """Serves ``files`` (``{url path: bytes}``) on 127.0.0.1; ``truncate``: send half of each body."""

    def __init__(self, files):
        self.files = files
        self.truncate = False
        self.requests = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body):
                owner.requests.append((self.command, self.path))
                blob = owner.files.get(self.path)
                if blob is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(blob)))
                self.end_headers()
                if body:
                    self.wfile.write(blob[: len(blob) // 2] if owner.truncate else blob)

            def do_HEAD(self):  # noqa: N802
                self._answer(body=False)

            def do_GET(self):  # noqa: N802
                self._answer(body=True)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mirror/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def gets(self):
        return [path for command, path in self.requests if command == "GET"]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archive(tmp_path_factory):
    """``(bytes, sha256, train arrays, test arrays)`` of a tiny CIFAR-100 archive."""
    root = tmp_path_factory.mktemp("served")
    path, train, test = write_cifar(str(root), CIFAR100, n_train=40, n_test=20)
    with open(path, "rb") as f:
        blob = f.read()
    return blob, hashlib.sha256(blob).hexdigest(), train, test


@pytest.fixture
def server(archive, monkeypatch):
    """The mirror, with the archive's checksum in ``CHECKSUMS`` and a temporary Keras cache."""
    blob, digest, _, _ = archive
    srv = _Server({"/mirror/" + CIFAR100.archive_file: blob})
    monkeypatch.setitem(download.CHECKSUMS, CIFAR100.archive_file, digest)
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Downloads allowed, Keras's cache in ``tmp_path/keras``, no mirror from the caller's environment."""
    monkeypatch.delenv(download.NODOWNLOAD_VARIABLE, raising=False)
    monkeypatch.delenv(download.MIRROR_VARIABLE, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with download.using(enabled=True, mirror=""):
        yield


def _cache(tmp_path):
    return tmp_path / "keras" / "datasets"


def _one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert message and "\n" not in message
    return message


def test_first_use_downloads_checks_and_reads_then_the_cache_serves(tmp_path, archive, server):
    _, digest, (x_train, y_train), (x_test, y_test) = archive
    config = config_lib.resolve({"model": "wrn16x1_R_g2", "dataset": "cifar100", "data_dir": str(tmp_path / "tfds"),
                                 "data_mirror": server.url, "batch_size": 8})
    assert config.download is True
    from kdkeras import runtime
    from kdkeras.training import make_run_data

    with download.using():  # the process's download settings come back afterwards
        runtime.apply(config)  # as a run's start does: the run's download settings
        splits = make_run_data(config)  # a run's data loading: TFDS lacks it, so it is downloaded
    assert (splits.info.train_examples, splits.info.test_examples) == (40, 20)
    assert splits.info.class_names[1] == "cifar-100_name_1"
    cached = _cache(tmp_path) / CIFAR100.archive_file
    assert sorted(os.listdir(_cache(tmp_path))) == [CIFAR100.archive_file]  # no partial file left
    assert download.sha256(str(cached)) == digest
    assert server.gets() == ["/mirror/" + CIFAR100.archive_file]
    x, y = data.load_arrays("cifar100", "train", data_dir=str(tmp_path / "tfds"))
    np.testing.assert_array_equal(x, x_train)
    np.testing.assert_array_equal(y, y_train)

    # Second use: the cache, without the server and with downloads off.
    server.stop()
    x, y = data.load_arrays("cifar100", "test", data_dir=str(tmp_path / "tfds"), download=False)
    np.testing.assert_array_equal(x, x_test)
    np.testing.assert_array_equal(y, y_test)
    assert server.gets() == ["/mirror/" + CIFAR100.archive_file]


def test_mirror_from_the_environment_variable(tmp_path, server, monkeypatch):
    monkeypatch.setenv(download.MIRROR_VARIABLE, server.url.rstrip("/"))
    assert download.archive_url(CIFAR100) == server.url + CIFAR100.archive_file
    assert download.archive_url(CIFAR100, "https://example.org/x/") == "https://example.org/x/" + CIFAR100.archive_file
    x, _ = data.load_arrays("cifar100", "train", data_dir=str(tmp_path / "tfds"), size=10)
    assert x.shape == (10, 32, 32, 3)
    assert len(server.gets()) == 1


def test_wrong_checksum_is_one_line_and_keeps_nothing(tmp_path, server, monkeypatch):
    monkeypatch.setitem(download.CHECKSUMS, CIFAR100.archive_file, "0" * 64)
    with pytest.raises(DataError) as exc:
        data.load_arrays("cifar100", "train", data_dir=str(tmp_path / "tfds"), mirror=server.url)
    message = _one_line(exc)
    assert "does not match the SHA-256" in message and "nothing was kept" in message
    assert os.listdir(_cache(tmp_path)) == []


def test_truncated_download_keeps_nothing(tmp_path, server):
    server.truncate = True
    with pytest.raises(DataError) as exc:
        data.load_arrays("cifar100", "train", data_dir=str(tmp_path / "tfds"), mirror=server.url)
    assert "nothing was kept" in _one_line(exc)
    assert os.listdir(_cache(tmp_path)) == []


def test_file_missing_on_the_mirror(tmp_path, server):
    with pytest.raises(DataError) as exc:
        data.load_arrays("cifar10", "train", data_dir=str(tmp_path / "tfds"), mirror=server.url)
    message = _one_line(exc)
    assert "cifar-10-python.tar.gz does not exist (HTTP 404)" in message and "--archive" in message


def test_unreachable_mirror_and_nodownload_fail_fast(tmp_path, monkeypatch, closed_port_url):
    import keras

    connections = record_calls(monkeypatch, socket, "create_connection")
    requests = record_calls(monkeypatch, urllib.request, "urlopen")
    downloads = record_calls(monkeypatch, keras.utils, "get_file")
    host_port = ("127.0.0.1", int(closed_port_url.rsplit(":", 1)[1]))
    for kwargs, fragment, probes in (
            ({"mirror": closed_port_url}, f"cannot reach {closed_port_url}/", 1),
            ({"download": False}, "downloads are off (--nodownload)", 0)):
        del connections[:], requests[:], downloads[:]
        with pytest.raises(DataError) as exc:
            data.load_arrays("cifar100", "train", data_dir=str(tmp_path / "tfds"), **kwargs)
        message = _one_line(exc)
        assert fragment in message and "CIFAR-100" in message
        assert "--archive" in message and "--data_mirror" in message and "--dataset=synthetic" in message
        for thread in threading.enumerate():  # the probe's thread has recorded its calls (it ends at once here)
            if thread.name == "kdkeras-download-probe":
                thread.join(120)
        # Fast whatever the machine: downloads off try no connection at all; an unreachable mirror costs one
        # HEAD request bounded by the probe's short timeout (refused at once here), and no download.
        assert len(requests) == probes and downloads == []
        for (request,), options in requests:
            assert request.get_method() == "HEAD" and request.full_url.startswith(closed_port_url + "/")
            assert options["timeout"] == download.PROBE_TIMEOUT_S
        assert [(args[0], options.get("timeout", args[1] if len(args) > 1 else None))
                for args, options in connections] == [(host_port, download.PROBE_TIMEOUT_S)] * probes
    assert not _cache(tmp_path).exists() or os.listdir(_cache(tmp_path)) == []


def test_missing_archive_path_with_the_original_name_is_downloaded_there(tmp_path, archive, server):
    target = tmp_path / "data" / CIFAR100.archive_file
    target.parent.mkdir()
    x, _ = data.load_arrays("cifar100", "train", archive=str(target), mirror=server.url)
    np.testing.assert_array_equal(x, archive[2][0])
    assert sorted(os.listdir(target.parent)) == [CIFAR100.archive_file]
    with pytest.raises(DataError, match="does not exist"):  # another name: not downloaded
        data.load_arrays("cifar100", "train", archive=str(tmp_path / "data" / "other.tar.gz"), mirror=server.url)
    assert len(server.gets()) == 1


def test_folder_extracted_by_keras_datasets_is_used(tmp_path):
    folder = _cache(tmp_path) / (CIFAR100.folder + "-target")
    _, (x_train, _), _ = write_cifar(str(folder), CIFAR100, tar=False)
    x, _ = data.load_arrays("cifar100", "train", data_dir=str(tmp_path / "tfds"), download=False)
    np.testing.assert_array_equal(x, x_train)


def test_config_download_and_mirror_are_validated_process_settings():
    plain = config_lib.resolve({"model": "wrn16x1_R_g2", "dataset": "synthetic"})
    off = config_lib.resolve({"model": "wrn16x1_R_g2", "dataset": "synthetic", "download": False,
                              "data_mirror": "https://example.org/cifar"})
    assert plain.download and not off.download
    assert config_lib.run_name(plain) == config_lib.run_name(off)
    with pytest.raises(ValueError, match="download must be true or false"):
        config_lib.resolve({"model": "wrn16x1_R_g2", "download": "no"})
    with pytest.raises(ValueError, match="is not a URL"):
        config_lib.resolve({"model": "wrn16x1_R_g2", "data_mirror": "mirror.example.org"})


def test_published_checksums_are_keras_own():
    import inspect

    from keras.src.datasets import cifar10, cifar100

    assert download.CHECKSUMS["cifar-10-python.tar.gz"] in inspect.getsource(cifar10)
    assert download.CHECKSUMS["cifar-100-python.tar.gz"] in inspect.getsource(cifar100)


def test_scripts_fail_fast_in_one_line_with_nodownload_or_an_unreachable_mirror(tmp_path, closed_port_url):
    # What makes them fast is checked in-process above (no connection; one probe with the short timeout);
    # here, that the scripts take that path and stop with one line. The timeout only guards against a hang.
    env = script_env(KERAS_HOME=str(tmp_path / "keras"))
    env.pop(download.NODOWNLOAD_VARIABLE, None)
    env.pop(download.MIRROR_VARIABLE, None)
    common = ["--model=wrn10x1_R_g2", f"--data_dir={tmp_path}/tfds", f"--logdir={tmp_path}/logs"]
    cases = {"--nodownload": "downloads are off (--nodownload)",
             f"--data_mirror={closed_port_url}": f"cannot reach {closed_port_url}/"}
    procs = {flag: subprocess.Popen(script_command("train.py", *common, flag), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env)
             for flag in cases}
    try:
        for flag, fragment in cases.items():
            _, stderr = procs[flag].communicate(timeout=600)
            assert procs[flag].returncode == 2, stderr
            assert "Traceback" not in stderr
            (line,) = error_lines(stderr)
            assert fragment in line and "--archive" in line and "--dataset=synthetic" in line, line
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert not (tmp_path / "keras" / "datasets").exists() or os.listdir(tmp_path / "keras" / "datasets") == []
