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
