"""Distils a student from a teacher (Hinton KD, T=4, alpha=0.9 by default).

Examples:
    kdkeras distill --student=wrn22x10_NR_G4 --teacher=wrn22x10_R_g2
    kdkeras distill --student=wrn22x2_NR_g16 --teacher=path/to/teacher.keras
    kdkeras distill --student=wrn22x2_NR_g16 --teacher=wrn22x2_R_G4 --kd_epochs=30
    kdkeras distill --student=wrn16x1_NR_g2 --teacher=wrn16x1_R_g2 \
        --dataset=synthetic --epochs=2                                            # smoke run

A teacher given by name is looked up in --logdir (its baseline run with the
same recipe overrides) and trained first when it has no finished run
(--notrain_teacher: fail instead). A teacher file from a run folder whose
data differs from this run's is refused (--noteacher_data_check: allow it).
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging

from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
cli.define_run_flags(distill=True)


def main(argv):
    del argv
    config = cli.run_config_from_flags(distill=True)
    from kdkeras.training import train_and_evaluate

    train_and_evaluate(config, FLAGS.logdir, callbacks=cli.analysis_callbacks(config),
                       train_teacher=FLAGS.train_teacher, teacher_data_check=FLAGS.teacher_data_check)


if __name__ == "__main__":
    cli.run(main)
