"""Draws the loss landscape of finished runs (filter-normalised directions, Li et al. 2018).

The same as ``kdkeras landscape``: ``python scripts/landscape.py --help`` lists the
flags, and kdkeras/commands/landscape.py holds the code.
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging
from kdkeras.commands import landscape as command  # noqa: E402  (defines the flags)

__doc__ = command.__doc__  # noqa: A001  (--help shows the subcommand's examples)

if __name__ == "__main__":
    cli.run(command.main)
