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


def test_each_export_is_the_object_its_module_defines():
    """``kdkeras.X`` is the class or function defined under the module ``_EXPORTS`` names, not a copy."""
    import importlib

    for name, module_name in kdkeras._EXPORTS.items():
        obj = getattr(kdkeras, name)
        assert obj.__name__ == name, name
        defining = importlib.import_module(obj.__module__)
        assert getattr(defining, name) is obj, name
        assert obj.__module__ == module_name or obj.__module__.startswith(module_name + "."), (name, obj.__module__)
        assert getattr(importlib.import_module(module_name), name) is obj, name


def test_version_is_the_packages():
    import os
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml")) as f:
        declared = re.search(r'^version = "([^"]+)"', f.read(), re.M).group(1)
    assert kdkeras.__version__ == declared


def test_every_module_of_the_package_is_reachable_as_an_attribute():
    import os

    package = os.path.dirname(kdkeras.__file__)
    top = {name[:-3] if name.endswith(".py") else name for name in os.listdir(package)
           if (name.endswith(".py") and not name.startswith("_")) or os.path.isfile(
               os.path.join(package, name, "__init__.py"))}
    assert top <= set(kdkeras._SUBMODULES), sorted(top - set(kdkeras._SUBMODULES))
