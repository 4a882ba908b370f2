"""Tests of ``Splits.train_epochs(..., with_indices=True)``: each training example's position beside its image."""

from __future__ import annotations

import numpy as np

from kdkeras import data


def _epochs(splits, start, stop, **kwargs):
    return [tuple(np.asarray(v) for v in (b[0] if isinstance(b[0], tuple) else (b[0],)) + (b[1],))
            for b in splits.train_epochs(start, stop, **kwargs)]


def test_indexed_batches_are_the_plain_batches_with_each_examples_position():
    splits = data.make_splits("synthetic", train_size=20, test_size=4, batch_size=8, seed=3)
    x, y = data.load_arrays("synthetic", "train", size=20, seed=3)
    plain, indexed = _epochs(splits, 0, 2), _epochs(splits, 0, 2, with_indices=True)
    assert [len(b) for b in plain] == [2] * 6 and [len(b) for b in indexed] == [3] * 6
    for (images, labels), (images_i, indices, labels_i) in zip(plain, indexed):
        # The same augmented images, labels and order: only the indices are added.
        np.testing.assert_array_equal(images_i, images)
        np.testing.assert_array_equal(labels_i, labels)
        assert indices.dtype == np.int64 and indices.shape == labels.shape
    indices = np.concatenate([b[1] for b in indexed])
    for epoch in (indices[:20], indices[20:]):  # every epoch: each position once
        assert sorted(epoch) == list(range(20))
    assert not np.array_equal(indices[:20], indices[20:])
    # Each index names its example: its label, and (unaugmented) its image.
    np.testing.assert_array_equal(np.concatenate([b[2] for b in indexed]), y[indices])
    flat = data.make_splits("synthetic", train_size=20, test_size=4, batch_size=8, seed=3, augment=False)
    for images, indices, _ in _epochs(flat, 1, 2, with_indices=True):
        np.testing.assert_array_equal(images, data.normalize(x[indices], flat.info.mean, flat.info.std).numpy())


def test_a_resumed_epoch_has_the_same_indices():
    splits = data.make_splits("synthetic", train_size=12, test_size=4, batch_size=5, seed=1, augment=False)
    whole = np.concatenate([b[1] for b in _epochs(splits, 0, 3, with_indices=True)])
    resumed = np.concatenate([b[1] for b in _epochs(splits, 2, 3, with_indices=True)])
    np.testing.assert_array_equal(resumed, whole[24:])
    element = splits.train_epochs(0, 1, with_indices=True).element_spec
    assert element[0][1].dtype.name == "int64" and element[0][0].shape.as_list() == [None, 32, 32, 3]
