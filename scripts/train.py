"""Trains a baseline on hard targets with the paper's recipe.

The same as ``kdkeras train``: ``python scripts/train.py --help`` lists the
flags, and kdkeras/commands/train.py holds the code.
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging
from kdkeras.commands import train as command  # noqa: E402  (defines the flags)

__doc__ = command.__doc__  # noqa: A001  (--help shows the subcommand's examples)

if __name__ == "__main__":
    cli.run(command.main)
