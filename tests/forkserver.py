"""Runs the scripts of the tests in processes forked from one that has already imported TensorFlow.

A test that runs ``scripts/<name>.py`` as a user would pays for a new
process importing TensorFlow, Keras and kdkeras first: about 5 of the 6
seconds that a one-line usage error takes, and of every tiny training run.
This server imports them once (per pytest worker) and forks a child per
script run. The child is the new process: it sets the run's working folder,
environment and ``sys.argv``, sends file descriptors 1 and 2 to files, runs
the script as ``__main__`` (``runpy``), and exits with its exit code; the
server answers with that code and the two outputs.

What a child shares with its server, unlike a fresh process: the modules
already imported (the same code; no module defines absl flags at import, which
the server checks) and whatever those imports read from the environment
(``TF_*`` variables and the like). :func:`forkable` therefore sends a run
whose environment changes such a variable, and every test that looks at
start-up itself, to a real process (:func:`tests.helpers.run_script` with
``fresh=True``). NumPy's global random generator is reseeded in each child,
as a new process seeds it (Python's reseeds itself after a fork).

Protocol: one JSON object per line on stdin (``argv``, ``cwd``, ``env``,
``timeout``), one per line back on the original stdout (``returncode``,
``stdout``, ``stderr``, ``timed_out``). File descriptor 1 of the server
itself goes to its stderr, so no library's print reaches the protocol.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

#: Environment variables read while TensorFlow, Keras or kdkeras are imported: a run that sets one of them to
#: another value than the server's gets a real process.
IMPORT_TIME_PREFIXES = ("TF_", "CUDA_", "XLA_", "OMP_", "KMP_", "MKL", "PYTHON", "LD_", "KERAS_", "KDKERAS_DEBUG",
                        "NVIDIA_", "TPU_")

#: Imported before the first fork: what every script imports (none of them defines an absl flag).
PRELOAD = ("kdkeras.cli", "keras", "kdkeras.config", "kdkeras.methods", "kdkeras.models.registry",
           "kdkeras.training", "kdkeras.distiller", "kdkeras.data", "kdkeras.experiments.grid")


def import_time_environment(env: dict) -> dict:
    """The variables of ``env`` that importing TensorFlow, Keras or kdkeras reads."""
    return {k: v for k, v in env.items() if k.startswith(IMPORT_TIME_PREFIXES)}


def forkable(env: dict, server_env: dict) -> bool:
    """Whether a run in ``env`` may be a child of a server started in ``server_env``."""
    return import_time_environment(env) == import_time_environment(server_env)


# --------------------------------------------------------------------------
# The client (in a test process)
# --------------------------------------------------------------------------


class Client:
    """A test process's client of this server: started on first use, stopped at exit."""

    def __init__(self):
        import threading

        self.process = None
        self.env = None
        self.disabled = False
        self.lock = threading.Lock()

    def accepts(self, env, server_env):
        """Whether a run in ``env`` can be forked from this client's server, started in ``server_env`` (the
        tests' usual script environment) if it has not started yet."""
        if self.disabled or self.lock.locked() or os.environ.get("KDKERAS_TEST_FORKSERVER") == "0":
            return False  # a run already in flight (from another thread), or turned off
        return forkable(env, self.env if self.process is not None else server_env)

    def _start(self, env):
        import atexit
        import json

        self.env = dict(env)
        self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=self.env,
                                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        line = self.process.stdout.readline()
        if not line or "ready" not in json.loads(line):
            raise RuntimeError(f"tests/forkserver.py did not start (exit code {self.process.poll()})")
        atexit.register(self.stop)
        # CUDA does not survive a fork, and the server's imports have initialised it: GPU hosts run fresh.
        self.disabled = json.loads(line)["gpus"] > 0

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)

    def run(self, argv, *, cwd, env, server_env, timeout):
        """The completed process of ``argv`` forked from the server, or ``None`` where it cannot be (a GPU host)."""
        import json

        if not self.lock.acquire(blocking=False):
            raise RuntimeError("tests/forkserver.py runs one script at a time; check accepts() first")
        try:
            folder = os.path.abspath(cwd or os.getcwd())
            if not os.path.isdir(folder):  # as subprocess.run raises
                raise FileNotFoundError(2, "No such file or directory", folder)
            if self.process is None or self.process.poll() is not None:
                self._start(server_env)
            if self.disabled:
                return None  # the caller runs it in a new interpreter
            request = {"argv": list(argv[1:]), "cwd": folder, "env": dict(env), "timeout": timeout}
            try:
                self.process.stdin.write(json.dumps(request) + "\n")
                self.process.stdin.flush()
                line = self.process.stdout.readline()
                if not line:
                    raise RuntimeError("tests/forkserver.py stopped while running " + " ".join(argv[1:]))
                reply = json.loads(line)
            except BaseException:  # interrupted mid-run: its reply would be read as the next run's
                self.process.kill()
                self.process.wait()
                self.process = None
                raise
        finally:
            self.lock.release()
        if reply["timed_out"]:
            raise subprocess.TimeoutExpired(argv, timeout, reply["stdout"], reply["stderr"])
        return subprocess.CompletedProcess(argv, reply["returncode"], reply["stdout"], reply["stderr"])


CLIENT = Client()


# --------------------------------------------------------------------------
# The server (this file run as a script)
# --------------------------------------------------------------------------


#: Environment variables the server's imports set (kdkeras.host turns oneDNN on, say): a fresh process sets them too.
_IMPORTS_SET = {}


def _child(request, out_path, err_path):
    """In the forked child: becomes the script's process; never returns."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own group: a timeout kills what it started too
        os.chdir(request["cwd"])
        os.environ.clear()  # the run's environment, plus what the preloaded imports set (as they would have)
        os.environ.update({**_IMPORTS_SET, **request["env"]})
        import tempfile as tempfile_module

        tempfile_module.tempdir = None  # read TMPDIR again
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(os.open(out_path, os.O_WRONLY | os.O_TRUNC), 1)
        os.dup2(os.open(err_path, os.O_WRONLY | os.O_TRUNC), 2)
        # sys.stdout and sys.stderr stay the interpreter's own objects (stderr line-buffered, backslashreplace),
        # now writing to the files; they were flushed before the fork.
        sys.stdin = open(0, closefd=False)
        import numpy as np

        np.random.seed()  # Python's random module reseeds itself in a forked child; NumPy's does not
        import runpy

        argv = request["argv"]
        sys.argv = list(argv)
        try:
            if argv[0] == "-m":
                sys.argv = [argv[1], *argv[2:]]
                sys.path[0] = os.getcwd()  # as `python -m` puts it
                runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
            else:
                sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
                runpy.run_path(argv[0], run_name="__main__")
            code = 0
        except SystemExit as stop:
            if stop.code is None:
                code = 0
            elif isinstance(stop.code, int):
                code = stop.code
            else:
                print(stop.code, file=sys.stderr)
                code = 1
        except BaseException:  # as the interpreter does with an uncaught exception
            sys.excepthook(*sys.exc_info())
            code = 1
        import atexit
        import threading

        getattr(threading, "_shutdown", lambda: None)()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001  (a closed stream: nothing left to write)
                pass
        os._exit(code)


def _run(request, scratch):
    # New files for each run: a process a run leaves behind keeps writing to its own, not the next run's.
    paths = []
    for name in ("stdout", "stderr"):
        handle, path = tempfile.mkstemp(prefix=name, dir=scratch)
        os.close(handle)
        paths.append(path)
    out_path, err_path = paths
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            _child(request, out_path, err_path)
        finally:
            os._exit(1)  # never a second server
    try:
        os.setpgid(pid, pid)  # also here: a timeout before the child's own call still finds its group
    except OSError:
        pass
    deadline = time.monotonic() + request["timeout"]
    timed_out = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            timed_out = True
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.02)
    outputs = []
    for path in (out_path, err_path):
        with open(path, encoding="utf-8", errors="replace") as f:
            outputs.append(f.read())
        os.remove(path)
    return {"returncode": os.waitstatus_to_exitcode(status), "stdout": outputs[0], "stderr": outputs[1],
            "timed_out": timed_out}


def serve():
    protocol_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # a library's print goes to stderr, never into the protocol
    import importlib

    from absl import flags

    defined, environ = set(flags.FLAGS), dict(os.environ)
    for name in PRELOAD:
        importlib.import_module(name)
    _IMPORTS_SET.update({k: v for k, v in os.environ.items() if environ.get(k) != v})
    import tensorflow as tf

    gpus = len(tf.config.list_physical_devices("GPU"))  # the import probed them already
    added = {name for name in set(flags.FLAGS) - defined  # the libraries' own (absl logging...) are in every run
             if (flags.FLAGS.find_module_defining_flag(name) or "").startswith("kdkeras")}
    if added:  # a child's command would find them defined already and fail
        raise SystemExit(f"forkserver: importing {PRELOAD} defined absl flags: {sorted(added)}")
    protocol_out.write(json.dumps({"ready": os.getpid(), "gpus": gpus}) + "\n")
    protocol_out.flush()
    # Not a TemporaryDirectory: its clean-up is an exit function, which each child runs as its own.
    scratch = tempfile.mkdtemp(prefix="kdkeras-forkserver-")
    try:
        for line in sys.stdin:
            reply = _run(json.loads(line), scratch)
            protocol_out.write(json.dumps(reply) + "\n")
            protocol_out.flush()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    serve()
