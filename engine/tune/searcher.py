"""Tune's search algorithm for a sweep: every trial Tune runs is asked of the sweep's own Optuna
study, with the same sampler (TPE, random, grid, ...) and the same space as the Optuna tier, so
the trial exists in the storage, with its params, before Tune starts it.

The study's `hpo_sweep` row steers it as it steers the Optuna tier's workers: its budget (a slot
is claimed per trial), pause (no new trials), stop and time budget (no more trials at all).
Nothing of its own needs saving: a restored experiment reads everything back from the storage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from ray.tune.search import SearchAlgorithm, Searcher, SearchGenerator

from engine.artifacts import write_atomic
from engine.config import SweepConfig
from engine.config.space import suggest
from engine.storage import Store, load_study
from engine.storage.states import SweepState
from engine.sweep.samplers import make_sampler
from engine.tune.files import number_file

RAY_TRIAL = "ray_trial"  # the user attribute naming the Ray trial that runs an Optuna trial


@dataclass
class Round:
    """What the search algorithm, the recorder and the stopper of one Tune run share: Tune's
    trials still alive, and the Optuna trial (id, number) of each Ray trial."""

    live: int = 0
    trials: dict[str, tuple[int, int]] = field(default_factory=dict)
    pruned_by_user: set[str] = field(default_factory=set)
    dropped: set[str] = field(default_factory=set)  # Ray trials whose Optuna trial was ended from outside


class StudyLink:
    """A connection to the sweep's storage that survives pickling: Tune pickles its search
    algorithm and callbacks into the experiment (for `Tuner.restore`), which a database
    connection cannot go through, so it is opened again where it is unpickled."""

    def __init__(self, url: str, study_name: str) -> None:
        self.url, self.study_name = url, study_name
        self._open()

    def _open(self) -> None:
        self.store = Store(self.url)
        row = self.store.sweep(self.study_name)
        if row is None:
            raise RuntimeError(f"no sweep named '{self.study_name}' in this storage")
        self.study_id = row.study_id
        self.config: SweepConfig = row.sweep_config()
        # Seeded past the trials there are: a resumed sweep's sampler does not repeat the points
        # the first run's sampler started with (as a restarted worker of the Optuna tier does not).
        asked = sum(self.store.state_counts(self.study_id).values())
        self.study = load_study(self.url, self.study_name, sampler=make_sampler(self.config, asked),
                                pruner=optuna.pruners.NopPruner())

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "study_name": self.study_name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def optuna_trial(self, ray_trial: str, round_: Round) -> tuple[int, int] | None:
        """(trial id, number) of the Optuna trial a Ray trial runs; after a restore, found by the
        attribute the search algorithm wrote when it asked for the trial."""
        if ray_trial not in round_.trials:
            for trial in self.study.get_trials(deepcopy=False):
                if trial.user_attrs.get(RAY_TRIAL) == ray_trial:
                    round_.trials[ray_trial] = (trial._trial_id, trial.number)
        return round_.trials.get(ray_trial)


class StudySearcher(Searcher):
    """Tune's `search_alg`: `suggest` asks the study for a trial, or says wait (None: the sweep is
    paused, `limit` trials are alive, or the budget is taken by running trials) or done (`FINISHED`).

    The limit on trials at once is kept here, from Tune's own list of live trials (`Round.live`),
    not by Tune's ConcurrencyLimiter: that one saves its set of live trials in a file of its own,
    written after the experiment's state, and an engine killed between the two writes left a
    restored experiment whose limiter counted a finished trial as live forever (a hung resume)."""

    def __init__(self, link: StudyLink, round_: Round, metric: str, mode: str, folder: Path,
                 limit: int | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        self.link, self.round, self.folder, self.limit = link, round_, folder, limit

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict[str, Any],
                              **spec: Any) -> bool:
        return True  # the space is the sweep config's, read from the storage

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        link, sid = self.link, self.link.study_id
        state = link.store.sweep_state(sid)
        row = link.store.sweep(link.study_name)
        if state not in (SweepState.RUNNING, SweepState.PAUSED) or \
                (row is not None and row.deadline is not None and time.time() >= row.deadline):
            return Searcher.FINISHED
        if state == SweepState.PAUSED or (self.limit and self.round.live >= self.limit):
            return None
        if not link.store.claim(sid):
            # Every slot is taken. By running trials: wait, one may fail and free its slot. By
            # none of this run's (trials of a killed run that Tune does not know): this run is
            # over, and the runner settles those trials before the next.
            done = link.store.finished_count(sid) >= link.store.n_trials(sid)
            return Searcher.FINISHED if done or self.round.live == 0 else None
        trial = link.study.ask()
        params = suggest(trial, link.config.search_space, link.config.fixed())
        trial.set_user_attr(RAY_TRIAL, trial_id)
        self.round.trials[trial_id] = (trial._trial_id, trial.number)
        self.round.live += 1  # counted again from Tune's trials at its next step
        numbered = number_file(self.folder, trial_id)
        numbered.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(numbered, str(trial.number).encode())
        return params

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        """The recorder (engine.tune.record) tells the study how each trial ended."""

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Nothing to save: the storage holds every trial this search asked for."""

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        """Nothing to restore: see `save_to_dir`."""


class StudySearch(SearchAlgorithm):
    """The `search_alg` Tune gets: Tune's own SearchGenerator around a StudySearcher, seen from
    outside as a plain search algorithm. Ray's PBT and PB2 refuse any SearchGenerator, for fear of
    a searcher that models results by configs PBT then mutates; this one only asks the study for
    its starting points (PBT's changes are recorded on the trials, engine.tune.record)."""

    def __init__(self, searcher: StudySearcher) -> None:
        self.inner = SearchGenerator(searcher)

    @property
    def metric(self) -> str | None:
        return self.inner.metric

    @property
    def total_samples(self) -> int:
        return self.inner.total_samples

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict[str, Any]) -> bool:
        return self.inner.set_search_properties(metric, mode, config)

    def add_configurations(self, experiments: Any) -> None:
        self.inner.add_configurations(experiments)

    def next_trial(self) -> Any:
        return self.inner.next_trial()

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self.inner.on_trial_complete(trial_id, result, error)

    def is_finished(self) -> bool:
        return self.inner.is_finished()

    def set_finished(self) -> None:
        self.inner.set_finished()

    def has_checkpoint(self, dirpath: str) -> bool:
        return self.inner.has_checkpoint(dirpath)

    def save_to_dir(self, dirpath: str, **kwargs: Any) -> None:
        self.inner.save_to_dir(dirpath, **kwargs)

    def restore_from_dir(self, dirpath: str) -> None:
        self.inner.restore_from_dir(dirpath)
