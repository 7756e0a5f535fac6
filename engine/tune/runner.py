"""The Expert tier's engine: the Optuna tier's engine (the same checks, study, events, samples,
controls and results) with its worker processes replaced by a Ray Tune experiment.

Tune runs in a thread of the engine while the main thread samples the machine and reports, as
it does for workers. The experiment lives in `DIR/<study>/ray/round-<k>`. A resume (`run
--resume` after Ctrl-C or a killed engine) restores the newest round with `Tuner.restore`:
trials that were running go on from their last checkpoint, finished ones stay finished. Trials
the study holds as running but Tune never heard of (asked just before a kill) are failed and
queued again when the round ends, and the next round runs them: every trial ends exactly once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import optuna

from engine.errors import ConfigError
from engine.storage.states import EventKind, SweepState
from engine.sweep.engine import Engine
from engine.sweep.recovery import INTERRUPTED, WORKER_DIED, fail_and_requeue
from engine.system import monitor
from engine.system.platform import usable_cores
from engine.tune.files import EXPERIMENTS
from engine.tune.schedulers import build, evolves, ray_missing, scheduler_name

log = logging.getLogger("tui_hpo.tune")
ROUND = "round-"
STOPPED_STATES = (SweepState.STOPPING, SweepState.STOPPED)
JOIN_S = 30.0
# Ray's own settings for a driver that is not a notebook: no progress tables on stdout, no
# CSV/JSON/TensorBoard files per trial (the study has it all), and the experiment state saved
# often, so a killed engine loses at most a second of Tune's bookkeeping. A program's reports
# need not all carry the objective's metric (Tune's strict check fails the trial on the first).
# The trials of the Ray that tui-hpo starts run at the priority of the Optuna tier's workers: Ray's
# own default (nice 15) lets any other busy process on the machine starve them (ten times slower
# beside three other sweeps on two cores). A cluster of the user's keeps its own setting.
RAY_ENV = {"RAY_worker_niceness": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "TUNE_GLOBAL_CHECKPOINT_S": "1",
           "RAY_AIR_NEW_OUTPUT": "0", "RAY_DEDUP_LOGS": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
           "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}


class TuneEngine(Engine):
    """Runs one sweep through Ray Tune (`backend: ray`)."""

    def _launch(self) -> None:
        missing = ray_missing()
        if missing:
            raise ConfigError(missing, key="backend")
        for key, value in RAY_ENV.items():
            os.environ.setdefault(key, value)
        # Trials Tune prepares ahead: as many as run at once, so a second trial does not wait for
        # the first one's worker process to start (12-20 s of imports on a small machine).
        ahead = self.config.budget.n_trials if self._evolves() else self.config.resources.parallel or 1
        os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(ahead))
        self.started_ray = False
        self.tune_error: BaseException | None = None
        self._start_ray()
        self.thread = threading.Thread(target=self._rounds, name="ray-tune", daemon=True)
        self.thread.start()

    def _start_ray(self) -> None:
        import ray

        # RAY_ADDRESS is where Ray's own tools look for a cluster; without either, a Ray of our own
        # ("local": not one a `ray start` on this machine left running, which Ray would join)
        res = self.config.resources
        address = self.config.ray.address or os.environ.get("RAY_ADDRESS") or None
        # A Ray worker takes its next trial once the last one's thread has ended; Tune waits 2 s for
        # that by default, then starts a new worker process (torch and timm imported again: seconds,
        # and more on a loaded machine, where a thread can take longer to end).
        env = {"OMP_NUM_THREADS": str(self._threads()), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
               "TUNE_FUNCTION_THREAD_TIMEOUT_S": "30"}
        if self.platform != "cuda":
            env["CUDA_VISIBLE_DEVICES"] = ""
        if address:
            import engine

            # The cluster's workers get this checkout's engine package; the data path must be
            # readable there (a shared file system), the study is written here only.
            runtime_env: dict[str, Any] = {"env_vars": env, "py_modules": [str(Path(engine.__file__).parent)]}
            unreachable = _unreachable(address)
            if unreachable:
                raise ConfigError(f"cannot join the Ray cluster at {address}: {unreachable}", key="ray.address")
            try:
                info = ray.init(address=address, runtime_env=runtime_env, log_to_driver=False,
                                configure_logging=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:  # no cluster there, or not one Ray reads
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
                raise ConfigError(f"cannot join the Ray cluster at {address}: {first}", key="ray.address") from None
        else:
            gpus = len(self.info.gpus) if self.platform == "cuda" else 0
            cpus = max(usable_cores(), int((res.parallel or 1) * (res.cpus_per_trial or 1)))
            info = ray.init(address="local", num_cpus=cpus, num_gpus=gpus, include_dashboard=self.config.ray.dashboard,
                            runtime_env={"env_vars": env}, log_to_driver=False, configure_logging=False)
            self.started_ray = True
        # Ray's warnings and errors go to engine.log, not between the sweep's lines on the console
        # (set after `ray.init`, which sets up Ray's logger).
        ray_log = logging.getLogger("ray")
        ray_log.setLevel(logging.WARNING)
        ray_log.propagate = False
        ray_log.handlers = list(logging.getLogger("tui_hpo").handlers)
        # Tune's result grid looks for per-trial result files, which are not written (the study
        # has every result): its warning about them says nothing.
        logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        dashboard = getattr(info, "dashboard_url", None)
        self.store.add_event(self.study.study_id, EventKind.SWEEP, f"Ray Tune {ray.__version__} on {where}, "
                             f"{scheduler_name(self.config)} scheduler, {self.config.resources.parallel or 1} trial(s) "
                             f"at once" + (f"; Ray dashboard: http://{dashboard}" if dashboard else ""))

    def _threads(self) -> int:
        res = self.config.resources
        return int(res.cpus_per_trial or res.threads_per_worker or max(1, usable_cores() // (res.parallel or 1)))

    def _evolves(self) -> bool:
        return evolves(self.config)

    # ------------------------------------------------------------ Tune's thread

    def _rounds(self) -> None:
        """Tune runs until the budget is spent or the sweep stops; a round that ends with the
        budget not spent (trials of a killed run settled and queued again) is followed by another."""
        try:
            restore = self._newest_round()
            while True:
                self._fit(restore)
                restore = None
                settled = self._settle_orphans()
                state = self.store.sweep_state(self.study.study_id)
                if self.interrupts or state != SweepState.RUNNING or not settled or \
                        self.store.finished_count(self.study.study_id) >= self.store.n_trials(self.study.study_id):
                    return
        except BaseException as exc:  # reported by the main thread, which ends the sweep
            self.tune_error = exc
            log.exception("Ray Tune failed")

    def _newest_round(self) -> Path | None:
        from ray import tune

        from engine.tune.state import repair

        rounds = sorted(self._ray_dir().glob(f"{ROUND}*"), key=lambda p: int(p.name[len(ROUND):]))
        if not rounds:
            return None
        repaired = repair(rounds[-1])
        if repaired:
            self.store.add_event(self.study.study_id, EventKind.SWEEP, f"Tune's state in {rounds[-1].name} was cut "
                                 f"short by the engine's end ({', '.join(repaired)}): its last whole copy is restored")
        return rounds[-1] if tune.Tuner.can_restore(str(rounds[-1])) else None

    def _ray_dir(self) -> Path:
        return (self.study.folder / EXPERIMENTS).resolve()

    def _fit(self, restore: Path | None) -> None:
        from ray import tune

        from engine.tune.program import run_program
        from engine.tune.record import Recorder, SweepStopper
        from engine.tune.searcher import Round, StudyLink, StudySearch, StudySearcher
        from engine.tune.state import StateKeeper
        from engine.tune.trainable import train

        res = self.config.resources
        gpus = float(res.gpus_per_trial or (1 if self.platform == "cuda" else 0))
        device = "cuda:0" if gpus else ("mps" if self.platform == "mps" else "cpu")
        artifacts = str(self.study.folder.resolve())
        if self.config.runs_command:
            # Run where the engine was started (a Ray worker's own folder is Ray's session's)
            sweep = self.config.to_dict()
            sweep["objective"]["cwd"] = str(Path(self.config.objective.cwd or ".").resolve())
            run = tune.with_parameters(run_program, sweep=sweep, study=self.study_name, artifacts=artifacts,
                                       device=device)
        else:
            run = tune.with_parameters(train, sweep=self.config.to_dict(), study=self.study_name,
                                       artifacts=artifacts, device=device, threads=self._threads())
        trainable = tune.with_resources(run, {"cpu": float(res.cpus_per_trial or 1), "gpu": gpus})
        if restore is not None:
            tuner = tune.Tuner.restore(str(restore), trainable, resume_unfinished=True, resume_errored=False)
            self.store.add_event(self.study.study_id, EventKind.SWEEP, f"Ray Tune experiment {restore.name} restored: "
                                 "running trials go on from their last checkpoint")
        else:
            rounds = [int(p.name[len(ROUND):]) for p in self._ray_dir().glob(f"{ROUND}*")]
            name = f"{ROUND}{max(rounds, default=0) + 1}"
            metric = self.config.objective.metrics()[0]
            mode = "max" if self.config.objective.directions()[0] == "maximize" else "min"
            link, round_ = StudyLink(self.url, self.study_name), Round()
            classes = list(getattr(self, "classes", []))
            # PBT's population is the budget, all alive at once (Ray shares the CPUs and GPUs among
            # them); the other schedulers run `parallel` trials at a time.
            searcher = StudySearcher(link, round_, metric, mode, self.study.folder.resolve(),
                                     limit=None if self._evolves() else res.parallel or 1)
            search = StudySearch(searcher) if self._evolves() else searcher
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    metric=metric, mode=mode, search_alg=search,
                    scheduler=build(self.config), num_samples=-1, reuse_actors=True),
                run_config=tune.RunConfig(
                    name=name, storage_path=str(self._ray_dir()), verbose=0,
                    callbacks=[Recorder(link, round_, metric, classes, self.study.folder.resolve()),
                               StateKeeper(self._ray_dir() / name)],
                    stop=SweepStopper(link, round_),
                    # PBT clones any member's checkpoint of the last perturbation: all are kept.
                    # Otherwise three: the experiment's state, saved about once a second (slower
                    # under load), may name one older than the newest when the engine is killed,
                    # and checkpoints come at most every CHECKPOINT_EVERY_S (engine.tune.trainable)
                    # so that the three span more than that.
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=None if self._evolves() else 3),
                    failure_config=tune.FailureConfig(max_failures=0)))
        tuner.fit()

    def _settle_orphans(self) -> int:
        """Trials still RUNNING in the study once Tune is done: asked by a run that was killed
        before Tune saved them, or stopped with the sweep. Failed and queued again (their slots
        freed); returns how many."""
        from engine.storage import load_study

        study = load_study(self.url, self.study_name)
        settled = 0
        # Stopped (Ctrl-C, the TUI): not the trials' fault, so no retry is used up.
        stopped = self.interrupts > 0 or self.store.sweep_state(self.study.study_id) in STOPPED_STATES
        reason = INTERRUPTED if stopped else WORKER_DIED
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if fail_and_requeue(study, self.store, self.study.study_id, trial, reason,
                                self.config.budget.max_retries, counts=not stopped):
                self.store.release(self.study.study_id)
                settled += 1
        return settled

    # ------------------------------------------------------------ the engine's side

    def prepare(self, measure: bool = True) -> Any:
        found = super().prepare(measure)
        if found is not None:
            self.classes = list(found.classes)
        return found

    def _supervise(self) -> None:
        monitor.sample()  # the first CPU reading is always 0.0: discard it
        started = time.time()
        while self.thread.is_alive():
            tick = time.monotonic()
            self._record_stop()
            self.store.add_sample(monitor.sample(self.workdir))
            self._drain_events(self.status(started))
            self.thread.join(timeout=max(0.0, tick + 1.0 - time.monotonic()))
        self._drain_events()
        if self.tune_error is not None:
            self.store.add_event(self.study.study_id, EventKind.SWEEP, f"Ray Tune failed: {self.tune_error} (see "
                                 f"{self.log_path})", level="error")
            self.store.stop_sweep(self.study.study_id, SweepState.STOPPED)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        """The first Ctrl-C is recorded by the loop within a second (`_record_stop`: no database
        write in a handler); Tune's stopper reads that state: running trials stop, none start."""
        self.interrupts += 1
        if self.interrupts > 1:
            raise KeyboardInterrupt

    def _reap(self) -> None:
        thread = getattr(self, "thread", None)
        if thread is not None:
            thread.join(timeout=JOIN_S)
        if getattr(self, "started_ray", False):
            import ray

            ray.shutdown()
        if hasattr(self, "study"):
            self._settle_orphans()
            self.store.update_sweep(self.study.study_id, claimed=self.store.finished_count(self.study.study_id))


def _unreachable(address: str) -> str | None:
    """Why nothing answers at a cluster's HOST:PORT (or ray://HOST:PORT), found in seconds where
    Ray retries for minutes; None when something does (`auto` is Ray's to find)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():  # auto, or a RAY_ADDRESS of another form: Ray's to read
        return None
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
