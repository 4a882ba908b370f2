"""Converts a PyTorch teacher checkpoint (RepDistiller, mdistiller) into a .keras file.

The same as ``kdkeras convert``: ``python scripts/convert.py --help`` lists the
flags, and kdkeras/commands/convert.py holds the code.
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging
from kdkeras.commands import convert as command  # noqa: E402  (defines the flags)

__doc__ = command.__doc__  # noqa: A001  (--help shows the subcommand's examples)

if __name__ == "__main__":
    cli.run(command.main)
