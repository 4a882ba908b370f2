"""Shared pytest setup: quiet TensorFlow, deterministic seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests never download data (tests/data/test_download.py turns this off around its local server).
os.environ.setdefault("KDKERAS_NODOWNLOAD", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    yield
