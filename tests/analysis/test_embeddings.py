"""Penultimate-layer embeddings: features, class choice, score, projector files, script."""

import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import helpers

from kdkeras.analysis import embeddings as emb
from kdkeras.training.run_folder import run_dir
from helpers import relative_error

pytestmark = pytest.mark.slow  # tiny runs and scripts

TINY = {"dataset": "synthetic", "epochs": 2, "train_size": 256, "test_size": 128, "batch_size": 64}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """A finished R teacher run and an NR student distilled from it: ``(logdir, teacher, kd)``."""
    import keras

    from kdkeras import config as config_lib
    from kdkeras.training import train_and_evaluate

    keras.utils.set_random_seed(0)
    logdir = str(tmp_path_factory.mktemp("logs"))
    cfg = config_lib.resolve({"model": "wrn10x1_NR_g2", "teacher": "wrn10x1_R_g2", **TINY})
    kd_dir = train_and_evaluate(cfg, logdir, verbose=0, log=lambda message: None)["run_dir"]
    teacher_dir = run_dir(config_lib.teacher_config(cfg), logdir)
    return logdir, teacher_dir, kd_dir


def run_script(*args):
    return helpers.run_script("embed.py", *args)


error_lines = helpers.error_lines


def read_metadata(directory):
    with open(os.path.join(directory, emb.METADATA_FILE)) as f:
        return [line.rstrip("\n").split("\t") for line in f]


# --- embeddings -----------------------------------------------------------------------------


def test_embeddings_are_the_avg_pool_output_of_the_trained_model(tiny_runs):
    import keras

    from kdkeras.analysis import runs

    run = runs.load_run(tiny_runs[1])
    model = runs.load_run_model(run)
    images, _, _ = runs.split_arrays(run.config, "test")
    embeddings, logits = emb.compute_embeddings(model, images, batch_size=50)

    width = model.get_layer("avg_pool").output.shape[-1]
    assert embeddings.shape == (len(images), width) and embeddings.dtype == np.float32
    # Independently: the spatial mean of the feature map that avg_pool pools.
    feature_map = keras.Model(model.inputs, model.get_layer("head_relu").output).predict(images, verbose=0)
    # predict's batches of 32 against compute_embeddings' one batch, and NumPy's mean against the pooling
    # kernel: the same float32 sums in other orders through ~10 layers (seen 4.5e-7 of the scale): 1e-5 of it.
    assert relative_error(embeddings, feature_map.mean(axis=(1, 2))) < 1e-5
    assert relative_error(logits, model.predict(images, verbose=0)) < 1e-5


def test_a_model_without_avg_pool_uses_the_input_of_its_last_layer():
    import keras

    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu", name="hidden"),
                              keras.layers.Dense(3, name="out")])
    x = np.random.default_rng(0).normal(size=(7, 5)).astype("float32")
    embeddings, logits = emb.compute_embeddings(model, x)
    hidden = keras.Model(model.inputs, model.get_layer("hidden").output).predict(x, verbose=0)
    # Another compiled graph (two outputs against one) over the same single batch of 7, through two Dense
    # layers: bit-identical here; 1e-6 of the scale admits another summation order.
    assert relative_error(embeddings, hidden) < 1e-6
    assert relative_error(logits, model.predict(x, verbose=0)) < 1e-6

    spatial = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Conv2D(3, 1)])
    with pytest.raises(ValueError, match="global pooling layer named 'avg_pool'"):
        emb.penultimate_model(spatial)


# --- choosing classes and examples -----------------------------------------------------------


def test_worst_classes_are_those_with_the_lowest_accuracy():
    # 5 classes, 4 examples each; accuracies by construction: 1.0, 0.25, 0.75, 0.0, 0.25.
    correct_counts = [4, 1, 3, 0, 1]
    labels, logits = [], []
    for c, hits in enumerate(correct_counts):
        for i in range(4):
            predicted = c if i < hits else (c + 1) % 5
            row = np.zeros(5)
            row[predicted] = 1.0
            labels.append(c)
            logits.append(row)
    labels, logits = np.array(labels), np.array(logits)
    np.testing.assert_allclose(emb.per_class_accuracy(logits, labels, 5), [1.0, 0.25, 0.75, 0.0, 0.25])
    assert emb.worst_classes(logits, labels, 1) == [3]
    assert emb.worst_classes(logits, labels, 3) == [3, 1, 4]  # tie 1 / 4 broken by label
    assert emb.worst_classes(logits, labels, 5) == [3, 1, 4, 2, 0]

    # A class without examples is never "worst"; K above the classes present fails.
    present = labels != 3
    assert emb.worst_classes(logits[present], labels[present], 2, num_classes=5) == [1, 4]
    with pytest.raises(ValueError, match="between 1 and 4"):
        emb.worst_classes(logits[present], labels[present], 5, num_classes=5)


def test_class_names_are_checked():
    names = tuple(f"class_{i}" for i in range(100))
    assert emb.class_indices(["class_7", " class_2"], names) == [7, 2]
    with pytest.raises(ValueError) as err:
        emb.class_indices(["class_7", "whale"], names)
    assert "'whale'" in str(err.value) and "100 classes" in str(err.value) and "class_0" in str(err.value)
    with pytest.raises(ValueError, match="more than once"):
        emb.class_indices(["class_1", "class_1"], names)
    with pytest.raises(ValueError, match="at least 2 classes"):
        emb.class_indices(["class_1"], names)


def test_examples_are_balanced_grouped_by_class_and_seeded():
    labels = np.repeat(np.arange(4), 10)[np.random.default_rng(1).permutation(40)]
    chosen = emb.sample_examples(labels, [2, 0, 3], 10, seed=5)
    assert list(labels[chosen]) == [2] * 4 + [0] * 3 + [3] * 3
    assert len(set(chosen.tolist())) == 10
    np.testing.assert_array_equal(chosen, emb.sample_examples(labels, [2, 0, 3], 10, seed=5))
    assert not np.array_equal(chosen, emb.sample_examples(labels, [2, 0, 3], 10, seed=6))
    assert len(emb.sample_examples(labels, [1, 2], 500)) == 20  # every example when fewer
    with pytest.raises(ValueError, match="smaller than the number of classes"):
        emb.sample_examples(labels, [0, 1, 2], 2)


# --- the separation score --------------------------------------------------------------------


def test_separation_score_is_the_silhouette_in_the_full_space():
    # By hand: class 0 at 0 and 1, class 1 at 10 and 11 (on one axis).
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    by_hand = np.mean([(10.5 - 1) / 10.5, (9.5 - 1) / 9.5, (9.5 - 1) / 9.5, (10.5 - 1) / 10.5])
    assert emb.separation_score(x, [0, 0, 1, 1]) == pytest.approx(by_hand)

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    centres = rng.normal(size=(4, 32)) * 5
    blobs = centres[labels] + rng.normal(size=(200, 32))
    assert emb.separation_score(blobs, labels) > 0.6
    assert abs(emb.separation_score(blobs, rng.permutation(labels))) < 0.1
    # The classes differ only in dimension 20 of 32: a 2-D view of the first
    # two dimensions would see no clusters; the full space does.
    hidden = rng.normal(size=(200, 32))
    hidden[:, 20] += labels * 40
    assert emb.separation_score(hidden, labels) > 0.5
    with pytest.raises(ValueError, match="2 to"):
        emb.separation_score(blobs, np.zeros(200))


# --- projector files ------------------------------------------------------------------------


def projector_runs_seen_by_tensorboard(logdir):
    """``{run: ProjectorConfig}`` as TensorBoard's projector plugin finds them under ``logdir``."""
    from tensorboard.backend.event_processing import (
        data_provider,
        plugin_event_multiplexer,
    )
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, logdir)
    plugin = ProjectorPlugin(base_plugin.TBContext(logdir=logdir, data_provider=provider))
    plugin._update_configs()
    return dict(plugin._configs)


def test_projector_files_parse_and_tensorboard_finds_them(tmp_path):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(9, 6)).astype("float32")
    labels = np.array([2, 2, 2, 0, 0, 0, 1, 1, 1])
    names = ("cat", "dog", "sea\totter")
    predictions = np.array([2, 0, 2, 0, 0, 1, 1, 1, 1])
    directory = tmp_path / "logs" / "run" / "tensorboard" / "projector"

    emb.write_projector(str(directory), embeddings, labels, names, predictions=predictions,
                        example_ids=np.arange(100, 109), scalars={"embeddings/silhouette": 0.5})
    config = emb.read_projector_config(str(directory))
    (embedding,) = config.embeddings
    for relative in (embedding.tensor_path, embedding.metadata_path):
        assert not os.path.isabs(relative) and (directory / relative).is_file()
    assert list(embedding.tensor_shape) == [9, 6]
    # Written as text with 6 significant digits: <= 5e-6 relative per value.
    np.testing.assert_allclose(np.loadtxt(directory / embedding.tensor_path, delimiter="\t"),
                               embeddings, rtol=1e-5)
    rows = read_metadata(str(directory))
    assert rows[0] == ["example", "label", "class", "predicted", "correct"]
    assert len(rows) == 9 + 1
    assert [r[2] for r in rows[1:]] == ["sea otter"] * 3 + ["cat"] * 3 + ["dog"] * 3
    assert rows[1] == ["100", "2", "sea otter", "sea otter", "yes"]
    assert rows[2] == ["101", "2", "sea otter", "cat", "no"]

    # TensorBoard on the log root and on the run folder lists it in its Projector tab.
    found = projector_runs_seen_by_tensorboard(str(tmp_path / "logs"))
    assert list(found) == [os.path.join("run", "tensorboard", "projector")]
    assert found[os.path.join("run", "tensorboard", "projector")].embeddings[0].tensor_name == "avg_pool"
    assert list(projector_runs_seen_by_tensorboard(str(tmp_path / "logs" / "run"))) == [
        os.path.join("tensorboard", "projector")]

    # A second write replaces the files and the event file of the first.
    emb.write_projector(str(directory), embeddings[:4], labels[:4], names)
    assert len(read_metadata(str(directory))) == 5
    assert len(glob.glob(str(directory / "events.out.tfevents.*"))) == 1
    assert not [f for f in os.listdir(directory) if f.endswith(".tmp")]


def test_callback_writes_the_students_projector_during_fit(tmp_path):
    import keras

    from kdkeras.distiller import Distiller
    from kdkeras.models.registry import build_model

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 8)
    images = (rng.normal(size=(24, 32, 32, 3)) + labels[:, None, None, None]).astype("float32")
    student = build_model("wrn10x1_NR_g2", num_classes=3, input_shape=(32, 32, 3))
    teacher = build_model("wrn10x1_R_g2", num_classes=3, input_shape=(32, 32, 3))
    distiller = Distiller(student, teacher)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    log_dir, png = tmp_path / "projector", tmp_path / "embeddings.png"
    callback = emb.EmbeddingProjector(images, labels, ("a", "b", "c"), str(log_dir), png=str(png))

    seen_at_train_end = {}

    class Check(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            seen_at_train_end["config"] = (log_dir / emb.PROJECTOR_CONFIG_FILE).exists()
            seen_at_train_end["png"] = png.exists()

    distiller.fit(images, labels, batch_size=8, epochs=2, verbose=0, callbacks=[callback, Check()])
    assert seen_at_train_end == {"config": True, "png": True}
    # The vectors are the student's penultimate features after training.
    expected, _ = emb.compute_embeddings(student, images)
    # The callback ran this same computation (same weights, kernels and batch: bit-identical) and wrote it as
    # text with 6 significant digits: <= 5e-6 relative per value. The score, a silhouette in [-1, 1] of
    # those same float32 embeddings, is the same (1e-4 to spare).
    np.testing.assert_allclose(np.loadtxt(log_dir / emb.TENSORS_FILE, delimiter="\t"), expected, rtol=1e-5)
    assert callback.score == pytest.approx(emb.separation_score(expected, labels), abs=1e-4)
    assert [r[2] for r in read_metadata(str(log_dir))[1:]] == ["a"] * 8 + ["b"] * 8 + ["c"] * 8

    import tensorflow as tf

    (events,) = glob.glob(str(log_dir / "events.out.tfevents.*"))
    scalars = {value.tag: (event.step, tf.make_ndarray(value.tensor))
               for event in tf.compat.v1.train.summary_iterator(events) for value in event.summary.value}
    step, score = scalars["embeddings/silhouette"]
    assert step == 2 and float(score) == pytest.approx(callback.score, abs=1e-6)  # stored as float32: 6e-8

    with pytest.raises(ValueError, match="2 to"):
        emb.EmbeddingProjector(images, np.zeros(24), ("a",), str(log_dir))


# --- whole runs -----------------------------------------------------------------------------


def test_embed_runs_uses_the_same_examples_for_every_run(tiny_runs):
    from kdkeras.analysis import runs

    _, teacher_dir, kd_dir = tiny_runs
    chosen = [runs.load_run(teacher_dir), runs.load_run(kd_dir)]
    selection, results = emb.embed_runs(chosen, worst=4, num_points=40, seed=1, log=lambda m: None)

    images, labels, _ = runs.split_arrays(chosen[0].config, "test")
    _, teacher_logits = emb.compute_embeddings(runs.load_run_model(chosen[0]), images)
    assert selection.classes == emb.worst_classes(teacher_logits, labels, 4)
    assert set(labels[selection.indices]) == set(selection.classes)
    assert [r.run.kind for r in results] == ["R", "distilled"]
    for result in results:
        expected, logits = emb.compute_embeddings(runs.load_run_model(result.run), images[selection.indices])
        # The first run's vectors come from its pass over every test image, here from a batch of the chosen
        # ones: the same float32 sums in other orders (1e-5 of the scale); its silhouette (in [-1, 1]) moves
        # by as little (abs 1e-4), and an argmax near a tie may flip: one example at most.
        assert relative_error(result.embeddings, expected) < 1e-5
        assert result.score == pytest.approx(emb.separation_score(expected, selection.labels), abs=1e-4)
        correct = int(np.sum(logits.argmax(-1) == selection.labels))
        assert abs(round(result.accuracy * len(selection.labels)) - correct) <= 1

    with pytest.raises(ValueError, match="not both"):
        emb.embed_runs(chosen, classes=["class_1", "class_2"], worst=2)
    with pytest.raises(ValueError, match="between 1 and 100"):
        emb.embed_runs(chosen, worst=101)
    with pytest.raises(ValueError, match="Valid choices: test, train"):
        emb.embed_runs(chosen, split="validation")
    with pytest.raises(ValueError, match="--num_points=2 is smaller than the number of classes"):
        emb.embed_runs(chosen, num_points=2)  # the default: 3 worst classes
    with pytest.raises(ValueError, match="--num_points=2 is smaller than the number of classes"):
        emb.embed_runs(chosen, classes=["class_1", "class_2", "class_5"], num_points=2)


def test_sprite_puts_each_example_at_its_index_with_its_colours(tmp_path, monkeypatch):
    """Thumbnails row by row; a linear map per channel, so normalised images keep their look."""
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]], np.float32)
    raw = np.broadcast_to(colours[:, None, None, :], (5, 4, 6, 3)).copy()
    mean, std = np.array([120.0, 110.0, 100.0]), np.array([60.0, 50.0, 70.0])
    for images in (raw, (raw - mean) / std):  # raw pixels, and the same normalised
        sprite, thumb = emb.sprite_image(images)
        assert thumb == (4, 6) and sprite.shape == (3 * 4, 3 * 6, 3) and sprite.dtype == np.uint8
        for i, colour in enumerate(colours):
            r, c = divmod(i, 3)
            np.testing.assert_array_equal(sprite[r * 4:(r + 1) * 4, c * 6:(c + 1) * 6],
                                          np.broadcast_to(colour, (4, 6, 3)))
        assert not sprite[4:8, 6 * 2:].any() and not sprite[8:].any()  # the cells after the last: black
    # A sprite that would exceed TensorBoard's limit (8192 pixels; 12 here) shrinks its thumbnails.
    from kdkeras.analysis.embeddings import projector

    monkeypatch.setattr(projector, "MAX_SPRITE_SIDE", 12)
    small, thumb = emb.sprite_image(raw)
    assert thumb == (2, 3) and small.shape == (6, 9, 3)
    np.testing.assert_array_equal(small[2:4, 0:3], np.broadcast_to(colours[3], (2, 3, 3)))
    monkeypatch.undo()

    directory = tmp_path / "projector"
    labels = np.array([0, 1, 0, 1, 0])
    emb.write_projector(str(directory), np.eye(5, dtype=np.float32), labels, ("a", "b"), images=raw)
    (embedding,) = emb.read_projector_config(str(directory)).embeddings
    assert embedding.sprite.image_path == emb.SPRITE_FILE and list(embedding.sprite.single_image_dim) == [4, 6]
    decoded = tf.io.decode_png(open(directory / emb.SPRITE_FILE, "rb").read()).numpy()
    np.testing.assert_array_equal(decoded, emb.sprite_image(raw)[0])
    emb.write_projector(str(directory), np.eye(5, dtype=np.float32), labels, ("a", "b"))  # no images now
    assert not (directory / emb.SPRITE_FILE).exists()
    assert not emb.read_projector_config(str(directory)).embeddings[0].sprite.image_path


def test_script_writes_projector_and_png_into_the_run(tiny_runs):
    _, teacher_dir, _ = tiny_runs
    result = run_script(f"--run={teacher_dir}", "--classes=class_3,class_9,class_40", "--num_points=30")
    assert result.returncode == 0, result.stderr[-2000:]
    projector_dir = os.path.join(teacher_dir, "tensorboard", "projector")
    png = os.path.join(teacher_dir, "embeddings.png")
    assert f"Scatter: {png}" in result.stdout and projector_dir in result.stdout
    assert "silhouette=" in result.stdout
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    rows = read_metadata(projector_dir)
    assert {r[2] for r in rows[1:]} == {"class_3", "class_9", "class_40"}
    tensors = np.loadtxt(os.path.join(projector_dir, emb.TENSORS_FILE), delimiter="\t", ndmin=2)
    assert tensors.shape == (len(rows) - 1, 64)  # wrn10x1: 64 channels at avg_pool
    (embedding,) = emb.read_projector_config(projector_dir).embeddings  # each point drawn as its image
    assert embedding.sprite.image_path == emb.SPRITE_FILE and list(embedding.sprite.single_image_dim) == [32, 32]
    assert os.path.isfile(os.path.join(projector_dir, emb.SPRITE_FILE))


def test_script_compare_draws_one_png(tiny_runs, tmp_path):
    logdir, teacher_dir, kd_dir = tiny_runs
    result = run_script(f"--compare={teacher_dir},{kd_dir}", "--worst=3", "--num_points=12")
    assert result.returncode == 0, result.stderr[-2000:]
    default = os.path.join(logdir, "synthetic",
                           f"embeddings_{os.path.basename(teacher_dir)}_vs_{os.path.basename(kd_dir)}.png")
    assert f"Comparison: {default}" in result.stdout and os.path.getsize(default) > 1000
    assert result.stdout.count("silhouette=") == 2

    # Runs of another dataset cannot share panels (nothing is drawn).
    other = tmp_path / "cifar10" / "copy"
    shutil.copytree(teacher_dir, other)
    config = (other / "config.yaml").read_text().replace("dataset: synthetic", "dataset: cifar10")
    (other / "config.yaml").write_text(config)
    output = tmp_path / "out.png"
    result = run_script(f"--compare={teacher_dir},{other}", f"--output={output}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = error_lines(result.stderr)
    assert "different datasets" in line and "cifar10" in line
    assert not output.exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--classes=class_1,class_2", "--worst=2"], "--classes or --worst, not both"),
        (["--classes=class_1,whale"], "Unknown class 'whale'. The dataset has 100 classes"),
        (["--split=val"], "Valid choices: test, train"),
    ],
)
def test_script_bad_input_is_one_line_with_exit_code_2(tiny_runs, args, fragment):
    _, teacher_dir, _ = tiny_runs
    result = run_script(f"--run={teacher_dir}", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (line,) = error_lines(result.stderr)
    assert fragment in line, line


def test_script_refuses_an_unfinished_run(tmp_path, tiny_runs):
    _, teacher_dir, _ = tiny_runs
    unfinished = tmp_path / "synthetic" / "unfinished"
    unfinished.mkdir(parents=True)
    shutil.copy(os.path.join(teacher_dir, "config.yaml"), unfinished)
    result = run_script(f"--run={unfinished}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = error_lines(result.stderr)
    assert "no model.keras yet" in line
    assert not (unfinished / "tensorboard").exists()
