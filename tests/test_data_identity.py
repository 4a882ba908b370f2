"""A run's identity includes the data it read: two archives are two runs, a moved archive is one (docs/reliability.md)."""

import os
import shutil

import pytest
import yaml

from kdkeras import config as config_lib
from kdkeras.data import fingerprint as fp
from kdkeras.data import hashing
from kdkeras.errors import UsageError
from kdkeras.training import train_and_evaluate
from kdkeras.training.teachers import check_teacher_data
from kdkeras.training.run_folder import run_dir
from tests.cifar_archives import CIFAR10, write_cifar
from tests.helpers import error_lines, run_script

#: A tiny baseline on a CIFAR-10 archive (the path is added per test).
TINY = {"model": "wrn10x1_R_g2", "dataset": "cifar10", "epochs": 1, "batch_size": 16, "train_size": 32,
        "test_size": 16}


@pytest.fixture(autouse=True)
def _hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(fp.CACHE_VARIABLE, str(tmp_path / "hash-cache"))


@pytest.fixture
def archives(tmp_path):
    """Two CIFAR-10 archives with the official file name and different images."""
    a, _, _ = write_cifar(str(tmp_path / "a"), CIFAR10, n_train=40, n_test=20, seed=0)
    b, _, _ = write_cifar(str(tmp_path / "b"), CIFAR10, n_train=40, n_test=20, seed=5)
    return a, b


def _config(archive, **more):
    return config_lib.resolve({**TINY, "archive": archive, **more})


def test_the_fingerprint_is_the_content_not_the_path(archives, tmp_path):
    a, b = archives
    fa, fb = fp.fingerprint("cifar10", archive=a), fp.fingerprint("cifar10", archive=b)
    assert fa.source == fb.source == "archive" and fa.content != fb.content and fa.id != fb.id
    moved = shutil.copy(a, tmp_path / "elsewhere.tar.gz")
    assert fp.fingerprint("cifar10", archive=moved).id == fa.id
    # The extracted folder is read, and fingerprinted, file by file.
    folder = fp.fingerprint("cifar10", archive=os.path.dirname(a))
    assert folder.source == "archive-folder" and folder.where.endswith(CIFAR10.folder)
    assert not fa.canonical and not folder.canonical


def test_the_archive_hash_is_computed_once_per_file_version(archives, monkeypatch):
    a, _ = archives
    first = fp.file_sha256(a)
    hashing._memory.clear()  # a new process: only the cache on disk is left
    calls = []
    real_sha256 = fp.hashlib.sha256
    monkeypatch.setattr(fp.hashlib, "sha256", lambda *args: calls.append(1) or real_sha256(*args))
    assert fp.file_sha256(a) == first and not calls
    with open(a, "ab") as f:  # another file at the same path: hashed again
        f.write(b"\0")
    assert fp.file_sha256(a) != first and calls


def test_canonical_data_keeps_the_plain_names():
    synthetic = config_lib.resolve({"model": "wrn16x1_R_g2", "dataset": "synthetic"})
    assert config_lib.data_fingerprint(synthetic).canonical
    assert config_lib.run_name(synthetic) == "wrn16x1_R_g2-s0"
    # An official archive that is not there yet is downloaded and checked against its published checksum.
    official = config_lib.resolve({"model": "wrn16x1_R_g2", "dataset": "cifar10",
                                   "archive": "/nowhere/cifar-10-python.tar.gz"})
    data = config_lib.data_fingerprint(official)
    assert data.source == "download" and data.canonical
    assert config_lib.run_name(official) == "wrn16x1_R_g2-s0"


def test_other_data_gets_its_own_name(archives):
    a, b = archives
    names = {config_lib.run_name(_config(a)), config_lib.run_name(_config(b))}
    assert len(names) == 2 and all(n.startswith("wrn10x1_R_g2-s0-") for n in names)
    assert config_lib.plain_run_name(_config(a)) == config_lib.plain_run_name(_config(b))


@pytest.mark.slow  # trains three tiny runs: about 30 s
def test_two_archives_are_two_runs_and_a_moved_archive_is_one(archives, tmp_path):
    a, b = archives
    logdir = str(tmp_path / "logs")
    lines = []
    first = train_and_evaluate(_config(a), logdir, log=lines.append, verbose=0)
    second = train_and_evaluate(_config(b), logdir, log=lines.append, verbose=0)
    assert first["run_dir"] != second["run_dir"]
    assert not [line for line in lines if "already finished" in line]
    assert first["data"]["id"] == config_lib.data_fingerprint(_config(a)).id != second["data"]["id"]
    with open(os.path.join(first["run_dir"], "config.yaml")) as f:
        assert yaml.safe_load(f)["data"]["content"] == first["data"]["content"]
    moved = str(tmp_path / "moved" / os.path.basename(a))
    os.makedirs(os.path.dirname(moved))
    shutil.move(a, moved)
    again = train_and_evaluate(_config(moved), logdir, log=lines.append, verbose=0)
    assert again["run_dir"] == first["run_dir"] and "already finished" in lines[-1]
    # The config.yaml of a run can be passed back as --config (the data keys are records, not settings).
    assert config_lib.load_yaml(os.path.join(first["run_dir"], "config.yaml"))["archive"] == a


def _plain_folder(logdir, config, archive_recorded):
    """A run folder as written before runs recorded their data: plain name, config.yaml with its archive."""
    folder = os.path.join(logdir, config.dataset, config_lib.plain_run_name(config))
    os.makedirs(folder)
    with open(os.path.join(folder, "config.yaml"), "w") as f:
        yaml.safe_dump({"run": os.path.basename(folder), **config.to_dict(), "archive": archive_recorded}, f)
    return folder


def test_a_folder_written_before_data_identity_resumes_when_its_data_matches(archives, tmp_path):
    a, b = archives
    logdir = str(tmp_path / "logs")
    old = _plain_folder(logdir, _config(a), a)
    assert run_dir(_config(a), logdir) == old
    moved = shutil.copy(a, tmp_path / "copy.tar.gz")  # the same data elsewhere: still that run
    assert run_dir(_config(str(moved)), logdir) == old
    # Other data never takes it.
    assert run_dir(_config(b), logdir) == os.path.join(logdir, "cifar10", config_lib.run_name(_config(b)))


def test_a_folder_whose_data_is_gone_is_not_reused_and_the_user_is_told(archives, tmp_path, capsys):
    a, _ = archives
    logdir = str(tmp_path / "logs")
    old = _plain_folder(logdir, _config(a), str(tmp_path / "deleted.tar.gz"))
    path = run_dir(_config(a), logdir)
    assert path != old and path.endswith(config_lib.run_name(_config(a)))
    warning = [line for line in capsys.readouterr().err.splitlines() if old in line]
    assert len(warning) == 1 and "is gone" in warning[0] and "not reused" in warning[0]


def test_official_data_does_not_take_a_plain_folder_of_other_data(archives, tmp_path):
    """The plain name is the official data's: a subset run there under that name stays the subset's."""
    a, _ = archives
    logdir = str(tmp_path / "logs")
    official = _config("/nowhere/cifar-10-python.tar.gz")
    subset_run = _plain_folder(logdir, official, a)
    path = run_dir(official, logdir)
    assert path != subset_run and os.path.basename(path) == config_lib.data_run_name(
        official, None, config_lib.data_fingerprint(official))


def _teacher_folder(tmp_path, archive):
    folder = tmp_path / "teacher_run"
    folder.mkdir()
    (folder / "model.keras").write_bytes(b"")
    data = fp.fingerprint("cifar10", archive=archive).to_dict()
    (folder / "config.yaml").write_text(yaml.safe_dump({"run": "t", "dataset": "cifar10", "data": data}))
    return str(folder / "model.keras")


def test_a_teacher_from_other_data_is_refused(archives, tmp_path):
    a, b = archives
    teacher = _teacher_folder(tmp_path, a)
    student = _config(b, model="wrn10x1_NR_g2", teacher=teacher)
    with pytest.raises(UsageError, match="was trained on cifar10 data .* but this run reads") as err:
        check_teacher_data(student, teacher)
    assert fp.fingerprint("cifar10", archive=a).id in str(err.value)
    assert fp.fingerprint("cifar10", archive=b).id in str(err.value)
    assert "--noteacher_data_check" in str(err.value)
    check_teacher_data(student, teacher, check=False)  # on purpose
    check_teacher_data(_config(a, model="wrn10x1_NR_g2", teacher=teacher), teacher)  # the same data


@pytest.mark.slow  # a process that loads TensorFlow: about 10 s
def test_distill_refuses_a_teacher_file_of_other_data_in_one_line(archives, tmp_path):
    a, b = archives
    teacher = _teacher_folder(tmp_path, a)
    done = run_script("distill.py", "--student=wrn10x1_NR_g2", f"--teacher={teacher}", "--dataset=cifar10",
                      f"--archive={b}", "--epochs=1", f"--logdir={tmp_path / 'logs'}")
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = error_lines(done.stderr)
    assert "was trained on cifar10 data" in line and "--noteacher_data_check" in line


def test_analysis_names_the_data_and_refuses_other_images(archives, tmp_path):
    from kdkeras.analysis.runs import Run, data_line

    a, b = archives
    folder = tmp_path / "run"
    folder.mkdir()
    recorded = fp.fingerprint("cifar10", archive=a)
    (folder / "config.yaml").write_text(yaml.safe_dump({"run": "run", "data": recorded.to_dict()}))
    assert data_line(Run(str(folder), _config(a), None)) == f"run: {recorded.describe()}"
    with open(a, "r+b") as f:  # the archive at the run's path now holds other bytes
        f.seek(100)
        f.write(b"changed")
    with pytest.raises(UsageError, match=f"read cifar10 data {recorded.id} .* an analysis would use other images"):
        data_line(Run(str(folder), _config(a), None))
    assert recorded.id in data_line(Run(str(folder), _config(b), None), check=False)
