"""The KD hyper-parameter search, as :mod:`kdkeras.experiments.tuning` (this module is its old import path)."""

from kdkeras.experiments.tuning import *  # noqa: F401,F403
from kdkeras.experiments.tuning import __all__  # noqa: F401
