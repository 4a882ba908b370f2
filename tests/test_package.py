import subprocess
import sys

import kdkeras


def test_every_export_resolves():
    for name in kdkeras.__all__:
        assert getattr(kdkeras, name) is not None, name
    assert kdkeras.Distiller.__name__ == "Distiller"


def test_import_is_lazy():
    code = "import sys, kdkeras; assert 'tensorflow' not in sys.modules; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-1000:]


def test_submodules_are_reachable_as_attributes():
    code = ("import kdkeras; c = kdkeras.config.resolve({'model': 'wrn22x2_R_g2'}); "
            "print(kdkeras.config.run_name(c))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "wrn22x2_R_g2-s0" in result.stdout, result.stderr[-1000:]
