"""Breaks the code under each numeric path on purpose and checks that a test assertion then fails.

Each case replaces one exact text of the package with a wrong one (a mutant) and
runs the tests that guard that path. The rules that make a catch mean something:

- It works in a temporary copy of the tree, never in place: a kill leaves the
  checkout as it was.
- The guarding tests first run on the unmutated copy and must pass; a case
  whose guard already fails is reported as such, not as a catch.
- Every replacement must match its file exactly once (so a stale case fails
  loudly instead of testing nothing).
- A mutant is caught only when a test *assertion* fails (``AssertionError``,
  or pytest's ``Failed``: ``pytest.raises`` that did not raise,
  ``pytest.fail``), read from pytest's JUnit XML. An import, collection or
  syntax error, or any other exception a mutant raises, is not a catch.

Run by hand:

    python tests/mutations.py                 # every case; prints each outcome and the kill rate
    python tests/mutations.py 0 4             # cases 0 and 4
    python tests/mutations.py --quick         # the cases tests/test_mutations.py runs (CI)

``tests/test_mutations.py`` runs the quick cases as a collected test, and
docs/reliability.md ("Mutation check") reports the kill rate and the survivors.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Failure types that are a test assertion (pytest's JUnit XML ``<failure type=...>``).
ASSERTION_TYPES = ("AssertionError", "Failed")


@dataclasses.dataclass(frozen=True)
class Case:
    """One mutant: ``path``'s texts ``subs`` (old -> new) replaced, guarded by ``tests`` (pytest arguments)."""

    what: str
    path: str
    subs: tuple
    tests: tuple
    # CI runs these cases (10 of them, for the test suite's time); the others run by hand.
    quick: bool = True


L = "tests/test_losses.py::"
M = "tests/test_methods.py::"

CASES = [
    # The KD loss (paper, section 5): T^2, temperature scaling, alpha mixing, the KL's direction.
    Case("KD term without T^2", "kdkeras/losses.py",
         (("    return (temperature**2) * kl", "    return kl"),),
         (L + "test_alpha_one_is_temperature_squared_times_kl", L + "test_kd_loss_matches_numpy")),
    Case("teacher logits not divided by T", "kdkeras/losses.py",
         (("log_q_t = ops.log_softmax(t / temperature, axis=-1)", "log_q_t = ops.log_softmax(t, axis=-1)"),),
         (L + "test_kd_loss_matches_numpy", L + "test_golden_values"), quick=False),
    Case("student logits not divided by T", "kdkeras/losses.py",
         (("log_q_s = ops.log_softmax(s / temperature, axis=-1)", "log_q_s = ops.log_softmax(s, axis=-1)"),),
         (L + "test_kd_loss_matches_numpy", L + "test_golden_values"), quick=False),
    Case("alpha weights the hard targets instead", "kdkeras/losses.py",
         (("    return (1.0 - alpha) * ce + alpha * kd", "    return alpha * ce + (1.0 - alpha) * kd"),),
         (L + "test_alpha_zero_is_hard_target_cross_entropy", L + "test_kd_loss_matches_numpy"), quick=False),
    Case("KL with the student as the target distribution", "kdkeras/losses.py",
         (("kl = ops.sum(ops.exp(log_q_t) * (log_q_t - log_q_s), axis=-1)",
           "kl = ops.sum(ops.exp(log_q_s) * (log_q_s - log_q_t), axis=-1)"),),
         (L + "test_teacher_is_the_target_distribution", L + "test_kd_loss_matches_numpy"), quick=False),
    # The other methods (docs/methods.md).
    Case("the distiller weights the cross-entropy by alpha and KD by 1 - alpha", "kdkeras/distiller.py",
         (("            ce, weights = 1.0 - alpha, [alpha] * len(self.distillation_losses)",
           "            ce, weights = alpha, [1.0 - alpha] * len(self.distillation_losses)"),),
         ("tests/test_distiller.py::test_loss_uses_teacher_logits_as_target",)),
    Case("DKD without beta on NCKD", "kdkeras/methods/dkd.py",
         (("        return self.alpha * tckd + self.beta * nckd", "        return self.alpha * tckd + nckd"),),
         (M + "test_dkd_matches_numpy",), quick=False),
    Case("FitNets hint as a mean absolute error", "kdkeras/methods/fitnets.py",
         (("        return ops.mean(ops.square(s - t), axis=(1, 2, 3))",
           "        return ops.mean(ops.abs(s - t), axis=(1, 2, 3))"),),
         (M + "test_fitnets_matches_numpy_in_inference_and_training_mode",), quick=False),
    Case("AT maps not normalised", "kdkeras/methods/at.py",
         (("        return q / ops.maximum(norm, NORM_EPSILON)", "        return q"),),
         (M + "test_at_matches_numpy", M + "test_at_is_zero_for_identical_maps_and_scale_invariant")),
    # The recipe: schedules and the optimizer.
    Case("WRN lr gamma 0.1 instead of the paper's 0.2", "kdkeras/models/wrn.py",
         (('"lr_gamma": 0.2}', '"lr_gamma": 0.1}'),),
         ("tests/test_recipes.py::test_schedules_are_the_papers_text",), quick=False),
    Case("step milestones one step late", "kdkeras/recipes.py",
         (("boundaries = [m * steps_per_epoch - 1 for m in milestones]",
           "boundaries = [m * steps_per_epoch for m in milestones]"),),
         ("tests/test_recipes.py::test_step_schedule_changes_at_the_first_step_of_each_milestone_epoch",)),
    Case("weight decay decoupled (not through the momentum)", "kdkeras/optimizers.py",
         (("        if self.coupled_weight_decay:\n"
           "            g = ops.add(g, ops.multiply(ops.cast(self.coupled_weight_decay, variable.dtype), variable))\n",
           ""),
          ("        self.assign_sub(variable, ops.multiply(g, lr))",
           "        self.assign_sub(variable, ops.multiply(g, lr))\n"
           "        if self.coupled_weight_decay:\n"
           "            self.assign_sub(variable, ops.multiply(ops.multiply(lr, ops.cast(self.coupled_weight_decay, "
           "variable.dtype)), variable))")),
         ("tests/test_optimizers.py::test_matches_pytorch_update_with_changing_lr",)),
    # Measurements: precise BN, the tables.
    Case("precise BN: the mean of batch variances, not the population variance", "kdkeras/batchnorm.py",
         (("                s2 += b * (var + mean**2)", "                s2 += b * (var + mean**2 * 0)"),
          ("        variance = np.maximum(s2 / weight - mean**2, 0.0)", "        variance = np.maximum(s2 / weight, 0.0)")),
         ("tests/test_batchnorm.py::test_population_variance_is_not_the_mean_of_batch_variances",
          "tests/test_batchnorm.py::test_population_statistics_match_a_hand_computation")),
    Case("population std (ddof=0) in the tables", "kdkeras/tables.py",
         (("/ (n - 1)", "/ n"),),
         ("tests/test_tables.py::test_summarize",), quick=False),
    # Data: the validation split, the order of the epochs, the label TFDS reads.
    Case("the validation images stay in the training split", "kdkeras/data/loading.py",
         (("    keep[val] = False\n", ""),),
         ("tests/training/test_validation.py::"
          "test_validation_split_is_held_out_balanced_seeded_and_independent_of_train_size",)),
    Case("every epoch in the same order (epoch not in the key)", "kdkeras/data/pipeline.py",
         (("seed=tf.stack([tf.constant(seed, tf.int64), epoch]))",
           "seed=tf.stack([tf.constant(seed, tf.int64), epoch * 0]))"),),
         ("tests/data/test_data.py::test_each_epochs_order_is_a_function_of_seed_and_epoch",)),
    Case("tfds reads coarse_label", "kdkeras/data/tfds_source.py",
         (("as_supervised=True,  # (image, label); label is the fine label", "as_supervised=False,"),
          ("            for x, y in tfds.as_numpy(ds.batch(5000)):\n",
           "            for ex in tfds.as_numpy(ds.batch(5000)):\n                x, y = ex['image'], ex['coarse_label']\n")),
         ("tests/data/test_data.py::test_tfds_cifar100_reads_the_fine_label_not_the_coarse_one",), quick=False),
    # Taps and identity.
    Case("a stage tapped at its first block, not its last", "kdkeras/models/taps.py",
         (("        last = blocks[max(blocks)]", "        last = blocks[min(blocks)]"),),
         ("tests/models/test_taps.py::test_taps_of_every_family", "tests/models/test_taps.py::test_wrn10_taps_and_a_manual_forward")),
    Case("the data left out of the run name", "kdkeras/config.py",
         (('    fields = {**identity(config), **(extra or {}), "data": data.id}',
           '    fields = {**identity(config), **(extra or {})}'),),
         ("tests/test_data_identity.py::test_other_data_gets_its_own_name",)),
    Case("an export is a wrapper, not the module's object", "kdkeras/__init__.py",
         (("        value = getattr(module, name)\n",
           "        value = getattr(module, name)\n        if name == 'kd_loss':\n            import functools\n"
           "            value = functools.wraps(value)(lambda *a, _f=value, **k: _f(*a, **k))\n"),),
         ("tests/test_package.py::test_each_export_is_the_object_its_module_defines",), quick=False),
    # Cases whose guards train or whose mutant raises (run by hand, not by the collected test).
    Case("KD loss in float16 (no float32 cast)", "kdkeras/losses.py",
         (('values = ops.cast(ops.convert_to_tensor(values), "float32")', "values = ops.convert_to_tensor(values)"),),
         (L + "test_low_precision_logits_are_computed_in_float32",), quick=False),
    Case("gradient flow does not restore the dropout RNG", "kdkeras/analysis/gradients.py",
         (("self._state = list(student.non_trainable_variables) + [",
           "self._state = [v for v in student.non_trainable_variables if 'seed_generator' not in v.path] + ["),),
         ("tests/analysis/test_early_kd_and_gradients.py::test_gradient_flow_leaves_training_unchanged",), quick=False),
    Case("each replica draws its own part's dropout mask (Keras's layer)", "kdkeras/layers.py",
         (("                or context.num_replicas_in_sync <= 1 or", "                or context.num_replicas_in_sync <= 8 or"),),
         ("tests/training/test_replica_equality.py::test_every_step_loss_equals_one_devices",
          "tests/training/test_replica_equality.py::test_the_final_weights_equal_one_devices"), quick=False),
    Case("each replica's batch mean divided by the replicas (Keras's rule; wrong for a ragged split)",
         "kdkeras/distiller.py",
         (("    global_batch = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, local_batch)",
           "    global_batch = local_batch * replica_context.num_replicas_in_sync"),),
         ("tests/training/test_replica_equality.py::test_every_step_loss_equals_one_devices",
          "tests/training/test_replica_equality.py::test_the_final_weights_equal_one_devices"), quick=False),
    Case("a resumed run restarts its epoch count at 0 (shuffle/augmentation)", "kdkeras/data/pipeline.py",
         (("ds = tf.data.Dataset.range(int(start), int(stop)).flat_map(epoch_batches)",
           "ds = tf.data.Dataset.range(0, int(stop) - int(start)).flat_map(epoch_batches)"),),
         ("tests/training/test_kill_resume.py::test_a_resumed_deterministic_run_ends_as_the_uninterrupted_one",),
         quick=False),
]


@dataclasses.dataclass
class Outcome:
    case: Case
    status: str  # "caught", "survived" (tests pass), "error" (failed without an assertion), "guard fails"
    detail: str = ""


def copy_tree(destination: str) -> str:
    """A copy of the checkout to mutate (no .git, logs or caches)."""
    shutil.copytree(ROOT, destination, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "logs", "__pycache__", ".pytest_cache", "*.egg-info", "build", "dist"))
    return destination


def _failure_type(element) -> str:
    """The exception type of a JUnit ``<failure>``: its ``type``, else the last line of its traceback.

    pytest ends a failure's long report with ``path:line: ExceptionType``;
    its ``message`` attribute may be the rewritten ``assert ...`` text alone.
    """
    if element.get("type"):
        return element.get("type")
    lines = [line for line in (element.text or "").strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    name = last.rsplit(": ", 1)[-1].strip() if ": " in last else ""
    return name.rsplit(".", 1)[-1] or "unknown"


def _tree_env(tree: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = tree + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def imported_from(tree: str) -> str:
    """The folder ``kdkeras`` is imported from in ``tree``'s test processes (must be the copy's)."""
    done = subprocess.run([sys.executable, "-c", "import kdkeras, os; print(os.path.dirname(kdkeras.__file__))"],
                          cwd=tree, env=_tree_env(tree), capture_output=True, text=True, timeout=600, check=True)
    return done.stdout.strip().splitlines()[-1]


def run_tests(tree: str, tests, report: str) -> tuple[int, list[tuple[str, str]]]:
    """Runs pytest on ``tests`` (node ids) in ``tree``, whose package is imported (not the checkout's).

    Returns ``(exit code, [(test id, failure type)])`` of the failed and errored
    tests from the JUnit XML (an error's type is ``"error"``).
    """
    env = _tree_env(tree)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           f"--junitxml={report}", *tests], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=3600)
    bad = []
    if os.path.exists(report):
        for case in ET.parse(report).getroot().iter("testcase"):
            name = f"{case.get('classname').replace('.', '/')}.py::{case.get('name')}"  # the node id
            for child in case:
                if child.tag == "failure":
                    bad.append((name, _failure_type(child)))
                elif child.tag == "error":
                    bad.append((name, "error"))
        os.remove(report)
    if done.returncode not in (0, 1) or (done.returncode == 1 and not bad):  # collection/usage errors
        bad.append(("(session)", f"exit {done.returncode}: " + (done.stdout + done.stderr).strip()[-300:]))
    return done.returncode, bad


def mutate(tree: str, case: Case) -> str:
    """Applies ``case`` to ``tree``; returns the file's original text. Each old text must occur exactly once."""
    path = os.path.join(tree, case.path)
    with open(path) as f:
        original = f.read()
    text = original
    for old, new in case.subs:
        count = text.count(old)
        if count != 1:
            raise ValueError(f"{case.what}: the text to replace occurs {count} times in {case.path}: {old[:80]!r}")
        text = text.replace(old, new)
    with open(path, "w") as f:
        f.write(text)
    return original


def _guarded(case: Case, baseline_bad) -> list:
    """The failures of ``case``'s guards in the unmutated run."""
    return [b for b in baseline_bad if b[0] == "(session)" or b[0].split("[")[0] in case.tests]


def check(cases, tree: str, log=print) -> list[Outcome]:
    """Runs every case in ``tree`` (a copy): all guards unmutated first (one pytest session), then each mutant."""
    outcomes = []
    report = os.path.join(tree, ".mutation-report.xml")
    package = imported_from(tree)
    if os.path.realpath(package) != os.path.realpath(os.path.join(tree, "kdkeras")):
        raise RuntimeError(f"the test processes import kdkeras from {package}, not from the mutated copy {tree}")
    guards = list(dict.fromkeys(t for case in cases for t in case.tests))
    code, baseline_bad = run_tests(tree, guards, report)
    log(f"unmutated: {len(guards)} guarding tests {'pass' if code == 0 else 'FAIL: ' + str(baseline_bad[:3])}")
    for case in cases:
        failing = _guarded(case, baseline_bad) if code != 0 else []
        if failing:
            outcome = Outcome(case, "guard fails", f"unmutated: {failing[:3]}")
        else:
            original = mutate(tree, case)
            try:
                _, bad = run_tests(tree, case.tests, report)
            finally:
                with open(os.path.join(tree, case.path), "w") as f:
                    f.write(original)
            assertions = [b for b in bad if b[1] in ASSERTION_TYPES]
            if assertions:
                outcome = Outcome(case, "caught", f"{len(assertions)} assertion(s), e.g. {assertions[0][0]}")
            elif bad:
                outcome = Outcome(case, "error", f"failed without an assertion: {bad[:2]}")
            else:
                outcome = Outcome(case, "survived", "every guarding test passes")
        log(f"[{CASES.index(case) if case in CASES else '-'}] {case.what}: {outcome.status.upper()} -- {' '.join(case.tests)} -- "
            f"{outcome.detail}")
        outcomes.append(outcome)
    return outcomes


def main(argv):
    quick = "--quick" in argv
    chosen = [a for a in argv if a != "--quick"]
    cases = [c for i, c in enumerate(CASES) if (not chosen or str(i) in chosen) and (c.quick or not quick)]
    with tempfile.TemporaryDirectory(prefix="kdkeras-mutants-") as tmp:
        outcomes = check(cases, copy_tree(os.path.join(tmp, "tree")))
    caught = sum(o.status == "caught" for o in outcomes)
    print(f"Kill rate: {caught}/{len(outcomes)} mutants caught by a test assertion.")
    return 0 if caught == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
