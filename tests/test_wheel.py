"""The package as users install it: a wheel in a fresh virtual environment, away from the source tree."""

import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel of this checkout (built offline, from the installed setuptools, in a copy of the tree:
    a ``build/`` folder left in the checkout could add stale files)."""
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "logs", "*.egg-info", "__pycache__", ".pytest_cache", ".venv"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                             "--quiet", "-w", str(out), str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = glob.glob(str(out / "kdkeras-*.whl"))
    return path


def test_the_wheel_ships_the_configs_the_command_and_the_type_marker(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    shipped = {n for n in names if n.startswith("kdkeras/configs/")}
    in_tree = {os.path.relpath(p, ROOT).replace(os.sep, "/")
               for p in glob.glob(os.path.join(ROOT, "kdkeras", "configs", "**", "*.yaml"), recursive=True)}
    assert shipped == in_tree and any(n.endswith("table3_wrn22x2.yaml") for n in shipped)
    assert "kdkeras/py.typed" in names
    assert "kdkeras = kdkeras.commands:main" in entry_points
    assert not any(n.startswith(("scripts/", "tests/", "benchmarks/")) for n in names)


def _see_this_environment(python):
    """Makes the venv of ``python`` see the packages of the interpreter running the tests.

    ``venv --system-site-packages`` would show the base interpreter's
    packages, which are not these when the suite itself runs in a virtual
    environment. A ``.pth`` file listing this interpreter's site-packages
    folders (plain paths: their own ``.pth`` files, such as an editable
    kdkeras, are not run) puts them after the venv's own folder.
    """
    import site

    inner = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    folders = [p for p in [*site.getsitepackages(), site.getusersitepackages()] if os.path.isdir(p)]
    with open(os.path.join(inner, "_outer_site_packages.pth"), "w") as f:
        f.write("".join(f"{folder}\n" for folder in folders))


@pytest.mark.slow
def test_the_installed_command_runs_without_the_source_tree(wheel, tmp_path):
    """``kdkeras profile``, ``grid --table=3 --dry_run`` and a 1-epoch synthetic ``distill`` from the wheel.

    The environment sees this machine's packages (TensorFlow and the rest are
    not downloaded again) but imports kdkeras from the wheel, in a folder with
    no ``configs/``.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    _see_this_environment(bin_dir / "python")
    result = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--no-deps",
                             "--no-index", wheel], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")

    def kdkeras(*args, timeout=600):
        done = subprocess.run(["kdkeras", *args], cwd=work, env=env, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, f"kdkeras {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    where = subprocess.run([str(bin_dir / "python"), "-c", "import kdkeras; print(kdkeras.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert where.stdout.strip().startswith(str(venv)), where  # the wheel's copy, not the checkout
    assert "wrn16x1_R_g2: 109,652 trainable parameters" in kdkeras("profile", "--model=wrn16x1_R_g2")
    plan = kdkeras("grid", "--table=3", "--dry_run")
    assert "Grid table3_wrn22x2: 53 runs" in plan
    out = kdkeras("distill", "--student=wrn10x1_NR_g2", "--teacher=wrn10x1_R_g2", "--dataset=synthetic",
                  "--epochs=1", "--train_size=64", "--test_size=32", "--batch_size=32", f"--logdir={work / 'logs'}")
    assert "Finished wrn10x1_NR_g2_from_wrn10x1_R_g2" in out
    assert os.path.exists(work / "logs" / "synthetic")
