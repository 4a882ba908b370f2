"""Runs one of the paper's tables (or any grid config) and writes it in the paper's layout.

Examples:
    kdkeras grid --table=3 --archive=cifar-100-python.tar.gz          # all of Table 3
    kdkeras grid --table=3 --dry_run                                   # cells and their state
    kdkeras grid --table=1 --half=left --students=NR_g8,NR_g16 --teachers=R_G1,R_G2
    kdkeras grid --table=6 --shard=2/8 --logdir=/shared/logs            # one of 8 machines
    kdkeras grid --config=configs/smoke_grid.yaml                      # tiny synthetic grid
    kdkeras grid --config=configs/ablations/early_kd_wrn22x2.yaml --kd_epochs=30
    kdkeras grid --table=3 --half=left --init=dirac                   # Dirac-initialised students
    kdkeras grid --table=3 --half=left --plain=repvgg                 # NR students trained as RepVGG
    kdkeras grid --config=configs/reduced/cifar10_wrn.yaml \
        --archive=cifar-10-subset-20k.tar.gz --logdir=logs/reduced            # a suite of grids
    kdkeras grid --table=3 --gradient_flow_epochs=2               # gradient flow of every run
    kdkeras grid --table=3 --archive=cifar-100-python.tar.gz --gpus=0,1,2,3,4,5,6,7 --workers_per_gpu=2
                                                       # 16 worker processes on a node of 8 GPUs
    kdkeras grid --config=configs/reduced/cifar10_wrn.yaml --logdir=logs/reduced \
        --export=docs/results                                                # commit-sized copy of the results
    kdkeras grid --config=configs/benchmarks/cifar100_crd.yaml --archive=cifar-100-python.tar.gz \
        --logdir=logs/crd                          # 11 pairs x every method beside the published numbers
    kdkeras grid --config=configs/benchmarks/cifar100_crd.yaml --students=resnet20 --teachers=resnet56

Finished runs are reused, never trained twice; results go to
<logdir>/<grid>/table.md, table.csv, table.png and (CIFAR-100) comparison.md.
A pair grid (a list of teacher-student pairs, configs/benchmarks/) writes
table.md and table.csv (methods x pairs) and comparison.md, every cell beside
the published numbers of its data file; --students and --teachers then take
model names (resnet20, resnet56).
With --gpus, the command starts --workers_per_gpu worker processes per GPU
(shards of the grid, each with CUDA_VISIBLE_DEVICES and GPU memory growth or
--gpu_memory_mb), waits for them and writes <logdir>/<grid>/workers/
(workers.json and a log per worker); docs/distributed.md, "A node of 8 GPUs".
A suite config (a list of grids) also writes <logdir>/<suite>/summary.md and
summary.csv. Tables show the final-epoch test accuracy (the paper's
protocol), and, where the runs report them, the test accuracy at the best
validation epoch (--val_size), with precise BN (--precise_bn), with batch
statistics, and at the best test epoch (labelled optimistic).
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging

from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
cli.define_table_flag("Paper table 1-6 (configs/tables/table<N>_*.yaml).")
cli.define_config_flag("A grid config YAML, or a suite config listing grids, instead of --table.")
flags.DEFINE_enum("half", None, ["left", "right"], "Only this half of the table.")
flags.DEFINE_list("students", None, "Only these students, e.g. NR_g8,NR_g16 (a pair grid: resnet20,vgg8).")
flags.DEFINE_list("teachers", None, "Only these teachers, e.g. R_G1,R_G2 (a pair grid: resnet56,vgg13).")
flags.DEFINE_string("shard", None, "Run part i of n of the cells, e.g. 0/4 (for job arrays).")
flags.DEFINE_bool("take_over", True, "With --shard: after this shard's cells, train the other shards' cells that "
                  "no live process holds (not started, or preempted: lease lapsed) and return only when every "
                  "cell is finished (--notake_over: only this shard's cells).")
flags.DEFINE_float("lease_s", None, "Length of a run claim's lease in seconds, renewed while the run is alive; "
                   "a claim not renewed for this long is taken over (default 300, or $KDKERAS_LEASE_S).")
flags.DEFINE_bool("dry_run", False, "List the cells and their state (done, running, interrupted, to do).")
flags.DEFINE_string("export", None, "Write the tables from the runs finished so far, then copy them and the small "
                    "result files of every finished run (results.json, history.csv, config.yaml) into this "
                    "folder, e.g. to commit them; trains nothing.")
flags.DEFINE_bool("export_teachers", False, "With --export: also copy the model.keras of every finished teacher "
                  "run, so that the copy, put back into a log folder, still distils the students left to train "
                  "from the same teachers (mind the size of large teachers).")
flags.DEFINE_integer("seeds", None, "Seeds per cell (overrides the config).")
# The run settings that a grid's flags set for every run of it, over the config's (and the dataset, init and plain).
_OVERRIDES = ("data_dir", "archive", "download", "data_mirror", "epochs", "batch_size", "lr", "train_size",
              "test_size", "val_size",
              "precise_bn", "precise_bn_augment", "strategy", "kd_epochs", "teacher_epochs")
cli.define_run_flags(only=("dataset", *_OVERRIDES, "init", "plain", "anneal_fraction"),
                     help={"dataset": "cifar100, cifar10, synthetic or folder (overrides the config).",
                           "epochs": "Epochs of every run (default: the paper's recipe).",
                           "batch_size": "Batch size of every run.",
                           "lr": "Initial learning rate of every run.",
                           "val_size": "Validation images held out of the training split (adds the "
                                       "best-validation-epoch tables).",
                           "kd_epochs": "KD only in the first N epochs of every KD run (early-hint ablation).",
                           "teacher_epochs": "Epochs of every KD run's teacher (default: the runs' epochs); the "
                                             "tables get their own folder, <grid>-teacher<N>.",
                           "init": "Kernel initialisation of every student: he or dirac (replaces an init axis; "
                                   "teachers keep he).",
                           "plain": "Residual-free training of every NR student and NR baseline: repvgg, diracnet "
                                    "or anneal (replaces a plain axis; R baselines and teachers stay as they are; "
                                    "in a pair grid, each student's NR network trained so, and a pair whose "
                                    "student has none is not applicable; docs/models.md).",
                           "anneal_fraction": "With --plain=anneal: the fraction of the training steps over which "
                                              "the skips' weight falls to 0."})
cli.define_logdir_flag("Root folder of all runs (shared between shards).")
cli.define_instrument_flags()
flags.DEFINE_list("gpus", None, "Run the grid as worker processes on these GPUs of this machine, e.g. 0,1,2,3: "
                  "--workers_per_gpu each, worker j on GPU j mod len(gpus) (CUDA_VISIBLE_DEVICES) with its own shard; "
                  "they share --logdir and its claims (docs/distributed.md).")
flags.DEFINE_integer("workers_per_gpu", 1, "With --gpus: worker processes per GPU (several small runs share a GPU).")
flags.DEFINE_integer("gpu_memory_mb", None, "With --gpus: each worker's GPU memory limit in MiB (default: memory "
                     "growth, each worker takes what it needs).")
flags.DEFINE_integer("cpu_workers", None, "Run the grid as N worker processes on this machine's CPU cores, each "
                     "pinned to its own 1/N of them with as many TensorFlow threads and its own shard: small "
                     "networks train more images per second as several runs side by side than as one run on all "
                     "cores (docs/distributed.md).")

#: The launcher's own flags, never passed on to its workers (``--shard`` is each worker's own).
_LAUNCHER_FLAGS = ("gpus", "workers_per_gpu", "gpu_memory_mb", "cpu_workers", "shard")


def _worker_flags() -> list[str]:
    """The flags given to this command, as its workers get them (without the launcher's own)."""
    out = []
    for name in FLAGS:
        flag = FLAGS[name]
        if name == flag.name and flag.present and name not in _LAUNCHER_FLAGS:
            out.append(flag.serialize())
    return out


def _run_workers(name, specs, cells, index, count) -> None:
    """``--gpus`` or ``--cpu_workers``: the grid as worker processes (:mod:`kdkeras.experiments.grid.workers`)."""
    import os

    from kdkeras import grid
    from kdkeras.experiments.grid import workers

    if FLAGS.gpus is not None:
        team = workers.assign(FLAGS.gpus, FLAGS.workers_per_gpu, (index, count), FLAGS.gpu_memory_mb)
    else:
        team = workers.assign_cpus(FLAGS.cpu_workers, (index, count))
    if FLAGS.export:
        cli.fail(f"--export trains nothing: run it without --{'gpus' if FLAGS.gpus is not None else 'cpu_workers'}.")
    if FLAGS.dry_run:
        grid.print_plan(name, cells, grid.shard(cells, index, count), index, count)
        grid.print_not_applicable(specs, FLAGS.students, FLAGS.teachers)
        workers.print_assignment(team)
        return
    from kdkeras.training import check_logdir

    check_logdir(FLAGS.logdir)
    cli.check_instrument_flags()
    folder = os.path.join(FLAGS.logdir, name, "workers")
    failed = workers.launch(team, _worker_flags(), folder)
    if failed:
        cli.fail(f"{len(failed)} of {len(team)} grid workers failed; their logs are in {folder}.", exit_code=1)


def main(argv):
    del argv
    import os

    from kdkeras import grid, host

    if bool(FLAGS.table) == bool(FLAGS.config):
        cli.fail("pass exactly one of --table=N (1-6) or --config=PATH.")
    if FLAGS.gpus is None and (FLAGS["workers_per_gpu"].present or FLAGS.gpu_memory_mb is not None):
        cli.fail("--workers_per_gpu and --gpu_memory_mb go with --gpus=0,1,... (the GPUs to start workers on).")
    if FLAGS.gpus is not None and FLAGS.cpu_workers is not None:
        cli.fail("pass one of --gpus (workers on GPUs) or --cpu_workers (workers on CPU cores), not both.")
    if "TF_NUM_INTRAOP_THREADS" in os.environ:  # a worker of --cpu_workers (or a user's setting)
        print(f"Grid shard {FLAGS.shard or '0/1'} on {host.cpu_assignment()}", flush=True)
    if host.GPU_MEMORY_VARIABLE in os.environ:  # a worker of --gpus (or a user's setting): before TensorFlow's GPU use
        print(f"Grid shard {FLAGS.shard or '0/1'} on {host.gpu_assignment()}", flush=True)
        host.configure_gpu_memory()
    if FLAGS.export_teachers and not FLAGS.export:
        cli.fail("--export_teachers goes with --export=FOLDER (the copy the teachers' models join).")
    name, specs = grid.load_grids(FLAGS.config or grid.table_config_path(FLAGS.table))
    if FLAGS.seeds is not None and FLAGS.seeds < 1:
        cli.fail(f"--seeds must be a positive integer. Received: {FLAGS.seeds}.")
    for spec in specs:
        if FLAGS.dataset:
            spec.dataset = FLAGS.dataset
        if FLAGS.seeds is not None:
            spec.seeds = FLAGS.seeds
        spec.settings.update({k: FLAGS[k].value for k in _OVERRIDES if FLAGS[k].value is not None})
        if spec.settings.get("kd_epochs") is not None:
            spec.name += f"-kd{spec.settings['kd_epochs']}"  # its own tables, next to the KD-throughout ones
        if FLAGS.teacher_epochs is not None:
            spec.name += f"-teacher{FLAGS.teacher_epochs}"  # its own tables, next to the config's
        if FLAGS.init is not None:
            spec.axes.pop("init", None)
            spec.settings["init"] = FLAGS.init
            if FLAGS.init != "he":
                spec.name += f"-{FLAGS.init}"  # its own tables, next to the he_normal ones
        if FLAGS.plain is not None:
            spec.axes.pop("plain", None)
            spec.settings["plain"] = FLAGS.plain
            if FLAGS.plain != "none":
                spec.name += f"-{FLAGS.plain}"  # its own tables, next to the residual-trained ones
        if FLAGS.anneal_fraction is not None:
            spec.settings["anneal_fraction"] = FLAGS.anneal_fraction
    if len(specs) == 1:
        name = specs[0].name
    index, count = grid.parse_shard(FLAGS.shard)
    cells = grid.plan_all(specs, FLAGS.logdir, FLAGS.half, FLAGS.students, FLAGS.teachers)
    if FLAGS.gpus is not None or FLAGS.cpu_workers is not None:
        _run_workers(name, specs, cells, index, count)
        return
    mine = grid.shard(cells, index, count)
    if FLAGS.lease_s is not None:
        from kdkeras import claims

        claims.set_lease_seconds(FLAGS.lease_s)
    if FLAGS.dry_run:
        grid.print_plan(name, cells, mine, index, count)
        grid.print_not_applicable(specs, FLAGS.students, FLAGS.teachers)
        return
    if not FLAGS.export:
        from kdkeras.training import check_logdir

        check_logdir(FLAGS.logdir)
        cli.check_instrument_flags()
        own = {c.run_dir for c in mine}
        others = [c for c in cells if c.run_dir not in own] if FLAGS.take_over else []
        grid.run(name, mine, FLAGS.logdir, callbacks=cli.instrument_callbacks, take_over=others)
    # The tables from every finished run (--export: also while other runs are still to do).
    for spec in specs:
        grid.write_tables(spec, FLAGS.logdir, FLAGS.half, FLAGS.students, FLAGS.teachers)
    if len(specs) > 1:
        grid.write_summary(name, specs, FLAGS.logdir)
    if FLAGS.export:
        grid.export(name, specs, FLAGS.logdir, FLAGS.export, teachers=FLAGS.export_teachers)


if __name__ == "__main__":
    cli.run(main)
