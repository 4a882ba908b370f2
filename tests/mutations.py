"""Breaks the code under each strengthened test on purpose and checks that the test then fails.

Each case edits one file of the package (an exact text replacement), runs the tests that guard it,
reports FAILS (good) or PASSES (bad), and restores the file. Not collected by pytest; run by hand:

    python tests/mutations.py          # every case
    python tests/mutations.py 0 4      # cases 0 and 4
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = [
 ("tfds reads coarse_label", "kdkeras/data/tfds_source.py",
  [("as_supervised=True,  # (image, label); label is the fine label", "as_supervised=False,"),
   ("            for x, y in tfds.as_numpy(ds.batch(5000)):\n",
    "            for ex in tfds.as_numpy(ds.batch(5000)):\n                x, y = ex['image'], ex['coarse_label']\n")],
  "tests/data/test_data.py::test_tfds_cifar100_reads_the_fine_label_not_the_coarse_one"),
 ("KD loss in float16 (no float32 cast)", "kdkeras/losses.py",
  [('values = ops.cast(ops.convert_to_tensor(values), "float32")', "values = ops.convert_to_tensor(values)")],
  "tests/test_losses.py -k float16"),
 ("KD loss in float16, the mixed-precision run", "kdkeras/losses.py",
  [('values = ops.cast(ops.convert_to_tensor(values), "float32")', "values = ops.convert_to_tensor(values)")],
  "tests/training/test_training.py -k mixed_precision"),
 ("gradient flow does not restore the dropout RNG", "kdkeras/analysis/gradients.py",
  [("self._state = list(student.non_trainable_variables) + [",
    "self._state = [v for v in student.non_trainable_variables if 'seed_generator' not in v.path] + [")],
  "tests/analysis/test_early_kd_and_gradients.py -k leaves_training_unchanged"),
 ("an export is a wrapper, not the module's object", "kdkeras/__init__.py",
  [("        value = getattr(module, name)\n",
    "        value = getattr(module, name)\n        if name == 'kd_loss':\n            import functools\n            value = functools.wraps(value)(lambda *a, _f=value, **k: _f(*a, **k))\n")],
  "tests/test_package.py::test_each_export_is_the_object_its_module_defines"),
 ("population std (ddof=0) in the tables", "kdkeras/tables.py",
  [("/ (n - 1)", "/ n")], "tests/test_grid_tables.py"),
 ("WRN lr gamma 0.1 instead of the paper's 0.2", "kdkeras/models/wrn.py",
  [('"lr_gamma": 0.2}', '"lr_gamma": 0.1}')], "tests/test_recipes.py -k papers_text"),
 ("step milestones one step late", "kdkeras/recipes.py",
  [("boundaries = [m * steps_per_epoch - 1 for m in milestones]", "boundaries = [m * steps_per_epoch for m in milestones]")],
  "tests/training/test_training.py::test_explicit_milestones_are_kept_and_followed tests/test_recipes.py"),
 ("a resumed run restarts its epoch count at 0 (shuffle/augmentation)", "kdkeras/data/pipeline.py",
  [("ds = tf.data.Dataset.range(int(start), int(stop)).flat_map(epoch_batches)",
    "ds = tf.data.Dataset.range(0, int(stop) - int(start)).flat_map(epoch_batches)")],
  "tests/training/test_kill_resume.py::test_a_resumed_deterministic_run_ends_as_the_uninterrupted_one"),
 ("a resumed FitNets run re-initialises its adapter after the backup is restored", "kdkeras/training/pipeline.py",
  [("        TensorBoard(folder.tensorboard_dir),\n    ]\n",
    "        TensorBoard(folder.tensorboard_dir),\n        _ResetAdapters(),\n    ]\n\n\n"
    "import keras as _keras\n\n\nclass _ResetAdapters(_keras.callbacks.Callback):\n"
    "    def on_train_begin(self, logs=None):\n"
    "        for v in getattr(self.model, 'adapter_variables', []):\n"
    "            v.assign(_keras.initializers.GlorotUniform(seed=7)(v.shape) if len(v.shape) > 1 else v * 0)\n")],
  "tests/training/test_kill_resume.py::test_a_resumed_fitnets_run_restores_its_adapter"),
]


def main(only):
    bad = 0
    for i, (what, path, subs, test) in enumerate(CASES):
        if only and str(i) not in only:
            continue
        full = os.path.join(ROOT, path)
        with open(full) as f:
            original = f.read()
        text = original
        for old, new in subs:
            assert text.count(old) == 1, f"case {i} ({what}): the text to break is no longer in {path}: {old!r}"
            text = text.replace(old, new)
        try:
            with open(full, "w") as f:
                f.write(text)
            r = subprocess.run(f"{sys.executable} -m pytest -q -x -p no:cacheprovider {test}", shell=True,
                               cwd=ROOT, capture_output=True, text=True)
            last = ([line for line in r.stdout.splitlines() if line.strip()] or ["(no output)"])[-1]
            bad += r.returncode == 0
            print(f"[{i}] {what}: {'FAILS (good)' if r.returncode else 'PASSES (bad)'} -- {test} -- {last}",
                  flush=True)
        finally:
            with open(full, "w") as f:
                f.write(original)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
