"""Runs one of the paper's tables (or any grid config) and writes it in the paper's layout.

The same as ``kdkeras grid``: ``python scripts/grid.py --help`` lists the
flags, and kdkeras/commands/grid.py holds the code.
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging
from kdkeras.commands import grid as command  # noqa: E402  (defines the flags)

__doc__ = command.__doc__  # noqa: A001  (--help shows the subcommand's examples)

if __name__ == "__main__":
    cli.run(command.main)
