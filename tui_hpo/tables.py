"""Rich tables for the command line and the screens: the platform report (`tui-hpo info`),
summaries, importance, repeats and benchmarks."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from engine.insights.gpu import describe as describe_gpu
from engine.insights.validation import balance, rough
from engine.storage.states import finished_count

PARETO_SHOWN = 5  # Pareto-front trials a summary lists; the rest are counted


def _fmt(value: Any, suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.1f}{suffix}" if isinstance(value, float) else f"{value}{suffix}"


def platform_tables(info: Any, prof: dict[str, Any]) -> list[Table]:
    system = Table(title="System", title_justify="left", show_header=False)
    system.add_column(style="bold")
    system.add_column()
    versions = ", ".join(f"{k} {v}" for k, v in info.versions.items() if v)
    rows = [
        ("OS", info.os), ("Host", info.hostname), ("Python", info.python), ("Packages", versions),
        ("CPU", info.cpu_model),
        ("Cores", f"{info.logical_cores} usable, {info.physical_cores or '?'} physical"),
        ("RAM", f"{info.ram_total_gb:.1f} GiB total, {info.ram_available_gb:.1f} GiB available"),
        ("CUDA", f"available, CUDA {info.cuda_version}, driver {info.driver_version or '-'}"
         if info.cuda_available else "not available (no NVIDIA GPU or driver)"),
        ("Apple MPS", "available" if info.mps_available else "not available"),
        ("Platform", info.platform),
    ]
    for key, value in rows:
        system.add_row(key, value)
    for note in info.notes:
        system.add_row("Note", note)
    tables = [system]
    if info.gpus:
        gpus = Table(title="GPUs", title_justify="left")
        for column in ("#", "name", "memory", "free", "CC", "bf16", "util", "temp", "power"):
            gpus.add_column(column, justify="left" if column == "name" else "right")
        for g in info.gpus:
            gpus.add_row(str(g.index), g.name, f"{g.total_mb / 1024:.1f} GiB",
                         "-" if g.free_mb is None else f"{g.free_mb / 1024:.1f} GiB", g.compute_capability,
                         "yes" if g.bf16 else "no", _fmt(g.util_percent, "%"), _fmt(g.temperature_c, "C"),
                         _fmt(g.power_w, "W"))
        tables.append(gpus)
    profile = Table(title=f"Profile: {info.platform}", title_justify="left", show_header=False)
    profile.add_column(style="bold")
    profile.add_column()
    for key, value in prof.items():
        profile.add_row(key, str(value))
    tables.append(profile)
    return tables


def summary_table(report: dict[str, Any]) -> Table:
    """`tui-hpo summary` as one table."""
    from tui_hpo.format import duration, params

    table = Table(title=f"Study '{report['study']}' ({report['state']})", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    counts = report["counts"]
    total = f" of {report['n_trials']}" if report["n_trials"] else ""
    done = finished_count(counts)
    table.add_row("trials", f"{done} finished{total}: {counts.get('COMPLETE', 0)} complete, "
                            f"{counts.get('PRUNED', 0)} pruned, {counts.get('FAIL', 0)} failed, "
                            f"{counts.get('RUNNING', 0)} running")
    if report.get("data"):
        table.add_row("data", data_line(report["data"]))
    metric = ", ".join(report["metrics"])
    if report.get("pareto_front"):
        table.add_row("Pareto front", f"{len(report['pareto_front'])} trial(s) trading {metric}")
        for point in report["pareto_front"][:PARETO_SHOWN]:
            values = ", ".join(f"{k}={v:.4g}" for k, v in point["values"].items())
            table.add_row(f"  trial {point['trial']}", f"{values}  {params(point['params'])}")
        if len(report["pareto_front"]) > PARETO_SHOWN:
            table.add_row("", f"and {len(report['pareto_front']) - PARETO_SHOWN} more (summary --json lists them all)")
    elif report["best"] is not None:
        best = report["best"]
        table.add_row(f"best {metric}", f"{best['value']:.4f} (trial {best['trial']})")
        table.add_row("best params", params(best["params"]))
        if report.get("class_f1"):
            table.add_row("F1 per class", class_f1_text(report["class_f1"]))
        if report.get("test"):
            table.add_row("test set", test_text(report["test"]))
    else:
        table.add_row("best", "no completed trial yet")
    validation = report.get("validation")
    if validation and validation["warning"]:
        table.add_row(Text("warning", style="bold yellow"), Text(validation["warning"], style="yellow"))
    elif validation:
        seen = validation["images"] * validation["folds"]
        table.add_row("noise", f"±{rough(validation['noise'])} at {validation['noise_at']:.2f} on {seen} validation "
                               "images (standard error): trials closer than that are a tie")
    if report.get("stopped_early"):
        table.add_row("stopped early", f"{report['stopped_early']} trial(s) ended by early stopping, each "
                                       "valued at its best epoch")
    table.add_row("compute", duration(report["compute_seconds"]))
    table.add_row("saved by pruning", f"{duration(report['pruning_saved_seconds'])} (pruned trials against "
                                      "their full length)")
    for failure in report["failures"][:5]:
        table.add_row("failed", f"{failure['count']}x {failure['reason']}")
    if report.get("retried"):
        reruns = ", ".join(f"#{r['trial']} of #{r['retry_of']} ({r['state'].lower()})" for r in report["retried"][:8])
        table.add_row("retried", f"{len(report['retried'])} rerun(s) after a worker died: {reruns}")
    if report.get("gpu"):
        table.add_row("GPU", describe_gpu(report["gpu"]))
    for oom in report.get("oom_retries", [])[:5]:
        last = oom["steps"][-1]
        table.add_row("out of memory", f"trial {oom['trial']} went on with batch {last['batch_size']} x "
                                       f"{last['accum_steps']} accumulation steps")
    return table


def data_line(data: dict[str, Any]) -> str:
    """The split a sweep trained on: `270 images: 216 train, 54 validation (18 per class)`; with
    k folds, the first fold's split (every fold validates about 1/k of the images)."""
    per_class = balance(data, " per class")
    text = f"{data['images']} images: {data['train']} train, {data['val']} validation"
    text += f" ({per_class})" if per_class else ""
    folds = int(data.get("folds") or 1)
    return text + (f", in each of {folds} folds" if folds > 1 else "")


WEAK_F1 = 0.5  # a class under this is mostly missed: shown in red


def class_f1_text(scores: dict[str, float | None], limit: int = 12) -> Text:
    """Validation F1 per class, worst first, so a class the model misses leads the line; a class
    absent from the validation set (None) comes last, as `-`."""
    ranked = sorted(scores.items(), key=lambda item: (item[1] is None, item[1] or 0.0))
    text = Text()
    for name, f1 in ranked[:limit]:  # name=value, as params are shown: a wrapped line never splits a pair
        text.append(f"{name}=" + ("-" if f1 is None else f"{f1:.2f}"),
                    style="red" if f1 is not None and f1 < WEAK_F1 else "")
        text.append("  ")
    if len(ranked) > limit:
        text.append(f"and {len(ranked) - limit} more", style="dim")
    text.rstrip()
    return text


def importance_table(scores: dict[str, float], title: str, width: int = 40) -> Table:
    """Importance as horizontal bars, most important first (also used by the Analysis screen)."""
    from rich.text import Text

    from tui_hpo.format import bar

    table = Table.grid(padding=(0, 1))
    table.title = title
    table.title_justify = "left"
    table.add_column(style="bold", no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(justify="right")
    for name, value in scores.items():
        table.add_row(name, Text(bar(value, width), style="cyan"), f"{value:.2f}")
    return table


def recommendation_table(result: Any) -> Table:
    """`tui-hpo recommend`: each parameter's range before and after, and the best trial's value."""
    from tui_hpo.format import number

    table = Table(title=f"Next sweep after '{result.study}': the ranges of its top {result.top} of "
                        f"{result.completed} completed trials (best {result.metric} {number(result.best_value)})",
                  title_justify="left")
    for column in ("parameter", "searched", "next", "best", "why"):
        table.add_column(column, overflow="fold")
    for change in result.changes:
        best = number(change.best) if isinstance(change.best, float) else str(change.best)
        table.add_row(change.name, change.before, change.after, best, change.note)
    return table


def test_text(test: dict[str, Any]) -> str:
    """data.test's figures for the best trial, measured once when the sweep ended (never used to
    choose), or why there are none."""
    if "note" in test:
        return f"trial {test['trial']}: {test['note']}"
    return (f"trial {test['trial']}: accuracy {test['accuracy']:.4f}, macro-F1 {test['f1']:.4f} on {test['images']} "
            "images (data.test, never used to choose)")


def summary_text(report: dict[str, Any]) -> Text:
    """`tui-hpo summary` in two lines, for the Analysis screen's header: the same numbers."""
    from tui_hpo.format import duration, number

    counts = report["counts"]
    done = finished_count(counts)
    total = f" of {report['n_trials']}" if report["n_trials"] else ""
    text = Text()
    text.append(f" {report['study']} ", style="bold reverse")
    text.append(f" {report['state']}  ", style="bold")
    text.append(f"{done} finished{total}: {counts.get('COMPLETE', 0)} complete, {counts.get('PRUNED', 0)} pruned, "
                f"{counts.get('FAIL', 0)} failed, {counts.get('RUNNING', 0)} running\n ")
    if report.get("pareto_front"):
        text.append(f"Pareto front of {len(report['pareto_front'])} trial(s)", style="bold")
    elif report["best"] is not None:
        best = report["best"]
        text.append(f"best {report['metrics'][0]} {number(best['value'])}", style="bold green")
        text.append(f" (trial {best['trial']})")
        judged = report.get("validation")
        if judged:  # how far apart two trials must be to differ, on this validation set
            text.append(f" ±{judged['noise']:.2f} ({judged['images']} val)",
                        style="bold yellow" if judged["warning"] else "dim")
        test = report.get("test")
        if test and "note" not in test:
            text.append(f"   test {test['f1']:.4f} ({test['images']} images)", style="bold")
    else:
        text.append("no completed trial yet", style="dim")
    text.append(f"   compute {duration(report['compute_seconds'])}   saved by pruning "
                f"{duration(report['pruning_saved_seconds'])}")
    if report.get("gpu") and report["gpu"].get("busy_percent") is not None:
        text.append(f"   GPU busy {report['gpu']['busy_percent']:.0f}%")
    failures = report["failures"]
    if failures:
        reasons = ", ".join(f"{f['count']}x {f['reason'].split(':')[0]}" for f in failures[:3])
        text.append(f"   failed: {reasons}", style="red")
    return text


def repeat_table(results: list[Any], metric: str, study: str) -> Table:
    """`tui-hpo repeat`: each top config over its seeds, against what the trial scored."""
    from tui_hpo.format import number, params

    table = Table(title=f"Top configs of '{study}' retrained over seeds ({metric})", title_justify="left")
    for column in ("trial", "in the sweep", "runs", "mean", "std", "95% interval", "params"):
        table.add_column(column, justify="left" if column == "params" else "right", overflow="fold")
    for r in results:
        s = r.summary
        interval = f"[{number(s.ci_low)}, {number(s.ci_high)}]" if s.ci_low is not None else "-"
        table.add_row(str(r.trial), number(r.value), str(s.n), number(s.mean), number(s.std), interval,
                      params(r.params))
    return table


def comparison_table(groups: list[Any], title: str) -> Table:
    """`tui-hpo compare`: each group's n, mean, spread and interval, best first."""
    from tui_hpo.format import number

    table = Table(title=f"Compared, best first: {title}", title_justify="left")
    for column in ("group", "n", "mean", "std", "min", "max", "95% interval"):
        table.add_column(column, justify="left" if column == "group" else "right")
    for g in groups:
        interval = f"[{number(g.ci_low)}, {number(g.ci_high)}]" if g.ci_low is not None else "-"
        table.add_row(g.name, str(g.n), number(g.mean), number(g.std), number(g.min), number(g.max), interval)
    return table


def benchmark_tables(bench: Any) -> list[Any]:
    """`tui-hpo gpu benchmark`'s result (an engine.system.benchmarks.Benchmark): the device's
    figures, a table of variants per model, and the verdicts."""
    from rich.console import Group

    from engine.insights.gpu_verdicts import PRECISION, datasheet_share, model_verdicts, number, speedup

    threads = f", {bench.threads} thread(s) as each parallel trial" if bench.threads else ""
    device = Table(title=f"Benchmark of {bench.device} (torch {bench.torch_version}, {bench.date[:10]}{threads})",
                   title_justify="left")
    for column in ("measured", "figure", "note"):
        device.add_column(column, justify="right" if column == "figure" else "left")
    for dtype, figure in bench.matmul_tflops.items():
        shown = "-" if figure.value is None else f"{number(figure.value)} TFLOP/s"
        note = figure.why_not if figure.value is None else datasheet_share(bench.device, dtype, figure.value)
        device.add_row(f"matmul {PRECISION.get(dtype, dtype)}", shown, note or "")
    for what, figure, how in (("device memory", bench.memory_bandwidth_gbs, "a copy: bytes read + written"),
                              ("host to device", bench.host_to_device_gbs, "pinned, non-blocking")):
        device.add_row(what, "-" if figure.value is None else f"{number(figure.value)} GB/s",
                       figure.why_not if figure.value is None else how)
    out: list[Any] = [device]
    for m in bench.models:
        base = m.baseline
        setup = "" if base is None else (f"; baseline {'compiled' if base.compile else 'eager'}, amp {base.amp}, "
                                         f"{'channels-last' if base.channels_last else 'contiguous'}")
        table = Table(title=f"{m.model} at {m.image_size} px, batch {m.batch}, {m.steps} timed steps{setup}",
                      title_justify="left", caption=f"peak MB: {m.memory}" if m.memory else None,
                      caption_justify="left")
        for column in ("variant", "samples/s", "vs baseline", "peak MB", "compile s"):
            table.add_column(column, justify="left" if column == "variant" else "right")
        skipped = []
        for v in m.variants:
            ratio = speedup(v, base)
            table.add_row(v.name, "-" if v.samples_per_s is None else f"{v.samples_per_s:,.0f}",
                          "-" if ratio is None else f"{ratio:.2f}x", _fmt(v.peak_mem_mb), _fmt(v.compile_s),
                          style="dim" if v.skipped else None)
            if v.skipped and v.name != "compiled":  # the compile verdict says why
                skipped.append(Text(f"  {v.name}: {v.skipped}", style="dim"))
        out.append(table)
        out.append(Group(*skipped, *(Text(f"  {line}") for line in model_verdicts(m, bench.kind))))
    return out
