"""Diagnoses a gap between training and evaluation: BatchNorm statistics, layer by layer.

The same as ``kdkeras bnstats``: ``python scripts/bnstats.py --help`` lists the
flags, and kdkeras/commands/bnstats.py holds the code.
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging
from kdkeras.commands import bnstats as command  # noqa: E402  (defines the flags)

__doc__ = command.__doc__  # noqa: A001  (--help shows the subcommand's examples)

if __name__ == "__main__":
    cli.run(command.main)
