"""kdkeras/methods/manifest.json: the methods' settings without importing them, and flags answered without
TensorFlow.

The manifest is a cache of what the method classes declare; these tests check
it against the classes, check that a stale one is never used, and that a
command's ``--help`` and a mistake in its flags import neither Keras nor
TensorFlow (that import took about 5 of the 6 seconds such an answer took).
"""

import json
import os
import subprocess
import sys

import helpers
import pytest

from kdkeras import methods
from kdkeras.methods import _manifest


def test_the_committed_manifest_is_what_the_methods_declare():
    with open(_manifest.PATH) as f:
        committed = json.load(f)
    current = json.loads(json.dumps(_manifest.build(methods._discover())))
    assert committed["sources"] == current["sources"], (
        "kdkeras/methods/manifest.json is stale: run `python -m kdkeras.methods` and commit it")
    assert committed == current


def test_the_manifest_gives_every_setting_as_the_classes_declare_it(monkeypatch):
    _manifest.load.cache_clear()
    from_manifest = _manifest.load()
    assert from_manifest is not None and list(from_manifest) == list(methods._discover())
    for name, method_class in methods._discover().items():
        entry = from_manifest[name]
        assert entry["settings"] == methods.declared_settings(method_class), name  # types, tuples, choices
        assert entry["paper"] == method_class.paper
        assert entry["default_weight"] == (None if name == "kd" else method_class.default_weight)  # KD: --alpha
    # What the flags read, from the manifest (no method imported yet) and from the classes: the same.
    monkeypatch.setattr(methods, "_registry", None)
    assert methods._declarations() is from_manifest
    by_manifest = methods.all_settings()
    monkeypatch.undo()
    assert methods._registry is not None and by_manifest == methods.all_settings()


def test_a_stale_manifest_is_not_used(monkeypatch, tmp_path):
    hashes = _manifest.source_hashes()
    assert set(hashes) >= {"__init__.py", "base.py", "_settings.py", "kd.py", "dkd.py"}  # the registry's too
    stale = {**hashes, "dkd.py": "0" * 64}  # dkd.py edited since the manifest was written
    _manifest.load.cache_clear()
    monkeypatch.setattr(_manifest, "source_hashes", lambda: stale)
    try:
        assert _manifest.load() is None
        monkeypatch.setattr(methods, "_registry", None)
        assert methods.list_methods() == list(methods._discover())  # read from the classes instead
    finally:
        _manifest.load.cache_clear()
    missing = tmp_path / "manifest.json"
    monkeypatch.setattr(_manifest, "PATH", str(missing))
    assert _manifest.load() is None
    missing.write_text("{not json")
    _manifest.load.cache_clear()
    assert _manifest.load() is None
    _manifest.load.cache_clear()


def test_the_package_imports_no_method_until_one_is_asked_for():
    code = ("import sys; import kdkeras.methods as m; assert m.list_methods()[:2] == ['kd', 'dkd']; "
            "assert not [n for n in sys.modules if n.startswith(('keras', 'tensorflow', 'kdkeras.methods.d'))]; "
            "assert m.dkd.DKD is m.DKD is m.get('dkd') and m.base.Method is m.Method; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env=helpers.script_env())
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


_IMPORTED_AFTER = """
import runpy, sys
sys.argv = [sys.argv[1]] + sys.argv[2:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exit:
    code = exit.code
print("IMPORTED", sorted(m for m in ("keras", "tensorflow") if m in sys.modules), code)
"""


@pytest.mark.parametrize("script, args", [
    ("distill.py", ["--studnet=wrn16x1_NR_g2"]),
    ("train.py", ["--helpshort"]),
    ("grid.py", ["--nosuchflag=1"]),
    ("distill.py", ["--dkd_beta=2", "--nosuchflag"]),
])
def test_help_and_flag_mistakes_import_neither_keras_nor_tensorflow(script, args):
    env = helpers.script_env()
    result = subprocess.run([sys.executable, "-c", _IMPORTED_AFTER, os.path.join(helpers.ROOT, "scripts", script),
                             *args], capture_output=True, text=True, env=env, timeout=120, cwd=helpers.ROOT)
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("IMPORTED")]
    assert line.startswith("IMPORTED []"), (line, result.stderr[-2000:])
    assert line.endswith(" 0" if "--helpshort" in args else " 2"), line
    if "--helpshort" not in args:
        assert len(helpers.error_lines(result.stderr)) == 1, result.stderr


def test_tensorflow_imported_anywhere_after_the_cli_is_quiet():
    """The first import of TensorFlow, wherever a command makes it, prints none of its native start-up lines."""
    code = "import kdkeras.cli; import tensorflow as tf; assert tf.__loader__ is tf.__spec__.loader; print('ok')"
    env = {k: v for k, v in helpers.script_env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert quiet.returncode == 0 and quiet.stdout.strip() == "ok", quiet.stderr[-2000:]
    assert quiet.stderr == ""
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**env, "KDKERAS_DEBUG": "1"})
    assert loud.returncode == 0, loud.stderr[-2000:]
    if not loud.stderr:
        pytest.skip("TensorFlow prints no start-up lines on this host: nothing to mute")
