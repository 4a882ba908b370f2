"""The accuracies a grid's tables show, and how they are read from the finished runs."""

from __future__ import annotations

#: The accuracies a table can show: ``(name, results.json key, title)``. The
#: first is the paper's protocol; the best-on-test one is optimistic, since
#: it selects the epoch on the split it reports.
MEASURES = (
    ("final", "test_accuracy", "final-epoch test accuracy (the paper's protocol)"),
    ("at_best_val", "test_accuracy_at_best_val", "test accuracy at the best validation epoch"),
    ("precise_bn", "test_accuracy_precise_bn", "final-epoch test accuracy with precise BN statistics"),
    ("batch_stats", "test_accuracy_batch_stats", "final-epoch test accuracy with batch statistics"),
    ("best_on_test", "best_test_accuracy",
     "best-epoch test accuracy (OPTIMISTIC: the epoch is selected on the test split itself)"),
)


def accuracies(run_dirs, key) -> list[float]:
    """Per-seed accuracies (percent) of the finished runs that report ``key``."""
    from kdkeras.training import is_finished, load_results

    values = (load_results(d).get(key) for d in run_dirs if is_finished(d))
    return [100.0 * v for v in values if v is not None]
