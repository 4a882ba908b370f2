"""The residual-free rivals (``--plain``): branch layers, the fold to the NR network, the anneal schedule.

The fold must give the registry's NR network (same layer names, exactly its
parameter count, no ``Add`` layer) computing what the trained network
computes in inference mode, for every mode, on grouped and standard WRNs and
on a CIFAR ResNet (stride-2 convolutions with ``"same"`` and with
``ZeroPadding2D`` + ``"valid"`` padding), with random weights and BatchNorm
statistics that are not the identity.
"""

import os

import keras
import numpy as np
import pytest

from kdkeras import batchnorm
from kdkeras.errors import UsageError
from kdkeras.models import build_model, build_plain, fold
from kdkeras.models import plain as plain_lib
from kdkeras.models.taps import tap_layers
from kdkeras.profiling import count_params

#: Grouped WRN, standard-convolution WRN, CIFAR ResNet; 16x16 inputs keep them fast.
NETS = ("wrn10x1_NR_g2", "wrn10x1_NR_g1", "resnet8_NR")
MODES = ("repvgg", "diracnet", "anneal")
SHAPE = (16, 16, 3)


def _randomise(model, rng, x):
    """Random BN scales/shifts, DiracNet scalings and BN statistics (from a batch, then perturbed); lambda = 0."""
    for layer in plain_lib.skip_layers(model):
        layer.skip_scale.assign(0.0)  # the end of the anneal: the fold is exact from here
    for layer in model.layers:
        if isinstance(layer, plain_lib.DiracConv2D):
            layer.alpha.assign(rng.uniform(0.5, 1.5, layer.filters).astype("float32"))
            layer.beta.assign(rng.uniform(0.05, 0.5, layer.filters).astype("float32"))
    layers = batchnorm.batchnorm_layers(model)  # the branches' BatchNorms of RepConv2D included
    for bn in layers:
        n = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
        bn.beta.assign(rng.normal(0.0, 0.2, n).astype("float32"))
        bn.momentum = 0.0  # the next training-mode call sets the moving statistics to its batch's
    model(x, training=True)
    for bn in layers:
        n = bn.gamma.shape[0]
        bn.momentum = 0.9
        bn.moving_mean.assign(bn.moving_mean + rng.normal(0.0, 0.05, n).astype("float32"))
        bn.moving_variance.assign(bn.moving_variance * rng.uniform(0.8, 1.2, n).astype("float32"))


@pytest.fixture(scope="module", params=[(net, mode) for net in NETS for mode in MODES],
                ids=lambda p: f"{p[0]}-{p[1]}")
def folded(request):
    net, mode = request.param
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    model = build_plain(net, mode, num_classes=10, input_shape=SHAPE)
    x = rng.normal(0.0, 1.0, (8, *SHAPE)).astype("float32")
    _randomise(model, rng, x)
    return net, mode, model, fold(model), x


def test_the_fold_is_the_nr_network(folded):
    net, mode, model, plain, _ = folded
    nr = build_model(net, num_classes=10, input_shape=SHAPE)
    assert plain.name == model.name == net
    assert not any(isinstance(layer, (keras.layers.Add, plain_lib.ScaledSkipAdd)) for layer in plain.layers)
    assert [layer.name for layer in plain.layers] == [layer.name for layer in nr.layers]
    assert plain.count_params() == nr.count_params() and count_params(plain) == count_params(nr)
    assert count_params(model) > count_params(nr)  # the branches / skips / scalings train, then go
    assert tap_layers(plain) == tap_layers(nr)


def test_the_fold_computes_what_the_trained_network_computes(folded):
    _, mode, model, plain, x = folded
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    got = keras.ops.convert_to_numpy(plain(x, training=False))
    assert np.max(np.abs(expected)) > 0.1  # outputs of a sensible scale, so the bound means something
    assert np.max(np.abs(got - expected)) < 1e-4


def test_the_folded_network_round_trips_through_keras_files(folded, tmp_path):
    """The folded network always; the training-time one (its custom layers) once per mode."""
    net, _, model, plain, x = folded
    networks = (("folded", plain), ("trained", model)) if net == "wrn10x1_NR_g2" else (("folded", plain),)
    for which, network in networks:
        path = os.path.join(tmp_path, f"{which}.keras")
        network.save(path)
        loaded = keras.saving.load_model(path)
        assert [type(a) for a in loaded.layers] == [type(b) for b in network.layers]
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x, training=False)),
                                      keras.ops.convert_to_numpy(network(x, training=False)))


def test_training_time_structure():
    rep = build_plain("wrn10x1_NR_g2", "repvgg", num_classes=10, input_shape=SHAPE)
    convs = [layer for layer in rep.layers if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (3, 3)]
    assert convs and all(isinstance(layer, plain_lib.RepConv2D) for layer in convs)
    # The identity branch exists exactly where the stride is 1 and cin == cout; the grouping is kept.
    for layer in convs:
        cin = layer.kernel.shape[2] * layer.groups
        assert (layer.identity_bn is not None) == (layer.strides == (1, 1) and cin == layer.filters), layer.name
        assert layer.pointwise.groups == layer.groups
    assert rep.get_layer("stage2_block1_unit1_gconv").groups == 2
    ann = build_plain("wrn10x1_NR_g2", "anneal", num_classes=10, input_shape=SHAPE)
    r = build_model("wrn10x1_R_g2", num_classes=10, input_shape=SHAPE)
    assert ann.name == "wrn10x1_NR_g2" and [layer.name for layer in ann.layers] == [layer.name for layer in r.layers]
    adds = [layer for layer in ann.layers if isinstance(layer, plain_lib.ScaledSkipAdd)]
    assert len(adds) == 3 and not any(isinstance(layer, keras.layers.Add) for layer in ann.layers)


def _np_dirac(kh, kw, cin_g, cout, groups):
    """The Dirac kernel, written out: output o of group g copies input o - g * cout_g of that group."""
    delta = np.zeros((kh, kw, cin_g, cout))
    cout_g = cout // groups
    for o in range(cout):
        if o % cout_g < cin_g:
            delta[kh // 2, kw // 2, o % cout_g, o] = 1.0
    return delta


def test_dirac_kernel_against_numpy():
    """W_hat = diag(a) I + diag(b) W / ||W|| (DiracNets, section 3), per output filter, grouped."""
    rng = np.random.default_rng(1)
    layer = plain_lib.DiracConv2D(8, 3, padding="same", groups=2, use_bias=False)
    layer.build((None, 6, 6, 8))
    a, b = rng.uniform(0.5, 1.5, 8), rng.uniform(0.05, 0.5, 8)
    layer.alpha.assign(a.astype("float32"))
    layer.beta.assign(b.astype("float32"))
    w = keras.ops.convert_to_numpy(layer.kernel).astype("float64")  # (3, 3, 4, 8)
    norms = np.sqrt((w ** 2).reshape(-1, 8).sum(axis=0))
    expected = a * _np_dirac(3, 3, 4, 8, 2) + b * w / norms
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.effective_kernel()), expected, rtol=1e-5, atol=1e-6)
    # a = 1, b = 0: the identity map.
    layer.alpha.assign(np.ones(8, "float32"))
    layer.beta.assign(np.zeros(8, "float32"))
    x = rng.normal(size=(2, 6, 6, 8)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), x, atol=1e-6)


def test_rep_conv_is_three_branches_summed():
    """RepConv2D in inference mode: BN(conv3x3) + BN(conv1x1) + BN(identity), the 1x1 at the 3x3 windows' centres."""
    rng = np.random.default_rng(2)
    for strides, padding, size in ((1, "same", 8), (2, "same", 8), (2, "same", 7), (2, "valid", 9)):
        layer = plain_lib.RepConv2D(4, 3, strides=strides, padding=padding, groups=2, use_bias=False)
        x = rng.normal(size=(2, size, size, 4)).astype("float32")
        layer.build(x.shape)
        assert (layer.identity_bn is not None) == (strides == 1)
        for bn in layer.layers[1:]:
            bn.moving_mean.assign(rng.normal(0, 0.3, 4).astype("float32"))
            bn.moving_variance.assign(rng.uniform(0.5, 2.0, 4).astype("float32"))
            bn.gamma.assign(rng.uniform(0.5, 1.5, 4).astype("float32"))

        def bn_apply(bn, z):
            g, b, m, v = (keras.ops.convert_to_numpy(t) for t in (bn.gamma, bn.beta, bn.moving_mean,
                                                                 bn.moving_variance))
            return g * (z - m) / np.sqrt(v + bn.epsilon) + b

        k3 = keras.ops.convert_to_numpy(layer.kernel)
        k1 = np.zeros_like(k3)
        k1[1, 1] = keras.ops.convert_to_numpy(layer.pointwise.kernel)[0, 0]  # the 1x1 kernel as a 3x3 centre tap
        expected = bn_apply(layer.dense_bn, _grouped_conv(x, k3, 2, strides, padding))
        expected = expected + bn_apply(layer.pointwise_bn, _grouped_conv(x, k1, 2, strides, padding))
        if layer.identity_bn is not None:
            expected = expected + bn_apply(layer.identity_bn, x)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, training=False)), expected,
                                   rtol=1e-4, atol=1e-4)


def _grouped_conv(x, kernel, groups, strides, padding):
    """A grouped convolution as one dense convolution with a block-diagonal kernel (Keras's own op)."""
    kh, kw, cin_g, cout = kernel.shape
    cout_g = cout // groups
    full = np.zeros((kh, kw, cin_g * groups, cout), "float32")
    for g in range(groups):
        full[:, :, g * cin_g:(g + 1) * cin_g, g * cout_g:(g + 1) * cout_g] = kernel[..., g * cout_g:(g + 1) * cout_g]
    return keras.ops.convert_to_numpy(keras.ops.conv(x, full, strides, padding))


def test_anneal_schedule():
    # 10 steps, fraction 0.5: T = 4.5, lambda = 1 - t / 4.5 until step 5, 0 from then on.
    assert [plain_lib.anneal_scale(t, 10, 0.5) for t in (0, 1, 4, 5, 9)] == pytest.approx([1, 1 - 1 / 4.5, 1 - 4 / 4.5,
                                                                                            0, 0])
    # fraction 1: linear over the whole run, exactly 0 at the last step.
    assert [plain_lib.anneal_scale(t, 11, 1.0) for t in range(11)] == pytest.approx([1 - t / 10 for t in range(11)])
    assert plain_lib.anneal_scale(10, 11, 1.0) == 0.0 and plain_lib.anneal_scale(0, 1, 1.0) == 0.0


def test_skip_anneal_callback_sets_every_skip_from_epoch_and_batch():
    model = build_plain("resnet8_NR", "anneal", num_classes=10, input_shape=SHAPE)
    callback = plain_lib.SkipAnneal(steps_per_epoch=4, epochs=3, fraction=1.0)  # 12 steps: lambda = 1 - t / 11
    callback.set_model(model)
    callback.on_train_begin()
    layers = plain_lib.skip_layers(model)
    assert len(layers) == 3  # resnet8: one block per stage
    callback.on_epoch_begin(1)  # e.g. a run resumed at epoch 1
    callback.on_train_batch_begin(2)
    assert all(float(keras.ops.convert_to_numpy(layer.skip_scale)) == pytest.approx(1 - 6 / 11) for layer in layers)
    callback.on_epoch_begin(2)
    callback.on_train_batch_begin(3)
    logs = {}
    callback.on_epoch_end(2, logs)
    assert logs["skip_scale"] == 0.0
    assert all(float(keras.ops.convert_to_numpy(layer.skip_scale)) == 0.0 for layer in layers)


@pytest.mark.parametrize("model,plain,fragment", [
    ("wrn10x1_NR_g2", "rep", "Unknown plain 'rep'. Valid choices: none, repvgg, diracnet, anneal."),
    ("vgg8", "repvgg", "plain=repvgg is not available for vgg8 (family vgg)"),
    ("mobilenetv2_NR_g2", "diracnet", "plain=diracnet is not available for mobilenetv2_NR_g2"),
    ("wrn10x1_R_g2", "anneal", "plain=anneal takes the NR model name: --model=wrn10x1_NR_g2"),
    ("resnet20", "repvgg", "plain=repvgg takes the NR model name: --model=resnet20_NR"),
])
def test_check_plain_errors(model, plain, fragment):
    with pytest.raises(UsageError) as err:
        plain_lib.check_plain(model, plain)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_fold_refuses_a_model_it_cannot_fold():
    with pytest.raises(UsageError, match="fold\\(\\) needs a model built by build_plain"):
        fold(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="tiny"))


def test_fold_warns_while_the_skips_carry_weight():
    model = build_plain("resnet8_NR", "anneal", num_classes=10, input_shape=SHAPE)  # lambda = 1 as built
    with pytest.warns(UserWarning, match="the skips still carry weight lambda=1"):
        fold(model)
