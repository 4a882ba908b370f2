"""Penultimate-layer embeddings of finished runs (the paper's Figure 2).

The same as ``kdkeras embed``: ``python scripts/embed.py --help`` lists the
flags, and kdkeras/commands/embed.py holds the code.
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging
from kdkeras.commands import embed as command  # noqa: E402  (defines the flags)

__doc__ = command.__doc__  # noqa: A001  (--help shows the subcommand's examples)

if __name__ == "__main__":
    cli.run(command.main)
