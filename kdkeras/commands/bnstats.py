"""Diagnoses a gap between training and evaluation: BatchNorm statistics, layer by layer.

Examples:
    kdkeras bnstats --runs=logs/cifar10/wrn40x1_NR_g2-s0-<hash>
    kdkeras bnstats --runs=RUN_R,RUN_NR,RUN_KD --output=bn_variance.png --batches=64

For every run, prints the accuracy of its trained weights with the moving
BatchNorm statistics, with precise (population) statistics computed with
dropout off and with dropout on, and with batch statistics; writes
<run>/bnstats.json and a plot of each BatchNorm layer's variance ratio
(dropout on / off) by depth. See docs/results.md for what the numbers mean.
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging

from absl import flags  # noqa: E402

from kdkeras.errors import UsageError  # noqa: E402

FLAGS = flags.FLAGS
cli.define_run_folders_flag("Finished run folders, comma-separated.")
cli.define_split_flag("test", "Split to evaluate (val: the run's validation split).", choices=["test", "val"])
flags.DEFINE_integer("batches", 64, "Training batches per population estimate.")
cli.define_run_flag("archive", help="Read the data from this archive instead of the runs' own setting.")
cli.define_output_flag("PNG of the variance ratios (default: <dataset folder of the first run>/bn_variance.png).")


def main(argv):
    del argv
    import dataclasses
    import os

    if not FLAGS.runs:
        raise UsageError("No runs given: pass --runs=RUN_DIR[,RUN_DIR...] (finished run folders).")
    if FLAGS.batches < 1:
        raise UsageError(f"--batches must be a positive integer. Received: {FLAGS.batches}.")
    from kdkeras.analysis import bnstats
    from kdkeras.analysis.runs import data_line, load_run

    diagnoses = []
    for directory in FLAGS.runs:
        run = load_run(directory)
        if FLAGS.archive:
            run = dataclasses.replace(run, config=dataclasses.replace(run.config, archive=FLAGS.archive))
        print(data_line(run), flush=True)
        diagnosis = bnstats.diagnose(run, split=FLAGS.split, num_batches=FLAGS.batches)
        bnstats.write_diagnosis(run, diagnosis)
        diagnoses.append(diagnosis)
    print(bnstats.format_table(diagnoses))
    output = FLAGS.output or os.path.join(os.path.dirname(os.path.normpath(FLAGS.runs[0])), "bn_variance.png")
    bnstats.plot_variance_ratios(diagnoses, output)
    print(f"Wrote {output}")


if __name__ == "__main__":
    cli.run(main)
