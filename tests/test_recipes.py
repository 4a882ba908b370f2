import numpy as np
import pytest

from kdkeras.recipes import make_lr_schedule, recipe_for


@pytest.mark.parametrize(
    "name, distill, epochs, schedule, gamma",
    [
        ("wrn22x10_NR_G4", False, 120, "step", 0.2),
        ("wrn40x2_NR_g2", True, 120, "step", 0.2),
        ("resnet18_R_g8", False, 120, "step", 0.1),
        ("mobilenetv2_R_G2", False, 120, "exponential", 0.98),
        ("mobilenetv2_NR_G2", True, 300, "exponential", 0.98),
    ],
)
def test_paper_recipe(name, distill, epochs, schedule, gamma):
    r = recipe_for(name, distill)
    assert (r["epochs"], r["lr_schedule"], r["lr_gamma"]) == (epochs, schedule, gamma)
    assert (r["batch_size"], r["lr"], r["momentum"], r["weight_decay"]) == (128, 0.1, 0.9, 4e-4)
    assert (r["temperature"], r["alpha"]) == (4.0, 0.9)


def _lr_at_epoch_start(schedule, epoch, steps_per_epoch):
    return float(np.asarray(schedule(epoch * steps_per_epoch)))


def test_step_schedule_changes_at_the_first_step_of_each_milestone_epoch():
    spe = 391  # CIFAR-100 at batch 128
    s = make_lr_schedule(0.1, "step", (30, 60, 90), 0.2, spe)
    # PyTorch MultiStepLR: epochs 0-29 at 0.1, 30-59 at 0.02, ...
    assert float(np.asarray(s(30 * spe - 1))) == pytest.approx(0.1)
    assert _lr_at_epoch_start(s, 30, spe) == pytest.approx(0.02)
    assert _lr_at_epoch_start(s, 60, spe) == pytest.approx(0.004)
    assert _lr_at_epoch_start(s, 119, spe) == pytest.approx(0.0008)


def test_exponential_schedule_is_per_epoch():
    s = make_lr_schedule(0.1, "exponential", (), 0.98, 10)
    assert float(np.asarray(s(9))) == pytest.approx(0.1)
    assert _lr_at_epoch_start(s, 1, 10) == pytest.approx(0.098)
    assert _lr_at_epoch_start(s, 100, 10) == pytest.approx(0.1 * 0.98**100, rel=1e-5)


def test_constant_and_bad_schedule():
    assert make_lr_schedule(0.3, "constant", (), 1.0, 5) == 0.3
    with pytest.raises(ValueError, match="Valid choices: step, exponential, constant"):
        make_lr_schedule(0.1, "cosine", (), 1.0, 5)


@pytest.mark.parametrize("epochs, milestones", [(120, (30, 60, 90)), (20, (5, 10, 15)), (10, (3, 5, 8)),
                                                 (4, (1, 2, 3)), (2, (1, 2)), (1, (1,)), (240, (60, 120, 180))])
def test_step_milestones_keep_their_place_in_the_run(epochs, milestones):
    from kdkeras.recipes import scale_schedule

    scaled = scale_schedule(recipe_for("wrn22x2_R_g2"), epochs)
    assert scaled == {"lr_milestones": milestones, "lr_gamma": 0.2}
    assert scale_schedule(recipe_for("resnet18_R_g2"), epochs)["lr_gamma"] == 0.1


def test_exponential_schedule_keeps_the_final_to_initial_ratio():
    from kdkeras.recipes import scale_schedule

    for model, distill, base in (("mobilenetv2_R_g2", False, 120), ("mobilenetv2_NR_g2", True, 300)):
        for epochs in (10, 30, 500):
            gamma = scale_schedule(recipe_for(model, distill), epochs)["lr_gamma"]
            assert gamma**epochs == pytest.approx(0.98**base, rel=1e-9)
            s = make_lr_schedule(0.1, "exponential", (), gamma, 7)
            assert _lr_at_epoch_start(s, epochs, 7) == pytest.approx(0.1 * 0.98**base, rel=1e-4)  # float32


def test_describe_schedule():
    from kdkeras.recipes import describe_schedule

    assert describe_schedule(0.1, "step", (5, 10, 15), 0.2, 20) == \
        "step: lr 0.1, x0.2 at epochs 5, 10, 15 of 20 (final 0.0008)"
    assert describe_schedule(0.1, "constant", (), 1.0, 3) == "constant: lr 0.1 for 3 epochs"
    assert describe_schedule(0.1, "exponential", (), 0.5, 3).endswith("(final 0.025)")


# Section 5 of the paper ("Implementation details"), quoted: the schedules are read from this text, not
# restated by hand, so a recipe that drifts from the paper fails here.
PAPER_SCHEDULES = (
    "The learning rate is reduced by a factor of 10 after every 30th, 60th, and 90th epochs for ResNet18, "
    "whereas for WRN it is reduced by a factor of 5. For MobileNetV2, the learning rate is multiplied by a "
    "factor of 0.98 after every epoch for better convergence."
)


def _paper_schedules():
    import re

    step = re.search(r"reduced by a factor of (\d+) after every (\d+)th, (\d+)th, and (\d+)th epochs for "
                     r"ResNet18, whereas for WRN it is reduced by a factor of (\d+)", PAPER_SCHEDULES)
    exponential = re.search(r"For MobileNetV2, the learning rate is multiplied by a factor of ([\d.]+) after "
                            r"every epoch", PAPER_SCHEDULES)
    milestones = tuple(int(step.group(i)) for i in (2, 3, 4))
    return {
        "resnet18": ("step", milestones, 1 / int(step.group(1))),
        "wrn": ("step", milestones, 1 / int(step.group(5))),
        "mobilenetv2": ("exponential", None, float(exponential.group(1))),
    }


@pytest.mark.parametrize("name", ["resnet18_R_g2", "resnet18_NR_G8", "wrn22x2_R_g2", "wrn22x10_NR_G4",
                                  "wrn28x2_NR_g16", "wrn40x2_R_G1", "mobilenetv2_R_g2", "mobilenetv2_NR_G16"])
@pytest.mark.parametrize("distill", [False, True])
def test_schedules_are_the_papers_text(name, distill):
    family = next(f for f in ("resnet18", "wrn", "mobilenetv2") if name.startswith(f))
    schedule, milestones, gamma = _paper_schedules()[family]
    recipe = recipe_for(name, distill)
    assert recipe["lr_schedule"] == schedule and recipe["lr_gamma"] == pytest.approx(gamma, rel=1e-12)
    if milestones is not None:
        assert tuple(recipe["lr_milestones"]) == milestones
    # 120 epochs, except MobileNetV2 KD students: 300.
    assert recipe["epochs"] == (300 if distill and family == "mobilenetv2" else 120)
    # The learning rate of every epoch, from the schedule the run builds.
    spe = 3
    lr = make_lr_schedule(0.1, recipe["lr_schedule"], recipe.get("lr_milestones") or (), recipe["lr_gamma"], spe)
    for epoch in range(recipe["epochs"]):
        passed = sum(epoch >= m for m in milestones) if milestones else epoch
        assert _lr_at_epoch_start(lr, epoch, spe) == pytest.approx(0.1 * gamma ** passed, rel=1e-5), epoch


# --------------------------------------------------------------------------
# The crd recipe (CRD, Tian et al. 2020, section 4; their RepDistiller scripts)
# --------------------------------------------------------------------------

def test_crd_recipe_is_the_crd_papers():
    from kdkeras.recipes import recipe_for

    recipe = recipe_for("wrn16x1_NR_g2", distill=True, recipe="crd")
    assert recipe == {"recipe": "crd", "epochs": 240, "batch_size": 64, "lr": 0.05, "momentum": 0.9,
                      "weight_decay": 5e-4, "lr_schedule": "step", "lr_milestones": (150, 180, 210),
                      "lr_gamma": 0.1, "temperature": 4.0, "alpha": 0.9, "pad_mode": "zeros"}
    # The paper's recipe stays the default of the paper's zoo.
    assert recipe_for("wrn16x1_NR_g2")["recipe"] == "paper"
    assert recipe_for("wrn16x1_NR_g2")["pad_mode"] == "reflect"


def test_crd_recipe_follows_epochs_and_explicit_settings_win():
    from kdkeras import config as config_lib

    short = config_lib.resolve({"model": "wrn16x1_R_g2", "recipe": "crd", "epochs": 24})
    assert (short.lr, short.batch_size, short.weight_decay, short.pad_mode) == (0.05, 64, 5e-4, "zeros")
    assert short.lr_milestones == (15, 18, 21)  # 150/180/210 of 240 keep their place
    override = config_lib.resolve({"model": "wrn16x1_R_g2", "recipe": "crd", "lr": 0.1, "pad_mode": "reflect"})
    assert (override.lr, override.pad_mode, override.epochs) == (0.1, "reflect", 240)
    # The recipe is part of a run's identity (a paper-recipe run's name is unchanged).
    assert config_lib.identity(config_lib.resolve({"model": "wrn16x1_R_g2"})) == {}
    assert config_lib.identity(short)["recipe"] == "crd"


def test_unknown_recipe_is_a_one_line_usage_error():
    from kdkeras import config as config_lib
    from kdkeras.errors import UsageError

    with pytest.raises(UsageError, match=r"Unknown recipe 'crdd'. Valid choices: paper, crd\."):
        config_lib.resolve({"model": "wrn16x1_R_g2", "recipe": "crdd"})


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_crop_padding_modes_match_numpy(mode):
    """crop_flip == NumPy's pad (reflect / constant 0), crop and mirror, image by image."""
    import numpy as np
    import tensorflow as tf

    from kdkeras.data.augment import crop_flip

    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, size=(6, 8, 8, 3)).astype(np.uint8)
    oy, ox = rng.integers(0, 9, size=6), rng.integers(0, 9, size=6)
    flip = np.array([False, True] * 3)
    out = crop_flip(tf.constant(images), tf.constant(oy, tf.int32), tf.constant(ox, tf.int32), tf.constant(flip),
                    4, 4, mode=mode).numpy()
    for i in range(6):
        padded = np.pad(images[i], ((4, 4), (4, 4), (0, 0)), mode="reflect" if mode == "reflect" else "constant")
        window = padded[oy[i]:oy[i] + 8, ox[i]:ox[i] + 8]
        np.testing.assert_array_equal(out[i], window[:, ::-1] if flip[i] else window)
    if mode == "zeros":
        assert (out == 0).any()  # zero padding shows (the images themselves have no 0)
