import pytest
import yaml

from kdkeras import config as config_lib
from kdkeras.config import RunConfig, resolve, run_name, teacher_config


def test_resolve_fills_the_recipe():
    c = resolve({"model": "mobilenetv2_NR_g2", "teacher": "mobilenetv2_R_G4"})
    assert (c.epochs, c.lr_schedule, c.lr_gamma, c.temperature, c.alpha) == (300, "exponential", 0.98, 4.0, 0.9)
    assert resolve({"model": "mobilenetv2_R_G4"}).epochs == 120
    assert resolve({"model": "wrn22x2_R_g2", "epochs": None}).epochs == 120  # None = not set


def test_run_names():
    assert run_name(resolve({"model": "wrn22x2_R_g2"})) == "wrn22x2_R_g2-s0"
    kd = resolve({"model": "wrn22x2_NR_g16", "teacher": "wrn22x2_R_G4", "seed": 3})
    assert run_name(kd) == "wrn22x2_NR_g16_from_wrn22x2_R_G4-s3"
    # Setting a value equal to the recipe does not change the name; any deviation adds a hash.
    assert run_name(resolve({"model": "wrn22x2_R_g2", "epochs": 120, "lr": 0.1})) == "wrn22x2_R_g2-s0"
    a = run_name(resolve({"model": "wrn22x2_R_g2", "epochs": 2}))
    b = run_name(resolve({"model": "wrn22x2_R_g2", "epochs": 3}))
    assert a.startswith("wrn22x2_R_g2-s0-") and a != b
    assert a == run_name(resolve({"model": "wrn22x2_R_g2", "epochs": 2}))
    # Where the same data comes from and how it is spread do not change the run (the official archive,
    # fetched on first use and checked against its checksum, is the paper's data: tests/test_data_identity.py).
    official = resolve({"model": "wrn22x2_R_g2", "archive": "/x/cifar-100-python.tar.gz", "strategy": "none"})
    assert run_name(official) == "wrn22x2_R_g2-s0"
    # KD settings matter for KD runs only.
    assert run_name(resolve({"model": "wrn22x2_R_g2", "temperature": 2.0})) == "wrn22x2_R_g2-s0"
    assert run_name(resolve({"model": "wrn22x2_NR_g2", "teacher": "wrn22x2_R_g4", "temperature": 2.0})).count("-") == 2


def test_teacher_inherits_recipe_overrides_but_not_kd_settings():
    kd = resolve({"model": "wrn16x1_NR_g2", "teacher": "wrn16x1_R_g2", "epochs": 2, "train_size": 64,
                  "dataset": "synthetic", "temperature": 2.0, "seed": 5, "archive": None})
    t = teacher_config(kd)
    assert (t.model, t.teacher, t.epochs, t.train_size, t.dataset, t.seed) == (
        "wrn16x1_R_g2", None, 2, 64, "synthetic", 5)
    assert t.temperature == 4.0
    # A teacher trained by train.py with the same flags is the same run.
    assert run_name(t) == run_name(resolve({"model": "wrn16x1_R_g2", "epochs": 2, "train_size": 64,
                                            "dataset": "synthetic", "seed": 5}))
    # MobileNetV2 students train 300 epochs by recipe; their teachers keep 120.
    mkd = resolve({"model": "mobilenetv2_NR_g2", "teacher": "mobilenetv2_R_G4"})
    assert teacher_config(mkd).epochs == 120


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({"model": "wrn22x2_R_g2", "epochs": 0}, "epochs must be a positive integer"),
        ({"model": "wrn22x2_R_g2", "batch_size": -1}, "batch_size must be a positive integer"),
        ({"model": "wrn22x2_R_g2", "dataset": "mnist"}, "Valid choices: cifar100, cifar10, synthetic"),
        ({"model": "wrn22x2_R_g2", "alpha": 1.5}, "alpha must be in [0, 1]"),
        ({"model": "wrn22x2_R_g2", "temperature": 0}, "temperature must be > 0"),
        ({"model": "wrn22x2_R_g2", "strategy": "tpu"}, "Valid choices: auto, mirrored, multiworker, none"),
        ({"model": "wrn22x2_R_g2", "lr_schedule": "cosine"}, "Valid choices: step, exponential, constant"),
        ({"model": "wrn23x2_R_g2"}, "(d - 4) % 6 == 0"),
        ({"model": "wrn22x2_NR_g2", "teacher": "wrn22x2_X_g2"}, "Bad residual token 'X'"),
        ({"model": "wrn22x2_R_g2", "colour": "red"}, "Unknown setting(s): colour"),
        ({}, "No model given"),
    ],
)
def test_bad_settings(settings, fragment):
    with pytest.raises(ValueError) as err:
        resolve(settings)
    assert fragment in str(err.value)


def test_yaml_round_trip(tmp_path):
    c = resolve({"model": "wrn22x2_NR_g2", "teacher": "wrn22x2_R_G4", "epochs": 7})
    path = tmp_path / "c.yaml"
    path.write_text(config_lib.to_yaml(c, {"run": run_name(c)}))
    data = config_lib.load_yaml(str(path))
    data.pop("run", None)
    assert resolve(data) == c


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: wrn22x2_R_g2\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match="Unknown setting"):
        config_lib.load_yaml(str(bad))
    with pytest.raises(FileNotFoundError):
        config_lib.load_yaml(str(tmp_path / "missing.yaml"))
    student = tmp_path / "s.yaml"
    student.write_text("student: wrn22x2_NR_g2\nteacher: wrn22x2_R_g2\n")
    assert config_lib.load_yaml(str(student))["model"] == "wrn22x2_NR_g2"


def test_dataclass_fields_cover_the_flags():
    assert "model" in config_lib.FIELDS and isinstance(RunConfig(model="x").to_dict(), dict)


def test_augment_setting_is_validated_and_names_its_runs():
    on = config_lib.resolve({"model": "wrn16x1_R_g2"})
    off = config_lib.resolve({"model": "wrn16x1_R_g2", "augment": False})
    assert on.augment is True and off.augment is False
    assert config_lib.run_name(on) == "wrn16x1_R_g2-s0"  # the paper's recipe: no hash
    assert config_lib.run_name(off) != config_lib.run_name(on)
    with pytest.raises(ValueError, match="augment must be true or false"):
        config_lib.resolve({"model": "wrn16x1_R_g2", "augment": "no"})


def test_teacher_file_named_model_keras_is_named_after_its_run_folder():
    config = config_lib.resolve({"model": "wrn16x1_NR_g2", "teacher": "logs/cifar100/wrn16x1_R_g2-s0/model.keras"})
    assert config_lib.run_name(config).startswith("wrn16x1_NR_g2_from_wrn16x1_R_g2-s0.")
    other = config_lib.resolve({"model": "wrn16x1_NR_g2", "teacher": "elsewhere/teacher.keras"})
    assert config_lib.run_name(other).startswith("wrn16x1_NR_g2_from_teacher.")


def test_schedule_follows_epochs_unless_given():
    scaled = resolve({"model": "wrn22x2_R_g2", "epochs": 20})
    assert (scaled.lr_milestones, scaled.lr_gamma) == ((5, 10, 15), 0.2)
    explicit = resolve({"model": "wrn22x2_R_g2", "epochs": 20, "lr_milestones": [7]})
    assert explicit.lr_milestones == (7,)
    gamma = resolve({"model": "wrn22x2_R_g2", "epochs": 20, "lr_gamma": 0.5})
    assert (gamma.lr_milestones, gamma.lr_gamma) == ((5, 10, 15), 0.5)
    mobile = resolve({"model": "mobilenetv2_R_g2", "epochs": 12})
    assert mobile.lr_gamma == pytest.approx(0.98**10)
    assert resolve({"model": "mobilenetv2_R_g2", "epochs": 12, "lr_gamma": 0.9}).lr_gamma == 0.9
    # The scaled schedule is part of the run's name (as the epochs are), an explicit one too.
    assert len({run_name(scaled), run_name(explicit), run_name(gamma)}) == 3
    # A YAML round trip (config.yaml) gives the same run.
    assert resolve(yaml.safe_load(config_lib.to_yaml(scaled))) == scaled


def test_teacher_scales_its_own_schedule_and_inherits_an_explicit_one():
    kd = resolve({"model": "mobilenetv2_NR_g2", "teacher": "mobilenetv2_R_G4", "epochs": 10})
    teacher = teacher_config(kd)
    assert kd.lr_gamma == pytest.approx(0.98**30) and teacher.lr_gamma == pytest.approx(0.98**12)
    kd = resolve({"model": "wrn16x1_NR_g2", "teacher": "wrn16x1_R_g2", "epochs": 20, "lr_milestones": [4, 8]})
    assert teacher_config(kd).lr_milestones == (4, 8)
    kd = resolve({"model": "wrn16x1_NR_g2", "teacher": "wrn16x1_R_g2", "epochs": 20})
    assert teacher_config(kd).lr_milestones == (5, 10, 15)
    assert run_name(teacher_config(kd)) == run_name(resolve({"model": "wrn16x1_R_g2", "epochs": 20}))


def test_a_teacher_trained_longer_than_its_student():
    """teacher_epochs: the teacher's run is that of the teacher alone at its own length and schedule; it names
    the KD run, never the student's hard-target baseline."""
    base = {"model": "wrn16x1_NR_g2", "teacher": "wrn16x1_R_g2", "epochs": 20}
    kd = resolve({**base, "teacher_epochs": 40})
    teacher = teacher_config(kd)
    assert (teacher.epochs, teacher.lr_milestones, kd.epochs, kd.lr_milestones) == (40, (10, 20, 30), 20, (5, 10, 15))
    assert run_name(teacher) == run_name(resolve({"model": "wrn16x1_R_g2", "epochs": 40}))
    assert run_name(kd) != run_name(resolve(base))
    student = {"model": "wrn16x1_NR_g2", "epochs": 20}
    assert run_name(resolve({**student, "teacher_epochs": 40})) == run_name(resolve(student))
    explicit = teacher_config(resolve({**base, "teacher_epochs": 40, "lr_milestones": [4, 8]}))
    assert explicit.lr_milestones == (10, 20, 30)  # the student's explicit milestones are for 20 epochs
    same = resolve({**base, "teacher_epochs": 20})  # the teacher's own length: no setting, the same run
    assert same.teacher_epochs is None and run_name(same) == run_name(resolve(base))
    for settings, fragment in (({"teacher_epochs": 0}, "teacher_epochs must be a positive integer"),
                               ({"teacher_epochs": True}, "teacher_epochs must be a positive integer"),
                               ({"teacher": "/runs/t/model.keras", "teacher_epochs": 5},
                                "teacher_epochs applies to a teacher given by name")):
        with pytest.raises(ValueError, match=fragment):
            resolve({**base, **settings})


def test_validation_and_precise_bn_settings():
    c = resolve({"model": "wrn16x1_R_g2", "val_size": 100, "precise_bn": 8, "precise_bn_every_epoch": True})
    assert (c.val_size, c.precise_bn, c.precise_bn_every_epoch) == (100, 8, True)
    names = {run_name(resolve({"model": "wrn16x1_R_g2", **extra}))
             for extra in ({}, {"val_size": 100}, {"precise_bn": 8}, {"precise_bn": 8, "precise_bn_every_epoch": True},
                           {"precise_bn": 8, "precise_bn_augment": True})}
    assert len(names) == 5 and "wrn16x1_R_g2-s0" in names
    for settings, fragment in (({"val_size": 0}, "val_size must be a positive integer"),
                               ({"precise_bn": -1}, "precise_bn must be a positive integer"),
                               ({"precise_bn_every_epoch": True}, "precise_bn_every_epoch needs precise_bn"),
                               ({"precise_bn_augment": True}, "precise_bn_augment needs precise_bn"),
                               ({"precise_bn": 8, "precise_bn_augment": 1}, "precise_bn_augment must be true or false"),
                               ({"precise_bn": 8, "precise_bn_augment": True, "augment": False},
                                "trains without augmentation")):
        with pytest.raises(ValueError, match=fragment):
            resolve({"model": "wrn16x1_R_g2", **settings})


def test_run_names_are_stable():
    """Settings -> run name, as stored when these names were fixed: existing run folders stay found."""
    import json
    import os

    path = os.path.join(os.path.dirname(__file__), "fixtures", "run_names.json")
    for case, entry in json.load(open(path)).items():
        config = resolve(entry["settings"])
        assert run_name(config) == entry["run_name"], case
        if "teacher_run_name" in entry:
            assert run_name(teacher_config(config)) == entry["teacher_run_name"], case


def test_deterministic_is_a_process_setting_not_part_of_the_run_name():
    plain = config_lib.resolve({"model": "wrn16x1_R_g2", "dataset": "synthetic"})
    det = config_lib.resolve({"model": "wrn16x1_R_g2", "dataset": "synthetic", "deterministic": True})
    assert det.deterministic and not plain.deterministic
    assert config_lib.run_name(det) == config_lib.run_name(plain)
    with pytest.raises(ValueError, match="deterministic must be true or false"):
        config_lib.resolve({"model": "wrn16x1_R_g2", "deterministic": "yes"})
