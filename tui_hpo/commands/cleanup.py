"""`tui-hpo cleanup`: disk back from old and failed trials (rules in engine/cleanup.py)."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from engine.storage import Workspace
from tui_hpo.options import workspace_options


@click.command()
@click.option("--days", type=click.FloatRange(min=0), default=7, show_default=True,
              help="Studies idle this long are trimmed to their best checkpoints; samples older go.")
@click.option("--keep", type=click.IntRange(min=0), help="Checkpoints kept per study (default: its checkpoints.keep).")
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@workspace_options
@click.option("--study", "study_name", help="Only this study (default: every study in the storage).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cleanup(days: float, keep: int | None, dry_run: bool, workspace: Workspace, study_name: str | None,
            as_json: bool) -> None:
    """Remove checkpoints of failed and pruned trials, and trim idle studies to their best K."""
    from engine.sweep.cleanup import cleanup as run_cleanup

    workspace.require_database("nothing to clean")
    report = run_cleanup(workspace.url, workspace.workdir, days, keep, study_name, dry_run)
    if as_json:
        click.echo(json.dumps({**asdict(report), "freed_bytes": report.freed}, indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    for removal in report.removed:
        click.echo(f"{verb} {removal.path} ({removal.bytes / 1e6:.1f} MB): {removal.why}")
    for skipped in report.skipped:
        click.echo(f"left alone: {skipped}")
    click.echo(f"{verb} {len(report.removed)} file(s), {report.freed / 1e6:.1f} MB, and {report.samples} system "
               f"sample(s) older than {days:g} day(s)")
