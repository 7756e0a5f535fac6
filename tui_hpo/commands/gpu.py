"""`tui-hpo gpu ...`: the GPU toolkit. What the card is and does best (`check`), how fast it
runs (`benchmark`), the largest batch that fits (`batch`), and where a trial's time goes
(`profile`). Every command also runs on a machine without a GPU, saying what it cannot measure
there, so a laptop can try them and the test suite proves them."""

from __future__ import annotations

import click


@click.group()
def gpu() -> None:
    """The GPU toolkit: check, benchmark, batch, profile."""


# Each command lives in its own module (tui_hpo.commands.gpu_*) and is registered here.

from tui_hpo.commands.gpu_check import check  # noqa: E402 - the group first, then its commands

gpu.add_command(check)
from tui_hpo.commands.gpu_batch import batch  # noqa: E402

gpu.add_command(batch)
from tui_hpo.commands.gpu_profile import profile  # noqa: E402

gpu.add_command(profile)
from tui_hpo.commands.gpu_benchmark import benchmark  # noqa: E402

gpu.add_command(benchmark)
