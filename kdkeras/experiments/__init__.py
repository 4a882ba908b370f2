"""Experiments over many runs: the grid (:mod:`kdkeras.experiments.grid`) and the KD hyper-parameter search
(:mod:`kdkeras.experiments.tuning`)."""
