"""Converts a PyTorch teacher checkpoint (RepDistiller, mdistiller) of the standard CIFAR zoo into a ``.keras`` file.

Examples:
    kdkeras convert --checkpoint=resnet32x4_vanilla/ckpt_epoch_240.pth --model=resnet32x4
    kdkeras convert --checkpoint=wrn_40_2.pth --model=wrn_40_2 --output=teachers/wrn_40_2.keras
    kdkeras distill --student=wrn_16_2 --teacher=teachers/wrn_40_2.keras --archive=cifar-100-python.tar.gz

The file holds the network with the checkpoint's weights, taking images
normalised per channel as kdkeras's pipelines feed them (the reference code
normalises CIFAR-100 with mean 0.5071, 0.4867, 0.4408 and std 0.2675,
0.2565, 0.2761; kdkeras with 0.5071, 0.4865, 0.4409 and 0.2673, 0.2564,
0.2762). Reading ``.pth`` files needs PyTorch: pip install "kdkeras[torch]".
See docs/models.md, "Converting PyTorch teachers".
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging

import os  # noqa: E402

from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "The PyTorch checkpoint (.pth): a state_dict, or one under 'model' "
                    "(RepDistiller), 'state_dict' or 'net'.")
cli.define_run_flag("model", help="The network of the checkpoint, a name of the standard CIFAR zoo "
                    "(e.g. resnet32x4, wrn_40_2, vgg13, ResNet50, MobileNetV2, ShuffleV1).")
cli.define_num_classes_flag("Number of classes of the checkpoint's classifier (CIFAR-100: 100).")
cli.define_output_flag("The .keras file to write (default: the checkpoint's path with .keras).")
cli.define_run_flag("dataset", help="Also put the raw-image front of this dataset's normalisation in the file "
                    "(cifar100, cifar10), so it takes images 0..255; default: the bare network.")


def main(argv):
    from kdkeras.errors import UsageError
    from kdkeras.models import build_model, parse_model_name
    from kdkeras.models.convert import save_model
    from kdkeras.models.torch_weights import assign_state_dict, read_checkpoint

    if not FLAGS.checkpoint or not FLAGS.model:
        raise UsageError("convert needs --checkpoint=FILE.pth and --model=NAME (e.g. --model=resnet32x4).")
    spec = parse_model_name(FLAGS.model)
    if not spec.standard:
        from kdkeras.models.registry import list_standard_models

        raise UsageError(f"'{FLAGS.model}' is a network of the paper's zoo, which has no PyTorch reference "
                         f"checkpoints to convert. Valid models: {', '.join(list_standard_models())}.")
    output = FLAGS.output or os.path.splitext(FLAGS.checkpoint)[0] + ".keras"
    if not output.endswith(".keras"):
        raise UsageError(f"--output must end in .keras. Received: {output}.")
    state = read_checkpoint(FLAGS.checkpoint)
    model = assign_state_dict(build_model(spec.name, num_classes=FLAGS.num_classes), state)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    tmp = os.path.join(os.path.dirname(os.path.abspath(output)), f".{os.path.basename(output)}.tmp.keras")
    try:  # written beside it, then renamed: a reader never sees half a file
        save_model(model, tmp, dataset=FLAGS.dataset)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"Wrote {output}: {spec.name}, {FLAGS.num_classes} classes, {len(state)} tensors from {FLAGS.checkpoint}.")
