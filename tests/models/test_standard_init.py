"""The standard zoo starts from its reference code's initialisation (RepDistiller), not Keras's defaults."""

import numpy as np

from kdkeras.models import build_model


def _std(model, layer):
    return float(np.std(model.get_layer(layer).kernel.numpy()))


def test_convolutions_use_kaiming_fan_out_and_classifiers_the_reference_init():
    resnet = build_model("resnet20")
    # kaiming_normal_(mode="fan_out"): std sqrt(2 / (3 * 3 * C_out)); 16 and 64 output channels.
    assert abs(_std(resnet, "layer1_0_conv1") / np.sqrt(2 / (9 * 16)) - 1) < 0.1
    assert abs(_std(resnet, "layer3_2_conv2") / np.sqrt(2 / (9 * 64)) - 1) < 0.05
    vgg = build_model("vgg8")
    assert abs(_std(vgg, "classifier") / 0.01 - 1) < 0.05  # normal_(0, 0.01)
    # PyTorch's default (the ShuffleNets): uniform within 1 / sqrt(fan_in).
    shuffle = build_model("ShuffleV2")
    kernel = shuffle.get_layer("linear").kernel.numpy()
    bound = 1 / np.sqrt(kernel.shape[0])
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.95 * bound
