"""Training, distillation and input-pipeline throughput (images per second).

The same as ``kdkeras bench``: ``python scripts/bench.py --help`` lists the
flags, and kdkeras/commands/bench.py holds the code.
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging
from kdkeras.commands import bench as command  # noqa: E402  (defines the flags)

__doc__ = command.__doc__  # noqa: A001  (--help shows the subcommand's examples)

if __name__ == "__main__":
    cli.run(command.main)
