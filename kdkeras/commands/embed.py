"""Penultimate-layer embeddings of finished runs (the paper's Figure 2).

Examples:
    kdkeras embed --run=logs/cifar100/wrn22x2_NR_g16-s0              # its 3 worst classes
    kdkeras embed --run=logs/cifar100/wrn22x2_NR_g16-s0 --classes=house,tractor,whale
    kdkeras embed --compare=$TEACHER,$R,$NR,$KD --worst=3     # 4 run folders, Figure 2

--run writes TensorBoard projector files into <run>/tensorboard/projector/
(Projector tab of `tensorboard --logdir=<run>` or of `--logdir=logs`) and a
PCA / t-SNE scatter to <run>/embeddings.png. --compare draws one column per
run, on the same examples and classes, into --output (default:
<logdir>/<dataset>/embeddings_<run A>_vs_<run B>....png). Each panel's
silhouette score is computed in the full embedding space. Without --classes
or --worst the 3 worst classes (lowest accuracy on the split) of the first
run are shown.
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging

from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
cli.define_run_folder_flag("A finished run folder, <logdir>/<dataset>/<run name>.")
cli.define_compare_flag("Finished run folders of one dataset, comma-separated (e.g. teacher,R baseline,"
                        "NR baseline,KD student): side-by-side panels.")
flags.DEFINE_list("classes", None, "Class names to show, e.g. house,tractor,whale.")
flags.DEFINE_integer("worst", None, "Show the K classes with the lowest accuracy of the (first) run "
                     "(default when --classes is not given: 3).")
flags.DEFINE_integer("num_points", 500, "Examples in all, class-balanced (every one of a class "
                     "when it has fewer).")
cli.define_split_flag("test", "test or train.")
cli.define_run_flag("seed", default=0, help="Choice of the examples and t-SNE seed.")
cli.define_run_flag("batch_size", default=256, help="Images per forward pass.")
cli.define_output_flag("PNG of --compare (default: in the first run's dataset folder).")


def _log(message):
    print(message, flush=True)


def main(argv):
    del argv
    import os
    import sys

    if bool(FLAGS.run) == bool(FLAGS.compare):
        cli.fail("pass exactly one of --run=RUN_DIR or --compare=RUN_A,RUN_B,...")
    if FLAGS.classes and FLAGS.worst is not None:
        cli.fail("pass --classes or --worst, not both.")
    if FLAGS.split not in ("test", "train"):
        cli.fail(f"Unknown --split '{FLAGS.split}'. Valid choices: test, train.")
    if FLAGS.num_points < 1:
        cli.fail(f"--num_points must be a positive integer. Received: {FLAGS.num_points}.")
    if FLAGS.batch_size < 1:
        cli.fail(f"--batch_size must be a positive integer. Received: {FLAGS.batch_size}.")
    if FLAGS.output and not FLAGS.compare:
        cli.fail("--output is for --compare; --run writes <run>/embeddings.png.")
    if FLAGS.output and not FLAGS.output.lower().endswith(".png"):
        cli.fail(f"--output must be a .png file. Received: {FLAGS.output}.")
    directories = [FLAGS.run] if FLAGS.run else [d for d in FLAGS.compare if d.strip()]
    if FLAGS.compare and len(directories) < 2:
        cli.fail("--compare needs at least 2 run folders, comma-separated; use --run for one.")

    from kdkeras.analysis import runs as runs_lib

    runs = [runs_lib.load_run(d) for d in directories]  # before TensorFlow loads: fails fast
    if len({run.config.dataset for run in runs}) == 1:  # else the comparison refuses them
        for run in runs:
            _log(runs_lib.data_line(run))

    from kdkeras.analysis import embeddings as emb

    selection, results = emb.embed_runs(
        runs, classes=FLAGS.classes, worst=FLAGS.worst, num_points=FLAGS.num_points,
        split=FLAGS.split, seed=FLAGS.seed, batch_size=FLAGS.batch_size, log=_log,
        verbose=1 if sys.stdout.isatty() else 0)
    names = ", ".join(selection.class_names[c] for c in selection.classes)
    _log(f"{len(selection.indices)} {selection.split} images of {names}")
    for result in results:
        _log(f"{result.run.name} [{result.run.kind}]: silhouette={result.score:.4f} "
             f"accuracy={result.accuracy:.4f} (on these images)")

    if FLAGS.run:
        _log("Drawing PCA and t-SNE views")
        projector_dir, png = emb.write_run_outputs(selection, results[0], seed=FLAGS.seed, log=_log)
        _log(f"Projector files: {projector_dir} (tensorboard --logdir={runs[0].directory}, "
             f"Projector tab)")
        _log(f"Scatter: {png}")
        return
    output = FLAGS.output or emb.compare_output_path(runs)
    if os.path.isdir(output):
        cli.fail(f"--output '{output}' is a folder; give a .png file.")
    _log("Drawing PCA and t-SNE views")
    panels = [emb.Panel(r.panel_title, r.embeddings, selection.labels, r.score) for r in results]
    emb.plot_embeddings(output, panels, selection.class_names, classes=selection.classes,
                        seed=FLAGS.seed, title=f"{selection.split} images of {names}", log=_log)
    _log(f"Comparison: {output}")


if __name__ == "__main__":
    cli.run(main)
