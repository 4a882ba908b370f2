"""The package as users install it: a wheel in a fresh virtual environment, away from the source tree."""

import glob
import os
import pathlib
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
    assert "kdkeras/methods/manifest.json" in names  # the methods' settings, read without Keras
    assert "kdkeras = kdkeras.commands:main" in entry_points
    assert not any(n.startswith(("scripts/", "tests/", "benchmarks/")) for n in names)


def _requirements(wheel_path):
    """The wheel's own ``Requires-Dist`` lines (its declared dependencies, from pyproject.toml)."""
    with zipfile.ZipFile(wheel_path) as z:
        metadata_file = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(metadata_file).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def _dependency_closure(requirements):
    """The installed distributions that ``requirements`` need, transitively (extras only where asked).

    Raises ``importlib.metadata.PackageNotFoundError`` for a declared dependency that is not installed.
    """
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found, todo = {}, [(Requirement(r), ("",)) for r in requirements]
    while todo:
        requirement, extras = todo.pop()
        if requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in extras):
            continue  # another platform's, or an extra nobody asked for (kdkeras's own [dev])
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        found[name] = metadata.distribution(requirement.name)
        asked = ("",) + tuple(sorted(requirement.extras))
        todo += [(Requirement(r), asked) for r in found[name].requires or []]
    return found


def _link_dependencies(distributions, folder):
    """Links each distribution's top-level files (packages, modules, its .dist-info) into ``folder``."""
    os.makedirs(folder)
    for dist in distributions.values():
        site = os.path.realpath(str(dist.locate_file("")))
        tops = {pathlib.PurePath(str(f)).parts[0] for f in (dist.files or [])}
        if not dist.files:  # installed without a RECORD: its top_level.txt and metadata folder
            tops = set((dist.read_text("top_level.txt") or "").split())
            tops.add(os.path.basename(str(dist._path)))
        for top in tops:
            source = os.path.join(site, top)
            if top.startswith("..") or top == "__pycache__" or not os.path.exists(source):
                continue
            target = os.path.join(folder, top)
            if not os.path.lexists(target):
                os.symlink(source, target)


def _venv_with_declared_dependencies(wheel_path, venv):
    """A venv that sees exactly the installed distributions the wheel declares, transitively.

    Nothing is downloaded: those distributions are linked from this
    interpreter's environment into one folder that a ``.pth`` file puts on
    the venv's path, and pip installs the wheel *with* its dependencies
    (``--no-index``), which it must find there. A package kdkeras imports but
    pyproject.toml does not declare is not in that folder, so the commands
    below fail with ``ModuleNotFoundError``. (``venv --system-site-packages``
    would show every package of the base interpreter instead, and not those
    of a virtual environment the suite itself may run in.)
    """
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    deps = venv / "declared-dependencies"
    _link_dependencies(_dependency_closure(_requirements(wheel_path)), str(deps))
    inner = subprocess.run([str(bin_dir / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    with open(os.path.join(inner, "_declared_dependencies.pth"), "w") as f:
        f.write(f"{deps}\n")
    result = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--no-index", wheel_path],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return bin_dir


def test_the_dependency_closure_follows_the_declared_requirements():
    closure = _dependency_closure(["keras>=3", "pyyaml"])
    assert {"keras", "pyyaml", "numpy", "h5py"} <= set(closure)  # keras's own dependencies come with it
    assert "tensorflow" not in closure and "pytest" not in closure


@pytest.mark.slow
def test_the_installed_command_runs_without_the_source_tree(wheel, tmp_path):
    """``kdkeras --help``, ``profile``, ``grid --table=3 --dry_run``, and 1-epoch synthetic ``train`` and
    ``distill`` from the wheel, in a venv that sees only the declared dependencies, in a folder with no
    ``configs/``.
    """
    venv = tmp_path / "venv"
    bin_dir = _venv_with_declared_dependencies(wheel, venv)
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
    manifest = subprocess.run([str(bin_dir / "python"), "-c", "from kdkeras.methods import _manifest; "
                               "print(_manifest.load() is not None)"], cwd=work, env=env, capture_output=True,
                              text=True, timeout=120)
    assert manifest.stdout.strip() == "True", manifest  # the installed files match the shipped manifest
    assert "commands:" in kdkeras("--help") and "train" in kdkeras("--help")
    assert "wrn16x1_R_g2: 109,652 trainable parameters" in kdkeras("profile", "--model=wrn16x1_R_g2")
    plan = kdkeras("grid", "--table=3", "--dry_run")
    assert "Grid table3_wrn22x2: 53 runs" in plan
    trained = kdkeras("train", "--model=wrn10x1_R_G4", "--dataset=synthetic", "--epochs=1", "--train_size=64",
                      "--test_size=32", "--batch_size=32", f"--logdir={work / 'logs'}")
    assert "Finished wrn10x1_R_G4" in trained
    out = kdkeras("distill", "--student=wrn10x1_NR_g2", "--teacher=wrn10x1_R_g2", "--dataset=synthetic",
                  "--epochs=1", "--train_size=64", "--test_size=32", "--batch_size=32", f"--logdir={work / 'logs'}")
    assert "Finished wrn10x1_NR_g2_from_wrn10x1_R_g2" in out
    assert os.path.exists(work / "logs" / "synthetic")
