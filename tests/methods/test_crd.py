"""Tests for `kdkeras.methods.crd`: CRD against a float64 NumPy reference written from Tian et al. (2020).

The reference reads back the method's own heads, memory banks and drawn
negatives, so it checks the contrast, the normalisation constant and the
banks' update the method computes with the state it holds; then the state
trains, stays put in evaluation, and resumes exactly in a run.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdkeras.errors import UsageError
from kdkeras.methods import get
from kdkeras.methods.crd import CRD, EPSILON
from kdkeras.training.run_folder import run_dir
from tests.helpers import run_script, script_env

B, S_DIM, T_DIM, FEAT, K, N = 4, 6, 7, 8, 5, 12
#: float32 TensorFlow against float64 NumPy: a linear head (sums of 6-7 products) and a normalisation, dot
#: products of 8 terms (~1e-7 relative each), divided by T = 0.07 (x14: ~1e-6 absolute in the exponent),
#: exp, and logs of ratios summed over K + 1 terms of one sign: ~1e-6 relative, seen 5e-7 (20 seeds); 1e-5.
RTOL = 1e-5


def _outputs(seed):
    rng = np.random.default_rng(seed)
    return ({"embedding": rng.normal(size=(B, T_DIM)).astype(np.float32)},
            {"embedding": rng.normal(size=(B, S_DIM)).astype(np.float32)})


def _built(**kwargs):
    keras.utils.set_random_seed(0)
    term = CRD(**{"feat_dim": FEAT, "nce_k": K, "num_examples": N, "seed": 7, **kwargs})
    term.build_adapters({"embedding": (None, S_DIM)}, {"embedding": (None, T_DIM)})
    return term


def _state(term):
    return {v.name: np.array(v) for v in (term.student_bank, term.teacher_bank, term.normalizer, term.draw_state)}


def _np_normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_embeddings(term, teacher, student):
    """u, v: the heads (weights read back) applied to the embeddings, L2-normalised, float64."""
    def head(layer, x):
        return np.asarray(x, np.float64) @ np.asarray(layer.kernel, np.float64) + np.asarray(layer.bias, np.float64)

    return (_np_normalize(head(term.student_head, student["embedding"])),
            _np_normalize(head(term.teacher_head, teacher["embedding"])))


def _np_h(p, noise):
    """The authors' ContrastLoss per anchor: -log D1(positive) - sum over the K negatives of log D0."""
    return -(np.log(p[:, 0] / (p[:, 0] + noise + EPSILON)) + np.log(noise / (p[:, 1:] + noise + EPSILON)).sum(1))


def _np_crd(term, teacher, student, state, negatives, indices=None):
    """``(crd per example, Z)`` from Tian et al.'s eq. 18 with the banks of ``state`` (before the step).

    With indices: the positive of example i is bank row indices[i]; without: the other side's embedding.
    Z: the stored one, else N * the mean of exp(score / T) of each side over the B x (K + 1) scores.
    """
    u, v = _np_embeddings(term, teacher, student)
    bank_s = state["student_bank"].astype(np.float64)
    bank_t = state["teacher_bank"].astype(np.float64)
    if indices is not None:
        contrast = np.concatenate([np.asarray(indices)[:, None], negatives], axis=1)
        scores_s = np.einsum("bkd,bd->bk", bank_t[contrast], u)  # student anchor, teacher bank
        scores_t = np.einsum("bkd,bd->bk", bank_s[contrast], v)  # teacher anchor, student bank
    else:
        positive = (u * v).sum(1, keepdims=True)
        scores_s = np.concatenate([positive, np.einsum("bkd,bd->bk", bank_t[negatives], u)], axis=1)
        scores_t = np.concatenate([positive, np.einsum("bkd,bd->bk", bank_s[negatives], v)], axis=1)
    exp_s, exp_t = np.exp(scores_s / term.nce_t), np.exp(scores_t / term.nce_t)
    z = state["normalizer"].astype(np.float64)
    if z[0] <= 0:
        z = np.array([exp_s.mean() * N, exp_t.mean() * N])
    noise = K / N
    return _np_h(exp_s / z[0], noise) + _np_h(exp_t / z[1], noise), z


def test_crd_builds_its_heads_and_state():
    term = _built()
    assert [tuple(h.kernel.shape) for h in term.adapters] == [(S_DIM, FEAT), (T_DIM, FEAT)]
    assert len(term.trainable_weights) == 4  # two kernels, two biases
    state = _state(term)
    assert state["student_bank"].shape == state["teacher_bank"].shape == (N, FEAT)
    # The authors' initialisation: uniform in +-1/sqrt(feat_dim / 3); Z not yet estimated; the draw at step 0.
    bound = 1 / np.sqrt(FEAT / 3)
    assert np.abs(state["student_bank"]).max() <= bound and np.abs(state["teacher_bank"]).max() <= bound
    assert not np.array_equal(state["student_bank"], state["teacher_bank"])
    np.testing.assert_array_equal(state["normalizer"], [-1.0, -1.0])
    np.testing.assert_array_equal(state["draw_state"], [7, 0])
    assert {id(v) for v in term.non_trainable_weights} == {id(term.student_bank), id(term.teacher_bank),
                                                          id(term.normalizer), id(term.draw_state)}
    again = CRD(feat_dim=FEAT, nce_k=K, num_examples=N)  # or built on the first call, from the tensors
    again.per_example_loss(*_outputs(0))
    assert [tuple(w.shape) for w in again.trainable_weights] == [tuple(w.shape) for w in term.trainable_weights]


def test_crd_training_step_matches_numpy_and_updates_the_banks_at_the_batchs_indices():
    term = _built()
    teacher, student = _outputs(1)
    indices = np.array([3, 0, 11, 6])
    before = _state(term)
    negatives = np.asarray(term.negatives(B))  # what the step draws: a function of the checkpointed state
    assert negatives.shape == (B, K) and negatives.min() >= 0 and negatives.max() < N
    expected, z = _np_crd(term, teacher, student, before, negatives, indices)
    got = term.per_example_loss(teacher, student, indices=indices, training=True)
    assert got.shape == (B,) and got.dtype == "float32"
    np.testing.assert_allclose(got, expected, rtol=RTOL)
    # Z: estimated once from this first batch, stored; the draw counter moved on.
    after = _state(term)
    np.testing.assert_allclose(after["normalizer"], z, rtol=RTOL)
    np.testing.assert_array_equal(after["draw_state"], [7, 1])
    # The banks: each row of the batch mixed with momentum 0.5 and renormalised, every other row untouched.
    u, v = _np_embeddings(term, teacher, student)
    for name, emb in (("student_bank", u), ("teacher_bank", v)):
        mixed = 0.5 * before[name][indices] + 0.5 * emb
        np.testing.assert_allclose(after[name][indices], _np_normalize(mixed), rtol=RTOL, atol=1e-7)
        np.testing.assert_allclose(np.linalg.norm(after[name][indices], axis=1), 1.0, rtol=1e-6)
        others = np.setdiff1d(np.arange(N), indices)
        np.testing.assert_array_equal(after[name][others], before[name][others])

    # The next step: new negatives, the stored Z, the banks as the first step left them.
    teacher2, student2 = _outputs(2)
    negatives2 = np.asarray(term.negatives(B))
    assert not np.array_equal(negatives2, negatives)
    indices2 = np.array([1, 3, 5, 9])
    expected2, z2 = _np_crd(term, teacher2, student2, after, negatives2, indices2)
    np.testing.assert_allclose(z2, after["normalizer"])
    got2 = term.per_example_loss(teacher2, student2, indices=indices2, training=True)
    np.testing.assert_allclose(got2, expected2, rtol=RTOL)
    np.testing.assert_allclose(float(keras.ops.mean(got2)), expected2.mean(), rtol=RTOL)
    np.testing.assert_array_equal(_state(term)["normalizer"], after["normalizer"])


def test_crd_evaluation_matches_numpy_and_leaves_the_state_unchanged():
    term = _built()
    term.per_example_loss(*_outputs(1), indices=np.array([0, 1, 2, 3]), training=True)  # Z set, banks moved
    teacher, student = _outputs(3)
    before = _state(term)
    negatives = np.asarray(term.negatives(B, training=False))
    expected, _ = _np_crd(term, teacher, student, before, negatives)
    for training in (False, True):  # evaluate, and per_example_objective's training mode: no indices
        got = term.per_example_loss(teacher, student, training=training)
        np.testing.assert_allclose(got, expected, rtol=RTOL)
        for name, value in _state(term).items():
            np.testing.assert_array_equal(value, before[name])
    np.testing.assert_array_equal(term.negatives(B, training=False), negatives)  # one fixed evaluation draw
    assert not np.array_equal(term.negatives(B), negatives)  # ... not the training draw
    # Indices without training: the training form of the loss, nothing updated either.
    indices = np.array([4, 2, 8, 10])
    expected, _ = _np_crd(term, teacher, student, before, np.asarray(term.negatives(B)), indices)
    np.testing.assert_allclose(term.per_example_loss(teacher, student, indices=indices, training=False), expected,
                               rtol=RTOL)
    for name, value in _state(term).items():
        np.testing.assert_array_equal(value, before[name])
    # Before any training step, evaluation estimates Z from its batch without storing it.
    fresh = _built()
    expected, _ = _np_crd(fresh, teacher, student, _state(fresh), np.asarray(fresh.negatives(B, training=False)))
    np.testing.assert_allclose(fresh.per_example_loss(teacher, student), expected, rtol=RTOL)
    np.testing.assert_array_equal(_state(fresh)["normalizer"], [-1.0, -1.0])


def test_crd_identities():
    teacher, student = _outputs(4)
    indices = np.array([5, 6, 7, 8])
    # The loss reads the heads' outputs only through their directions: scaling both heads changes nothing.
    a, b = _built(), _built()
    for head in b.adapters:
        head.kernel.assign(head.kernel * 3.0)
        head.bias.assign(head.bias * 3.0)
    np.testing.assert_allclose(b.per_example_loss(teacher, student), a.per_example_loss(teacher, student),
                               rtol=RTOL)
    np.testing.assert_allclose(b.per_example_loss(teacher, student, indices=indices, training=True),
                               a.per_example_loss(teacher, student, indices=indices, training=True), rtol=RTOL)
    # Momentum 0: the rows of the batch become the embeddings themselves; momentum 1 keeps the (renormalised) rows.
    zero = _built(nce_mom=0.0)
    zero.per_example_loss(teacher, student, indices=indices, training=True)
    u, v = _np_embeddings(zero, teacher, student)
    np.testing.assert_allclose(np.array(zero.student_bank)[indices], u, rtol=RTOL, atol=1e-7)
    np.testing.assert_allclose(np.array(zero.teacher_bank)[indices], v, rtol=RTOL, atol=1e-7)
    one = _built(nce_mom=1.0)
    before = _state(one)["student_bank"][indices]
    one.per_example_loss(teacher, student, indices=indices, training=True)
    np.testing.assert_allclose(np.array(one.student_bank)[indices], _np_normalize(before), rtol=1e-6)


def test_crd_gradient_reaches_the_student_and_both_heads_not_the_teacher_or_the_banks():
    term = _built()
    teacher, student = _outputs(5)
    s, t = tf.Variable(student["embedding"]), tf.Variable(teacher["embedding"])
    for indices in (np.array([0, 4, 8, 9]), None):
        with tf.GradientTape(persistent=True) as tape:
            loss = keras.ops.mean(term.per_example_loss({"embedding": t}, {"embedding": s}, indices=indices,
                                                        training=True))
        assert tape.gradient(loss, t) is None
        for grad in [tape.gradient(loss, s)] + tape.gradient(loss, term.trainable_variables):
            assert grad is not None and np.all(np.isfinite(grad)) and np.any(np.asarray(grad) != 0)
        assert tape.gradient(loss, [term.student_bank, term.teacher_bank]) == [None, None]


@pytest.mark.parametrize("kwargs", [
    {"feat_dim": 0}, {"feat_dim": 1.5}, {"nce_k": 0}, {"nce_k": True}, {"nce_t": 0.0}, {"nce_t": "0.07"},
    {"nce_mom": -0.1}, {"nce_mom": 1.5}, {"num_examples": 0}, {"num_examples": 2.0}, {"seed": -1},
])
def test_crd_bad_settings(kwargs):
    with pytest.raises(UsageError) as info:
        CRD(**kwargs)
    assert "\n" not in str(info.value)


def test_crd_needs_its_banks_and_one_data_size():
    term = CRD(feat_dim=FEAT, nce_k=K)
    with pytest.raises(UsageError, match="no memory banks") as info:
        term.per_example_loss(*_outputs(0))
    assert "\n" not in str(info.value)
    term.set_data_size(N)
    term.set_data_size(N)  # again: the same banks
    with pytest.raises(UsageError, match="have 12 rows; the training split has 13") as info:
        term.set_data_size(13)
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="embedding, a \\(B, D\\) tensor"):
        CRD().build_adapters({"embedding": (None, 4, 4, 3)}, {"embedding": (None, 8)})


def test_crd_registry_settings_and_config():
    assert get("crd") is CRD
    assert CRD.default_weight == 0.8 and CRD.default_ce_weight == 1.0  # RepDistiller -b 0.8; mdistiller
    assert CRD.needs_indices and CRD.needs_data_size and not CRD.needs_labels
    term = CRD()
    assert (term.feat_dim, term.nce_k, term.nce_t, term.nce_mom, term.taps) == (128, 16384, 0.07, 0.5,
                                                                                ("embedding",))
    term = CRD.from_settings(CRD.Settings(feat_dim=64, nce_k=4096, nce_t=0.1, nce_mom=0.9))
    assert (term.feat_dim, term.nce_k, term.nce_t, term.nce_mom) == (64, 4096, 0.1, 0.9)
    term.set_data_size(100)
    config = term.get_config()
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(term))
    assert type(again) is CRD and again.get_config() == config and again.num_examples == 100


def test_crd_trains_in_the_distiller_on_indexed_batches(tmp_path):
    from kdkeras import build_model
    from kdkeras.distiller import Distiller

    def distiller():
        keras.utils.set_random_seed(0)
        student = build_model("wrn10x1_NR_g2", num_classes=10, input_shape=(32, 32, 3))
        teacher = build_model("wrn10x1_R_g2", num_classes=10, input_shape=(32, 32, 3))
        d = Distiller(student, teacher, distillation_losses=[CRD(nce_k=64, num_examples=16)])
        d.compile(optimizer=keras.optimizers.SGD(0.01))
        return d

    d = distiller()
    (term,) = d.distillation_losses
    assert len(term.adapters) == 2  # built by the distiller from the embeddings' shapes
    assert {id(v) for v in term.trainable_variables} == {id(v) for v in d.adapter_variables}
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 32, 32, 3), dtype=np.float32), np.arange(16) % 10
    indexed = tf.data.Dataset.from_tensor_slices(((x, np.arange(16, dtype=np.int64)), y)).batch(8)
    heads, state = [np.array(v) for v in term.trainable_variables], _state(term)
    history = d.fit(indexed, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["crd"][0]) and np.isfinite(history.history["loss"][0])
    for a, b in zip(heads, term.trainable_variables):
        assert not np.allclose(a, np.array(b))
    trained = _state(term)
    for name in ("student_bank", "teacher_bank"):  # every row was in a batch: every row moved, to norm 1
        assert np.all(np.any(trained[name] != state[name], axis=1))
        np.testing.assert_allclose(np.linalg.norm(trained[name], axis=1), 1.0, rtol=1e-5)
    assert np.all(trained["normalizer"] > 0) and trained["draw_state"][1] == 2
    # Evaluation (no indices) reads the banks and leaves every part of the state as it is.
    result = d.evaluate(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), verbose=0, return_dict=True)
    assert np.isfinite(result["crd"])
    d.evaluate(indexed, verbose=0)  # indexed batches too: evaluation updates nothing
    for name, value in _state(term).items():
        np.testing.assert_array_equal(value, trained[name])
    # Training on batches without the indices is refused in one line.
    with pytest.raises(UsageError, match="need each example's index") as info:
        d.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=1, shuffle=False, verbose=0)
    assert "\n" not in str(info.value)
    # The banks, Z and the draw state are in the distiller's checkpoint.
    path = str(tmp_path / "d.weights.h5")
    d.save_weights(path)
    restored = distiller()
    restored.load_weights(path)
    for name, value in _state(restored.distillation_losses[0]).items():
        np.testing.assert_array_equal(value, trained[name])


def test_crd_refuses_several_replicas():
    code = textwrap.dedent("""
        import tensorflow as tf
        tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                                   [tf.config.LogicalDeviceConfiguration()] * 2)
        from kdkeras.errors import UsageError
        from kdkeras.methods.crd import CRD
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            try:
                CRD(num_examples=8)
            except UsageError as error:
                print("refused:", error)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=script_env(),
                            timeout=300)
    assert "refused: CRD keeps its memory banks on one replica" in result.stdout, result.stderr[-2000:]
    assert "Received: 2 replicas." in result.stdout


# ------------------------------------------------------------------ runs
@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    from kdkeras import build_model
    from kdkeras.models.convert import save_model

    keras.utils.set_random_seed(1)
    path = str(tmp_path_factory.mktemp("crd_teacher") / "teacher.keras")
    save_model(build_model("wrn10x1_R_g2", num_classes=100, input_shape=(32, 32, 3)), path)
    return path


RUN = {"model": "wrn10x1_NR_g2", "dataset": "synthetic", "epochs": 2, "train_size": 32, "test_size": 16,
       "batch_size": 16, "method": "crd"}


def test_a_crd_run_finishes(teacher_file, tmp_path):
    result = run_script("distill.py", "--student=wrn10x1_NR_g2", f"--teacher={teacher_file}",
                        "--dataset=synthetic", "--epochs=2", "--train_size=32", "--test_size=16",
                        "--batch_size=16", "--method=crd", f"--logdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "by crd" in result.stdout and "Finished" in result.stdout, result.stdout[-2000:]
    assert "test_crd" in result.stdout


class _Capture(keras.callbacks.Callback):
    """Copies ``logdir`` to ``copy_to`` after the first epoch (its backup written), and keeps the final state."""

    def __init__(self, logdir=None, copy_to=None):
        super().__init__()
        self.logdir, self.copy_to, self.state = logdir, copy_to, None

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0 and self.copy_to:
            shutil.copytree(self.logdir, self.copy_to)

    def on_train_end(self, logs=None):
        term = self.model.distillation_losses[0]
        self.state = {**_state(term), "heads": [np.array(v) for v in term.trainable_variables],
                      "student": [np.array(w) for w in self.model.student.weights]}


def test_a_resumed_crd_run_ends_with_the_banks_and_weights_of_the_uninterrupted_one(teacher_file, tmp_path):
    """Two runs in this process (~11 s): one whole, one resumed from a copy of the first's folder after epoch 1."""
    from kdkeras import config as config_lib
    from kdkeras.training import train_and_evaluate

    config = config_lib.resolve({**RUN, "teacher": teacher_file})
    whole, copy = str(tmp_path / "whole"), str(tmp_path / "copy")
    uninterrupted = _Capture(whole, copy)
    train_and_evaluate(config, whole, callbacks=[uninterrupted], verbose=0)
    # The copy of the run folder after epoch 1, as a run killed there leaves it: resumed at epoch 2.
    assert not os.path.exists(os.path.join(run_dir(config, copy), "results.json"))
    messages, resumed = [], _Capture()
    train_and_evaluate(config, copy, callbacks=[resumed], verbose=0, log=messages.append)
    assert any("Resuming" in m and "epoch 2/2" in m for m in messages), messages
    # The same process, kernels and batches: the resumed run must restore every part of CRD's state
    # (banks, Z, the draw counter) and the heads to end bit-identical.
    assert resumed.state.keys() == uninterrupted.state.keys()
    assert uninterrupted.state["draw_state"][1] == 4  # 2 epochs of 2 steps
    for name, value in uninterrupted.state.items():
        if isinstance(value, list):
            for a, b in zip(resumed.state[name], value):
                np.testing.assert_array_equal(a, b, err_msg=name)
        else:
            np.testing.assert_array_equal(resumed.state[name], value, err_msg=name)

