"""The experiment grid: plan, shard, run and tabulate the paper's Tables 1-6 and any grid config.

A grid config (``configs/tables/*.yaml``) names a network, the two halves of
a table (students x teachers) and shared settings. Planning turns it into
cells, one training run each, keyed by their run folder (see
:mod:`kdkeras.config`):

* hard-target baselines: every R teacher, the R version of every student
  (the paper's "Baseline" row) and every NR student ("NR-baseline");
* KD runs: every NR student from every R teacher of its half;

for each seed. A *pair grid* (``pairs:`` instead of ``net`` and ``halves``,
e.g. ``configs/benchmarks/cifar100_crd.yaml``) lists teacher-student pairs of
any networks: per pair the teacher's and the student's hard-target runs and a
KD run, less the runs its ``not_applicable`` excludes; its tables put every
method beside published numbers (``comparison.md``). A grid's ``axes`` (a mapping of :class:`~kdkeras.config.RunConfig`
settings to lists of values, e.g. ``axes: {init: [he, dirac]}``) multiply
these cells. Baselines come first, so teachers exist before the KD cells
that need them. A *suite* config (a ``grids:`` list) runs several grids in
its order, with shared settings, and adds a summary across them.
``--shard=i/n`` takes every n-th cell of that order, so shards are disjoint
and together complete. Each run is claimed with a lock file next to its
folder, so two processes on a shared ``--logdir`` never train the same run;
a KD cell whose teacher another shard is training waits until the shard's
other cells are done.

One job per module:

* :mod:`~kdkeras.experiments.grid.spec`: the config files and :class:`GridSpec`;
* :mod:`~kdkeras.experiments.grid.expand`: a spec's cells;
* :mod:`~kdkeras.experiments.grid.shard`: ``--shard=i/n``;
* :mod:`~kdkeras.experiments.grid.run`: running the cells (claims, leases, the plan's state);
* :mod:`~kdkeras.experiments.grid.measures`: the accuracies the tables show;
* :mod:`~kdkeras.experiments.grid.table`: the tables of one grid;
* :mod:`~kdkeras.experiments.grid.pair_table`: the tables of a pair grid;
* :mod:`~kdkeras.experiments.grid.published`: the published numbers beside them;
* :mod:`~kdkeras.experiments.grid.summary`: a suite's summary;
* :mod:`~kdkeras.experiments.grid.export`: ``--export``.
"""
from kdkeras.experiments.grid.expand import (Cell, axis_combinations, half_label, not_applicable, pair_configs,
                                             pair_label, plan, plan_all, select, select_pairs, table_configs)
from kdkeras.experiments.grid.export import EXPORTED_RUN_FILES, EXPORTED_TABLE_FILES, export
from kdkeras.experiments.grid.pair_table import pair_cells, write_pair_tables
from kdkeras.experiments.grid.published import Published, check_published, load_published
from kdkeras.experiments.grid.run import print_not_applicable, print_plan, run, run_cell, state
from kdkeras.experiments.grid.shard import parse_shard, shard
from kdkeras.experiments.grid.spec import (CONFIGS_DIR, GRID_FIELDS, HALVES, NON_AXIS_FIELDS, PAIR_FIELDS,
                                           SUITE_FIELDS, GridSpec, check_axes, check_pairs, load_grid, load_grids,
                                           resolve_config_path, shipped_config, table_config_path)
from kdkeras.experiments.grid.summary import summary_rows, write_summary
from kdkeras.experiments.grid.table import MEASURES, collect, token_label, write_tables


__all__ = ["CONFIGS_DIR", "EXPORTED_RUN_FILES", "EXPORTED_TABLE_FILES", "GRID_FIELDS", "HALVES", "MEASURES",
           "NON_AXIS_FIELDS", "PAIR_FIELDS", "SUITE_FIELDS", "Cell", "GridSpec", "Published", "axis_combinations",
           "check_axes", "check_pairs", "check_published", "collect", "export", "half_label", "load_grid",
           "load_grids", "load_published", "not_applicable", "pair_cells", "pair_configs", "pair_label",
           "parse_shard", "plan", "plan_all", "print_not_applicable", "print_plan", "resolve_config_path", "run",
           "run_cell", "select", "select_pairs", "shard", "shipped_config", "state", "summary_rows",
           "table_config_path", "table_configs", "token_label", "write_pair_tables", "write_summary",
           "write_tables"]
