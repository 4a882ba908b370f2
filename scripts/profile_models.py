"""Parameter and FLOP (multiply-accumulate) counts of the model zoo.

The same as ``kdkeras profile``: ``python scripts/profile_models.py --help`` lists the
flags, and kdkeras/commands/profile.py holds the code.
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging
from kdkeras.commands import profile as command  # noqa: E402  (defines the flags)

__doc__ = command.__doc__  # noqa: A001  (--help shows the subcommand's examples)

if __name__ == "__main__":
    cli.run(command.main)
