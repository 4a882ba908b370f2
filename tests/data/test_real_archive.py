"""The real CIFAR-10 subset archive (20,000 train / 4,000 test), read through the archive path.

Optional: the archive lives outside the repository, in ``../shared/data`` beside the checkout (or at
``$KDKERAS_REAL_ARCHIVE``); without it the tests skip.
"""

import os

import numpy as np
import pytest

from kdkeras.data.archive import read_archive
from kdkeras.data.specs import SPECS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARCHIVE = os.environ.get("KDKERAS_REAL_ARCHIVE") or os.path.join(
    os.path.dirname(ROOT), "shared", "data", "cifar-10-subset-20k.tar.gz")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isfile(ARCHIVE), reason=f"real CIFAR-10 subset not at {ARCHIVE}")]

#: CIFAR-10's class names, in its label order (batches.meta).
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture(scope="module")
def splits():
    return read_archive(ARCHIVE, SPECS["cifar10"], ["train", "test"])


def test_the_subset_has_its_sizes_classes_and_balance(splits):
    data, names = splits
    assert tuple(names) == CLASSES
    (x_train, y_train), (x_test, y_test) = data["train"], data["test"]
    assert x_train.shape == (20000, 32, 32, 3) and x_test.shape == (4000, 32, 32, 3)
    assert x_train.dtype == np.uint8 and y_train.min() == 0 and y_train.max() == 9
    # Class-balanced to within a few percent: a label column read wrongly (or shifted) would not be.
    for labels, size in ((y_train, 20000), (y_test, 4000)):
        counts = np.bincount(labels, minlength=10)
        assert counts.sum() == size and counts.min() > 0.8 * size / 10, counts


def test_the_pixels_are_cifar_images_in_hwc_order(splits):
    """Per-channel means near CIFAR-10's published ones (125.3, 123.0, 113.9), and spatially smooth.

    A CHW buffer read as HWC scrambles the channels across neighbouring pixels: neighbours would then
    differ about as much as random pixels.
    """
    data, _ = splits
    x = data["train"][0].astype(np.float64)
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), [125.3, 123.0, 113.9], atol=3.0)
    neighbours = np.abs(np.diff(x, axis=2)).mean()
    shuffled = np.abs(x - np.roll(x, 7, axis=0)).mean()
    assert neighbours < 0.4 * shuffled
