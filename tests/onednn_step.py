"""One training step and one distillation step of zoo models, for tests/test_onednn.py.

Run in a fresh process whose ``TF_ENABLE_ONEDNN_OPTS`` the test sets (0 or 1):

    python tests/onednn_step.py OUT.npz MODEL[<-TEACHER] ...

For each model it builds the run's compiled model with the run pipeline's own
steps (:func:`kdkeras.training.build_run_model`), seeded, on 8 fixed images,
and stores (keys prefixed by the model): the logits in inference mode, the
gradient of the cross-entropy of every trainable variable (training mode),
and every student weight after one ``train_on_batch`` and its change (of the plain model,
or of the KD distiller when a teacher is given). It also measures how much the
gradients move when the images move by one float32 rounding (the
computation's own sensitivity), and checks the model's
first grouped convolution against the NumPy reference (output and both
gradients, on that layer's real input) and records the relative errors. The
last stdout line is JSON: the process's oneDNN state, the path its grouped
convolutions took, and the implementation each grouped layer resolved to.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import kdkeras  # noqa: E402  (first, as a user's script: it decides oneDNN when the variable is unset)
from kdkeras import config as config_lib  # noqa: E402
from kdkeras import host  # noqa: E402


def grouped_layers(model):
    from kdkeras.layers import GroupedConv2D

    return [layer for layer in model._flatten_layers() if isinstance(layer, GroupedConv2D) and layer.groups > 1]


def reference_errors(student, images):
    """Relative errors of the first grouped convolution against NumPy: output, d/dinput, d/dkernel."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tests.grouped_conv_reference import np_grouped_conv2d_with_grads, relative_error

    layer = grouped_layers(student)[0]
    layer_input = keras.Model(student.inputs, layer.input)(images, training=False)
    x = tf.constant(layer_input)
    upstream = np.random.default_rng(3).normal(size=layer.compute_output_shape(x.shape)).astype("float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * upstream)
    dx, dk = tape.gradient(loss, [x, layer.kernel])
    y_ref, dx_ref, dk_ref = np_grouped_conv2d_with_grads(
        x.numpy(), layer.kernel.numpy(), layer.strides[0], layer.groups, upstream)
    assert layer.padding == "same" and layer.strides[0] == layer.strides[1]
    if layer.use_bias:
        y_ref = y_ref + layer.bias.numpy()
    return {"output": relative_error(y, y_ref), "input_gradient": relative_error(dx, dx_ref),
            "kernel_gradient": relative_error(dk, dk_ref)}


def gradients(student, images, labels):
    """The cross-entropy's gradient of every trainable variable, training mode (NumPy arrays)."""
    import keras
    import tensorflow as tf

    with tf.GradientTape() as tape:
        logits = student(images, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    return [g.numpy() for g in tape.gradient(loss, student.trainable_variables)]


def relative_change(a, b):
    """``max |a - b|`` over a list of arrays, over the largest ``|a|`` among them."""
    import numpy as np

    scale = max(float(np.max(np.abs(x))) for x in a)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b)) / scale


def main(out_path, cases):
    import keras
    import numpy as np
    import tensorflow as tf

    from kdkeras.training.pipeline import build_run_model, build_student, make_run_data

    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 32, 32, 3)).astype("float32")
    labels = np.arange(8) % 10
    arrays, report = {}, {"onednn": host.onednn_enabled(), "grouped_conv_kernel": host.grouped_conv_kernel(),
                          "models": {}}
    for case in cases:
        name, _, teacher_name = case.partition("<-")
        overrides = {"model": name, "dataset": "synthetic", "train_size": 16, "test_size": 8, "batch_size": 8,
                     "epochs": 1, "lr": 0.05}
        if name.startswith("wrn"):
            overrides["dropout"] = 0.0  # the same function in both processes: no random masks
        if teacher_name:
            overrides["teacher"] = teacher_name
        config = config_lib.resolve(overrides)
        data = make_run_data(config)
        teacher = None
        if teacher_name:
            teacher_config = config_lib.teacher_config(config)
            keras.utils.set_random_seed(1)
            teacher = build_student(teacher_config, data.info.num_classes, data.info.image_shape)
        model, student = build_run_model(config, data, teacher=teacher)
        arrays[f"{case}/logits/logits"] = keras.ops.convert_to_numpy(student(images, training=False))
        grads = gradients(student, images, labels)
        for variable, grad in zip(student.trainable_variables, grads):
            arrays[f"{case}/grad/{variable.path}"] = grad
        # How much float32 rounding alone moves these gradients: the same step on images changed by one
        # float32 epsilon (relative). Training-mode BatchNorm over a small batch amplifies such changes by
        # orders of magnitude in some networks (MobileNetV2), so the test's bound is a multiple of this.
        eps = np.finfo(np.float32).eps
        nudged = (images * (1 + eps * np.random.default_rng(4).standard_normal(images.shape))).astype("float32")
        sensitivity = relative_change(grads, gradients(student, nudged, labels))
        before = [variable.numpy() for variable in student.weights]
        model.train_on_batch(images, labels)
        for variable, start in zip(student.weights, before):
            arrays[f"{case}/weight/{variable.path}"] = variable.numpy()
            arrays[f"{case}/update/{variable.path}"] = variable.numpy() - start
        layers = grouped_layers(student)
        report["models"][case] = {
            "implementations": sorted({layer._resolved_implementation(layer.input.shape[-1]) for layer in layers}),
            "reference": reference_errors(student, images),
            "sensitivity": sensitivity,
        }
    np.savez(out_path, **arrays)
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
