"""Experiments over many runs: the grid (:mod:`kdkeras.experiments.grid`)."""
