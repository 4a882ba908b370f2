"""CRD: Tian, Krishnan and Isola, "Contrastive Representation Distillation" (ICLR 2020).

A noise-contrastive objective between the student's and the teacher's
embeddings, with K negatives per example drawn from two memory banks that
hold a momentum average of every training example's embedding (see
:class:`CRD`). The defaults are the CIFAR-100 ones of the authors' code
(RepDistiller) and of mdistiller.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import random

import keras
from keras import ops

from kdkeras.errors import UsageError
from kdkeras.methods.base import EMBEDDING, Method, as_float32, check_number, setting

SOURCE = "Tian et al. 2020; RepDistiller's train_student.py and mdistiller's CFG.CRD (CIFAR-100)"
#: The authors' eps in the contrast's denominators.
EPSILON = 1e-7
#: Floor of a norm in the L2 normalisations (the authors divide by the bare norm; never active on real data).
MIN_NORM = 1e-12
#: The second half of the seed of the evaluation negatives (training draws use the step counter, >= 0).
EVALUATION_DRAW = -1


@dataclasses.dataclass(frozen=True)
class CRDSettings:
    feat_dim: int = setting(128, "size of the contrast's embedding space (both linear heads' outputs)", minimum=1,
                            source=SOURCE)
    nce_k: int = setting(16384, "negatives per example, drawn uniformly from the memory banks", minimum=1,
                         source=SOURCE)
    nce_t: float = setting(0.07, "temperature of the contrast's exp(<u, v> / T)", minimum=0.0,
                           exclusive_minimum=True, source=SOURCE)
    nce_mom: float = setting(0.5, "momentum of the memory banks' update (the share of the old entry)", minimum=0.0,
                             maximum=1.0, source=SOURCE)


def l2_normalize(x):
    """``x / ||x||_2`` along the last axis (the norm floored at :data:`MIN_NORM`)."""
    return x / ops.maximum(ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True)), MIN_NORM)


def nce_terms(p, noise):
    """The NCE loss per anchor, float32 ``(B,)``, from ``p`` ``(B, 1 + K)`` (the positive first).

    ``-log(p_pos / (p_pos + noise + eps)) - sum_k log(noise / (p_k + noise + eps))``, with
    ``noise = K / N``: the authors' ``ContrastLoss`` before its batch mean.
    """
    log_d1 = ops.log(p[:, 0] / (p[:, 0] + noise + EPSILON))
    log_d0 = ops.log(noise / (p[:, 1:] + noise + EPSILON))
    return -(log_d1 + ops.sum(log_d0, axis=1))


def _check_one_replica():
    """A one-line error under several ``tf.distribute`` replicas (each would write only its rows of the banks)."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    count = (context if context is not None else tf.distribute.get_strategy()).num_replicas_in_sync
    if count > 1:
        raise UsageError("CRD keeps its memory banks on one replica: train it on one device (--strategy=none). "
                         f"Received: {count} replicas.")


def _check_int(name, value, minimum, allow_none=False):
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UsageError(f"`{name}` must be an integer >= {minimum}{' or None' if allow_none else ''}. "
                         f"Received: {name}={value!r}")


@keras.saving.register_keras_serializable(package="kdkeras")
class CRD(Method):
    """Contrastive Representation Distillation (Tian, Krishnan and Isola, ICLR 2020), per example.

    With the student's and the teacher's embeddings (the pooled features the
    classifiers read, ``"embedding"``; the teacher's under ``stop_gradient``),
    two trainable linear heads ``g_s``, ``g_t`` to ``feat_dim``, and the
    memory banks ``M_s``, ``M_t`` (``N x feat_dim``, ``N`` training
    examples), for the example ``i`` at position ``n_i`` of the training
    split and its ``K`` negatives ``j_1 .. j_K``, drawn uniformly from
    ``0 .. N-1`` with replacement:

        u_i = g_s(s_i) / ||g_s(s_i)||,     v_i = g_t(t_i) / ||g_t(t_i)||
        P_s(i, j) = exp(<M_t[j], u_i> / T) / Z_s          (student anchor, teacher bank)
        P_t(i, j) = exp(<M_s[j], v_i> / T) / Z_t          (teacher anchor, student bank)
        h(P) = -log(P(i, n_i) / (P(i, n_i) + K/N + eps))
               - sum_k log((K/N) / (P(i, j_k) + K/N + eps))
        crd_i = h(P_s) + h(P_t)                           (eps = 1e-7)

    whose batch mean is the authors' ``CRDLoss`` (``s_loss + t_loss``, the
    paper's eq. 18 with the uniform noise distribution ``1/N``). ``Z_s`` and
    ``Z_t`` are estimated once, on the first training batch, as ``N`` times
    the mean of the ``B x (K + 1)`` values ``exp(<., .> / T)`` of that side
    (the authors' ``ContrastMemory``), and kept in a variable. After the
    scores are taken, the banks' rows of the batch become

        M_s[n_i] <- normalise(m * M_s[n_i] + (1 - m) * u_i)
        M_t[n_i] <- normalise(m * M_t[n_i] + (1 - m) * v_i)

    The banks start uniform in ``[-a, a]``, ``a = 1 / sqrt(feat_dim / 3)``
    (rows of expected norm 1), as the authors'. The positive's score reads
    the bank's entry of the example from before this step's update. The
    student's gradient comes from ``h(P_s)``; ``h(P_t)`` trains the teacher's
    head (as in the authors' code; the banks are constants of the loss).

    State: the heads (trainable), the banks, ``Z`` and the draw state
    (non-trainable variables) belong to the method: they train, checkpoint
    and resume with the distiller and never enter the student's ``.keras``.
    The negatives are a stateless draw keyed by ``(key, step)``, ``key`` an
    integer of the run (drawn from the seeded RNG, or ``seed``) and ``step``
    a counter of the training steps, both in the checkpointed draw state: a
    resumed run draws the negatives an uninterrupted one would.

    Training (``indices`` given and ``training`` true) computes the above and
    updates the banks, ``Z`` (the first time) and the counter. With
    ``indices`` and ``training`` false: the same loss, nothing updated.
    Without ``indices`` (evaluation, ``Distiller.per_example_objective``,
    Keras's own ``keras.distillation.Distiller``, which cannot pass them):
    a held-out image has no entry in the banks, so each anchor's positive is
    the other side's embedding of the same image (``<u_i, v_i>`` on both
    sides), the ``K`` negatives are one fixed draw (key ``(key, -1)``, the
    same in every evaluation batch, so the metric is deterministic and the
    training draws are untouched), and ``Z`` is the stored one (before any
    training step: estimated from the batch, not stored). Nothing is updated.

    Defaults: ``feat_dim = 128``, ``K = 16384``, ``T = 0.07``, momentum 0.5,
    weight 0.8 and cross-entropy weight 1: RepDistiller's CIFAR-100 script
    (``--distill crd -a 0 -b 0.8``, ``--nce_k 16384 --nce_t 0.07 --nce_m
    0.5``) and mdistiller's ``CFG.CRD``. Heads: PyTorch's ``nn.Linear``
    initialisation (kernel and bias uniform in ``+-1/sqrt(fan_in)``).

    Deviation: the authors' CIFAR loaders draw each example's ``K``
    negatives from the examples of the other classes (``mode='exact'``);
    this method draws them uniformly from all ``N`` examples, the noise
    distribution ``1/N`` that the loss itself assumes (and the draw
    ``ContrastMemory`` makes when it is given no negatives): it needs no
    labels of the whole training split. A draw may then hit a same-class
    example or the example itself (expected ``K/N = 0.33`` times per example
    on CIFAR-100).

    Cost: the banks hold ``2 N feat_dim`` floats (CIFAR-100: 2 x 50,000 x
    128 float32 = 51.2 MB, in memory and in each checkpoint). Each step takes
    the scores of every bank row, ``u M_t^T`` and ``v M_s^T`` (``B x N``,
    ``O(B N feat_dim)``), and picks the ``K + 1`` it needs: less memory than
    gathering ``B x (K + 1)`` rows of ``feat_dim`` when ``N < (K + 1)
    feat_dim``; and rewrites both banks (a copy of each per step).

    Under several replicas each replica would update only its rows of its
    copy of the banks: CRD refuses to train there (a one-line error); train
    it on one device.

    Args:
        feat_dim: size of the embedding space, an integer >= 1. Defaults to 128.
        nce_k: negatives per example, an integer >= 1. Defaults to 16384.
        nce_t: temperature T > 0. Defaults to 0.07.
        nce_mom: momentum m of the banks' update, in [0, 1]. Defaults to 0.5.
        num_examples: N, the number of training examples (the banks' rows);
            ``None``: given later by :meth:`set_data_size` (a run does).
        seed: integer key of the negatives' draws (``None``: drawn from
            Python's seeded RNG when the banks are made).
        name: layer name.
    """

    method = "crd"
    paper = "Tian, Krishnan and Isola, Contrastive Representation Distillation, ICLR 2020"
    reads = "embedding, example indices"
    parts = "two linear heads to feat_dim; memory banks 2 x N x feat_dim (non-trainable)"
    Settings = CRDSettings
    default_weight = 0.8
    default_ce_weight = 1.0
    needs_indices = True
    needs_data_size = True

    def __init__(self, feat_dim=128, nce_k=16384, nce_t=0.07, nce_mom=0.5, num_examples=None, seed=None,
                 name=None):
        _check_int("feat_dim", feat_dim, 1)
        _check_int("nce_k", nce_k, 1)
        check_number("nce_t", nce_t, strict=True)
        check_number("nce_mom", nce_mom)
        if nce_mom > 1:
            raise UsageError(f"`nce_mom` must be a number in [0, 1]. Received: nce_mom={nce_mom!r}")
        _check_int("num_examples", num_examples, 1, allow_none=True)
        _check_int("seed", seed, 0, allow_none=True)
        super().__init__(name=name)
        self.taps = (EMBEDDING,)
        self.feat_dim, self.nce_k = int(feat_dim), int(nce_k)
        self.nce_t, self.nce_mom = float(nce_t), float(nce_mom)
        self.num_examples = None
        self.seed = seed
        self.student_head = self.teacher_head = None
        self.student_bank = self.teacher_bank = self.normalizer = self.draw_state = None
        if num_examples is not None:
            self.set_data_size(num_examples)

    # ----------------------------------------------------------- parts and state
    def build_adapters(self, student_shapes, teacher_shapes):
        """Creates the two linear heads from the ``{"embedding": (B, D)}`` shapes of both models."""
        dims = []
        for side, shapes in (("student", student_shapes), ("teacher", teacher_shapes)):
            shape = tuple(shapes.get(EMBEDDING) or ())
            if len(shape) != 2 or shape[-1] is None:
                raise UsageError(f"CRD reads the {side}'s embedding, a (B, D) tensor. Received: {shape or None}")
            dims.append(int(shape[-1]))
        if self.student_head is None:
            self.student_head, self.teacher_head = (self._head(d, f"{self.name}_{side}_head")
                                                    for d, side in zip(dims, ("student", "teacher")))
        self.built = True

    def _head(self, dim, name):
        bound = 1.0 / math.sqrt(dim)
        head = keras.layers.Dense(
            self.feat_dim, kernel_initializer=keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"),
            bias_initializer=keras.initializers.RandomUniform(-bound, bound), dtype="float32", name=name)
        head.build((None, dim))
        return head

    @property
    def adapters(self):
        return () if self.student_head is None else (self.student_head, self.teacher_head)

    def set_data_size(self, num_examples):
        """Creates the banks (``num_examples`` rows each), ``Z`` and the draw state, once."""
        _check_int("num_examples", num_examples, 1)
        if self.student_bank is not None:
            if int(num_examples) != self.num_examples:
                raise UsageError(f"CRD's memory banks have {self.num_examples} rows; the training split has "
                                 f"{num_examples} examples.")
            return
        _check_one_replica()
        self.num_examples = int(num_examples)
        shape = (self.num_examples, self.feat_dim)
        stdv = 1.0 / math.sqrt(self.feat_dim / 3.0)
        self.student_bank, self.teacher_bank = (
            self.add_weight(shape=shape, initializer=keras.initializers.RandomUniform(-stdv, stdv), dtype="float32",
                            trainable=False, autocast=False, name=f"{side}_bank") for side in ("student", "teacher"))
        self.normalizer = self.add_weight(shape=(2,), initializer=keras.initializers.Constant(-1.0),
                                          dtype="float32", trainable=False, autocast=False, name="normalizer")
        key = random.randrange(2**31) if self.seed is None else self.seed
        self.draw_state = self.add_weight(shape=(2,), initializer=lambda shape, dtype: ops.convert_to_tensor(
            [key, 0], dtype), dtype="int64", trainable=False, autocast=False, name="draw_state")

    # ----------------------------------------------------------- the contrast
    def embed(self, teacher_outputs, student_outputs, training=None):
        """``(u, v)``: the student's and the teacher's L2-normalised head outputs, float32 ``(B, feat_dim)``."""
        t = ops.stop_gradient(as_float32(self.read(teacher_outputs, "teacher")[EMBEDDING]))
        s = as_float32(self.read(student_outputs, "student")[EMBEDDING])
        if self.student_head is None:
            self.build_adapters({EMBEDDING: tuple(s.shape)}, {EMBEDDING: tuple(t.shape)})
        return (l2_normalize(self.student_head(s, training=training)),
                l2_normalize(self.teacher_head(t, training=training)))

    def negatives(self, batch_size, training=True):
        """The int32 ``(batch_size, K)`` negatives of the next training step (``training=False``: evaluation's)."""
        import tensorflow as tf  # keras.random takes no tensor seed: the draw is keyed by the checkpointed state

        state = ops.convert_to_tensor(self._state().draw_state)
        seed = state if training else ops.stack([state[0], ops.convert_to_tensor(EVALUATION_DRAW, "int64")])
        return tf.random.stateless_uniform((batch_size, self.nce_k), seed=seed, minval=0,
                                           maxval=self.num_examples, dtype="int32")

    def per_example_loss(self, teacher_outputs, student_outputs, labels=None, training=None, indices=None):
        """CRD per example (see the class docstring); ``indices``: int ``(B,)`` positions in the training split."""
        self._state()
        u, v = self.embed(teacher_outputs, student_outputs, training)
        update = indices is not None and bool(training)
        if update:
            _check_one_replica()
        bank_s = ops.stop_gradient(ops.convert_to_tensor(self.student_bank))
        bank_t = ops.stop_gradient(ops.convert_to_tensor(self.teacher_bank))
        negatives = self.negatives(ops.shape(u)[0], training=indices is not None)
        if indices is not None:
            rows = ops.cast(ops.reshape(indices, (-1,)), "int32")
            contrast = ops.concatenate([rows[:, None], negatives], axis=1)  # the positive first, as the authors'
            scores_s = ops.take_along_axis(ops.matmul(u, ops.transpose(bank_t)), contrast, axis=1)
            scores_t = ops.take_along_axis(ops.matmul(v, ops.transpose(bank_s)), contrast, axis=1)
        else:
            positive = ops.sum(u * v, axis=1, keepdims=True)
            scores_s = ops.concatenate(
                [positive, ops.take_along_axis(ops.matmul(u, ops.transpose(bank_t)), negatives, axis=1)], axis=1)
            scores_t = ops.concatenate(
                [positive, ops.take_along_axis(ops.matmul(v, ops.transpose(bank_s)), negatives, axis=1)], axis=1)
        exp_s, exp_t = ops.exp(scores_s / self.nce_t), ops.exp(scores_t / self.nce_t)
        stored = ops.convert_to_tensor(self.normalizer)
        estimate = ops.stop_gradient(ops.stack([ops.mean(exp_s), ops.mean(exp_t)]) * float(self.num_examples))
        z = ops.where(stored > 0, stored, estimate)
        noise = self.nce_k / self.num_examples
        loss = nce_terms(exp_s / z[0], noise) + nce_terms(exp_t / z[1], noise)
        if update:
            self.normalizer.assign(z)
            self._update_bank(self.student_bank, bank_s, rows, u)
            self._update_bank(self.teacher_bank, bank_t, rows, v)
            self.draw_state.assign_add(ops.convert_to_tensor([0, 1], "int64"))
        return loss

    def _update_bank(self, variable, bank, rows, embeddings):
        """``bank[rows] <- normalise(m * bank[rows] + (1 - m) * embeddings)``, written to ``variable``."""
        mixed = self.nce_mom * ops.take(bank, rows, axis=0) + (1.0 - self.nce_mom) * ops.stop_gradient(embeddings)
        variable.assign(ops.scatter_update(bank, rows[:, None], l2_normalize(mixed)))

    def _state(self):
        if self.student_bank is None:
            raise UsageError("CRD has no memory banks yet: give num_examples=N (the number of training "
                             "examples) or call set_data_size(N) before training.")
        return self

    def get_config(self):
        return {**super().get_config(), "feat_dim": self.feat_dim, "nce_k": self.nce_k, "nce_t": self.nce_t,
                "nce_mom": self.nce_mom, "num_examples": self.num_examples, "seed": self.seed}
