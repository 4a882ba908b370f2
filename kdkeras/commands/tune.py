"""Tunes the KD temperature, alpha and learning rate of a student/teacher pair (KerasTuner).

Examples:
    kdkeras tune --student=wrn22x2_NR_g16 --teacher=wrn22x2_R_g2 --max_trials=20
    kdkeras tune --student=wrn16x1_NR_g2 --teacher=wrn16x1_R_g2 --tuner=hyperband \
        --epochs=30 --max_trials=40
    kdkeras tune --student=wrn16x1_NR_g2 --teacher=wrn16x1_R_g2 \
        --temperature_range=4 --lr_range=0.1 --alpha_range=0.5,1                  # alpha only
    kdkeras tune --student=wrn10x1_NR_g2 --teacher=wrn10x1_R_g2 \
        --dataset=synthetic --epochs=1 --train_size=128 --test_size=64 --max_trials=2   # smoke run

Every other flag is distill.py's, and a trial trains exactly as distill.py
would with the trial's values. Each trial is scored by its best val_accuracy
on a validation split held out of the training images (--val_size; default
10% of them); the test split is never seen by the search: the best trial's
test accuracy is measured once, after the search, and reported apart in
best.json. The search lives in <logdir>/<dataset>/tune/<student>_from_<teacher>-s<seed>[-hash]:
repeating the command continues it (finished trials are never rerun) and a
larger --max_trials adds trials. At the end, best.json holds the best values
and every trial, and the distill.py command for a run with the best values is
printed. Distributed search: KerasTuner's KERASTUNER_TUNER_ID,
KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT (see docs/analysis.md).
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging

from absl import flags  # noqa: E402

from kdkeras.errors import UsageError  # noqa: E402

FLAGS = flags.FLAGS
# The tuned settings get ranges instead of single values.
cli.define_run_flags(distill=True, help={name: f"Not used by tune.py: see --{name}_range."
                                         for name in ("temperature", "alpha", "lr")})
flags.DEFINE_string("tuner", "bayesian", "Search algorithm: bayesian (BayesianOptimization) or hyperband.")
flags.DEFINE_integer("max_trials", 10, "Total trials of the search (finished ones count; raise it to add trials).")
flags.DEFINE_integer("executions_per_trial", 1, "Trainings per trial (seeds seed, seed+1, ...), averaged.")
flags.DEFINE_string("temperature_range", None, "KD temperature: MIN,MAX (log scale; default 1,20) or one value "
                    "to fix it.")
flags.DEFINE_string("alpha_range", None, "KD weight alpha: MIN,MAX within [0, 1] (default 0,1) or one value "
                    "to fix it.")
flags.DEFINE_string("lr_range", None, "Initial learning rate: MIN,MAX (log scale; default 0.02,0.5) or one "
                    "value to fix it.")


def main(argv):
    del argv
    from kdkeras import tuning

    for name in tuning.TUNED:
        if FLAGS[name].value is not None:
            raise UsageError(f"--{name} is a tuned setting: pass --{name}_range=VALUE to fix it "
                             f"or --{name}_range=MIN,MAX to tune it.")
    space = tuning.SearchSpace(**{name: tuning.parse_range(FLAGS[f"{name}_range"].value, name)
                                  for name in tuning.TUNED})
    tuning.check_search_settings(FLAGS.tuner, FLAGS.max_trials, FLAGS.executions_per_trial)
    config = cli.run_config_from_flags(distill=True)
    tuning.tune(config, FLAGS.logdir, space=space, tuner=FLAGS.tuner, max_trials=FLAGS.max_trials,
                executions_per_trial=FLAGS.executions_per_trial)


if __name__ == "__main__":
    cli.run(main)
