"""Shared test helpers: running scripts as a user would, interrupting a fit."""

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Variables of the calling environment that would change a script's behaviour.
_CLEARED = ("KDKERAS_DEBUG", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID", "TF_CONFIG",
            "KDKERAS_LEASE_S")


def script_env(**variables):
    """The environment of a script run by a test: the caller's without :data:`_CLEARED`, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env.update(variables)
    return env


def checkout_env():
    """``{"PYTHONPATH": ...}`` that makes a new process import this checkout's kdkeras, or ``{}`` where it already
    does (an editable install of this checkout, as in CI): an unchanged PYTHONPATH lets the run be forked."""
    import kdkeras

    if os.path.abspath(kdkeras.__file__).startswith(ROOT + os.sep):
        return {}
    return {"PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}


def script_command(script, *args):
    """The command line running ``scripts/<script>`` with ``args``."""
    return [sys.executable, os.path.join(ROOT, "scripts", script), *args]


def run_script(script, *args, cwd=None, timeout=300, fresh=False, env=None, **popen):
    """Runs ``scripts/<script>`` with ``args`` as a user would; returns the completed process (text output).

    ``env``: the script's environment (default :func:`script_env`). The process is a child of this worker's
    fork server (tests/forkserver.py: TensorFlow already imported, the same script code) unless ``fresh``,
    ``popen`` (more arguments of :func:`subprocess.run`) or an ``env`` that changes what an import reads
    asks for a new interpreter: a test of start-up itself passes ``fresh=True``.
    """
    return run_command(script_command(script, *args), cwd=cwd, timeout=timeout, fresh=fresh, env=env, **popen)


def run_command(argv, *, cwd=None, timeout=300, fresh=False, env=None, **popen):
    """:func:`run_script` for any ``argv`` of this interpreter (``[sys.executable, script or -m module, ...]``)."""
    env = script_env() if env is None else env
    server = _fork_server()
    forked = not fresh and not popen and argv[0] == sys.executable and server.accepts(env, script_env())
    if os.environ.get("KDKERAS_TEST_FORKSERVER_LOG"):  # which runs were forked, to find the ones that were not
        with open(os.environ["KDKERAS_TEST_FORKSERVER_LOG"], "a") as log:
            log.write(f"{'forked' if forked else 'fresh'} {' '.join(argv[1:3])}\n")
    if forked:
        done = server.run(argv, cwd=cwd, env=env, server_env=script_env(), timeout=timeout)
        if done is not None:
            return done
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout, check=False,
                          **popen)


def _fork_server():
    """The client of tests/forkserver.py: one per process, whether this file is imported as ``helpers`` or
    ``tests.helpers``."""
    module = sys.modules.get("tests.forkserver")
    if module is None:
        import importlib.util

        spec = importlib.util.spec_from_file_location("tests.forkserver", os.path.join(ROOT, "tests", "forkserver.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["tests.forkserver"] = module
        spec.loader.exec_module(module)
    return module.CLIENT


def relative_error(actual, expected):
    """``max |actual - expected| / max |expected|``: an error on the scale of the values compared.

    For floats computed by different kernels (oneDNN or Eigen, another batch
    split, another summation order), whose differences scale with the
    values' magnitude; each caller states its bound and why.
    """
    import numpy as np

    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = np.max(np.abs(expected))
    return float(np.max(np.abs(actual - expected)) / (scale if scale > 0 else 1.0))


def error_lines(stderr):
    """The ``<script>: error: ...`` lines of a script's stderr."""
    return [line for line in stderr.splitlines() if ": error: " in line]


class Interrupt(Exception):
    """Raised by :class:`StopAfter`: stands for a process stopped mid-run."""


def stop_after(epoch):
    """A Keras callback raising :class:`Interrupt` at the end of ``epoch`` (after its backup)."""
    import keras

    class StopAfter(keras.callbacks.Callback):
        def on_epoch_end(self, current, logs=None):
            if current == epoch:
                raise Interrupt()

    return StopAfter()


def record_calls(monkeypatch, owner, name):
    """Replaces ``owner.name`` with a wrapper that records each call's ``(args, kwargs)``; returns the list of calls."""
    calls, real = [], getattr(owner, name)

    def recording(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, recording)
    return calls


def free_ports(n):
    """``n`` ports the OS has just given out and that are free again (for a cluster of worker processes).

    TensorFlow's gRPC server binds its port itself (on 0.0.0.0, without SO_REUSEPORT), so the ports cannot stay
    held by the test until the workers bind them: the only race left is another process taking one in the
    seconds before a worker starts listening.
    """
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def committed_runs(folder):
    """``(name, config, results)`` of each finished run under ``folder`` (its ``config.yaml`` and
    ``results.json``), in name order: the committed result files that docs/results.md's tables come from."""
    import json

    import yaml

    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        if not os.path.isfile(os.path.join(path, "results.json")):
            continue
        with open(os.path.join(path, "config.yaml")) as f:
            config = yaml.safe_load(f)
        with open(os.path.join(path, "results.json")) as f:
            yield name, config, json.load(f)


def marked_table(path, marker):
    """``(header, rows)`` of the Markdown table right after the line ``marker`` in ``path``: the header's
    cells and each row's cells, stripped (a page without the marker fails the test)."""
    import pytest

    with open(path, encoding="utf-8") as f:
        text = f.read()
    if marker not in text:
        pytest.fail(f"{os.path.relpath(path)} has no {marker} table")
    lines = text.split(marker, 1)[1].strip().splitlines()

    def cells(line):
        return [c.strip() for c in line.strip().strip("|").split("|")]

    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append(cells(line))
    return cells(lines[0]), rows


#: The row label of each distillation method in docs/results.md's tables.
METHOD_LABELS = {"kd": "KD", "fitnets": "FitNets", "at": "AT", "nst": "NST", "pkt": "PKT", "ctkd": "CTKD", "ls": "LS",
                 "dist": "DIST", "rkd": "RKD", "sp": "SP", "vid": "VID", "crd": "CRD", "mlkd": "MLKD", "dkd": "DKD",
                 "reviewkd": "ReviewKD", "rd": "RD"}


def seed_stat(values, unit="%"):
    """docs/results.md's text for per-seed values: ``m ± s`` (sample std) and ``unit``, the value alone for one."""
    import numpy as np

    values = list(values)
    if len(values) == 1:
        return f"{values[0]:.2f}{unit}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}{unit}"


def seed_cell(seeds):
    """A results table's accuracy cell from ``{seed: (final test accuracy, test accuracy at the best validation
    epoch)}``: ``final [at best val]``, with the seed count when there are several."""
    final, at_val = zip(*(seeds[s] for s in sorted(seeds)))
    text = f"{seed_stat(final)} [{seed_stat(at_val)}]"
    return text if len(seeds) == 1 else f"{text} (n={len(seeds)})"


def paired_difference(seeds, reference):
    """The final-epoch difference from ``reference`` (both ``{seed: (final, ...)}``), taken per seed (the seeds
    both have) and then averaged, in points: ``+m ± s``, ``+m`` for one seed, ``—`` for none."""
    import numpy as np

    differences = [seeds[s][0] - reference[s][0] for s in sorted(set(seeds) & set(reference))]
    if not differences:
        return "—"
    text = f"{np.mean(differences):+.2f}"
    return text if len(differences) == 1 else f"{text} ± {np.std(differences, ddof=1):.2f}"


def one_pair_grid(name: str, *, epochs: int, train_size: int, batch_size: int, test_size: int | None = None) -> str:
    """A table grid's YAML text: WRN-10x1 NR_g2 distilled from R_g2 on synthetic data, one seed (3 runs)."""
    return (f"name: {name}\nnet: wrn10x1\ndataset: synthetic\nseeds: 1\nhalves:\n  left:\n    students: [NR_g2]\n"
            f"    teachers: [R_g2]\nsettings:\n  epochs: {epochs}\n  train_size: {train_size}\n"
            f"  test_size: {test_size or train_size}\n  batch_size: {batch_size}\n")
