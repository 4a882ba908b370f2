"""Plots the gradient flow that runs logged with --gradient_flow_epochs.

Examples:
    kdkeras distill --student=wrn22x2_NR_g16 --teacher=wrn22x2_R_G4 --gradient_flow_epochs=2
    kdkeras train --model=wrn22x2_NR_g16 --gradient_flow_epochs=2
    kdkeras gradflow --runs=logs/cifar100/wrn22x2_NR_g16-s0,logs/cifar100/wrn22x2_NR_g16_from_wrn22x2_R_G4-s0

Draws per-layer gradient norms (first and last measured step) and the probe
loss of every run into one PNG (default: <first run's dataset folder>/
gradient_flow.png). The same numbers are in TensorBoard
(<run>/tensorboard/gradient_flow) and in <run>/gradient_flow.csv.
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging

from absl import flags  # noqa: E402

from kdkeras.errors import MissingFileError, UsageError  # noqa: E402

FLAGS = flags.FLAGS
cli.define_run_folders_flag("Run folders trained with --gradient_flow_epochs, comma-separated.")
cli.define_output_flag("PNG to write (default: <dataset folder of the first run>/gradient_flow.png).")


def main(argv):
    del argv
    import os

    if not FLAGS.runs:
        raise UsageError("No runs given: pass --runs=RUN_DIR[,RUN_DIR...] (run folders trained with "
                         "--gradient_flow_epochs=N).")
    from kdkeras.analysis.gradients import GRADIENT_FLOW_FILE, plot_gradient_flow
    from kdkeras.analysis.runs import data_line, load_run

    series = []
    for directory in FLAGS.runs:
        run = load_run(directory, need_model=False)
        path = run.path(GRADIENT_FLOW_FILE)
        if not os.path.exists(path):
            raise MissingFileError(f"Run '{directory}' has no {GRADIENT_FLOW_FILE}: train it with "
                                   f"--gradient_flow_epochs=N (a finished run is not retrained; use a "
                                   f"new --logdir or --seed).")
        print(data_line(run, check=False), flush=True)
        series.append((f"{run.label} [{run.kind}]", path))
    output = FLAGS.output or os.path.join(os.path.dirname(os.path.normpath(FLAGS.runs[0])), "gradient_flow.png")
    plot_gradient_flow(series, output)
    print(f"Wrote {output}")


if __name__ == "__main__":
    cli.run(main)
