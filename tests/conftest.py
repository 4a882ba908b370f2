"""Shared pytest setup: quiet TensorFlow, deterministic seeds."""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests never download data (tests/data/test_download.py turns this off around its local server).
os.environ.setdefault("KDKERAS_NODOWNLOAD", "1")
# The archive-hash cache of data fingerprints (kdkeras.data.fingerprint) in a folder of this test process.
os.environ.setdefault("KDKERAS_CACHE_DIR", tempfile.mkdtemp(prefix="kdkeras-test-cache-"))

import kdkeras  # noqa: E402,F401  (first, as in a user's script: TensorFlow's oneDNN on, docs/training.md)
import pytest  # noqa: E402


def _process_state():
    """The process-wide settings a test could change and leave behind for the next ones."""
    import socket

    import keras

    from kdkeras.data import download, pipeline

    return {"environ": dict(os.environ), "cwd": os.getcwd(), "policy": keras.mixed_precision.global_policy().name,
            "download": dict(getattr(download, "_settings", {})),
            "data_tuning": getattr(pipeline, "_data_tuning", None), "socket_timeout": socket.getdefaulttimeout()}


def _restore(saved):
    """Puts back every setting of :func:`_process_state` that differs from ``saved``."""
    import socket

    import keras

    from kdkeras.data import download, pipeline

    for name in set(os.environ) - set(saved["environ"]):
        del os.environ[name]
    for name, value in saved["environ"].items():
        if os.environ.get(name) != value:
            os.environ[name] = value
    if os.getcwd() != saved["cwd"]:
        os.chdir(saved["cwd"])
    if keras.mixed_precision.global_policy().name != saved["policy"]:
        keras.mixed_precision.set_global_policy(saved["policy"])
    if saved["download"] and getattr(download, "_settings", None) is not None:
        download._settings.update(saved["download"])
    if saved["data_tuning"] is not None:
        pipeline.set_data_tuning(saved["data_tuning"])
    socket.setdefaulttimeout(saved["socket_timeout"])


@pytest.fixture(autouse=True, scope="module")
def _module_leaves_the_process_as_it_found_it():
    """Module-scoped fixtures (in-process training runs, say) set process-wide settings too: undone after the module."""
    saved = _process_state()
    yield
    _restore(saved)


@pytest.fixture(autouse=True)
def _test_leaves_the_process_as_it_found_it():
    """Each test leaves the environment, the working directory and the process settings that kdkeras and Keras keep
    (mixed-precision policy, download settings, data tuning, socket timeout) as it found them: an in-process run
    sets them from its config, and a test may forget to undo what it set."""
    saved = _process_state()
    yield
    _restore(saved)


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    yield


#: The files that take minutes, longest first (measured, `--durations`). Run first, so that with
#: `-n 2 --dist loadfile` the short files fill the gaps at the end instead of one long file running
#: alone while the other worker idles. A file's own test order is kept.
LONG_FILES = (
    "tests/test_readme.py",
    "tests/test_profiling.py",
    "tests/models/test_models.py",
    "tests/test_scripts.py",
    "tests/test_grid.py",
    "tests/test_benchmark_crd.py",
    "tests/test_tune.py",
    "tests/training/test_kill_resume.py",
    "tests/training/test_faults.py",
    "tests/training/test_validation.py",
    "tests/analysis/test_early_kd_and_gradients.py",
    "tests/training/test_multiworker.py",
    "tests/analysis/test_landscape.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(LONG_FILES)}

    def key(item):
        path = item.nodeid.split("::", 1)[0]
        return rank.get(path, len(LONG_FILES))

    items.sort(key=key)  # stable: every file keeps its own order
