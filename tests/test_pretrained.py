"""Fine-tuning: timm's pretrained weights through the Hugging Face cache, per-model weight files,
and the knobs (freeze_epochs, backbone_lr_scale, layer_decay). Never touches the network: the
cache is built on the spot in timm's layout, offline, and any connection attempt fails the test."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from engine.config import DataConfig, SweepConfig, TrainConfig, resolve
from engine.config.schema import validate
from engine.datasets.scan import scan, splits
from engine.errors import ConfigError
from engine.sweep.model_cache import check_models_once, model_keys
from engine.system import hf_cache
from engine.training.fit import Runtime, build_optimizer, build_schedule, fit
from engine.training.models import build_model, head_parameters
from engine.training.tensors import load
from tests.conftest import listed_models, run_cli

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, offline Hugging Face cache: HF_HOME for this process and its children (and
    huggingface_hub's constants, read once at its import)."""
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return tmp_path / "hf" / "hub"


def cache_weights(hub: Path, name: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """`name`'s ImageNet-shaped weights (seeded, not trained) where timm looks for its default tag."""
    repo = timm.models.get_pretrained_cfg(name).hf_hub_id
    folder = hf_cache.repo_folder(repo, hub)
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(COMMIT)
    (folder / "snapshots" / COMMIT).mkdir(parents=True)
    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in timm.create_model(name).state_dict().items()}
    save_file(state, folder / "snapshots" / COMMIT / "model.safetensors")
    return state


def test_pretrained_weights_load_from_the_cache_with_a_head_for_the_data(hub: Path) -> None:
    saved = cache_weights(hub, "test_resnet")
    cfg = TrainConfig(model="test_resnet", pretrained=True, image_size=32)
    model = build_model(cfg, num_classes=3)
    stem = next(k for k in saved if k.endswith("weight") and saved[k].ndim == 4)
    assert torch.equal(model.state_dict()[stem], saved[stem]), "the backbone is the cached one"
    assert model.get_classifier().weight.shape == (3, saved["fc.weight"].shape[1]), "the head fits the data"
    scratch = build_model(cfg.model_copy(update={"pretrained": False}), num_classes=3)
    assert not torch.equal(scratch.state_dict()[stem], saved[stem]), "without pretrained: random"
    assert hf_cache.cached_timm_models(hub) == {"test_resnet", "test_resnet.r160_in1k"}


def test_a_weights_map_gives_each_model_its_own_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(2)
    other_classes = timm.create_model("test_resnet", num_classes=5).state_dict()
    pth = tmp_path / "resnet.pth"
    torch.save({"meta": {"note": "our checkpoint layout"}, "state_dict": other_classes}, pth)
    torch.manual_seed(3)
    same_classes = {k: v.contiguous() for k, v in timm.create_model("test_efficientnet", num_classes=3)
                    .state_dict().items()}
    safe = tmp_path / "effnet.safetensors"
    save_file(same_classes, safe)
    weights = {"test_resnet": str(pth), "test_efficientnet": str(safe)}
    cfg = TrainConfig(model="test_resnet", weights=weights, image_size=32)
    with caplog.at_level(logging.INFO, logger="tui_hpo.worker"):
        resnet = build_model(cfg, num_classes=3)
    assert torch.equal(resnet.state_dict()["conv1.0.weight"], other_classes["conv1.0.weight"])
    assert resnet.fc.weight.shape[0] == 3 and "reinitialised" in caplog.text and "fc.weight (3, " in caplog.text
    effnet = build_model(cfg.model_copy(update={"model": "test_efficientnet"}), num_classes=3)
    assert all(torch.equal(effnet.state_dict()[k], v) for k, v in same_classes.items()), "same classes: head kept"
    convnext = build_model(cfg.model_copy(update={"model": "test_convnext"}), num_classes=3)  # not in the map
    assert convnext.get_classifier().weight.shape[0] == 3
    with pytest.raises(ConfigError, match="does not fit model 'test_convnext'") as raised:
        build_model(cfg.model_copy(update={"model": "test_convnext", "weights": str(pth)}), num_classes=3)
    assert raised.value.key == "train.weights"
    space = {"model": {"choices": ["test_resnet", "test_efficientnet"]}}
    with pytest.raises(ConfigError, match=r"train\.weights\.test_vit: 'test_vit' is not a model this sweep"):
        validate({"train": {"weights": {"test_vit": str(pth)}}, "search_space": space}, None)
    missing = validate({"train": {"weights": {"test_resnet": str(tmp_path / "absent.pt")}},
                        "search_space": space}, None)
    with pytest.raises(ConfigError, match=r"train\.weights\.test_resnet: no such weights file"):
        check_models_once(missing, tmp_path / "models.json")


@pytest.mark.parametrize(("name", "content", "needle"), [
    ("notes.pt", b"these are my notes\n", "is not a PyTorch checkpoint"),
    ("cut.safetensors", b"\x40\x00\x00\x00\x00\x00\x00\x00{\"a\":", "is not a safetensors file"),
    ("text.safetensors", b"hello", "is not a safetensors file"),
])
def test_a_weights_file_that_is_not_weights_is_refused_before_the_study(name: str, content: bytes, needle: str,
                                                                       tmp_path: Path) -> None:
    """A text file or a truncated download as train.weights: every trial failed with a KeyError
    or a safetensors error, and `train` ended in a traceback."""
    (tmp_path / name).write_bytes(content)
    config = tmp_path / "w.yaml"
    config.write_text(f"train: {{model: test_resnet, weights: {tmp_path / name}, epochs: 1}}\n")
    for command in (["run", "--no-tui", "--workdir", str(tmp_path / "runs")], ["train"]):
        result = run_cli(*command, "--config", str(config))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert f"train.weights: {tmp_path / name} {needle}" in lines[0], lines[0]
    assert not (tmp_path / "runs" / "hpo.db").exists()


def test_offline_and_not_cached_fails_before_the_study_exists(hub: Path, tmp_path: Path) -> None:
    config = tmp_path / "pretrained.yaml"
    config.write_text("train: {model: test_convnext, epochs: 1, image_size: 16, pretrained: true}\n"
                      "budget: {n_trials: 1}\nresources: {parallel: 1}\n")
    workdir = tmp_path / "runs"
    result = run_cli("run", "--config", str(config), "--workdir", str(workdir), "--no-tui",
                     env={"HF_HOME": str(hub.parent), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "train.pretrained" in lines[0] and "'test_convnext'" in lines[0]
    assert str(hub / "models--timm--test_convnext.r160_in1k") in lines[0]
    assert not workdir.exists() or not any(workdir.rglob("*")), "nothing written: no hpo.db, no study folder"


def test_the_model_check_finds_cached_weights_and_remembers_pretrained(hub: Path, tmp_path: Path) -> None:
    cache_weights(hub, "test_resnet")
    config = validate({"train": {"model": "test_resnet", "pretrained": True}}, None)
    assert check_models_once(config, tmp_path / "models.json") is True
    plain = config.model_copy(deep=True)
    plain.train.pretrained = False
    assert model_keys(plain) != model_keys(config), "pretrained is part of the key"
    searched = validate({"train": {"model": "test_convnext"},
                         "search_space": {"pretrained": {"choices": [False, True]}}}, None)
    with pytest.raises(ConfigError, match="test_convnext"):
        check_models_once(searched, tmp_path / "models.json")  # a trial may pick pretrained: it must be there


def test_pretrained_switches_presets_to_their_fine_tuning_ranges() -> None:
    tuned = resolve({}, preset="quick", environ={}, flags={"train": {"pretrained": True}}, platform="cpu")
    assert tuned.search_space["lr"].low == 1.0e-5 and tuned.train.warmup_ratio == 0.1


def test_freeze_epochs_train_the_head_only() -> None:
    torch.set_num_threads(1)
    cfg_data = DataConfig(subset=200)
    data = load(scan(cfg_data), cfg_data, 16)
    split = splits(data.labels.numpy(), cfg_data)[0]
    cfg = TrainConfig(model="test_resnet", epochs=1, freeze_epochs=1, image_size=16, augment=0, hflip=False,
                      batch_size=32, lr=1e-2, warmup_ratio=0.0)
    torch.manual_seed(cfg.seed)
    start = {k: v.clone() for k, v in build_model(cfg, data.num_classes).state_dict().items()}
    model, _history = fit(cfg, data, split, Runtime())
    head = {k for k, p in model.named_parameters() if any(p is h for h in head_parameters(model))}
    after = model.state_dict()
    assert head and all(not torch.equal(after[k], start[k]) for k in head), "the head trained"
    frozen = [k for k in start if k not in head and not k.endswith("num_batches_tracked")]
    assert all(torch.equal(after[k], start[k]) for k in frozen), "backbone weights and BatchNorm statistics kept"
    thawed, _ = fit(cfg.model_copy(update={"epochs": 2}), data, split, Runtime())
    assert not torch.equal(thawed.state_dict()["conv1.0.weight"], start["conv1.0.weight"]), "epoch 2 trains all"


def test_backbone_lr_scale_and_layer_decay_give_groups_their_own_lr() -> None:
    model = timm.create_model("test_resnet", num_classes=3)
    head = {id(p) for p in head_parameters(model)}
    cfg = TrainConfig(model="test_resnet", lr=0.01, backbone_lr_scale=0.1)
    optimizer = build_optimizer(model, cfg)
    lrs = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert len(lrs) == len(list(model.parameters())), "every parameter in exactly one group"
    assert {lr for i, lr in lrs.items() if i in head} == {0.01}
    assert all(lr == pytest.approx(0.001) for i, lr in lrs.items() if i not in head)
    assert optimizer.param_groups[0]["lr"] == 0.01, "group 0 (the lr recorded per epoch) is the head's"
    schedule = build_schedule(optimizer, cfg.model_copy(update={"warmup_ratio": 0.0}), steps=10)
    schedule.step_update(5)
    ratio = {g["lr"] / lrs[id(g["params"][0])] for g in optimizer.param_groups}
    assert max(ratio) == pytest.approx(min(ratio)), "the schedule keeps the scale"
    plain = build_optimizer(model, cfg.model_copy(update={"backbone_lr_scale": 1.0}))
    assert {g["lr"] for g in plain.param_groups} == {0.01}

    vit = timm.create_model("test_vit", num_classes=3, img_size=32)
    decayed = build_optimizer(vit, TrainConfig(model="test_vit", lr=0.01, layer_decay=0.5))
    by_name = {n: g["lr"] for n, p in vit.named_parameters() for g in decayed.param_groups
               if any(p is q for q in g["params"])}
    assert by_name["head.weight"] == 0.01
    assert by_name["patch_embed.proj.weight"] < by_name["blocks.0.attn.qkv.weight"] < by_name["head.weight"]


def test_new_keys_are_searchable() -> None:
    config: SweepConfig = validate({"search_space": {
        "pretrained": {"choices": [True, False]}, "freeze_epochs": {"low": 0, "high": 2},
        "backbone_lr_scale": {"low": 0.05, "high": 1.0, "log": True}, "layer_decay": {"low": 0.6, "high": 0.9}}}, None)
    assert set(config.search_space) == {"pretrained", "freeze_epochs", "backbone_lr_scale", "layer_decay"}
    with pytest.raises(ConfigError, match="backbone_lr_scale"):
        validate({"search_space": {"backbone_lr_scale": {"low": 0.5, "high": 2.0}}}, None)


def test_the_wizard_offers_pretrained_and_marks_cached_models(hub: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from textual.widgets import Checkbox, SelectionList, Static

    from tests.test_tui import text_of, wait_for
    from tui_hpo.app import make_app

    cache_weights(hub, "test_resnet")
    listed_models(monkeypatch, tmp_path, ["test_resnet", "test_efficientnet", "test_convnext"])  # no timm import

    async def scenario() -> None:
        app = make_app(workdir=tmp_path, mode="wizard")
        async with app.run_test(size=(120, 40)) as pilot:
            wizard = app.screen
            models = wizard.query_one("#models", SelectionList)
            await wait_for(pilot, lambda: wizard.cached)
            prompts = {models.get_option_at_index(i).value: str(models.get_option_at_index(i).prompt)
                       for i in range(models.option_count)}
            assert prompts["test_resnet"].endswith("●") and "●" not in prompts["test_convnext"]
            wizard.query_one("#pretrained", Checkbox).value = True
            await wait_for(pilot, lambda: "pretrained: true" in text_of(wizard.query_one("#preview", Static)))
            hint = text_of(wizard.query_one("#models-check", Static))
            assert "test_efficientnet" in hint and "HF_HUB_OFFLINE" in hint and "test_resnet" not in hint

    asyncio.run(scenario())
