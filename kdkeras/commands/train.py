"""Trains a baseline on hard targets with the paper's recipe.

Examples:
    kdkeras train --model=wrn22x2_R_g2
    kdkeras train --model=resnet18_NR_G4 --archive=~/data/cifar-100-python.tar.gz
    kdkeras train --model=wrn16x1_R_g2 --dataset=synthetic --epochs=2   # smoke run
    kdkeras train --model=wrn16x1_NR_g2 --plain=repvgg   # trained as RepVGG, saved as the folded NR net

The run folder is <logdir>/<dataset>/<model>-s<seed>[-<hash>]; repeating a
finished command prints its stored result, an interrupted one resumes.
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging

from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
cli.define_run_flags(distill=False)


def main(argv):
    del argv
    config = cli.run_config_from_flags(distill=False)
    from kdkeras.training import train_and_evaluate

    train_and_evaluate(config, FLAGS.logdir, callbacks=cli.analysis_callbacks(config))


if __name__ == "__main__":
    cli.run(main)
