"""`tui-hpo gpu batch`: the largest batch of a model that trains on this GPU, with the safety
share trials use (what `batch_size: auto` puts into a sweep), measured once and then remembered."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from engine.errors import UserError


@click.command()
@click.option("--model", "models", required=True, metavar="M[,M...]", help="timm model name(s).")
@click.option("--image-size", type=click.IntRange(8, 1024), default=224, show_default=True)
@click.option("--amp", type=click.Choice(["bf16", "fp16", "off"]),
              help="Mixed precision (default: bf16 where the GPU has it, else fp16).")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True)
@click.option("--device", default="cuda:0", show_default=True)
@click.option("--safety", type=click.FloatRange(0.1, 1.0),
              help="Share of the largest batch trials use (default: by the card's memory class).")
@click.option("--max", "limit", type=click.IntRange(1), default=4096, show_default=True, help="Largest batch tried.")
@click.option("--fresh", is_flag=True, help="Measure again instead of using the remembered result.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def batch(models: str, image_size: int, amp: str | None, channels_last: bool, device: str, safety: float | None,
          limit: int, fresh: bool, as_json: bool) -> None:
    """Find the largest batch that trains (forward, backward, optimizer step) on the GPU."""
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        raise UserError("no CUDA GPU here: the batch finder measures GPU memory (on this machine "
                        "batch_size: auto uses the platform's usual batch)", key="--device")
    from engine.training.batch_finder import find_batch

    where = torch.device(device)
    if where.index is not None and where.index >= torch.cuda.device_count():
        raise UserError(f"no such GPU: {device} ({torch.cuda.device_count()} visible)", key="--device")
    precision = amp or ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    out = {}
    for model in models.split(","):
        try:
            found, cached = find_batch(model, image_size, device, precision, channels_last, safety, limit, fresh)
        except (RuntimeError, ValueError) as exc:  # timm's unknown model, a model refusing the size
            raise UserError(str(exc).splitlines()[0], key="--model") from None
        except MemoryError as exc:
            raise UserError(str(exc), key="--model") from None
        out[model] = {**asdict(found), "cached": cached}
        if not as_json:
            peak = f", peak {found.peak_mb / 1024:.1f} of {found.total_mb / 1024:.0f} GiB" if found.peak_mb else ""
            click.echo(f"{model} at {image_size} px, amp {precision}, "
                       f"{'channels-last' if channels_last else 'contiguous'}: batch {found.batch} "
                       f"({found.safety:.0%} of {found.largest}, the largest that trained{peak}; "
                       f"{'remembered' if cached else f'{found.tried} tries'})")
    if as_json:
        click.echo(json.dumps(out, indent=2))
