"""kdkeras.cli.run: user mistakes are one line with exit code 2, internal errors a short report with exit code 1."""

import errno
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from kdkeras import cli, errors
from kdkeras.config import load_yaml
from kdkeras.models.registry import parse_model_name

PROG = "train.py"
HINT = (f"{PROG}: internal error (not a mistake in your command). Run again with KDKERAS_DEBUG=1 for the "
        f"full traceback, and report it with that output.")
#: Ten numbers of an array's repr in a row: what an internal error must never print.
ARRAY_DIGITS = re.compile(r"(?:-?\d+\.?\d*(?:e[-+]\d+)?[\s,\]\[]+){10}")


@pytest.fixture(autouse=True)
def _script(monkeypatch):
    monkeypatch.setattr(sys, "argv", [PROG])
    monkeypatch.delenv("KDKERAS_DEBUG", raising=False)


def _run(main, capsys):
    """Runs ``main`` through :func:`cli.run`; returns ``(exit code, stderr)``."""
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main)
    return exit_info.value.code, capsys.readouterr().err


def _deep(depth, error):
    """Raises ``error`` ``depth`` calls down."""
    if depth == 0:
        raise error
    _deep(depth - 1, error)


def _tensor_error():
    """A ValueError whose message holds a whole batch of images, as TensorFlow's conversion errors do."""
    with np.printoptions(threshold=sys.maxsize):
        images = repr(np.random.default_rng(0).random((8, 32, 32, 3), dtype=np.float32))
    return ValueError(f"Attempt to convert a value (PerReplica:{{\n  0: {images}\n}}) with an unsupported "
                      f"type (<class 'PerReplica'>) to a Tensor.")


def test_an_internal_error_is_a_short_traceback_a_cut_message_and_a_hint(capsys):
    error = _tensor_error()
    assert len(str(error)) > 100_000

    code, err = _run(lambda argv: _deep(8, error), capsys)

    assert code == cli.INTERNAL_EXIT_CODE == 1
    assert len(err) < 3000, err[:3000]
    assert not ARRAY_DIGITS.search(err), err
    assert ": error: " not in err  # not dressed up as a user mistake
    lines = err.strip().splitlines()
    # cli.run's own frame, the lambda and nine calls of _deep: the last five are shown.
    assert lines[0] == "Traceback (most recent call last; the last 5 of 11 frames):"
    frames = [line for line in lines if line.startswith('  File "')]
    # Python folds repeated identical frames into one "[Previous line repeated ...]" line.
    assert 1 <= len(frames) <= 5 and "in _deep" in frames[-1] and lines[-3].strip() == "raise error"
    assert not any("in guarded" in line for line in frames)  # the outer frames are left out
    assert all(len(line) <= cli.MAX_TRACEBACK_LINE_CHARS for line in lines[:-2])
    message = lines[-2]
    assert message.startswith("ValueError: Attempt to convert a value (PerReplica:{ …")
    assert len(message) <= len("ValueError: ") + cli.MAX_INTERNAL_MESSAGE_CHARS
    assert lines[-1] == HINT


def test_a_long_first_line_is_cut_to_the_limit(capsys):
    code, err = _run(lambda argv: _deep(0, RuntimeError("x" * 10_000)), capsys)
    assert code == 1
    (message,) = [line for line in err.splitlines() if line.startswith("RuntimeError: ")]
    assert message == "RuntimeError: " + "x" * (cli.MAX_INTERNAL_MESSAGE_CHARS - 1) + "…"


def test_an_error_from_a_library_names_its_module(capsys):
    class Failure(Exception):
        pass

    code, err = _run(lambda argv: _deep(1, Failure("inside")), capsys)
    assert code == 1 and f"{__name__}.test_an_error_from_a_library_names_its_module.<locals>.Failure: inside" in err


def test_a_usage_error_deep_in_the_library_is_one_line_with_exit_code_2(capsys):
    code, err = _run(lambda argv: parse_model_name("vgg_R_g2"), capsys)
    assert code == cli.USAGE_EXIT_CODE == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"{PROG}: error: Unknown network 'vgg'. Valid networks: ")
    assert "Traceback" not in err


def test_a_missing_user_file_is_one_line_with_exit_code_2(tmp_path, capsys):
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(FileNotFoundError) as raised:  # still a FileNotFoundError for library users
        load_yaml(str(missing))
    assert isinstance(raised.value, errors.UsageError) and isinstance(raised.value, ValueError)
    code, err = _run(lambda argv: load_yaml(str(missing)), capsys)
    assert code == 2 and err.strip() == f"{PROG}: error: Config file '{missing}' does not exist."


def test_a_long_user_error_stays_one_line_of_sensible_length(capsys):
    code, err = _run(lambda argv: _deep(3, errors.UsageError("Unknown class " + "'x', " * 500 + "\nmore")), capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    # The start (what went wrong) and the end (usually what to do) both stay; the middle goes.
    assert line.startswith(f"{PROG}: error: Unknown class 'x', ") and line.endswith("'x', 'x',  more")
    assert " … " in line and len(line) == len(f"{PROG}: error: ") + cli.MAX_ERROR_CHARS


def test_a_full_disk_is_still_one_line_with_exit_code_1(capsys):
    full = OSError(errno.ENOSPC, "No space left on device", "/logs/run/history.csv")
    code, err = _run(lambda argv: _deep(2, full), capsys)
    assert code == 1
    (line,) = err.strip().splitlines()
    assert line.startswith(f"{PROG}: error: No space left on device while writing '/logs/run/history.csv'.")


def test_kdkeras_debug_shows_the_full_error(monkeypatch):
    monkeypatch.setenv("KDKERAS_DEBUG", "1")
    error = _tensor_error()
    with pytest.raises(ValueError) as raised:
        cli.run(lambda argv: _deep(8, error))
    assert raised.value is error
    with pytest.raises(errors.UsageError):
        cli.run(lambda argv: parse_model_name("vgg_R_g2"))


def test_keyboard_interrupt_is_not_reported_as_an_error(capsys):
    with pytest.raises(KeyboardInterrupt):
        cli.run(lambda argv: _deep(1, KeyboardInterrupt()))
    assert "internal error" not in capsys.readouterr().err


def test_an_error_inside_tensorflow_prints_no_tensor(tmp_path):
    """End to end: TensorFlow's own ValueError quoting a (64, 32, 32, 3) tensor, through a script."""
    script = tmp_path / "convert.py"
    script.write_text(
        "import sys\n"
        "from kdkeras import cli\n"
        "import numpy as np\n"
        "import tensorflow as tf\n"
        "\n"
        "def main(argv):\n"
        "    np.set_printoptions(threshold=sys.maxsize)  # the tensor's repr: every value\n"
        "    images = tf.random.uniform((64, 32, 32, 3))\n"
        "    tf.convert_to_tensor({'images': images})\n"
        "\n"
        "cli.run(main)\n")
    env = {k: v for k, v in os.environ.items() if k != "KDKERAS_DEBUG"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                            timeout=300, check=False)
    assert result.returncode == 1, result.stderr[-3000:]
    # TensorFlow's C++ start-up notices may come first; the report starts at the traceback.
    report = result.stderr[result.stderr.index("Traceback (most recent call last"):]
    assert len(report) < 3000, report[:3000]
    assert not ARRAY_DIGITS.search(report), report
    lines = report.strip().splitlines()
    assert lines[-2].startswith("ValueError: Attempt to convert a value ({'images': <tf.Tensor: shape=(64, 32, 32, 3)")
    assert lines[-1] == HINT.replace(PROG, "convert.py")
