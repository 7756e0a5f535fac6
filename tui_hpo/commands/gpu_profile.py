"""`tui-hpo gpu profile`: where a config's (or a trial's) training step spends its time.

The measurement is `engine.training.profiling`; this module finds what to train (a config file,
or a study's saved config with a trial's params), names the trace file, and prints the result.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from engine.storage import Workspace
from tui_hpo.options import workspace_options

KINETO_SILENT = "6"  # above its highest level (ERROR 4, USDT 5)
OPEN_HINT = "open it in https://ui.perfetto.dev (drag the file in) or chrome://tracing"


@click.command()
@click.option("--config", "config_file", metavar="FILE", help="Profile this config's training.")
@click.option("--study", "study_name", metavar="NAME", help="Profile a trial of this study (with --trial).")
@click.option("--trial", "trial_number", type=int, metavar="N", help="The trial's number, as `tui-hpo top` shows it.")
@click.option("--steps", type=click.IntRange(min=1), default=5, show_default=True,
              help="Training steps to profile, after 2 warm-up steps.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@workspace_options
def profile(workspace: Workspace, config_file: str | None, study_name: str | None, trial_number: int | None,
            steps: int, as_json: bool) -> None:
    """Profile a few training steps: the top operators, the share of data loading, forward,
    backward and the optimizer, and a Chrome trace in DIR/<study>/profiles/.

    Give --config FILE, or --study NAME --trial N to profile that trial with its own params."""
    from engine.errors import UserError

    if config_file is not None and (study_name is not None or trial_number is not None):
        raise UserError("give either --config or --study with --trial, not both", key="--config")
    if config_file is not None:
        config, platform, folder, stem, notes = _from_config(workspace, config_file)
        source = config_file
    elif study_name is not None and trial_number is not None:
        config, platform, folder, notes = _from_trial(workspace, study_name, trial_number)
        stem, source = f"trial-{trial_number}", f"trial {trial_number} of '{study_name}'"
    elif study_name is not None:
        raise UserError("which trial? give its number with --trial N", key="--trial")
    elif trial_number is not None:
        raise UserError("which study is the trial in? give --study NAME", key="--study")
    else:
        raise UserError("what to profile? give --config FILE, or --study NAME --trial N", key="--config")
    if platform == "cpu":
        # Kineto (torch.profiler's backend) logs its start and stop, and that it found no GPU, on
        # stderr; with no GPU nothing it says helps. Read when torch loads, which has not happened
        # yet in this process. On a GPU its errors (CUPTI not allowed, say) stay visible.
        os.environ.setdefault("KINETO_LOG_LEVEL", KINETO_SILENT)
    from engine.training.profiling import profile_training, where_time_went

    trace = folder / "profiles" / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.pt.trace.json"
    result = profile_training(config, platform, trace, steps=steps, cache_dir=workspace.workdir / ".cache" / "images")
    notes += result.notes
    share = result.phase_share
    train = config.train
    out: dict[str, Any] = {
        "source": source, "device": result.device, "model": train.model, "batch_size": train.batch_size,
        "image_size": train.image_size, "steps": result.steps, "warmup": result.warmup,
        "step_ms": sum(result.phase_ms.values()) / result.steps,
        "phases": share, "phase_ms": result.phase_ms, "time_went": where_time_went(share),
        "ops": [asdict(op) for op in result.ops], "trace": str(result.trace), "notes": notes,
    }
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    _print(out)


def _from_config(workspace: Workspace, config_file: str) -> tuple[Any, str, Path, str, list[str]]:
    """The config resolved for this machine, as `tui-hpo train` resolves it; its folder is
    DIR/<its name>/ and the trace is named after the file."""
    from engine.config.names import slug
    from engine.sweep.resolve import resolve_run

    resolved = resolve_run(None, config_file, {})
    config = resolved.config
    folder = workspace.workdir / (config.name or "profile")
    return config, resolved.platform, folder, slug(Path(config_file).stem) or "config", list(resolved.notes)


def _from_trial(workspace: Workspace, study_name: str, number: int) -> tuple[Any, str, Path, list[str]]:
    """The study's saved config with the trial's params (as `repeat` retrains it), on the
    platform the sweep used, or on what this machine has when it lacks that one."""
    from engine.config import SweepConfig
    from engine.errors import ConfigError, UserError
    from engine.insights.results import best_config
    from engine.insights.summary import saved_config
    from engine.system.platform import choose_platform, probe_for_sweep
    from engine.training.devices import probe
    from tui_hpo.commands.study import study_from

    study = study_from(workspace, study_name)
    config = saved_config(workspace.url, study.study_name)
    if config is None:
        raise UserError(f"'{study.study_name}' is a plain Optuna study: there is no config to profile", key="--study")
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    trial = trials.get(number)
    if trial is None:
        have = f"trials 0 to {max(trials)}" if trials else "no trials yet"
        raise UserError(f"study '{study.study_name}' has no trial {number} ({have})", key="--trial")
    if not trial.params and config.search_space:
        raise UserError(f"trial {number} of '{study.study_name}' has no params ({trial.state.name.lower()}, it never "
                        "started training): nothing to profile", key="--trial")
    trial_config = SweepConfig.model_validate(best_config(config, trial.params))
    info = probe_for_sweep() or probe()
    notes = []
    try:
        platform = choose_platform(info, config.resources.device)
    except ConfigError:
        platform = info.platform
        notes.append(f"the study trained on {config.resources.device}, which this machine lacks: "
                     f"profiled on {platform}")
    return trial_config, platform, workspace.workdir / study.study_name, notes


def _print(out: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    on_cuda = out["device"].startswith("cuda")
    console.print(f"profiled {out['source']}: {out['model']}, batch {out['batch_size']}, {out['image_size']} px, "
                  f"on {out['device']}, {out['steps']} steps after {out['warmup']} warm-up", markup=False)
    table = Table(title=f"Top operators by self {'CUDA' if on_cuda else 'CPU'} time", title_justify="left")
    table.add_column("operator", overflow="fold")
    if on_cuda:
        table.add_column("self CUDA", justify="right")
    table.add_column("self CPU", justify="right")
    table.add_column("calls", justify="right")
    for op in out["ops"]:
        cuda = [f"{op['self_device_ms']:.2f} ms"] if on_cuda else []
        table.add_row(escape(op["name"]), *cuda, f"{op['self_cpu_ms']:.2f} ms", str(op["calls"]))
    console.print(table)
    console.print(f"where the time went: {out['time_went']}; {out['step_ms']:.1f} ms a step")
    for note in out["notes"]:
        console.print(f"note: {note}", style="yellow", markup=False)
    console.print(f"trace: {out['trace']}", soft_wrap=True, markup=False, highlight=False)
    console.print(OPEN_HINT)
