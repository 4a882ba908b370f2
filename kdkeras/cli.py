"""Shared plumbing of the command-line scripts in ``scripts/``.

Importing this module first keeps TensorFlow's start-up logging quiet.
:func:`run` wraps ``absl.app.run`` so that user mistakes (bad names, bad
settings, missing data) end with one line on stderr and exit code 2, not a
traceback. Set ``KDKERAS_DEBUG=1`` to see the traceback anyway.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Exit code of a user mistake (as argparse / absl use for bad flags).
USAGE_EXIT_CODE = 2


def fail(message: str) -> None:
    """Prints ``<script>: error: <message>`` on one line and exits with code 2."""
    prog = os.path.basename(sys.argv[0]) if sys.argv else "kdkeras"
    first_line = " ".join(str(message).split("\n")).strip()
    print(f"{prog}: error: {first_line}", file=sys.stderr)
    sys.exit(USAGE_EXIT_CODE)


def run(main) -> None:
    """``absl.app.run(main)``, turning user errors into one-line messages."""
    from absl import app

    def guarded(argv):
        if len(argv) > 1:
            fail(f"unexpected positional arguments: {' '.join(argv[1:])}; use --flags.")
        try:
            return main(argv)
        except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as err:
            if os.environ.get("KDKERAS_DEBUG"):
                raise
            fail(str(err))

    app.run(guarded)
