"""Plots the gradient flow that runs logged with --gradient_flow_epochs.

The same as ``kdkeras gradflow``: ``python scripts/gradflow.py --help`` lists the
flags, and kdkeras/commands/gradflow.py holds the code.
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging
from kdkeras.commands import gradflow as command  # noqa: E402  (defines the flags)

__doc__ = command.__doc__  # noqa: A001  (--help shows the subcommand's examples)

if __name__ == "__main__":
    cli.run(command.main)
