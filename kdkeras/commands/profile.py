"""Parameter and FLOP (multiply-accumulate) counts of the model zoo.

Examples:
    kdkeras profile --model=wrn22x10_NR_G4      # one model: summary + counts
    kdkeras profile --all --csv                 # model,params,macs for the paper's 108 variants
    kdkeras profile --table                     # Tables 8 and 9 beside the paper's values
    kdkeras profile --table --models='wrn22x2_*'  # only the rows of WRN-22x2
    kdkeras profile --all --standard            # the standard CIFAR zoo (resnet56, wrn_40_2, ...), R and NR
"""

from kdkeras import cli  # first: quiets TensorFlow's start-up logging

import sys  # noqa: E402

from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
cli.define_run_flag("model", help="Profile one model, e.g. wrn22x10_NR_G4 (prints its summary).")
flags.DEFINE_bool("all", False, "Profile all 108 variants of the paper.")
flags.DEFINE_bool("csv", False, "With --all: print CSV 'model,params,macs' (absolute integers).")
cli.define_table_flag("Print Tables 8 (MFLOPs) and 9 (M params) next to the paper's values.", switch=True)
flags.DEFINE_list("models", None, "With --all or --table: only these of the 108 variants, as names or "
                  "shell patterns (e.g. 'wrn22x2_*,resnet18_R_*').")
flags.DEFINE_bool("standard", False, "With --all: the standard CIFAR zoo of the KD literature (resnet8 ... "
                  "ShuffleV2, and their NR variants) instead of the paper's 108 variants.")
cli.define_num_classes_flag("Number of classes of the classifier head.")


def _progress(done, total, name):
    if sys.stderr.isatty():
        print(f"\r[{done}/{total}] {name:<24}", end="", file=sys.stderr, flush=True)


def _selected_models():
    """The 108 paper variants, or those that ``--models`` names (a pattern that matches none is an error)."""
    import fnmatch

    from kdkeras.models.registry import list_models, list_standard_models

    names = list_standard_models() if FLAGS.standard else list_models()
    if not FLAGS.models:
        return names
    unmatched = [p for p in FLAGS.models if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if unmatched and FLAGS.standard:
        cli.fail(f"--models: {', '.join(unmatched)} matches none of the standard zoo's models "
                 f"({', '.join(names)}).")
    if unmatched:
        cli.fail(f"--models: {', '.join(unmatched)} matches none of the 108 variants "
                 "(<net>_<R|NR>_<g|G><n>, e.g. wrn22x2_NR_G4; `kdkeras profile --all` lists them).")
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in FLAGS.models)]


def _profile_all():
    import keras

    from kdkeras.models.registry import build_model
    from kdkeras.profiling import profile

    names = _selected_models()
    results = {}
    for i, name in enumerate(names, start=1):
        _progress(i, len(names), name)
        results[name] = profile(build_model(name, num_classes=FLAGS.num_classes))
        keras.backend.clear_session()
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return results


def _print_tables(results):
    from kdkeras.models.registry import PAPER_GROUPINGS, PAPER_NETS
    from kdkeras.paper import TABLE8_MFLOPS, TABLE9_MPARAMS, agrees_with_printed

    specs = [
        ("Table 8: FLOPs (multiply-accumulates) in millions", TABLE8_MFLOPS, "macs", 4, 1),
        ("Table 9: parameters in millions", TABLE9_MPARAMS, "params", 3, 0),
    ]
    mismatches = compared = 0
    for title, table, field, digits, tol in specs:
        print(f"\n{title}  (ours / paper; '*' = differs beyond the printed precision)")
        print(f"{'Network':<12}{'':<4}" + "".join(f"{g:>17}" for g in PAPER_GROUPINGS))
        for net in PAPER_NETS:
            for res in ("R", "NR"):
                if not any(f"{net}_{res}_{g}" in results for g in PAPER_GROUPINGS):
                    continue  # a row --models left out
                cells = []
                for col, grouping in enumerate(PAPER_GROUPINGS):
                    printed = table[net][res][col]
                    if f"{net}_{res}_{grouping}" not in results:
                        cells.append(f"{'- / ' + printed:>17}")
                        continue
                    value = getattr(results[f"{net}_{res}_{grouping}"], field) / 1e6
                    compared += 1
                    ok = agrees_with_printed(value, printed, digits, tol)
                    mismatches += not ok
                    ours = f"{value:.{digits}g}"
                    cells.append(f"{ours + ' / ' + printed + ('' if ok else '*'):>17}")
                print(f"{net if res == 'R' else '':<12}{res:<4}" + "".join(cells))
    print(f"\n{mismatches} of {compared} cells differ from the paper beyond its printed precision.")


def main(argv):
    del argv
    if FLAGS.csv and not FLAGS.all:
        cli.fail("--csv needs --all.")
    if FLAGS.models and not (FLAGS.all or FLAGS.table):
        cli.fail("--models needs --all or --table.")
    if FLAGS.standard and (FLAGS.table or not FLAGS.all):
        cli.fail("--standard goes with --all: --table is the paper's Tables 8 and 9, of the paper's zoo.")
    if not (FLAGS.model or FLAGS.all or FLAGS.table):
        cli.fail("nothing to do: pass --model=NAME, --all [--csv] or --table.")
    if FLAGS.model:
        from kdkeras.models.registry import build_model
        from kdkeras.profiling import profile

        model = build_model(FLAGS.model, num_classes=FLAGS.num_classes)
        model.summary()
        p = profile(model)
        print(f"{p.name}: {p.params:,} trainable parameters ({p.params / 1e6:.3g} M), "
              f"{p.macs:,} multiply-accumulates per 32x32 image ({p.macs / 1e6:.4g} M)")
    if FLAGS.all or FLAGS.table:
        results = _profile_all()
        if FLAGS.all:
            if FLAGS.csv:
                print("model,params,macs")
            for name, p in results.items():
                print(f"{name},{p.params},{p.macs}" if FLAGS.csv else
                      f"{name:<24}{p.params:>12,}{p.macs:>16,}")
        if FLAGS.table:
            _print_tables(results)


if __name__ == "__main__":
    cli.run(main)
