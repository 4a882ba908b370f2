"""Tunes the KD temperature, alpha and learning rate of a student/teacher pair (KerasTuner).

The same as ``kdkeras tune``: ``python scripts/tune.py --help`` lists the
flags, and kdkeras/commands/tune.py holds the code.
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging
from kdkeras.commands import tune as command  # noqa: E402  (defines the flags)

__doc__ = command.__doc__  # noqa: A001  (--help shows the subcommand's examples)

if __name__ == "__main__":
    cli.run(command.main)
