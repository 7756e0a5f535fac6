"""The engine process: create or resume a study, start persistent workers, watch them.

The engine writes everything to the database: its own system samples every second, and (from
the workers) trials, per-epoch metrics and events. A viewer (the headless reporter here, the
TUI later) only reads. Control goes the other way through the database too: the sweep's state
(`running`, `paused`, `stopping`, `stopped`, `finished`) and its budget live in `hpo_sweep`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna

from engine.artifacts import dump_yaml, ensure_writable, write_atomic
from engine.command.argv import check_runnable
from engine.config import SweepConfig, check_study_name
from engine.config.space import default_point
from engine.datasets import defaults as data_defaults
from engine.datasets.scan import Scan, scan, split_sizes
from engine.errors import DEVICE_EXIT, DISK_EXIT, DISK_FULL, ConfigError, DiskError, disk_problem
from engine.insights.gpu import gpu_usage
from engine.insights.results import IMPORTANCE_IN_REPORT, export_results
from engine.storage import (
    STORAGE_ENV,
    STUDY_ATTR,
    Store,
    check_ours,
    load_study,
    mask_url,
    optuna_storage,
    study_facts,
    study_id,
)
from engine.storage.states import ACTIVE, EventKind, SweepState, eta_seconds, finished_count
from engine.sweep import packing
from engine.sweep.auto_batch import measure_batches
from engine.sweep.model_cache import check_models_once
from engine.sweep.notify import Hook, Snapshot, Watch
from engine.sweep.recovery import recover_dead_trials
from engine.sweep.resolve import Resolved
from engine.sweep.test_set import evaluate_best
from engine.sweep.worker_args import WorkerArgs
from engine.system import monitor
from engine.system.platform import PlatformInfo, usable_cores

log = logging.getLogger("tui_hpo.engine")
STOP_GRACE_S = 15.0
TICK_S = 1.0
EXIT_POLL_S = 0.05
STAGGER_S = 0.4
# How often a running sweep looks for trials whose worker is gone without this engine seeing it
# die: a worker on another machine (its heartbeat went stale) or one killed between asking for
# a trial and labelling it. Each such trial holds a budget slot until it is found.
RECOVER_EVERY_S = 10.0
PACK_EVERY_S = 10.0  # `trials_per_gpu: auto`: how often the GPUs' load is looked at
PACK_WINDOW_S = 20.0  # the utilisation it judges by: the mean over this much of the newest samples
SAMPLE_KEEP_S = 7 * 24 * 3600
HOOK_FINAL_WAIT_S = 10.0  # at the sweep's end, how long the last `notify:` runs may take
# Sections that define what a study measures: a resume must not change them.
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
IDENTITY = ("data", "train", "objective", "search_space", "sampler", "pruner", "backend", "scheduler")


class Reporter(Protocol):
    """What the engine tells whoever watches: the headless console, or nothing."""

    def event(self, row: dict[str, Any]) -> None: ...

    def progress(self, status: SweepStatus) -> None: ...


@dataclass
class SweepStatus:
    study_name: str
    n_trials: int
    counts: dict[str, int]
    best: list[float] | None
    started: float
    finished_seconds: list[float] = field(default_factory=list)

    @property
    def done(self) -> int:
        return finished_count(self.counts)

    def eta_seconds(self) -> float | None:
        return eta_seconds(self.finished_seconds, self.n_trials, self.done, self.counts.get("RUNNING", 0))


def check_buildable(config: SweepConfig) -> None:
    """Build the sampler and pruner once (and Ray Tune's scheduler, for backend ray), so a bad
    option fails before anything is written; and find the packages of the trackers
    `integrations:` logs to, and Ray's."""
    from engine.sweep.samplers import make_pruner, make_sampler
    from engine.sweep.tracking import check_available

    make_sampler(config)
    make_pruner(config)
    check_available(config)
    if config.backend == "ray":
        from engine.tune.schedulers import build, ray_missing

        problem = ray_missing()
        if problem is not None:
            raise ConfigError(problem)
        build(config)


@dataclass
class Study:
    study_id: int
    name: str
    resumed: bool
    folder: Path


def create_or_resume(config: SweepConfig, url: str, name: str, workdir: Path) -> Study:
    """Create the study, or resume it when the same name exists with the same definition."""
    storage = optuna_storage(url)
    check_ours(storage, name)  # before Store() adds our tables to the database
    store = Store(url)
    existing = store.sweep(name)
    folder = workdir / name
    config_dict = config.to_dict()
    if existing is not None:
        old = with_defaults(existing.config)
        for section in IDENTITY:
            if old.get(section) != config_dict.get(section):
                changed = changed_keys(old.get(section), config_dict.get(section), section)
                raise ConfigError(f"study '{name}' exists with a different '{section}' section ({changed}): resume "
                                  "it with the same config, or name a new study with --study", key=section)
        if config.backend != "ray":  # Ray's running trials go on from their checkpoints (engine.tune.runner)
            recover_dead_trials(url, name, store, existing.study_id, config.budget.max_retries)
        store.update_sweep(existing.study_id, config=config_dict, n_trials=config.budget.n_trials,
                           state=SweepState.RUNNING, claimed=_live_or_done(store, existing.study_id))
        return Study(existing.study_id, name, True, folder)
    study = optuna.create_study(study_name=name, storage=storage, directions=config.objective.directions(),
                                load_if_exists=True)
    study.set_user_attr(STUDY_ATTR, {"metrics": config.objective.metrics()})
    sid = study_id(storage, name)
    store.create_sweep(sid, name, config_dict, config.budget.n_trials)
    start_from_recipe(study, config)
    return Study(sid, name, False, folder)


def with_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored config with the defaults of keys added since it was saved: a study made by an
    older tui-hpo resumes unless a value it set has changed. One this version cannot read is
    compared as it is (and differs, with the keys named)."""
    try:
        return SweepConfig.model_validate(stored).to_dict()
    except ValueError:
        return stored


def changed_keys(old: Any, new: Any, prefix: str, limit: int = 3) -> str:
    """What differs between a stored section and this run's, as `key old -> new`: a resume can
    fail on a value the user never typed (epochs raised by min_steps after images were added),
    and the message must say which."""
    def flat(value: Any, key: str) -> dict[str, Any]:
        if isinstance(value, dict):
            return {k: v for sub, inner in value.items() for k, v in flat(inner, f"{key}.{sub}").items()}
        return {key: value}

    before, after = flat(old, prefix), flat(new, prefix)
    diffs = [f"{k} {before.get(k, 'unset')} -> {after.get(k, 'unset')}"
             for k in sorted(before.keys() | after.keys()) if before.get(k, "unset") != after.get(k, "unset")]
    return "; ".join(diffs[:limit]) + (f"; {len(diffs) - limit} more" if len(diffs) > limit else "")


MODEL_BASED = ("tpe", "cmaes", "nsga2")  # samplers that learn from what they have seen


def start_from_recipe(study: optuna.Study, config: SweepConfig) -> None:
    """A model-based search's first trial runs the config's own recipe (its `train:` values,
    where the space holds them): a known-good point to start from, as Optuna's docs advise with
    `enqueue_trial`, instead of a random one. Random and grid search stay what they say."""
    if config.sampler.name not in MODEL_BASED or not config.search_space:
        return
    point = default_point(config.search_space, config.fixed())
    if point:
        study.enqueue_trial(point, user_attrs={"start": "the config's own recipe"})


def _live_or_done(store: Store, study_id: int) -> int:
    """Budget slots in use: finished and running trials. Queued (WAITING) trials hold no slot:
    the worker that runs one claims a slot first."""
    counts = store.state_counts(study_id)
    return finished_count(counts) + counts.get("RUNNING", 0)


def worker_plan(config: SweepConfig, info: PlatformInfo, platform: str) -> list[tuple[str, dict[str, str], int]]:
    """(device, extra environment, threads) for each worker process."""
    res = config.resources
    parallel = res.parallel or 1
    if platform == "cuda":
        # Indices in resources.gpus and in the probe count the devices this process sees, which
        # CUDA_VISIBLE_DEVICES may have narrowed; each worker gets the physical id of one.
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = [v.strip() for v in visible.split(",")] if visible else [str(g.index) for g in info.gpus]
        chosen = [i for i in (res.gpus if res.gpus is not None else range(len(ids))) if 0 <= i < len(ids)]
        if not chosen:
            raise ConfigError("none of these GPUs exists here", key="resources.gpus")
        # Freest GPU first: with fewer workers than trials_per_gpu x GPUs, the fullest ones wait.
        free = {g.index: g.free_mb or 0.0 for g in info.gpus}
        chosen.sort(key=lambda i: -free.get(i, 0.0))
        threads = res.threads_per_worker or max(1, usable_cores() // parallel)
        return [("cuda:0", {"CUDA_VISIBLE_DEVICES": ids[chosen[i % len(chosen)]]}, threads) for i in range(parallel)]
    threads = res.threads_per_worker or max(1, usable_cores() // parallel)
    device = "mps" if platform == "mps" else "cpu"
    return [(device, {"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {}, threads) for _ in range(parallel)]


def make_engine(resolved: Resolved, url: str, workdir: Path, study_name: str, reporter: Reporter) -> Engine:
    """The engine of the config's backend: worker processes (optuna), or a Ray Tune experiment (ray)."""
    if resolved.config.backend == "ray":
        from engine.tune.runner import TuneEngine

        return TuneEngine(resolved, url, workdir, study_name, reporter)
    return Engine(resolved, url, workdir, study_name, reporter)


class Engine:
    """Runs one sweep to its end (budget, timeout, failures, or a stop) and exports results."""

    def __init__(self, resolved: Resolved, url: str, workdir: Path, study_name: str, reporter: Reporter) -> None:
        self.config, self.info, self.platform = resolved.config, resolved.info, resolved.platform
        self.batch_scale = resolved.batch_scale
        self.source = resolved.source
        self.notes = list(resolved.notes)
        self.url, self.workdir, self.reporter = url, workdir, reporter
        self.study_name = study_name
        self.procs: list[subprocess.Popen] = []
        self.plan: list[tuple[str, dict[str, str], int]] = []
        self.respawns = 0
        self.retired: set[int] = set()  # worker slots that died and were not restarted
        self.interrupts = 0
        self.stop_recorded = False
        self.last_event = 0
        self.packed: set[str] = set()  # GPUs (CUDA_VISIBLE_DEVICES ids) that take no more workers
        self.busy_at_add: dict[str, float] = {}
        self.added_last: dict[str, int] = {}  # GPU id -> pid of the worker added to it last
        self.hook: Hook | None = None  # `notify: {command: ...}`, with the watch that decides when
        self.watch: Watch | None = None
        self.hook_warned = False

    def prepare(self, measure: bool = True) -> Scan | None:
        """Every check that can fail on bad input, before anything is written; and the settings
        that follow from the data (`data_defaults`), which the models are checked at. Without
        `measure`, `batch_size: auto` on CUDA assumes a batch instead of measuring it (a dry run).
        A program's sweep (`objective.command`) has no data of ours: None."""
        check_study_name(self.study_name, "--study")  # its folder is DIR/<study>/
        if self.config.runs_command:  # a program: no data, models or batches of ours to check
            try:
                check_runnable(self.config.objective.command or [], Path(self.config.objective.cwd or "."))
                check_buildable(self.config)
            except ConfigError as exc:
                raise ConfigError(exc.detail, source=exc.source or self.source, key=exc.key) from None
            return None
        found = scan(self.config.data)
        if found.columns is not None:
            self.notes.append(f"data: {found.columns}")
        measurer = (lambda config: measure_batches(config, self.info)) if measure and self.platform == "cuda" else None
        self.notes += data_defaults.apply(self.config, found, measurer)
        try:
            check_models_once(self.config)
            check_buildable(self.config)
        except ConfigError as exc:
            raise ConfigError(exc.detail, source=exc.source or self.source, key=exc.key) from None
        return found

    def run(self) -> int:
        found = self.prepare()
        ensure_writable(self.workdir)
        study = create_or_resume(self.config, self.url, self.study_name, self.workdir)
        self.study = study
        self.store = Store(self.url)
        self.optuna_study = load_study(self.url, study.name)
        if found is not None:  # the split's sizes, for summary and the dashboard (which never read the data itself)
            self.optuna_study.set_user_attr(STUDY_ATTR, {**study_facts(self.optuna_study),
                                                         "data": split_sizes(found, self.config.data)})
        folder = study.folder
        folder.mkdir(parents=True, exist_ok=True)
        self._log_to(folder / "engine.log")
        if self.config.notify is not None:
            self.hook = Hook(self.config.notify.command, log=self.log_path)
            self.watch = Watch(study.name, maximize=self.config.objective.directions()[0] == "maximize")
        write_atomic(folder / "config.yaml", dump_yaml(self.config.to_dict(), self._header()))
        if self.config.budget.timeout:
            self.store.update_sweep(study.study_id, deadline=time.time() + self.config.budget.timeout)
        else:
            self.store.update_sweep(study.study_id, deadline=None)
        self.last_event = max([e["id"] for e in self.store.events_of(study.study_id, 0, 1_000_000)] or [0])
        verb = "started"
        if study.resumed:
            done = self.store.finished_count(study.study_id)
            verb = f"resumed ({done} trials finished, {max(0, self.config.budget.n_trials - done)} to go)"
        self.store.add_event(study.study_id, EventKind.SWEEP, f"sweep '{study.name}' {verb} on {self.platform}: "
                             f"{self.config.budget.n_trials} trials, {self.config.resources.parallel} worker(s), "
                             + (f"data {found.root} ({found.count} images, {len(found.classes)} classes), "
                                if found is not None else f"program {' '.join(self.config.objective.command or [])}"
                                f" in {self.config.objective.cwd}, ")
                             + f"storage {mask_url(self.url)}")
        for note in self.notes:
            self.store.add_event(study.study_id, EventKind.SWEEP, note)
        if found is not None and found.skipped:
            self.store.add_event(study.study_id, EventKind.DATA, found.skipped_summary() or "", level="warning")
            for path, why in found.skipped:  # the event names a few; the log names every one
                log.warning("data: skipped %s (%s)", path, why)
        previous = {signal.SIGINT: signal.getsignal(signal.SIGINT), signal.SIGTERM: signal.getsignal(signal.SIGTERM)}
        for signum in previous:
            signal.signal(signum, self._on_signal)
        try:
            self._launch()
            self._supervise()
        except BaseException:
            self._stop_workers()  # the engine cannot go on (a full disk): neither can its workers
            with contextlib.suppress(Exception):  # where the database can still be written
                self.store.stop_sweep(study.study_id, SweepState.STOPPED)
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._reap()
        return self._finish()

    def _stop_workers(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)

    def _header(self) -> str:
        res = self.config.resources
        return (f"# Resolved config of sweep '{self.study_name}' on {self.platform} ({self.info.hostname}).\n"
                f"# Layers: platform profile < preset/extends < file < TUI_HPO__* environment < flags.\n"
                f"# Batch sizes are already scaled by the {self.platform} profile (x{self.batch_scale:g}), "
                f"so batch_multiplier reads 1.\n# Workers: {res.parallel}; amp {res.amp}; compile {res.compile}; "
                f"channels_last {res.channels_last}."
                + "".join(f"\n# {note}" for note in self.notes))

    def _log_to(self, path: Path) -> None:
        # A log line that cannot be written (a full disk) is dropped, not printed with a traceback.
        logging.raiseExceptions = False
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s engine %(levelname)s %(message)s"))
        logging.getLogger("tui_hpo").addHandler(handler)
        logging.getLogger("tui_hpo").setLevel(logging.INFO)
        self.log_path = path

    def _launch(self) -> None:
        self.plan = worker_plan(self.config, self.info, self.platform)
        self._logfile = open(self.log_path, "ab")  # noqa: SIM115 - shared by the children, closed in _reap
        for index in range(len(self.plan)):
            if index:
                time.sleep(STAGGER_S)  # stagger starts: workers do not all decode data at once
            if self.interrupts:  # Ctrl-C while the workers start: no more of them
                return
            self.procs.append(self._spawn(index))

    def _spawn(self, slot: int) -> subprocess.Popen:
        """A worker for plan slot `slot`. Each gets a new index (it seeds the worker's sampler), so a
        replacement does not repeat its predecessor's first samples."""
        device, env, threads = self.plan[slot]
        index = slot + len(self.plan) * self.respawns
        args = WorkerArgs(url=self.url, study=self.study_name, workdir=self.workdir, device=device, threads=threads,
                          index=index, parent=os.getpid())
        cmd = [sys.executable, "-m", "engine.sweep.worker", *args.argv()]
        # HF_HUB_OFFLINE: pretrained weights were checked into the cache before the study (model
        # check), so a trial reads them from there instead of asking the hub again each time.
        child_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads),
                     STORAGE_ENV: self.url}
        if not self.config.runs_command:  # a program may fetch what it needs itself
            child_env["HF_HUB_OFFLINE"] = "1"
        proc = subprocess.Popen(cmd, env=child_env, stdout=self._logfile, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        log.info("worker %d: pid %d on %s, %d thread(s)", index, proc.pid, device, threads)
        return proc

    def _replace_dead_workers(self) -> None:
        """A worker that died mid-sweep (killed, out of memory) loses nothing: its trial is failed
        and queued again, and a new worker takes its place; a few times at most, so a crash loop
        ends the sweep instead of spinning."""
        if self.interrupts:
            return
        sid = self.study.study_id
        for index, proc in enumerate(self.procs):
            code = proc.poll()
            if code is None or code == 0 or index in self.retired:
                continue
            if code == DISK_EXIT:
                raise DiskError(f"{DISK_FULL} (worker pid {proc.pid} could not write)", key=str(self.workdir))
            if code == DEVICE_EXIT:
                raise ConfigError(f"torch cannot use {self.plan[index][0]} here (the reason is in {self.log_path}; "
                                  "`tui-hpo info` shows what torch sees): fix the driver or run with --device cpu",
                                  key="resources.device")
            label = f"{monitor.hostname()}:{proc.pid}"
            for _ in range(recover_dead_trials(self.url, self.study_name, self.store, sid,
                                               self.config.budget.max_retries, {label})):
                self.store.release(sid)
            how = f"signal {-code}" if code < 0 else f"code {code}"
            running = self.store.sweep_state(sid) in ACTIVE
            if running and self.respawns < max(3, len(self.procs)):
                self.respawns += 1
                self.procs[index] = self._spawn(index)
                then = f"worker {index} restarted as pid {self.procs[index].pid}"
            else:
                self.retired.add(index)
                then = "not restarted" + (f" ({self.respawns} restarts already)" if running else "")
            self.store.add_event(sid, EventKind.WORKER, f"worker pid {proc.pid} died ({how}): {then}; see "
                                 f"{self.log_path}", level="error")

    def _on_signal(self, signum: int, _frame: Any) -> None:
        """Ctrl-C: the workers stop their trials; a second one kills them. No database write here:
        the interrupted code may hold SQLite's write lock, and a write from the handler would wait
        on it for the whole busy timeout. The supervising loop records the stop (`_record_stop`)."""
        self.interrupts += 1
        if self.interrupts == 1:
            self.stop_requested = time.monotonic()
            self._stop_workers()
        else:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()

    def _record_stop(self) -> None:
        """After the first Ctrl-C: the sweep reads STOPPING (for the TUI and other machines' workers),
        and a worker started while the signal arrived is told too."""
        if self.interrupts and not self.stop_recorded:
            self.stop_recorded = True
            self.store.stop_sweep(self.study.study_id, SweepState.STOPPING)
            self._stop_workers()

    def _supervise(self) -> None:
        monitor.sample()  # the first CPU reading is always 0.0: discard it
        # The export at the end computes parameter importance, whose import (Optuna's evaluators
        # pull in scikit-learn) takes seconds: done now, while the workers train, not after them.
        if self.config.budget.n_trials >= IMPORTANCE_IN_REPORT:
            threading.Thread(target=importlib.import_module, args=("optuna.importance",), daemon=True).start()
        started = time.time()
        last_prune, last_recovery = 0.0, time.monotonic()
        last_pack = last_recovery
        while True:
            tick = time.monotonic()
            self._record_stop()
            self.store.add_sample(monitor.sample(self.workdir))
            self._drain_events(self.status(started))
            self._replace_dead_workers()
            if self.packing and tick - last_pack >= PACK_EVERY_S and not self.interrupts:
                self._pack()
                last_pack = tick
            if tick - last_recovery >= RECOVER_EVERY_S and not self.interrupts:
                for _ in range(recover_dead_trials(self.url, self.study_name, self.store, self.study.study_id,
                                                   self.config.budget.max_retries)):
                    self.store.release(self.study.study_id)
                last_recovery = tick
            if all(p.poll() is not None for p in self.procs):
                break
            if self.interrupts and time.monotonic() - self.stop_requested > STOP_GRACE_S:
                for proc in self.procs:
                    proc.kill()
            if tick - last_prune > 3600:
                self.store.prune_samples(time.time() - SAMPLE_KEEP_S)
                last_prune = tick
            self._wait_for_exit(tick + TICK_S)
        self._record_stop()
        self._drain_events()

    @property
    def packing(self) -> bool:
        return self.platform == "cuda" and self.config.resources.trials_per_gpu == "auto"

    def _pack(self) -> None:
        """`trials_per_gpu: auto`: one more worker on each GPU where the newest measurements say
        it fits and helps (engine.sweep.packing); each decision that changes something is an event."""
        now = time.time()
        samples = self.store.samples_between(now - PACK_WINDOW_S, now, monitor.hostname())
        if not samples:
            return
        newest = {g.get("index"): g for g in samples[-1]["gpus"]}
        peaks, finished_by = self._trial_peaks()
        for gpu_id in dict.fromkeys(env["CUDA_VISIBLE_DEVICES"] for _device, env, _threads in self.plan):
            last = self.added_last.get(gpu_id)
            if gpu_id in self.packed or not gpu_id.isdigit() or (last is not None and last not in finished_by):
                continue  # a UUID we cannot match to NVML, or the worker added last has not finished a trial
            index = int(gpu_id)
            slots = [i for i, (_d, env, _t) in enumerate(self.plan) if env["CUDA_VISIBLE_DEVICES"] == gpu_id]
            reading = newest.get(index) or {}
            total, used = reading.get("mem_total_mb"), reading.get("mem_used_mb")
            usage = gpu_usage(samples, [index])
            decision = packing.decide(packing.GpuLoad(
                index=index, workers=sum(self.procs[i].poll() is None for i in slots),
                busy_percent=usage["busy_percent"] if usage else None,
                free_mb=total - used if total is not None and used is not None else None,
                peak_trial_mb=peaks.get(gpu_id), busy_at_last_add=self.busy_at_add.get(gpu_id)))
            if decision.final:
                self.packed.add(gpu_id)
            if decision.add:
                self.busy_at_add[gpu_id] = usage["busy_percent"] if usage else 0.0
                self.plan.append(self.plan[slots[0]])
                self.procs.append(self._spawn(len(self.plan) - 1))
                self.added_last[gpu_id] = self.procs[-1].pid
            if decision.add or decision.final:
                self.store.add_event(self.study.study_id, EventKind.WORKER, f"packing: {decision.reason}")

    def _trial_peaks(self) -> tuple[dict[str, float], set[int]]:
        """Per GPU id, the largest peak memory of the recent finished trials its workers ran, and
        the pids of the workers that finished one."""
        gpu_of = {proc.pid: self.plan[i][1]["CUDA_VISIBLE_DEVICES"] for i, proc in enumerate(self.procs)}
        peaks: dict[str, float] = {}
        finished_by: set[int] = set()
        for trial in self.optuna_study.get_trials(deepcopy=False, states=FINISHED)[-50:]:
            pid = str(trial.user_attrs.get("worker", "")).rpartition(":")[2]
            gpu_id = gpu_of.get(int(pid)) if pid.isdigit() else None
            if gpu_id is None or "peak_mem_mb" not in trial.user_attrs:
                continue
            finished_by.add(int(pid))
            peaks[gpu_id] = max(peaks.get(gpu_id, 0.0), float(trial.user_attrs["peak_mem_mb"]))
        return peaks, finished_by

    def _wait_for_exit(self, until: float) -> None:
        """Sleep until `until` (monotonic), or until a worker exits: the last one's exit ends the
        sweep at once instead of at the next tick."""
        running, interrupts = [p for p in self.procs if p.poll() is None], self.interrupts
        while time.monotonic() < until:
            if any(p.poll() is not None for p in running) or self.interrupts != interrupts:
                return
            time.sleep(min(EXIT_POLL_S, max(0.0, until - time.monotonic())))

    def status(self, started: float) -> SweepStatus:
        counts = self.store.state_counts(self.study.study_id)
        return SweepStatus(study_name=self.study_name, n_trials=self.store.n_trials(self.study.study_id),
                           counts=counts, best=self.store.best_values(self.study.study_id),
                           started=started, finished_seconds=self.store.durations(self.study.study_id))

    def _drain_events(self, status: SweepStatus | None = None) -> None:
        """Report new events, with the status read after them so their lines show fresh counts."""
        rows = self.store.events_of(self.study.study_id, self.last_event)
        if status is not None:
            status = self.status(status.started) if rows else status
            self.reporter.progress(status)
            if self.hook is not None:
                self._notify(status, self.store.sweep_state(self.study.study_id))
        for row in rows:
            self.last_event = row["id"]
            self.reporter.event(row)

    def _notify(self, status: SweepStatus, state: str | None) -> None:
        """`notify:`: run the hook on what is news since the last tick, and report failed runs."""
        if self.hook is None or self.watch is None or state is None:
            return
        best = status.best[0] if status.best else None  # None too with several objectives
        for notice in self.watch.see(Snapshot(state, status.counts, best, status.n_trials)):
            log.info("notify: %s", notice.message)
            self.hook.run(notice)
        self._hook_failed(self.hook.poll())

    def _hook_failed(self, failures: list[str]) -> None:
        """A failing hook is one warning event (later failures only in the log): never the sweep's end."""
        for failure in failures:
            log.warning("%s", failure)
            if not self.hook_warned:
                self.hook_warned = True
                self.store.add_event(self.study.study_id, EventKind.SWEEP, f"{failure}; the sweep is not affected (the "
                                     f"command's output and any later failure: {self.log_path})", level="warning")

    def _reap(self) -> None:
        """Workers killed mid-trial leave RUNNING trials: fail them now, consistently."""
        for proc in self.procs:
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if hasattr(self, "_logfile"):
            self._logfile.close()
        labels = {f"{monitor.hostname()}:{p.pid}" for p in self.procs}
        if self.procs and hasattr(self, "study"):
            try:
                self._recover_after(labels)
            except Exception as exc:  # a full disk: these trials are recovered on resume instead
                if disk_problem(exc) is None:
                    raise
                log.warning("could not record the workers' end (%s): resume recovers their trials", disk_problem(exc))

    def _recover_after(self, labels: set[str]) -> None:
        """Workers gone: their RUNNING trials failed and queued again, the budget recounted."""
        recover_dead_trials(self.url, self.study_name, self.store, self.study.study_id,
                            self.config.budget.max_retries, labels, stopped=self.interrupts > 0)
        self.store.update_sweep(self.study.study_id, claimed=_live_or_done(self.store, self.study.study_id))
        for index, proc in enumerate(self.procs):
            if index in self.retired:  # reported when it died
                continue
            if proc.returncode not in (0, -signal.SIGINT, -signal.SIGKILL) and not self.interrupts:
                self.store.add_event(self.study.study_id, EventKind.WORKER, f"worker pid {proc.pid} exited with code "
                                     f"{proc.returncode}: see {self.log_path}", level="error")
        self._drain_events()

    def _finish(self) -> int:
        sid = self.study.study_id
        done = self.store.finished_count(sid)
        n_trials = self.store.n_trials(sid)
        state = self.store.sweep_state(sid)
        final = SweepState.FINISHED if done >= n_trials else SweepState.STOPPED
        row = self.store.sweep(self.study_name)
        out_of_time = (final == SweepState.STOPPED and row is not None and row.deadline is not None
                       and time.time() >= row.deadline)
        if out_of_time:
            self.store.add_event(sid, EventKind.SWEEP, f"time budget of {self.config.budget.timeout:g}s reached: "
                                 "no new trials were started")
        self.store.update_sweep(sid, state=final)
        if (final == SweepState.FINISHED or out_of_time) and not self.config.runs_command:
            # data.test: once, on the best trial, when the budget ends
            evaluate_best(self.config, self.url, self.study_name, sid, self.study.folder, self.workdir)
        study = load_study(self.url, self.study_name)
        export_results(study, self.config, self.study.folder, self.url)
        self.store.add_event(sid, EventKind.SWEEP, f"sweep '{self.study_name}' {final}: {done}/{n_trials} trials "
                             f"finished; results in {self.study.folder}")
        if self.hook is not None:
            self._notify(self.status(time.time()), final)
            self._hook_failed(self.hook.wait(HOOK_FINAL_WAIT_S))
        self._drain_events()
        if self.interrupts:
            return 130
        if state == SweepState.STOPPED and done < n_trials:
            return 1  # stopped by consecutive failures
        return 0
