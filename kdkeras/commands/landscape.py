"""Draws the loss landscape of finished runs (filter-normalised directions, Li et al. 2018).

Examples:
    kdkeras landscape --run=logs/cifar100/wrn22x2_NR_g16-s0-1a2b3c4d            # 1-D, 51 points
    kdkeras landscape --run=RUN_DIR --mode=2d --resolution=21                   # 2-D contour
    kdkeras landscape --run=RUN_DIR --mode=path                                 # initial -> trained
    kdkeras landscape --compare=R_RUN,NR_RUN,KD_RUN --mode=path                 # one plot, 3 runs

Each run's result goes to <run>/landscape/<mode>-r<resolution>-...npz (alphas,
betas for 2-D, loss, accuracy and the settings) with a PNG beside it; a
stored result with the same settings is reused. The loss is the mean
cross-entropy on --num_examples images of --split, in inference mode, without
the weight-decay term. --compare writes one PNG overlaying the runs' curves
(--output, default in the first run's dataset folder).
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging

import sys  # noqa: E402

from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
cli.define_run_folder_flag("A finished run folder, <logdir>/<dataset>/<run name>.")
cli.define_compare_flag("Run folders to overlay in one plot (1d or path mode).")
cli.define_mode_flag("1d", "1d (one random direction), 2d (two) or path (initial to trained weights).")
flags.DEFINE_integer("resolution", None, "Grid points per axis (default: 51 for 1d, 21 for 2d, 31 for path); "
                     "odd resolutions put the trained weights in the middle.")
flags.DEFINE_float("range", 1.0, "1d/2d: the grid spans [-range, range] along each direction.")
flags.DEFINE_integer("num_examples", None, "Examples evaluated, a fixed class-balanced subset of --split "
                     "(default: 512, or the whole split when it is smaller).")
cli.define_split_flag("train", "train or test.")
cli.define_run_flag("batch_size", default=256, help="Examples per forward pass.")
cli.define_run_flag("seed", default=0, help="1d/2d: seed of the random directions.")
flags.DEFINE_bool("include_bias_bn", False, "1d/2d: also perturb biases and BatchNorm gamma/beta.")
flags.DEFINE_bool("recompute", False, "Ignore stored results and compute again.")
cli.define_output_flag("--compare: the PNG to write.")


def _settings():
    from kdkeras.analysis.landscape import Settings

    return Settings(mode=FLAGS.mode, resolution=FLAGS.resolution, extent=FLAGS.range,
                    num_examples=FLAGS.num_examples, split=FLAGS.split, seed=FLAGS.seed,
                    include_bias_bn=FLAGS.include_bias_bn, batch_size=FLAGS.batch_size).resolved()


def _report(landscape):
    if landscape.mode == "path":
        start, end = landscape.at(0.0), landscape.at(1.0)
        return (f"loss at the initial weights (a=0) {start[0]:.6f} (accuracy {start[1]:.4f}), "
                f"at the trained weights (a=1) {end[0]:.6f} (accuracy {end[1]:.4f})")
    loss, accuracy = landscape.at(0.0, 0.0)
    return f"loss at the origin (trained weights) {loss:.6f} (accuracy {accuracy:.4f})"


def main(argv):
    del argv
    if bool(FLAGS.run) == bool(FLAGS.compare):
        cli.fail("pass exactly one of --run=RUN_DIR or --compare=RUN_A,RUN_B,...")
    if FLAGS.output and not FLAGS.compare:
        cli.fail("--output is for --compare; a single run's files go to <run>/landscape/.")
    settings = _settings()
    from kdkeras.analysis import landscape as landscape_lib
    from kdkeras.analysis.runs import data_line, load_run

    verbose = 1 if sys.stdout.isatty() else 2
    if FLAGS.run:
        run = load_run(FLAGS.run)
        print(data_line(run), flush=True)
        landscape, npz_path, png_path, _ = landscape_lib.landscape_for_run(
            run, settings, recompute=FLAGS.recompute, verbose=verbose)
        print(f"{run.name}: {_report(landscape)}")
        print(f"Wrote {npz_path}")
        print(f"Wrote {png_path}")
        return
    runs = [load_run(directory) for directory in FLAGS.compare]
    if len({run.config.dataset for run in runs}) == 1:  # else the comparison refuses them
        for run in runs:
            print(data_line(run), flush=True)
    output, results = landscape_lib.compare_runs(runs, settings, FLAGS.output, recompute=FLAGS.recompute,
                                                 verbose=verbose)
    for run, landscape, npz_path in results:
        print(f"{run.name} ({run.kind}): {_report(landscape)}; {npz_path}")
    print(f"Wrote {output}")


if __name__ == "__main__":
    cli.run(main)
