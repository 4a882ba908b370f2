"""kdkeras.runtime: a run's process-wide settings, applied in one place and by no pipeline step."""

import json
import subprocess
import sys

from kdkeras import config as config_lib

_APPLY = r'''
import json, keras
from tensorflow.python.framework import config as tf_config  # is_op_determinism_enabled: not public
from kdkeras import config as config_lib, runtime
from kdkeras.data import download, pipeline
before = {"policy": keras.mixed_precision.global_policy().name, "tuning": pipeline.data_tuning(),
          "deterministic": tf_config.is_op_determinism_enabled(),
          "download": download.configure()["enabled"]}
config = config_lib.resolve({"model": "wrn10x1_R_g2", "dataset": "synthetic", "deterministic": True,
                             "data_tuning": "autotune", "download": False})
runtime.apply(config)
after = {"policy": keras.mixed_precision.global_policy().name, "tuning": pipeline.data_tuning(),
         "deterministic": tf_config.is_op_determinism_enabled(),
         "download": download.configure()["enabled"]}
print(json.dumps([before, after]))
'''


def test_apply_sets_every_process_setting_of_a_run():
    # A subprocess: op determinism cannot be switched off again in a process.
    done = subprocess.run([sys.executable, "-c", _APPLY], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = json.loads(done.stdout.strip().splitlines()[-1])
    assert before["deterministic"] is False and before["download"] is True
    assert after == {"policy": "float32", "tuning": "autotune", "deterministic": True, "download": False}


def test_the_pipeline_steps_set_no_process_setting():
    from kdkeras.data import download, pipeline
    from kdkeras.training import build_run_model, make_run_data

    config = config_lib.resolve({"model": "wrn10x1_R_g2", "dataset": "synthetic", "epochs": 1, "train_size": 16,
                                 "test_size": 16, "batch_size": 8, "data_tuning": "autotune", "download": False})
    tuning, enabled = pipeline.data_tuning(), download.configure()["enabled"]
    assert tuning != "autotune" or enabled is not False  # the config differs from the process's state
    data = make_run_data(config)
    build_run_model(config, data)
    assert pipeline.data_tuning() == tuning and download.configure()["enabled"] == enabled
