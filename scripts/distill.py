"""Distils a student from a teacher (Hinton KD, T=4, alpha=0.9 by default).

The same as ``kdkeras distill``: ``python scripts/distill.py --help`` lists the
flags, and kdkeras/commands/distill.py holds the code.
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging
from kdkeras.commands import distill as command  # noqa: E402  (defines the flags)

__doc__ = command.__doc__  # noqa: A001  (--help shows the subcommand's examples)

if __name__ == "__main__":
    cli.run(command.main)
