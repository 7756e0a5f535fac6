"""The `tui-hpo` command line.

Heavy imports (torch, timm, optuna) happen inside the commands that need them, so `--help` and
the TUI start fast. Bad input of any kind ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from engine.config.presets import preset_names
from engine.errors import DISK_FULL, DiskError, UserError, disk_problem, one_line
from engine.storage import Workspace
from tui_hpo.commands import cleanup, ensemble, gpu, predict, results, stats, validate, visualize
from tui_hpo.launch import RunArgs
from tui_hpo.options import check_out_file, workspace_options

EXIT_BAD_INPUT = 2
ACTIONS = ("summary", "top", "visualize", "recommend", "cleanup")  # the original tracker's
PRESETS = preset_names()
RESULT_FILES = ("report.json", "best_config.yaml", "best_params.yaml", "trials.csv", "engine.log",
                "best_model.safetensors")  # a sweep's files, as its last line lists them


class Group(click.Group):
    """Turns every UserError, and click's usage errors, into one line `tui-hpo: error: ...` and
    exit 2, without a traceback. (Click itself prints usage, a hint and the error: three lines.)"""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:  # the group's own options
            _fail(ctx, _usage_message(exc))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            _fail(ctx, str(exc))
        except click.UsageError as exc:  # an unknown command, or a command's options
            _fail(ctx, _usage_message(exc))
        except OSError as exc:  # a path given that cannot be used: a file where a folder goes, read-only, full
            if exc.filename is None:
                raise
            why = "exists and is not a folder" if isinstance(exc, FileExistsError) else \
                disk_problem(exc) or (exc.strerror or str(exc)).lower()
            _fail(ctx, f"{exc.filename}: {why}")


def _usage_message(exc: click.UsageError) -> str:
    where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
    return one_line(exc.format_message()) + where


def _fail(ctx: click.Context, message: str) -> NoReturn:
    click.echo(f"tui-hpo: error: {message}", err=True)
    ctx.exit(EXIT_BAD_INPUT)


@click.group(cls=Group, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@workspace_options
@click.option("--action", type=click.Choice(ACTIONS),
              help="The original tracker's spelling: `--action top --n 5` runs `top --n 5`.")
@click.option("--n", "n", type=click.IntRange(min=1), help="With --action top: how many trials.")
@click.option("--days", type=click.FloatRange(min=0), help="With --action cleanup: the age in days.")
@click.option("--study", "study_name", help="With --action: the study (default: the most recent).")
@click.version_option(package_name="tui-hpo")
@click.pass_context
def main(ctx: click.Context, workspace: Workspace, action: str | None, n: int | None, days: float | None,
         study_name: str | None) -> None:
    """Hyperparameter optimisation of PyTorch/timm image classifiers, from the terminal.

    Without a command, opens the app on the workspace."""
    if ctx.invoked_subcommand is not None:
        return
    if action is None:
        _open_app(workspace)
        return
    command = main.get_command(ctx, action)
    extra = {"n": n} if action == "top" and n else {"days": days} if action == "cleanup" and days is not None else {}
    ctx.invoke(command, workdir=str(workspace.workdir), storage=workspace.storage, study_name=study_name, **extra)


def _open_app(workspace: Workspace, **kwargs: Any) -> None:
    from tui_hpo.app import make_app, user_settings

    app = make_app(workspace.workdir, workspace.storage, settings=user_settings(), **kwargs)
    app.run()
    if app.return_code:
        sys.exit(app.return_code)


@main.command()
@workspace_options
@click.option("--study", "study_name", help="The study to watch (default: the most recent).")
def attach(workspace: Workspace, study_name: str | None) -> None:
    """Open the dashboard on a running or finished sweep."""
    from tui_hpo.commands.study import study_from

    if study_name is not None:
        from engine.config import check_study_name

        check_study_name(study_name, "--study")
    study_from(workspace, study_name)  # no database, or no such study: one line, not an empty dashboard
    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        raise UserError("the dashboard needs a terminal (ssh -t, tmux); without one: tui-hpo summary", key="attach")
    _open_app(workspace, study=study_name, mode="dashboard")


@main.command()
@click.option("--preset", help="A preset of configs/presets/ (quick when no --config is given): "
              f"{', '.join(PRESETS)}.")
@click.option("--config", "config_file", metavar="FILE", help="Sweep YAML (native, W&B sweep, or Optuna-guide layout).")
@click.option("--n-trials", type=int, help="Trials the study should have finished in total (not per run).")
@click.option("--more", "--count", "more", type=click.IntRange(min=1), metavar="N",
              help="N trials more than the study has finished (a new study: N).")
@click.option("--timeout", type=float, metavar="S", help="Stop starting new trials after S seconds.")
@click.option("--data", "--train-data", "data", metavar="PATH",
              help="ImageFolder tree, or a folder with a labels CSV and images.")
@click.option("--labels", metavar="CSV", help="The labels CSV (its id and label columns recognised by name).")
@click.option("--id-column", metavar="NAME", help="The labels CSV's image-id column (default: recognised by name).")
@click.option("--label-column", metavar="NAME", help="The labels CSV's label column (default: recognised by name).")
@click.option("--val-data", metavar="PATH", help="Your own validation set (same layouts as --data), used "
              "instead of a split.")
@click.option("--test-data", metavar="PATH", help="A test set, never used to choose: evaluated once on the "
              "best trial when the sweep ends.")
@workspace_options
@click.option("--study", "study_name", help="Study name (default: the config's name, or its file name); an "
              "existing study of that name is resumed.")
@click.option("--parallel", type=int, help="Worker processes (default: from the platform profile).")
@click.option("--trials-per-gpu", type=int, metavar="K", help="Trials sharing each GPU (default 1).")
@click.option("--backend", type=click.Choice(["optuna", "ray"]),
              help="What runs the trials: Optuna's workers (default), or Ray Tune (the Expert tier; the `ray` extra).")
@click.option("--resume", is_flag=True, help="Continue --study with the config saved in the storage.")
@click.option("--no-tui", is_flag=True, help="Headless: progress on a terminal, one line per trial otherwise.")
def run(preset: str | None, config_file: str | None, n_trials: int | None, more: int | None, timeout: float | None,
        data: str | None, labels: str | None, id_column: str | None, label_column: str | None,
        val_data: str | None, test_data: str | None, workspace: Workspace, study_name: str | None,
        parallel: int | None, trials_per_gpu: int | None, backend: str | None, resume: bool, no_tui: bool) -> None:
    """Run a sweep (or resume one): real training in persistent worker processes.

    On a terminal, the sweep starts in the background and the app opens on its dashboard;
    with --no-tui (or when output is not a terminal) it runs here, headless."""
    args = RunArgs(preset=preset, config_file=config_file, n_trials=n_trials, timeout=timeout, data=data,
                   labels=labels, id_column=id_column, label_column=label_column, val_data=val_data,
                   test_data=test_data, parallel=parallel, trials_per_gpu=trials_per_gpu, backend=backend,
                   resume=resume)
    if more is not None:
        if n_trials is not None:
            raise UserError("--more and --n-trials both set the budget: give one", key="--more")
        args = dataclasses.replace(args, n_trials=_finished(workspace, _resolve_name(args, workspace, study_name)[1])
                                   + more)
    if not no_tui and sys.stdout.isatty() and sys.stdin.isatty():
        sys.exit(_run_in_app(args, workspace, study_name))
    sys.exit(_run_headless(args, workspace, study_name))


def _resolve_name(args: RunArgs, workspace: Workspace, study_name: str | None) -> tuple[str | None, str]:
    """(the config file to run, the study's name), by the one naming rule, before anything starts:
    a bad config or name fails here, in one line. `--resume` runs the config saved in the storage."""
    from engine import config as cfg

    if study_name is not None:  # before anything uses it: --resume writes to DIR/<study>/
        cfg.check_study_name(study_name, "--study")
    if args.resume:
        return _saved_config(workspace, study_name), study_name or ""
    draft = cfg.resolve({}, preset=args.preset, config_file=args.config_file, flags=args.flags(), platform="cpu")
    return args.config_file, cfg.study_name(study_name, draft.name, args.config_file)


def _finished(workspace: Workspace, name: str) -> int:
    """Trials the study `name` has finished (0 when there is no such study yet)."""
    from engine.storage import Store, check_ours, optuna_storage

    if workspace.storage is None and not (workspace.workdir / "hpo.db").exists():
        return 0
    if not check_ours(optuna_storage(workspace.url, heartbeat=False, readonly=True), name):
        return 0
    store = Store(workspace.url, readonly=True)
    try:
        row = store.sweep(name)
        return store.finished_count(row.study_id) if row is not None else 0
    finally:
        store.close()


def _saved_config(workspace: Workspace, study_name: str | None) -> str:
    """The resolved config a study was started with, from the storage (so any machine can resume),
    with the budget the storage holds now (the app's +/- may have changed it)."""
    from engine.artifacts import dump_yaml, write_atomic
    from engine.storage import Store, check_ours, optuna_storage

    if not study_name:
        raise UserError("--resume needs --study NAME", key="--study")
    workspace.require_database("no sweep to resume")
    check_ours(optuna_storage(workspace.url, heartbeat=False), study_name)
    row = Store(workspace.url).sweep(study_name)
    if row is None:
        raise UserError(f"no sweep named '{study_name}' in this storage", key="--study")
    path = workspace.workdir / study_name / "resume.yaml"
    write_atomic(path, dump_yaml(row.sweep_config().to_dict(), f"# The saved config of sweep '{study_name}', "
                                                               "used by --resume."))
    return str(path)


def _run_in_app(args: RunArgs, workspace: Workspace, study_name: str | None) -> int:
    """Start the engine detached (it outlives the app and the SSH session), then watch it."""
    from tui_hpo.app import make_app, user_settings
    from tui_hpo.launch import start_engine

    _config, name = _resolve_name(args, workspace, study_name)
    engine = start_engine(args, workspace, name)
    app = make_app(workspace.workdir, workspace.storage, study=name, mode="dashboard", engine=engine,
                   settings=user_settings())
    app.run()
    return app.return_code or 0


def _run_headless(args: RunArgs, workspace: Workspace, study_name: str | None) -> int:
    import optuna

    from engine.insights.results import top_rows
    from engine.storage import load_study
    from engine.sweep.engine import make_engine
    from engine.sweep.resolve import resolve_run
    from tui_hpo.headless import HeadlessReporter, top_table

    config_file, name = _resolve_name(args, workspace, study_name)
    resolved = resolve_run(args.preset if not args.resume else None, config_file, args.flags())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with HeadlessReporter() as reporter:
            engine = make_engine(resolved, workspace.url, workspace.workdir, name, reporter)
            code = engine.run()
    except Exception as exc:
        problem = disk_problem(exc)
        if problem is None:
            raise
        advice = "free some space" if problem == DISK_FULL else "choose a writable --workdir"
        raise DiskError(f"{problem}: the sweep stopped (every finished trial is safe in the database); {advice} "
                        "and run the same command to resume", key=str(workspace.workdir)) from None
    console = reporter.console
    rows = top_rows(load_study(workspace.url, name), 10)
    if rows:
        console.print(top_table(rows, resolved.config.objective.metrics(), f"Top trials of '{name}'"))
    folder = workspace.workdir / name
    files = [f for f in RESULT_FILES if (folder / f).exists()]  # what this sweep wrote (no best file if none completed)
    if (folder / "trials").is_dir():
        files.append("trials/<n>/output.log")
    then = "summary, recommend, visualize" + (", predict" if (folder / "best_model.safetensors").exists() else "")
    console.print(f"Results: {folder}/ ({', '.join(files)}); next: tui-hpo {then}")
    return code


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(as_json: bool) -> None:
    """Platform report: OS, versions, CPU, RAM, CUDA GPUs, Apple MPS, and the profile in use."""
    from engine.system.platform import profile
    from engine.training.devices import probe

    report = probe()
    prof = profile(report, report.platform)["resources"]
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "profile": prof}, indent=2))
        return
    from rich.console import Console

    from tui_hpo.tables import platform_tables

    console = Console()
    for table in platform_tables(report, prof):
        console.print(table)


@main.command()
@click.option("--config", "config_file", required=True, metavar="FILE", help="A config, e.g. best_config.yaml.")
@click.option("--seed", type=click.IntRange(min=0), help="Override train.seed.")
@click.option("--data", metavar="PATH", help="Override data.path.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option("--out", "out", metavar="FILE", callback=check_out_file,
              help="Save the trained model as a package (.safetensors) for predict.")
@click.option("--full", is_flag=True, help="The final model: train on the training and validation images together.")
@click.option("--epochs", type=click.IntRange(min=1), help="Override train.epochs (and its min/max_steps).")
def train(config_file: str, seed: int | None, data: str | None, as_json: bool, out: str | None, full: bool,
          epochs: int | None) -> None:
    """Train once with a config (no search) and print the validation metrics."""
    from engine import config as cfg

    flags = cfg.flags_layer(data=data)
    if seed is not None:
        flags.setdefault("train", {})["seed"] = seed
    if epochs is not None:  # exactly this many: the steps rules would move it again
        flags.setdefault("train", {}).update(epochs=epochs, min_steps=None, max_steps=None)
    from engine.sweep.model_cache import check_weight_files
    from engine.sweep.resolve import resolve_run
    from engine.training.single import train_once

    resolved = resolve_run(None, config_file, flags)
    config = resolved.config
    check_weight_files(config)  # a file that is not weights: one line before the data is read
    result = train_once(config, resolved.platform, Path(out).expanduser() if out else None, full)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    final = result["final"]
    click.echo(f"trained {config.train.model} for {config.train.epochs} epoch(s) on {result['train_images']} "
               f"images on {result['device']} in {result['seconds']:.1f}s")
    if full:
        click.echo("  (--full: the validation images were trained on; these metrics are not a held-out estimate)")
    for key in ("val_f1", "val_accuracy", "val_loss", "train_loss"):
        click.echo(f"  {key:13} {final[key]:.4f}")
    if out is not None:
        click.echo(f"model package: {out} (tui-hpo predict --model {out} --data PATH)")


@main.command()
@workspace_options
@click.option("--study", "study_name", required=True, help="The sweep to join.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda:N, mps, or auto.")
@click.option("--threads", type=int, default=0, help="Torch CPU threads (0: torch's default).")
def worker(workspace: Workspace, study_name: str, device: str, threads: int) -> None:
    """Join a running sweep from this machine: everything else comes from the storage.

    Give the sweep's --storage (or $TUI_HPO_STORAGE); without it, the workspace's own hpo.db."""
    from engine.config import check_study_name
    from engine.storage import check_ours, optuna_storage
    from engine.sweep.worker import WorkerArgs, run_worker

    check_study_name(study_name, "--study")
    workspace.require_database("start the sweep first (tui-hpo run), then join it")
    if not check_ours(optuna_storage(workspace.url, heartbeat=False), study_name):
        raise UserError(f"no sweep named '{study_name}' in {workspace.label}: start it first (tui-hpo run), then "
                        "join it", key="--study")
    if device == "auto":
        from engine.training.devices import probe

        device = {"cuda": "cuda:0", "mps": "mps"}.get(probe().platform, "cpu")
    sys.exit(run_worker(WorkerArgs(url=workspace.url, study=study_name, workdir=workspace.workdir, device=device,
                                   threads=threads, index=os.getpid() % 1000)))


for _command in (results.summary, results.top, results.importance_command, results.export_command,
                 results.recommend, cleanup.cleanup, visualize.visualize, stats.repeat, stats.compare, gpu.gpu,
                 predict.predict, predict.evaluate, ensemble.ensemble, validate.validate, validate.schema):
    main.add_command(_command)

if __name__ == "__main__":
    main()
