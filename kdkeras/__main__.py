"""``python -m kdkeras <command> --flags``: the same as the ``kdkeras`` command."""

from kdkeras.commands import main

if __name__ == "__main__":
    main()
