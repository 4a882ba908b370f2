""":class:`KDHyperModel`: one trial built and trained by the run pipeline's own steps."""

from __future__ import annotations

import dataclasses

import keras
import keras_tuner

from kdkeras import config as config_lib
from kdkeras import recipes
from kdkeras.errors import UsageError
from kdkeras.experiments.tuning.space import SAMPLING, SearchSpace, TUNED


class KDHyperModel(keras_tuner.HyperModel):
    """Builds and trains one KD trial with the run pipeline's own steps.

    ``build(hp)`` declares ``temperature``, ``alpha`` and ``lr`` (ranges as
    ``hp.Float``, fixed values as ``hp.Fixed``) and returns what
    :func:`kdkeras.training.build_run_model` builds for the run with the
    trial's values: a compiled :class:`kdkeras.distiller.Distiller` of a fresh
    student and the teacher. ``fit`` trains it on the run's training split
    (:func:`kdkeras.training.make_run_data`, every data setting applied) with
    the run's training callbacks (:func:`kdkeras.training.training_callbacks`,
    without the test split), validated on the run's validation split.

    Args:
        config: the run's resolved :class:`kdkeras.config.RunConfig`, with a
            ``val_size`` (see :func:`with_validation`); its ``temperature``,
            ``alpha`` and ``lr`` are ignored: ``space`` decides them.
        teacher: the teacher ``keras.Model``, or a function returning it
            (called on the first ``build``).
        space: the :class:`SearchSpace` (default: :data:`DEFAULT_RANGES`).
        name: the hypermodel's name.

    Attributes:
        execution: index of the trial's current execution; the data and the
            student's weights use ``config.seed + execution``.
        history_path: where ``fit`` writes the trial's ``history.csv``
            (``None``: nowhere).

    Raises:
        ValueError: ``config`` has no validation split.
    """

    def __init__(self, config, teacher, *, space=None, name="kd_distiller"):
        super().__init__(name=name)
        if config.val_size is None:
            raise UsageError("A tuning trial needs a validation split (config.val_size); the test split is "
                             "never used to select settings. See kdkeras.tuning.with_validation.")
        self.config = config
        self.space = space or SearchSpace()
        self._teacher = teacher
        self.execution = 0
        self.history_path = None
        self._data = None

    @property
    def teacher(self):
        """The teacher model (loaded on first access when given as a function)."""
        if callable(self._teacher) and not isinstance(self._teacher, keras.Model):
            self._teacher = self._teacher()
        return self._teacher

    @property
    def seed(self) -> int:
        """Seed of the current execution: ``config.seed + execution``."""
        return self.config.seed + self.execution

    def declare_hyperparameters(self, hp):
        """Registers the search space in ``hp``; returns ``{name: current value}``."""
        values = {}
        for name in TUNED:
            entry = getattr(self.space, name)
            if isinstance(entry, tuple):
                paper = recipes.recipe_for(self.config.model, distill=True)[name]
                default = paper if entry[0] <= paper <= entry[1] else entry[0]
                values[name] = hp.Float(name, entry[0], entry[1], sampling=SAMPLING[name], default=default)
            else:
                values[name] = hp.Fixed(name, entry)
        return values

    def trial_config(self, hp) -> config_lib.RunConfig:
        """The run that the current execution of the trial ``hp`` trains (its values, its seed)."""
        values = self.declare_hyperparameters(hp)
        return dataclasses.replace(self.config, seed=self.seed, **{k: float(v) for k, v in values.items()})

    def data(self, config=None):
        """The current execution's :class:`kdkeras.data.Splits` (built by ``build``, else now)."""
        from kdkeras.training import make_run_data

        config = config or dataclasses.replace(self.config, seed=self.seed)
        if self._data is None or self._data[0] != config.seed:
            self._data = (config.seed, make_run_data(config))
        return self._data[1]

    def build(self, hp):
        """The compiled model of the trial ``hp`` (:func:`kdkeras.training.build_run_model`)."""
        from kdkeras.training import build_run_model, make_run_data

        config = self.trial_config(hp)
        # Fresh pipelines for every build: a reused dataset would continue its
        # shuffle where the previous trial left it.
        self._data = (config.seed, make_run_data(config))
        # Its optimizer is built, so loading a checkpoint (Hyperband continuing a trial) restores the momentum
        # buffers too.
        model, _ = build_run_model(config, self._data[1], self.teacher)
        return model

    def fit(self, hp, model, *args, **kwargs):
        """Trains ``model`` on the run's training split, validated on its validation split.

        Data arguments are refused: a trial trains on the run's own data and
        is scored on the validation split, never the test split. A Hyperband
        trial that continues an earlier one (``initial_epoch`` > 0) starts its
        lr schedule at that epoch's step, so the schedule's milestones stay
        where the recipe puts them.

        Raises:
            ValueError: data (``x``, ``y``, ``validation_data``) is passed.
        """
        from kdkeras.callbacks import HistoryCSV
        from kdkeras.training import fit_run, training_callbacks

        given = [k for k in ("x", "y", "validation_data", "validation_split") if k in kwargs]
        if args or given:
            raise ValueError("KDHyperModel.fit trains on the run's own splits; do not pass data "
                             f"(received {', '.join(given) or 'positional data'}).")
        config = self.trial_config(hp)
        data = self.data(config)
        self._data = None  # consumed: the next build makes fresh pipelines
        initial_epoch = kwargs.pop("initial_epoch", None) or 0
        if initial_epoch:
            model.optimizer.iterations.assign(initial_epoch * data.steps_per_epoch)
        callbacks = training_callbacks(config, data, evaluate_test=False)
        if self.history_path:
            callbacks.append(HistoryCSV(self.history_path, initial_epoch=initial_epoch))
        callbacks += list(kwargs.pop("callbacks", None) or [])  # KerasTuner's own (checkpoint, TensorBoard)
        unknown = sorted(set(kwargs) - {"epochs", "verbose", "shuffle"})
        if unknown:
            raise ValueError(f"KDHyperModel.fit trains as a run does; it takes no {', '.join(unknown)}.")
        # The run pipeline's own fit: epoch e's batches depend only on (seed, e), indices where a method needs them.
        return fit_run(model, config, data, callbacks, verbose=kwargs.get("verbose", "auto"),
                       initial_epoch=initial_epoch, epochs=kwargs.get("epochs", 1))
