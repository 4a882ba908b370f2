"""Runs ``scripts/distill.py``'s command once per method in one process (the suite's end-to-end check).

Usage: ``python tests/methods/distill_each.py LOGDIR TEACHER_FILE METHOD [METHOD ...]``. For each method it
parses the flags ``distill.py`` would get (``--method=<name>`` and a tiny synthetic run) and calls the
command's ``main``, as ``distill.py`` does, then prints ``ok <method>`` or ``FAILED <method>: <error>``. One
interpreter and one TensorFlow start for every method instead of one each.
"""

import sys
import traceback

from kdkeras import cli  # noqa: F401  (first: quiets TensorFlow's start-up logging)
from kdkeras.commands import distill as command  # noqa: E402  (defines the flags)

from absl import flags  # noqa: E402

FLAGS = flags.FLAGS


def main():
    logdir, teacher, methods = sys.argv[1], sys.argv[2], sys.argv[3:]
    failed = 0
    for method in methods:
        argv = ["distill.py", "--student=wrn10x1_NR_g2", f"--teacher={teacher}", "--dataset=synthetic",
                "--epochs=1", "--train_size=32", "--test_size=16", "--batch_size=16", f"--method={method}",
                f"--logdir={logdir}/{method}"]
        FLAGS.unparse_flags()
        try:
            command.main(FLAGS(argv))
            print(f"ok {method}", flush=True)
        except Exception as err:  # noqa: BLE001  (report every method, then fail)
            failed += 1
            print(f"FAILED {method}: {type(err).__name__}: {err}", flush=True)
            traceback.print_exc()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
