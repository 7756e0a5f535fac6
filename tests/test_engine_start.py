"""The engine starts without importing torch: the platform from NVML and how torch was built, the
models checked once per (model, arguments, versions). Where NVML cannot say which GPUs CUDA
shows, torch is asked; where torch cannot use a GPU NVML saw, the workers stop the sweep."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.sweep.model_cache import check_models_once
from engine.sweep.resolve import resolve_run
from engine.system import platform
from engine.system.platform import GpuInfo, probe_for_sweep
from tests.conftest import ROOT

TINY = ROOT / "tests" / "configs" / "tiny.yaml"


def gpu(index: int, name: str = "NVIDIA H200", free_mb: float = 140_000) -> GpuInfo:
    return GpuInfo(index=index, name=name, total_mb=143_000, free_mb=free_mb, compute_capability="9.0", bf16=True)


@pytest.fixture
def nvml_sees(monkeypatch: pytest.MonkeyPatch):
    def see(gpus: list[GpuInfo], cuda_build: str | None = "13.0") -> None:
        monkeypatch.setattr(platform, "_nvml_gpus", lambda: gpus)
        monkeypatch.setattr(platform, "torch_cuda_build", lambda: (True, cuda_build))
    return see


def test_torch_build_is_read_without_importing_torch() -> None:
    script = ("import sys; from engine.system.platform import torch_cuda_build as b; "
              "installed, cuda = b(); assert installed; import torch; "
              "assert cuda == torch.version.cuda, (cuda, torch.version.cuda); print('ok')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr


def test_gpus_as_cuda_numbers_them(nvml_sees) -> None:
    nvml_sees([gpu(0, free_mb=10), gpu(1, free_mb=20), gpu(2, free_mb=30)])
    info = probe_for_sweep({})
    assert info is not None and info.platform == "cuda" and info.cuda_version == "13.0"
    assert [g.free_mb for g in info.gpus] == [10, 20, 30]
    narrowed = probe_for_sweep({"CUDA_VISIBLE_DEVICES": "2,0"})
    assert narrowed is not None
    assert [(g.index, g.free_mb) for g in narrowed.gpus] == [(0, 30), (1, 10)], "renumbered from 0, in the given order"
    hidden = probe_for_sweep({"CUDA_VISIBLE_DEVICES": ""})
    assert hidden is not None and hidden.platform == "cpu" and not hidden.gpus


@pytest.mark.parametrize("environ", [{"CUDA_VISIBLE_DEVICES": "GPU-8f2c1e4a"}, {"CUDA_VISIBLE_DEVICES": "MIG-1/2/3"},
                                     {"CUDA_VISIBLE_DEVICES": "0,0"}, {"CUDA_VISIBLE_DEVICES": "3"}])
def test_only_torch_can_tell(nvml_sees, environ: dict[str, str]) -> None:
    nvml_sees([gpu(0), gpu(1)])
    assert probe_for_sweep(environ) is None


def test_unlike_gpus_need_pci_bus_order(nvml_sees) -> None:
    nvml_sees([gpu(0, "NVIDIA H200"), gpu(1, "NVIDIA L4")])
    assert probe_for_sweep({}) is None, "CUDA numbers unlike GPUs fastest first, NVML by bus"
    info = probe_for_sweep({"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    assert info is not None and [g.name for g in info.gpus] == ["NVIDIA H200", "NVIDIA L4"]


def test_a_cpu_only_torch_trains_on_the_cpu_and_says_why(nvml_sees) -> None:
    nvml_sees([gpu(0)], cuda_build=None)
    info = probe_for_sweep({})
    assert info is not None and info.platform == "cpu" and not info.gpus
    assert any("built without CUDA" in n for n in info.notes)


def test_models_are_checked_once_and_failures_never_cached(tmp_path: Path) -> None:
    cache = tmp_path / "models.json"
    config = resolve_run(None, str(TINY), {}).config
    assert check_models_once(config, cache) is True
    assert check_models_once(config, cache) is False, "the second start skips the check"
    other = config.model_copy(deep=True)
    other.train.model_kwargs = {"drop_rate": 0.1}
    assert check_models_once(other, cache) is True, "other arguments are checked again"
    bad = config.model_copy(deep=True)
    bad.train.model_kwargs = {"no_such_argument": 1}
    for _ in range(2):
        with pytest.raises(ConfigError, match="cannot be built"):
            check_models_once(bad, cache)
    missing = config.model_copy(deep=True)
    missing.train.weights = str(tmp_path / "absent.pth")
    with pytest.raises(ConfigError, match="no such weights file"):
        check_models_once(missing, cache)
    cache.write_text("{not json")
    assert check_models_once(config, cache) is True, "a broken cache is a cold one"


def test_a_warm_start_never_imports_torch(tmp_path: Path) -> None:
    """What `tui-hpo run` does before its workers start, in a fresh process: the second time the
    same models are asked for, neither the probe nor the model check imports torch."""
    script = (f"import sys; from engine.sweep.resolve import resolve_run; "
              f"from engine.sweep.model_cache import check_models_once; "
              f"check_models_once(resolve_run(None, {str(TINY)!r}, {{}}).config); "
              f"print('torch' in sys.modules)")
    env = {"XDG_CACHE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env,
                           timeout=120) for _ in range(2)]
    assert [r.stdout.strip() for r in runs] == ["True", "False"], [r.stderr[-2000:] for r in runs]
    # The first check listed timm's models: a name timm does not know is told at once, too.
    typo = (f"import sys; from engine.errors import ConfigError; from engine.sweep.resolve import resolve_run; "
            f"from engine.sweep.model_cache import check_models_once\n"
            f"typo = {{'train': {{'model': 'test_resnot'}}}}\n"
            f"try: check_models_once(resolve_run(None, {str(TINY)!r}, typo).config)\n"
            f"except ConfigError as exc: print(exc.key, exc.detail)\n"
            f"print('torch' in sys.modules)")
    told = subprocess.run([sys.executable, "-c", typo], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert told.stdout.splitlines() == ["train.model unknown timm model 'test_resnot' (similar: test_byobnet, "
                                        "test_coatnet, test_convnext, test_convnext2, test_convnext3)", "False"], \
        told.stdout + told.stderr[-2000:]


def test_timm_s_model_list_is_kept_per_timm_version_and_hints_as_timm_does(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The list stands for the installed timm only (another version's may name other models); it
    takes the names `timm.is_model` takes, deprecated ones too; the names offered with an unknown
    one are those `timm.list_models('*word*')` gives."""
    import json

    import timm

    from engine.system import timm_names
    from engine.training.models import list_timm_models

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert timm_names.known() is None
    listed = list_timm_models()
    assert timm_names.known() == listed and listed.names == timm.list_models()
    deprecated = next(iter(timm.models.get_deprecated_models()))
    assert timm.is_model(deprecated) and listed.knows(deprecated), "a deprecated name timm still takes"
    assert listed.knows("resnet18.a1_in1k"), "a pretrained tag, as timm.is_model"
    assert not listed.knows("resnet_51")
    saved = tmp_path / "tui-hpo" / timm_names.CACHE_FILE
    saved.write_text(json.dumps({**json.loads(saved.read_text()), "timm": "0.0.1"}))
    assert timm_names.known() is None, "another timm's list"
    for name in ("resnet_51", "vit_nano_patch3", "zzz"):
        near = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        hint = f" (similar: {', '.join(near)})" if near else ""
        assert timm_names.unknown_model(name, listed.names, "k").detail == f"unknown timm model '{name}'{hint}"


class Silent:
    def event(self, row: dict) -> None: ...

    def progress(self, status: object) -> None: ...


def test_a_gpu_torch_cannot_use_stops_the_sweep_in_one_line(tmp_path: Path) -> None:
    """NVML sees a GPU, torch cannot use it (here: there is none; on a server, a driver older than
    torch's CUDA): the workers say why and the sweep stops, instead of failing every trial."""
    from engine.storage import Store, default_url
    from engine.storage.states import SweepState
    from engine.sweep.engine import Engine
    from tests.test_workers import machine

    resolved = resolve_run(None, str(TINY), {}, environ={}, info=machine([40_000]))
    assert resolved.platform == "cuda"
    url = default_url(tmp_path)
    with pytest.raises(ConfigError, match=r"torch cannot use cuda:0 here .* --device cpu") as raised:
        Engine(resolved, url, tmp_path, "tiny", Silent()).run()
    assert raised.value.key == "resources.device"
    log = (tmp_path / "tiny" / "engine.log").read_text()
    assert "torch cannot use cuda:0: torch.cuda.is_available() is False" in log
    store = Store(url)
    row = store.sweep("tiny")
    assert row is not None and store.sweep_state(row.study_id) == SweepState.STOPPED
    # No trial was started: the search's first trial, the config's own recipe, waits for a resume
    assert store.state_counts(row.study_id) == {"WAITING": 1}, "no trial was started"
