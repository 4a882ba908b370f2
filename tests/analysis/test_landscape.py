"""Loss landscapes: filter-normalised directions, surfaces, the training path and the script."""

import os
import shutil

import keras
import numpy as np
import pytest
import helpers
import tensorflow as tf

from kdkeras import config as config_lib
from kdkeras.analysis import landscape as landscape_lib
from kdkeras.analysis import runs
from kdkeras.training import train_and_evaluate
from kdkeras.training.run_folder import run_dir

pytestmark = pytest.mark.slow  # tiny runs and scripts

TINY = {"dataset": "synthetic", "epochs": 2, "train_size": 256, "test_size": 128, "batch_size": 64}
EXAMPLES = 64
#: Losses of the same weights computed in other batches (the landscape's against evaluate's batches of 16):
#: float32 sums in other orders through ~10 layers, ~1e-6 relative at most; 1e-5 relative. An accuracy
#: may then differ by one example (an argmax near a tie).
LOSS_REL = 1e-5


def same_accuracy(got, expected):
    """Accuracies over ``EXAMPLES`` images from other batches: at most one example apart."""
    return abs(round(got * EXAMPLES) - round(expected * EXAMPLES)) <= 1


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """``(logdir, teacher run, KD run)``: a residual teacher and an NR student distilled from it."""
    logdir = str(tmp_path_factory.mktemp("logs"))
    cfg = config_lib.resolve({"model": "wrn10x1_NR_g2", "teacher": "wrn10x1_R_g2", **TINY})
    train_and_evaluate(cfg, logdir, verbose=0, log=lambda message: None)
    teacher_dir = run_dir(config_lib.teacher_config(cfg), logdir)
    return logdir, runs.load_run(teacher_dir), runs.load_run(run_dir(cfg, logdir))


@pytest.fixture(scope="module")
def examples(tiny_runs):
    _, _, kd = tiny_runs
    x, y, _ = runs.split_arrays(kd.config, "train", size=EXAMPLES)
    return x, y


def reference_loss(model, x, y):
    """Mean cross-entropy and accuracy, computed by Keras's own evaluate and by numpy."""
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    keras_loss = model.evaluate(x, y, batch_size=16, verbose=0)
    logits = model.predict(x, batch_size=16, verbose=0).astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    numpy_loss = -log_probs[np.arange(len(y)), y].mean()
    # The same batches of 16 (evaluate's and predict's graphs), the cross-entropy in float32 against float64.
    assert keras_loss == pytest.approx(numpy_loss, rel=LOSS_REL)
    return numpy_loss, float(np.mean(logits.argmax(axis=1) == y))


def png_signature(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def all_weights(model):
    return [np.array(v.numpy(), copy=True) for v in model.weights]


# --------------------------------------------------------------------------- grids


def test_axis_grid_includes_the_origin():
    odd = landscape_lib.axis_grid(11, 1.0)
    assert odd.shape == (11,) and odd[5] == 0.0 and odd[0] == -1.0 and odd[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(odd, -odd[::-1], atol=1e-12)  # symmetric
    even = landscape_lib.axis_grid(10, 0.5)
    assert even.shape == (10,) and 0.0 in even
    np.testing.assert_allclose(np.diff(even), 1.0 / 9)
    with pytest.raises(ValueError, match="at least 2"):
        landscape_lib.axis_grid(1)


def test_path_alphas_include_both_ends_exactly():
    alphas = landscape_lib.path_alphas(31)
    assert alphas[0] == pytest.approx(-0.25) and alphas[-1] == pytest.approx(1.25)
    for n in (2, 3, 7, 12, 51):
        a = landscape_lib.path_alphas(n)
        assert a.shape == (n,) and 0.0 in a and 1.0 in a
        np.testing.assert_allclose(np.diff(a), np.diff(a)[0])


# --------------------------------------------------------------------------- directions


def test_directions_are_filter_normalised_and_skip_biases_and_bn(tiny_runs):
    model = runs.load_run_model(tiny_runs[2])
    (direction,) = landscape_lib.random_directions(model, seed=3)
    kernels = vectors = 0
    for variable, d in zip(model.trainable_variables, direction):
        w = variable.numpy()
        assert d.shape == w.shape and d.dtype == np.float32
        if w.ndim == 1:  # BatchNorm gamma / beta and the dense bias
            assert not np.any(d)
            vectors += 1
        else:  # conv (kh, kw, in, out) and dense (in, out): filters on the last axis
            axes = tuple(range(w.ndim - 1))
            # float32 norms of float32 filters (~1e-7 relative each): 1e-5 relative.
            np.testing.assert_allclose(np.linalg.norm(d.reshape(-1, w.shape[-1]), axis=0),
                                       np.sqrt((w ** 2).sum(axis=axes)), rtol=1e-5)
            assert not np.allclose(d, w)  # random, not a copy of the weights
            kernels += 1
    assert kernels >= 5 and vectors >= 5


def test_depthwise_and_transposed_kernels_and_included_vectors():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((8, 8, 4)),
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw"),
        keras.layers.SeparableConv2D(5, 3, name="sep"),
        keras.layers.Conv2DTranspose(3, 3, name="tconv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(4, name="dense"),
    ])
    for v in model.trainable_variables:  # non-trivial vectors, so their norms are checked
        v.assign(np.random.default_rng(0).normal(size=v.shape).astype("float32"))
    (direction,) = landscape_lib.random_directions(model, seed=0, include_bias_bn=True)
    by_path = {"/".join(v.path.split("/")[-2:]): (v.numpy(), d) for v, d in zip(model.trainable_variables, direction)}

    def check(path, axes):  # float32 directions rescaled to float32 norms (~1e-7 relative): 1e-5 relative
        w, d = by_path[path]
        np.testing.assert_allclose(np.sqrt((d.astype(np.float64) ** 2).sum(axis=axes)),
                                   np.sqrt((w.astype(np.float64) ** 2).sum(axis=axes)), rtol=1e-5)

    check("dw/kernel", (0, 1))  # (3, 3, 4, 2): one filter per (input channel, multiplier)
    check("sep/depthwise_kernel", (0, 1))
    check("sep/pointwise_kernel", (0, 1, 2))
    check("tconv/kernel", (0, 1, 3))  # (3, 3, filters, in): filters on axis -2
    check("dense/kernel", (0,))
    for path in ("dw/bias", "bn/gamma", "bn/beta", "dense/bias"):  # whole vector, weight's norm
        check(path, (0,))
        assert np.any(by_path[path][1])
    # Without include_bias_bn the kernels are the same draws and the vectors are zero.
    (plain,) = landscape_lib.random_directions(model, seed=0)
    for (w, d), p in zip(by_path.values(), plain):  # the same seeded draws, the same arithmetic
        np.testing.assert_array_equal(p, d if w.ndim > 1 else np.zeros_like(w))


def test_directions_are_seeded(tiny_runs):
    model = runs.load_run_model(tiny_runs[2])
    first = landscape_lib.random_directions(model, count=2, seed=7)
    again = landscape_lib.random_directions(model, count=1, seed=7)
    other = landscape_lib.random_directions(model, count=1, seed=8)
    for a, b in zip(first[0], again[0]):  # the same seed, the same arithmetic: bit-identical
        np.testing.assert_array_equal(a, b)
    kernels = [i for i, d in enumerate(first[0]) if d.ndim > 1]
    assert all(not np.array_equal(first[0][i], other[0][i]) for i in kernels)
    assert all(not np.array_equal(first[0][i], first[1][i]) for i in kernels)


# --------------------------------------------------------------------------- surfaces


def test_surface_1d_origin_is_the_models_loss(tiny_runs, examples):
    x, y = examples
    model = runs.load_run_model(tiny_runs[2])
    before = all_weights(model)
    (direction,) = landscape_lib.random_directions(model, seed=0)
    alphas = landscape_lib.axis_grid(5, 1.0)
    loss, accuracy = landscape_lib.surface_1d(model, x, y, direction, alphas, batch_size=24)
    assert loss.shape == accuracy.shape == (5,)
    for a, b in zip(before, all_weights(model)):  # restored exactly: the saved copies are written back
        np.testing.assert_array_equal(a, b)
    expected_loss, expected_accuracy = reference_loss(model, x, y)
    assert loss[2] == pytest.approx(expected_loss, rel=LOSS_REL)  # batches of 24 against 16
    assert same_accuracy(accuracy[2], expected_accuracy)
    assert np.all(loss[[0, 4]] > loss[2] + 1e-3)  # a step of one filter norm moves the loss
    assert np.all((accuracy >= 0) & (accuracy <= 1))


def test_surface_2d_shape_and_its_axes_are_the_1d_curves(tiny_runs, examples):
    x, y = examples
    model = runs.load_run_model(tiny_runs[1])
    before = all_weights(model)
    d1, d2 = landscape_lib.random_directions(model, count=2, seed=0)
    alphas, betas = landscape_lib.axis_grid(3, 0.5), landscape_lib.axis_grid(4, 0.5)
    loss, accuracy = landscape_lib.surface_2d(model, x, y, d1, d2, alphas, betas)
    assert loss.shape == accuracy.shape == (3, 4)
    curve, _ = landscape_lib.surface_1d(model, x, y, d1, alphas)
    j0 = int(np.flatnonzero(betas == 0.0)[0])
    # b = 0 is the 1-D curve: the same weights (adding 0 * d2 is exact), batches and kernels; 1e-6 relative.
    np.testing.assert_allclose(loss[:, j0], curve, rtol=1e-6)
    assert loss[1, j0] == pytest.approx(reference_loss(model, x, y)[0], rel=LOSS_REL)  # other batches
    for a, b in zip(before, all_weights(model)):  # restored exactly
        np.testing.assert_array_equal(a, b)


def test_weights_are_restored_after_an_error(tiny_runs, examples):
    x, y = examples
    model = runs.load_run_model(tiny_runs[2])
    before = all_weights(model)
    (direction,) = landscape_lib.random_directions(model, seed=0, include_bias_bn=True)
    bad_labels = np.full_like(y, 10_000)  # fails in the forward pass, after the first move
    with pytest.raises(tf.errors.InvalidArgumentError):
        landscape_lib.surface_1d(model, x, bad_labels, direction, [0.5, 1.0])
    for a, b in zip(before, all_weights(model)):  # restored exactly
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="does not match"):
        landscape_lib.surface_1d(model, x, y, [d.T for d in direction], [0.0])


def test_path_ends_are_the_initial_and_trained_models(tiny_runs, examples):
    x, y = examples
    run = tiny_runs[2]
    final, initial = runs.load_run_model(run), runs.load_initial_model(run)
    before = all_weights(final)
    alphas = landscape_lib.path_alphas(7)  # [-0.25, 0, 0.25, 0.5, 0.75, 1, 1.25]
    loss, accuracy = landscape_lib.path_1d(initial, final, x, y, alphas, batch_size=32)
    assert loss.shape == accuracy.shape == (7,) and np.all(np.isfinite(loss))
    for a, b in zip(before, all_weights(final)):  # restored exactly
        np.testing.assert_array_equal(a, b)
    start, end = reference_loss(initial, x, y), reference_loss(final, x, y)
    assert start[0] != pytest.approx(end[0], abs=1e-3)  # the two ends differ
    # The ends' own weights, in batches of 32 against 16.
    assert loss[1] == pytest.approx(start[0], rel=LOSS_REL) and same_accuracy(accuracy[1], start[1])
    assert loss[5] == pytest.approx(end[0], rel=LOSS_REL) and same_accuracy(accuracy[5], end[1])


def test_path_moves_bn_statistics_with_positive_variances():
    def build():
        return keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3, name="conv"),
                                 keras.layers.BatchNormalization(name="bn"),
                                 keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4, name="dense")])

    keras.utils.set_random_seed(5)
    initial, final = build(), build()  # other initial draws; BN statistics 0 and 1
    final.get_layer("bn").moving_mean.assign(np.array([0.5, -1.0, 2.0], "float32"))
    final.get_layer("bn").moving_variance.assign(np.array([0.01, 4.0, 0.2], "float32"))
    x = np.random.default_rng(0).normal(size=(12, 6, 6, 2)).astype("float32")
    y = np.arange(12) % 4
    alphas = [-0.25, 0.5, 1.25]  # a linear variance would be 1 - 1.25 * 0.99 < 0 at a = 1.25
    loss, _ = landscape_lib.path_1d(initial, final, x, y, alphas)
    assert np.all(np.isfinite(loss))
    for a, value in zip(alphas, loss):  # the documented rule, applied by hand to a third copy
        probe = build()
        for p, w0, w1 in zip(probe.trainable_variables, initial.trainable_variables, final.trainable_variables):
            p.assign((1 - a) * w0.numpy() + a * w1.numpy())
        bn0, bn1, bn = initial.get_layer("bn"), final.get_layer("bn"), probe.get_layer("bn")
        bn.moving_mean.assign((1 - a) * bn0.moving_mean.numpy() + a * bn1.moving_mean.numpy())
        bn.moving_variance.assign(bn0.moving_variance.numpy() ** (1 - a) * bn1.moving_variance.numpy() ** a)
        # Weights and statistics interpolated here by other float32 operations (~1e-7 relative each; a
        # variance down to 0.01 amplifies them), then other batches: 1e-4 relative.
        assert value == pytest.approx(reference_loss(probe, x, y)[0], rel=1e-4)


def test_landscape_file_round_trip(tmp_path):
    alphas, betas = landscape_lib.axis_grid(3), landscape_lib.axis_grid(3)
    loss = np.arange(9.0).reshape(3, 3)
    saved = landscape_lib.Landscape("2d", alphas, betas, loss, loss / 10, {"seed": 4, "split": "train"})
    saved.save(str(tmp_path / "a.npz"))
    loaded = landscape_lib.Landscape.load(str(tmp_path / "a.npz"))
    assert loaded.mode == "2d" and loaded.metadata == {"seed": 4, "split": "train"}
    np.testing.assert_array_equal(loaded.loss, loss)  # saved and loaded byte for byte
    assert loaded.at(0.0, 0.0) == (4.0, 0.4) and loaded.at(1.0, -1.0) == (6.0, 0.6)
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]  # no temporary file left


# --------------------------------------------------------------------------- the script


def run_script(*args):
    return helpers.run_script("landscape.py", *args)


def test_script_writes_then_reuses_a_result(tiny_runs):
    run = tiny_runs[2]
    args = [f"--run={run.directory}", "--resolution=5", f"--num_examples={EXAMPLES}", "--seed=2"]
    first = run_script(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    npz = os.path.join(run.directory, "landscape", f"1d-r5-x1-n{EXAMPLES}-train-s2.npz")
    png = npz[:-4] + ".png"
    assert f"Wrote {npz}" in first.stdout and f"Wrote {png}" in first.stdout
    assert os.path.getsize(png) > 1000 and png_signature(png)
    stored = landscape_lib.Landscape.load(npz)
    assert stored.mode == "1d" and stored.betas is None and stored.loss.shape == (5,)
    assert stored.metadata["seed"] == 2 and stored.metadata["num_examples"] == EXAMPLES
    assert stored.metadata["kind"] == "distilled"
    # The printed origin is the trained model's loss on the same examples.
    x, y, _ = runs.split_arrays(run.config, "train", size=EXAMPLES)
    origin, _ = stored.at(0.0)
    # Computed by the script in another process, in other batches.
    assert origin == pytest.approx(reference_loss(runs.load_run_model(run), x, y)[0], rel=LOSS_REL)
    assert f"{origin:.6f}" in first.stdout

    modified = os.path.getmtime(npz)
    second = run_script(*args)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "Reusing" in second.stdout and "Computing" not in second.stdout
    assert os.path.getmtime(npz) == modified and f"{origin:.6f}" in second.stdout


def test_script_compare_overlays_runs(tiny_runs, tmp_path):
    _, teacher, kd = tiny_runs
    output = tmp_path / "compare.png"
    # No --num_examples: 512, or the whole split (256 training images here) when smaller.
    result = run_script(f"--compare={teacher.directory},{kd.directory}", "--mode=path", "--resolution=4",
                        f"--output={output}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert output.stat().st_size > 1000 and f"Wrote {output}" in result.stdout
    for run, kind in ((teacher, "R"), (kd, "distilled")):
        npz = os.path.join(run.directory, "landscape", f"path-r4-n{TINY['train_size']}-train.npz")
        stored = landscape_lib.Landscape.load(npz)
        assert stored.metadata["kind"] == kind and stored.loss.shape == (4,)
        assert 0.0 in stored.alphas and 1.0 in stored.alphas


def _copy_run(run, destination, dataset=None, drop=None):
    shutil.copytree(run.directory, destination, ignore=shutil.ignore_patterns("landscape", "tensorboard"))
    if drop:
        os.remove(os.path.join(destination, drop))
    if dataset:
        path = os.path.join(destination, "config.yaml")
        with open(path) as f:
            text = f.read().replace("dataset: synthetic", f"dataset: {dataset}")
        with open(path, "w") as f:
            f.write(text)
    return str(destination)


@pytest.mark.parametrize("case, fragment", [
    ("mode", "Valid choices: 1d, 2d, path"),
    ("resolution", "resolution must be at least 2"),
    ("too_many", "is more than the train split"),
    ("no_initial", "initial.weights.h5"),
    ("datasets", "needs runs on one dataset"),
    ("missing", "does not exist"),
])
def test_script_user_errors_are_one_line(tiny_runs, tmp_path, case, fragment):
    _, teacher, kd = tiny_runs
    args = {
        "mode": [f"--run={kd.directory}", "--mode=3d"],
        "resolution": [f"--run={kd.directory}", "--mode=2d", "--resolution=1"],
        "too_many": [f"--run={kd.directory}", "--num_examples=100000"],
        "no_initial": [f"--run={_copy_run(kd, tmp_path / 'old', drop=runs.INITIAL_WEIGHTS_FILE)}",
                       "--mode=path"],
        "datasets": [f"--compare={teacher.directory},{_copy_run(kd, tmp_path / 'c10', dataset='cifar10')}"],
        "missing": [f"--run={tmp_path / 'nowhere'}"],
    }[case]
    result = run_script(*args)
    assert result.returncode == 2, result.stdout + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    # TensorFlow's C++ start-up notices may precede it; the error itself is one line.
    (line,) = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert line.startswith("landscape.py: error: ") and fragment in line, result.stderr
    assert not os.path.exists(os.path.join(kd.directory, "landscape", "2d-r1-x1-n512-train-s0.npz"))
