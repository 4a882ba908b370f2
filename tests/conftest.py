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
