"""The experiment grid, as :mod:`kdkeras.experiments.grid` (this module is its old import path)."""

from kdkeras.experiments.grid import *  # noqa: F401,F403
from kdkeras.experiments.grid import __all__  # noqa: F401
