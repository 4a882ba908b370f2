"""The ``kdkeras`` command: one subcommand per tool, with the flags of ``scripts/<tool>.py``.

Examples:
    kdkeras distill --student=wrn22x10_NR_G4 --teacher=wrn22x10_R_g2 --archive=cifar-100-python.tar.gz
    kdkeras grid --table=3 --dry_run
    kdkeras profile --model=wrn16x1_R_g2
    kdkeras train --help                       # the flags of one subcommand

``kdkeras <tool> --flags`` and ``python scripts/<tool>.py --flags`` (in a
source checkout) run the same code: each subcommand is a module of this
package whose ``main`` the script calls.
"""

from __future__ import annotations

import importlib
import os
import sys

#: Subcommand -> (module of :mod:`kdkeras.commands`, what it does).
COMMANDS = {
    "train": ("train", "train a baseline on hard targets with the paper's recipe"),
    "distill": ("distill", "distil a student from a teacher (trains a missing teacher first)"),
    "grid": ("grid", "run a paper table or any grid config, sharded and resumable"),
    "tune": ("tune", "tune KD temperature, alpha and learning rate on a validation split"),
    "profile": ("profile", "parameter and MAC counts of the model zoo (Tables 8 and 9)"),
    "bench": ("bench", "training, distillation and input-pipeline throughput"),
    "embed": ("embed", "penultimate-layer embeddings of finished runs (the paper's Figure 2)"),
    "landscape": ("landscape", "loss landscapes of finished runs (filter-normalised directions)"),
    "gradflow": ("gradflow", "plot the gradient flow that runs logged"),
    "bnstats": ("bnstats", "BatchNorm statistics layer by layer: why evaluation differs from training"),
    "convert": ("convert", "a PyTorch teacher checkpoint (RepDistiller, mdistiller) as a .keras file"),
}

#: Script file of each subcommand in ``scripts/`` when it differs from the subcommand's name.
SCRIPT_NAMES = {"profile": "profile_models"}


def usage() -> str:
    """The list of subcommands that ``kdkeras`` / ``kdkeras --help`` prints."""
    width = max(map(len, COMMANDS))
    lines = ["usage: kdkeras <command> [--flags]   (kdkeras <command> --help lists its flags)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    return "\n".join(lines)


def run_command(name: str, argv: list[str]) -> None:
    """Runs subcommand ``name`` with command-line arguments ``argv`` (without the program name)."""
    from kdkeras import cli  # first: quiets TensorFlow's start-up logging

    module = importlib.import_module(f"kdkeras.commands.{COMMANDS[name][0]}")
    main_module = sys.modules.get("__main__")
    if main_module is not None:  # absl's --help prints the __main__ module's docstring
        main_module.__doc__ = module.__doc__
    sys.argv = [f"kdkeras {name}", *argv]
    cli.run(module.main)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``kdkeras`` command."""
    argv = list(sys.argv if argv is None else argv)
    args = argv[1:]
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        sys.exit(0 if args else 2)
    if args[0] in ("--version", "version"):
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"kdkeras {version('kdkeras')}")
        except PackageNotFoundError:
            print("kdkeras (not installed)")
        sys.exit(0)
    name = args[0]
    if name not in COMMANDS:
        prog = os.path.basename(argv[0]) if argv else "kdkeras"
        print(f"{prog}: error: unknown command '{name}'. Valid commands: {', '.join(COMMANDS)}.",
              file=sys.stderr)
        sys.exit(2)
    run_command(name, args[1:])
