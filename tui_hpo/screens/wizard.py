"""The sweep wizard: preset, data, models, tier, budget and parallelism, with the resulting YAML
beside it. Every change is validated at once, with the same checks `tui-hpo run` applies, and
flagged inline; Start saves the YAML and launches the engine in the background."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.syntax import Syntax
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Checkbox, Footer, Input, Label, RadioButton, RadioSet, Select, SelectionList, Static

from engine import config as cfg
from engine.errors import UserError
from engine.system import hf_cache, timm_names
from tui_hpo.screens.base import WorkerScreen

TIERS = {
    "basic": ("Basic: random search, no pruning", {"sampler": {"name": "random"}, "pruner": {"name": "none"}}),
    "advanced": ("Advanced: TPE with pruning (the default)", {}),
    "multi": ("Multi-objective: F1 up, training time down (NSGA-II)",
              {"objective": {"metric": ["val_f1", "train_time"]}, "sampler": {"name": "nsga2"},
               "pruner": {"name": "none"}}),
    "expert": ("Expert: Ray Tune, ASHA early stopping (PBT in the config)",
               {"backend": "ray", "scheduler": {"name": "asha"}}),
}
CACHED_MARK = "●"  # beside a model whose pretrained weights are in the local Hugging Face cache
SECONDS_PER_EPOCH = {"cpu": 1.5, "mps": 0.6, "cuda": 0.3}  # tiny models on small data; a first guess
MODEL_LIST_TIMEOUT_S = 60


def preset_layer(name: str) -> dict[str, Any]:
    return cfg.load_layer(cfg.preset_path(name), "cpu")


class WizardScreen(WorkerScreen):
    CSS_PATH = "wizard.tcss"
    BINDINGS = [Binding("f2", "save", "save YAML"), Binding("f5", "start", "start sweep")]
    _platform: tuple[str, dict[str, Any]] | None = None  # set by _platform_profile on first use

    class Checked(Message, bubble=False):
        def __init__(self, field: str, ok: bool, text: str) -> None:
            super().__init__()
            self.field, self.ok, self.text = field, ok, text

    class ModelsListed(Message, bubble=False):
        def __init__(self, listed: timm_names.Listed | None, cached: set[str]) -> None:
            super().__init__()
            self.listed, self.cached = listed, cached

    @dataclass
    class Start(Message):
        """Start the sweep of this config file under this study name (the app starts the engine)."""

        config: Path
        name: str

    def compose(self) -> ComposeResult:
        presets = cfg.preset_names()
        with Horizontal(id="wizard"):
            with VerticalScroll(id="wizard-form"):
                yield Label("Preset", classes="field-label")
                yield Select([(p, p) for p in presets], value="quick", allow_blank=False, id="preset")
                yield Static(id="preset-info", classes="hint")
                yield Label("Study name", classes="field-label")
                yield Input(id="name", placeholder="quick")
                yield Static(id="name-check", classes="check")
                yield Label("Data", classes="field-label")
                with RadioSet(id="data-source"):
                    yield RadioButton("embedded digits (1,797 images, offline)", value=True, id="embedded")
                    yield RadioButton("a folder: ImageFolder tree, or labels CSV + images", id="folder")
                yield Input(id="data-path", placeholder="/path/to/images", disabled=True)
                yield Static(id="data-check", classes="check")
                yield Label("Models (space toggles; type to search)", classes="field-label")
                yield Input(id="model-search", placeholder="search timm models, e.g. resnet")
                yield SelectionList[str](id="models")
                yield Checkbox("start from pretrained weights (● cached)", id="pretrained")
                yield Static(id="models-check", classes="check")
                yield Label("Tier", classes="field-label")
                with RadioSet(id="tier"):
                    for key, (label, _layer) in TIERS.items():
                        yield RadioButton(label, value=key == "advanced", id=f"tier-{key}")
                with Horizontal(classes="numbers"):
                    with Vertical():
                        yield Label("Trials", classes="field-label")
                        yield Input(id="n-trials", type="integer")
                    with Vertical():
                        yield Label("Epochs", classes="field-label")
                        yield Input(id="epochs", type="integer")
                    with Vertical():
                        yield Label("Timeout (min)", classes="field-label")
                        yield Input(id="timeout", type="number", placeholder="none")
                    with Vertical():
                        yield Label("Parallel", classes="field-label")
                        yield Input(id="parallel", type="integer", placeholder="auto")
                yield Static(id="budget-check", classes="check")
                with Horizontal(id="wizard-buttons"):
                    yield Button("Save YAML (F2)", id="save")
                    yield Button("Start sweep (F5)", id="start", variant="success")
            with Vertical(id="wizard-side"):
                yield Static(id="estimate", classes="panel")
                yield Static(id="preview", classes="panel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#preview").border_title = "sweep YAML"
        self.query_one("#estimate").border_title = "what it means"
        self.all_models: list[str] = []
        self.listed: timm_names.Listed | None = None  # timm's names, once listed
        self.cached: set[str] = set()  # models with pretrained weights in the local HF cache
        self.problems: dict[str, str] = {}
        self.data_ok = True
        # backend ray: Ray Tune's absence, once looked for (check_ray); None: not looked for yet
        self.ray_problem: str | None = None
        self.ray_checked: bool | None = None  # None: never asked; False: asked, no answer yet
        self._apply_preset("quick")
        self.list_models()

    # ------------------------------------------------------------ fields

    def _apply_preset(self, name: str) -> None:
        layer = preset_layer(name)
        self.preset = name
        budget, train = layer.get("budget", {}), layer.get("train", {})
        self.query_one("#n-trials", Input).value = str(budget.get("n_trials", 20))
        self.query_one("#epochs", Input).value = str(train.get("epochs", 3))
        self.query_one("#name", Input).placeholder = f"{name}-{time.strftime('%m%d-%H%M')}"
        self.preset_budget = (str(budget.get("n_trials", 20)), str(train.get("epochs", 3)))
        models = (layer.get("search_space", {}).get("model") or {}).get("choices") or [train.get("model")]
        self.preset_models = [str(m) for m in models if m]
        self._fill_models(self.preset_models)
        self.query_one("#preset-info", Static).update(Text(layer.get("description", ""), style="dim"))
        self.refresh_preview()

    def _fill_models(self, selected: list[str], query: str = "") -> None:
        box = self.query_one("#models", SelectionList)
        chosen = set(selected)
        names = [m for m in self.all_models if query in m][:200] if query else []
        box.clear_options()
        for name in dict.fromkeys([*selected, *names]):
            prompt = f"{name} {CACHED_MARK}" if name in self.cached else name
            box.add_option((prompt, name, name in chosen))

    @work(thread=True, exit_on_error=False, group="wizard-models")
    def list_models(self) -> None:
        """timm's model names, as listed for the installed timm (engine.system.timm_names), else
        from a subprocess that lists and remembers them (importing timm here would import torch);
        and the models whose pretrained weights are in the local Hugging Face cache."""
        listed = timm_names.known()
        if listed is None:
            out = subprocess.run([sys.executable, "-c", "import json; from engine.training.models import "
                                  "list_timm_models; print(json.dumps(list_timm_models()._asdict()))"],
                                 capture_output=True, text=True, timeout=MODEL_LIST_TIMEOUT_S)
            with contextlib.suppress(ValueError, TypeError):
                listed = timm_names.Listed(**json.loads(out.stdout))
        self.post_message(self.ModelsListed(listed, hf_cache.cached_timm_models()))

    @on(ModelsListed)
    def models_listed(self, message: ModelsListed) -> None:
        self.listed, self.cached = message.listed, message.cached
        self.all_models = message.listed.names if message.listed else []
        self._fill_models(self._selected_models(), self.query_one("#model-search", Input).value.strip().lower())
        self.refresh_preview()

    @on(Select.Changed, "#preset")
    def preset_changed(self, event: Select.Changed) -> None:
        if event.value != getattr(self, "preset", None):
            self._apply_preset(str(event.value))

    @on(RadioSet.Changed, "#data-source")
    def source_changed(self, event: RadioSet.Changed) -> None:
        folder = event.pressed.id == "folder"
        path = self.query_one("#data-path", Input)
        path.disabled = not folder
        if folder:
            path.focus()
            self.check_data(path.value)
        else:
            self.data_ok = True
            self.query_one("#data-check", Static).update("")
        self.refresh_preview()

    @on(Input.Changed, "#data-path")
    def path_changed(self, event: Input.Changed) -> None:
        self.check_data(event.value)

    @work(thread=True, exclusive=True, exit_on_error=False, group="wizard-data")
    def check_data(self, path: str) -> None:
        """Scan the folder as the engine will: layout, classes, images, what would be skipped."""
        from engine.datasets.scan import scan

        if not path.strip():
            self.post_message(self.Checked("data", False, "give a folder"))
            return
        try:
            found = scan(cfg.DataConfig(path=path.strip()))
        except UserError as exc:
            self.post_message(self.Checked("data", False, exc.detail))
            return
        counts = found.class_counts()
        text = (f"{found.layout}: {found.count} images in {len(found.classes)} classes "
                f"({', '.join(f'{k} {v}' for k, v in list(counts.items())[:6])}"
                f"{', ...' if len(counts) > 6 else ''})")
        if found.columns:  # recognised, not set: the user checks the choice here
            text += f"; {found.columns}"
        if found.skipped:
            text += f"; {found.skipped_summary()}"
        choices = self._data_choices(path.strip(), found)
        if choices:
            text += "\n" + "\n".join(choices)
        self.post_message(self.Checked("data", True, text))

    def _data_choices(self, path: str, found: Any) -> list[str]:
        """What the sweep will decide from this data with the chosen preset (image size,
        augmentation, epochs from min_steps), as `tui-hpo run` will on this machine."""
        from engine.datasets import defaults

        platform, base = self._platform_profile()
        try:
            merged = cfg.deep_merge(cfg.deep_merge(base, preset_layer(self.preset)), {"data": {"path": path}})
            config = cfg.validate(merged, None)
        except UserError:
            return []  # the preview names the problem
        config.resources.device = platform
        cfg.apply_batch_multiplier(config)
        return defaults.apply(config, found)

    def _platform_profile(self) -> tuple[str, dict[str, Any]]:
        """The platform a sweep started here runs on, and its profile's settings: NVML is asked
        once per wizard, not on every keystroke in the data path."""
        if self._platform is None:
            from engine.system.platform import choose_platform, probe_for_sweep, profile

            info = probe_for_sweep()  # None where only torch could tell which GPUs CUDA shows: then no profile
            platform = choose_platform(info, "auto") if info is not None else "cpu"
            self._platform = platform, (profile(info, platform) if info is not None else {})
        return self._platform

    @work(thread=True, exit_on_error=False, group="wizard-ray")
    def check_ray(self) -> None:
        """Whether Ray Tune imports, asked once, when the Expert tier is first chosen, in a
        subprocess: the import takes seconds, and fails under Textual's captured stdout (which
        has no `encoding`); the engine imports it, not the TUI."""
        out = subprocess.run([sys.executable, "-c", "from engine.tune.schedulers import ray_missing; "
                              "print(ray_missing() or '')"], capture_output=True, text=True,
                             timeout=MODEL_LIST_TIMEOUT_S)
        problem = out.stdout.strip() if out.returncode == 0 else \
            "backend: Ray Tune does not import: " + (out.stderr.strip().splitlines() or ["no output"])[-1]
        self.post_message(self.Checked("ray", not problem, problem))

    @on(Checked)
    def show_check(self, message: Checked) -> None:
        if message.field == "ray":
            self.ray_checked, self.ray_problem = True, None if message.ok else message.text
            self.refresh_preview()
        if message.field == "data":
            self.data_ok = message.ok
            style = "green" if message.ok else "bold red"
            self.query_one("#data-check", Static).update(Text(("✓ " if message.ok else "✗ ") + message.text,
                                                              style=style))
            self.refresh_preview()

    @on(Input.Changed, "#model-search")
    def search_models(self, event: Input.Changed) -> None:
        self._fill_models(self._selected_models(), event.value.strip().lower())

    def _selected_models(self) -> list[str]:
        return list(self.query_one("#models", SelectionList).selected)

    @on(SelectionList.SelectedChanged)
    @on(Checkbox.Changed, "#pretrained")
    @on(RadioSet.Changed, "#tier")
    @on(Input.Changed, "#name, #n-trials, #epochs, #timeout, #parallel")
    def fields_changed(self) -> None:
        self.refresh_preview()

    # ------------------------------------------------------------ the config

    def study_name(self) -> str:
        """A new study each time by default: the same name would resume that study."""
        name = self.query_one("#name", Input)
        return name.value.strip() or name.placeholder

    def layer(self) -> dict[str, Any]:
        """The YAML the wizard writes: the preset, and what the user changed on top of it."""
        layer: dict[str, Any] = {"name": self.study_name(), "extends": self.preset}
        if self.query_one("#data-source", RadioSet).pressed_button.id == "folder":
            layer["data"] = {"path": self.query_one("#data-path", Input).value.strip()}
        models = self._selected_models()
        if models and models != self.preset_models:
            layer["search_space"] = {"model": {"choices": models}} if len(models) > 1 else {"model": None}
            layer.setdefault("train", {})["model"] = models[0]
        if self.query_one("#pretrained", Checkbox).value:
            layer.setdefault("train", {})["pretrained"] = True
        tier = str(self.query_one("#tier", RadioSet).pressed_button.id).removeprefix("tier-")
        layer = cfg.deep_merge(layer, TIERS[tier][1])
        defaults = {"#n-trials": self.preset_budget[0], "#epochs": self.preset_budget[1]}
        for field, section, key, cast in (("#n-trials", "budget", "n_trials", int), ("#epochs", "train", "epochs", int),
                                          ("#parallel", "resources", "parallel", int)):
            text = self.query_one(field, Input).value.strip()
            if text and text != defaults.get(field):
                try:
                    layer.setdefault(section, {})[key] = cast(text)
                except ValueError:
                    layer.setdefault(section, {})[key] = text  # validation names the field
        timeout = self.query_one("#timeout", Input).value.strip()
        if timeout:
            try:
                layer.setdefault("budget", {})["timeout"] = float(timeout) * 60
            except ValueError:
                layer.setdefault("budget", {})["timeout"] = timeout
        return layer

    def validate(self, layer: dict[str, Any]) -> str | None:
        """The first problem, as `tui-hpo run` would report it, or None."""
        try:
            merged = cfg.deep_merge(preset_layer(self.preset), {k: v for k, v in layer.items() if k != "extends"})
            config = cfg.validate(merged, None)
        except UserError as exc:
            return str(exc)
        for i, name in enumerate(config.models()):
            if self.listed is not None and not self.listed.knows(name):
                return str(timm_names.unknown_model(name, self.listed.names, config.model_key(i)))
        if not self.data_ok:
            return "data.path: " + str(self.query_one("#data-check", Static).render()).removeprefix("✗ ")
        if config.backend == "ray" and not self.ray_checked:
            if self.ray_checked is None:
                self.ray_checked = False
                self.check_ray()
            return "backend: looking for Ray Tune"
        if config.backend == "ray" and self.ray_problem:
            return self.ray_problem
        try:
            self._study = cfg.study_name(None, config.name)  # the rule `tui-hpo run` applies
        except UserError as exc:
            return str(exc)
        self._config = config
        return None

    def refresh_preview(self) -> None:
        if not self.is_mounted:
            return
        layer = self.layer()
        problem = self.validate(layer)
        from engine.artifacts import dump_yaml

        preview = dump_yaml(layer)
        self.query_one("#preview", Static).update(Syntax(preview, "yaml", background_color="default"))
        status = Text("✗ " + problem, style="bold red") if problem else Text("✓ ready to start (F5)",
                                                                                     style="bold green")
        self.query_one("#budget-check", Static).update(status)
        self.query_one("#models-check", Static).update(self._pretrained_hint())
        self.query_one("#start", Button).disabled = problem is not None
        self.query_one("#save", Button).disabled = problem is not None
        # The side panel is always in view, also when the field at fault is scrolled away.
        self.query_one("#estimate", Static).update(Text.assemble(status, "\n", self._estimate()) if problem is None
                                                   else status)

    def _pretrained_hint(self) -> Text:
        """Which selected models have pretrained weights at hand, when the user asks for them."""
        if not self.query_one("#pretrained", Checkbox).value:
            return Text(f"{CACHED_MARK} pretrained weights in the local cache" if self.cached else "", style="dim")
        missing = [m for m in self._selected_models() if m not in self.cached]
        if not missing:
            return Text(f"{CACHED_MARK} all selected models have pretrained weights in the local cache", style="dim")
        then = ("HF_HUB_OFFLINE is set: the sweep will refuse to start" if hf_cache.offline()
                else "downloaded once when the sweep starts")
        return Text(f"not in the local cache: {', '.join(missing[:4])} ({then})", style="yellow")

    def _estimate(self) -> Text:
        config = self._config
        platform = getattr(self.app, "platform_name", "cpu")
        parallel = config.resources.parallel or (2 if platform == "cpu" else 1)
        per_trial = config.train.epochs * config.data.folds * SECONDS_PER_EPOCH.get(platform, 1.5)
        total = config.budget.n_trials * per_trial / parallel
        text = Text()
        text.append(f"{config.budget.n_trials} trials of ", style="bold")
        text.append(f"{config.train.epochs} epoch(s), {len(config.models())} model(s): "
                    f"{', '.join(config.models()[:4])}\n")
        stopping = f"Ray Tune, scheduler {config.scheduler.name}" if config.scheduler else \
            f"pruner {config.pruner.name}"
        text.append(f"sampler {config.sampler.name}, {stopping}, objective {', '.join(config.objective.metrics())}\n")
        text.append(f"workers: {parallel if config.resources.parallel else 'from the platform profile'}")
        if config.budget.timeout:
            text.append(f", stops starting trials after {config.budget.timeout / 60:g} min")
        text.append(f"\nroughly {total / 60:.0f} min on the embedded data (pruning makes it shorter)", style="dim")
        return text

    # ------------------------------------------------------------ actions

    def _save(self) -> Path | None:
        layer = self.layer()
        problem = self.validate(layer)
        if problem:
            self.notify(problem, severity="error")
            return None
        from engine.artifacts import dump_yaml, write_atomic

        path = Path(self.app.workdir).resolve() / "configs" / f"{self._study}.yaml"
        write_atomic(path, dump_yaml(layer, "# Written by the tui-hpo wizard. Run it: tui-hpo run --config THIS"))
        return path

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        path = self._save()
        if path is not None:
            self.notify(f"saved {path}")

    @on(Button.Pressed, "#start")
    def action_start(self) -> None:
        path = self._save()
        if path is None:
            return
        self.post_message(self.Start(path, self._study))
