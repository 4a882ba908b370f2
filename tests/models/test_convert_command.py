"""``kdkeras convert``: a PyTorch checkpoint file in, a ``.keras`` teacher out (scripts/convert.py)."""

import os
import sys

import numpy as np
import pytest

from tests.helpers import run_command, script_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = script_env()


def _convert(*args):
    return run_command([sys.executable, os.path.join(ROOT, "scripts", "convert.py"), *args], env=ENV, timeout=600)


def test_a_repdistiller_checkpoint_becomes_a_keras_teacher_with_the_same_logits(tmp_path):
    torch = pytest.importorskip("torch")
    from tests.models.torch_reference.cifar_resnet import CifarResNet, randomize

    reference = randomize(CifarResNet("resnet8", num_classes=100, residual=True), seed=3).eval()
    # As RepDistiller saves a teacher: {"model": state_dict, "epoch": ...}, here from a DataParallel model.
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    checkpoint = str(tmp_path / "ckpt_epoch_240.pth")
    torch.save({"model": state, "epoch": 240, "accuracy": torch.tensor(72.5)}, checkpoint)

    done = _convert(f"--checkpoint={checkpoint}", "--model=resnet8", f"--output={tmp_path / 't' / 'r8.keras'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Wrote" in done.stdout

    from kdkeras.training.teachers import load_model_file

    teacher = load_model_file(str(tmp_path / "t" / "r8.keras"), "teacher")
    x = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(teacher(x, training=False).numpy(), expected, atol=1e-4)
    assert teacher.name == "resnet8"


@pytest.mark.parametrize("args, message", [
    (["--checkpoint=missing.pth", "--model=resnet8"], "Checkpoint file 'missing.pth' does not exist."),
    (["--checkpoint=x.pth", "--model=wrn16x1_R_g2"], "'wrn16x1_R_g2' is a network of the paper's zoo"),
    (["--model=resnet8"], "convert needs --checkpoint=FILE.pth and --model=NAME"),
])
def test_mistakes_are_one_line_errors(args, message):
    done = _convert(*args)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("convert.py: error: ") and message in last, last
