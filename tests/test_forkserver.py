"""tests/forkserver.py: a forked script run looks like a new process's to the test that reads it."""

import os
import subprocess
import sys
import textwrap

import pytest

from tests import helpers

pytestmark = pytest.mark.skipif(os.environ.get("KDKERAS_TEST_FORKSERVER") == "0", reason="the fork server is off")

SCRIPT = textwrap.dedent("""
    import atexit, os, sys
    import numpy as np
    atexit.register(lambda: print("at exit", flush=True))
    print("argv", sys.argv[1:], "cwd", os.getcwd(), "path0", sys.path[0], "parent", os.getppid())
    print("env", os.environ.get("KDKERAS_TEST_VALUE"), "name", __name__)
    print("random", np.random.random())
    print("to stderr", file=sys.stderr)
    if "--fail" in sys.argv:
        raise ValueError("a bug")
    if "--sleep" in sys.argv:
        import time
        time.sleep(60)
    sys.exit(int(sys.argv[1]))
""")


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "toy.py"
    path.write_text(SCRIPT)
    return str(path)


def _run(script, *args, **options):
    return helpers.run_command([sys.executable, script, *args], **options)


def test_a_forked_run_has_the_argv_folder_environment_and_exit_code_of_its_own(script, tmp_path):
    env = helpers.script_env(KDKERAS_TEST_VALUE="seen")
    done = _run(script, "3", "x y", cwd=str(tmp_path), env=env)
    fresh = _run(script, "3", "x y", cwd=str(tmp_path), env=env, fresh=True)
    server = helpers._fork_server().process.pid
    for result, parent in ((done, server), (fresh, os.getpid())):  # forked from the server, and not
        assert result.returncode == 3
        lines = result.stdout.splitlines()
        assert lines[0] == f"argv ['3', 'x y'] cwd {tmp_path} path0 {tmp_path} parent {parent}"
        assert lines[1] == "env seen name __main__"
        assert lines[-1] == "at exit"  # the interpreter's exit functions ran
        assert result.stderr.strip().splitlines()[-1] == "to stderr"
    # Each child draws its own random numbers, as a new process does.
    again = _run(script, "0", cwd=str(tmp_path), env=env)
    assert again.stdout.splitlines()[2] != done.stdout.splitlines()[2]


def test_an_uncaught_exception_is_a_traceback_and_exit_code_1_and_the_server_goes_on(script, tmp_path):
    done = _run(script, "0", "--fail", cwd=str(tmp_path))
    assert done.returncode == 1
    assert "Traceback" in done.stderr and done.stderr.strip().endswith("ValueError: a bug")
    assert _run(script, "0", cwd=str(tmp_path)).returncode == 0


def test_a_run_past_its_timeout_is_killed_and_raises(script, tmp_path):
    import time

    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        _run(script, "0", "--sleep", cwd=str(tmp_path), timeout=2)
    assert time.monotonic() - start < 30  # killed, not waited for (it sleeps 60 s)
    assert _run(script, "0", cwd=str(tmp_path)).returncode == 0


def test_an_environment_that_changes_an_import_gets_a_new_process(script, tmp_path):
    from tests import forkserver

    server_env = helpers.script_env()
    assert forkserver.forkable(helpers.script_env(KDKERAS_TEST_VALUE="x"), server_env)
    assert not forkserver.forkable(helpers.script_env(TF_ENABLE_ONEDNN_OPTS="0"), server_env)
    assert not forkserver.forkable({**server_env, "PYTHONPATH": "/elsewhere"}, server_env)
    # Such a run reports its own process id, not a child of the server's.
    pid_script = tmp_path / "pid.py"
    pid_script.write_text("import os; print(os.getppid())")
    helpers.run_command([sys.executable, str(pid_script)])  # the server is up
    server = helpers._fork_server().process.pid
    forked = helpers.run_command([sys.executable, str(pid_script)])
    fresh = helpers.run_command([sys.executable, str(pid_script)], env=helpers.script_env(TF_ENABLE_ONEDNN_OPTS="0"))
    assert int(forked.stdout) == server
    assert int(fresh.stdout) == os.getpid()


def test_a_missing_folder_raises_as_subprocess_does(script, tmp_path):
    with pytest.raises(FileNotFoundError):
        _run(script, "0", cwd=str(tmp_path / "missing"))


def test_a_script_runs_as_python_m():
    done = helpers.run_command([sys.executable, "-m", "kdkeras", "--help"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "train" in done.stdout
