"""The sweep config's schema: sections, their keys and bounds, and the rules across keys.

pydantic checks types, bounds and unknown keys; `check()` adds the cross-field rules. Errors name
the key path in one line (`search_space.lr.low: ...`); the loader adds the file.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from engine.config.names import check_study_name
from engine.config.space import PARAM_ALIASES, ParamSpec, check_space
from engine.errors import ConfigError

MetricName = Literal["val_f1", "val_accuracy", "val_loss", "train_loss", "train_time"]
METRIC_DIRECTIONS = {
    "val_f1": "maximize", "val_accuracy": "maximize",
    "val_loss": "minimize", "train_loss": "minimize", "train_time": "minimize",
}
METRIC_ALIASES = {
    "f1": "val_f1", "macro_f1": "val_f1", "f1_macro": "val_f1", "val_macro_f1": "val_f1",
    "accuracy": "val_accuracy", "acc": "val_accuracy", "val_acc": "val_accuracy",
    "loss": "val_loss", "time": "train_time", "duration": "train_time",
}


def canonical_metric(name: str) -> str:
    """`eval/f1`, `val/accuracy`, `val_acc` ... -> the metric key we record."""
    raw = name.strip()
    for prefix in ("eval/", "val/", "eval_", "validation/"):
        if raw.startswith(prefix):
            raw = raw[len(prefix):]
            if raw.startswith("train"):
                break
            raw = METRIC_ALIASES.get(raw, f"val_{raw}" if not raw.startswith("val_") else raw)
            break
    if raw.startswith("train/"):
        raw = "train_" + raw[len("train/"):]
    return METRIC_ALIASES.get(raw, raw)


class Section(BaseModel):
    # No inf/nan anywhere: `lr: .inf` would validate (> 0) and then fail every trial.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(Section):
    path: str | None = Field(None, min_length=1)  # None: the embedded digits dataset ("" is not ".")
    labels: str | None = Field(None, min_length=1)  # CSV layout: the labels file
    # None: recognised by name (`filename`, `image_id`, `label`, `category`, ...; see datasets.scan)
    id_column: str | None = Field(None, min_length=1)
    label_column: str | None = Field(None, min_length=1)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    folds: int = Field(1, ge=1, le=20)
    subset: int | None = Field(None, ge=4)  # about this many images (each class its share, 2 at least): fast screening
    split_seed: int = Field(0, ge=0)
    cache_limit_mb: int = Field(2048, ge=0)
    # A validation set of the user's own (same layouts as `path`), used instead of a split; and a
    # test set, never used to choose, evaluated once on the best trial when the sweep ends.
    val: str | None = Field(None, min_length=1)
    test: str | None = Field(None, min_length=1)


class EarlyStoppingConfig(Section):
    """A trial stops when its objective has not improved by more than `min_delta` for
    `patience` epochs, and keeps its best epoch's weights and value."""

    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.0, ge=0)


class TrainConfig(Section):
    model: str = "test_resnet"
    # A checkpoint on disk (.safetensors, .pt, .pth), or one per model ({convnext_tiny: /models/cnx.safetensors}):
    # a model not in the map starts from `pretrained` or random weights. Never downloaded.
    weights: Annotated[str, Field(min_length=1)] | dict[str, Annotated[str, Field(min_length=1)]] | None = None
    # timm's pretrained weights for the model, from the Hugging Face cache (HF_HOME); fetched
    # once before the sweep when not cached and online (engine.sweep.model_cache).
    pretrained: bool = False
    freeze_epochs: int = Field(0, ge=0)  # the first N epochs train the classifier head only
    backbone_lr_scale: float = Field(1.0, gt=0, le=1)  # the backbone's lr = lr x this; the head's = lr
    layer_decay: float | None = Field(None, gt=0, le=1)  # layer-wise lr decay (ViT-style models); None: off
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(3, ge=1)
    # Training length in optimizer steps, which holds across dataset sizes where epochs do not:
    # epochs rise until a trial takes at least min_steps, and fall (to one at least) so it takes
    # at most max_steps. Resolved once per sweep (engine.datasets.defaults), at the largest
    # batch the space can pick, so every trial gets the same number of epochs.
    min_steps: int | None = Field(None, ge=1)
    max_steps: int | None = Field(None, ge=1)
    early_stopping: EarlyStoppingConfig | None = None
    # "auto": the largest batch that fits each model on the GPU, measured when the sweep starts
    # (engine.system.batch_sizes); on a CPU or MPS machine the platform's usual batch.
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = 64
    accum_steps: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)
    scheduler: Literal["cosine", "step", "none"] = "cosine"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    step_gamma: float = Field(0.1, gt=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    drop_path: float = Field(0.0, ge=0, lt=1)
    # "auto": from the data (engine.datasets.defaults): the image size from the images' own
    # sizes, augmentation and mirroring on for photos and off for small glyph-like images.
    image_size: Annotated[int, Field(ge=8, le=1024)] | Literal["auto"] = "auto"
    augment: Annotated[float, Field(ge=0, le=1)] | Literal["auto"] = "auto"
    hflip: bool | Literal["auto"] = "auto"
    seed: int = Field(0, ge=0)


TUNABLE = set(TrainConfig.model_fields) - {"model_kwargs", "weights", "min_steps", "max_steps", "early_stopping"}


class ResourcesConfig(Section):
    """Platform settings. `None` means: take the platform profile's value."""

    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    parallel: int | None = Field(None, ge=1, le=256)
    threads_per_worker: int | None = Field(None, ge=1)
    amp: Literal["off", "bf16", "fp16"] | None = None
    compile: bool | Literal["auto"] | None = None  # auto: per model and shape, from measured cost and gain
    channels_last: bool | None = None
    pin_memory: bool | None = None
    batch_multiplier: float | None = Field(None, gt=0, le=16)
    # auto (the CUDA profile's): one per GPU, then more while measurements say they fit and help
    trials_per_gpu: Annotated[int, Field(ge=1, le=16)] | Literal["auto"] | None = None
    gpus: list[int] | None = None
    # backend: ray: the GPUs Ray reserves for each trial, a fraction to share one (0.25: four trials
    # on each GPU; Ray packs them, nothing measures whether they fit); None: the Ray runner decides.
    gpus_per_trial: float | None = Field(None, gt=0, le=8)
    # backend: ray: the CPUs Ray reserves for each trial (data loading threads); None: the Ray runner decides.
    cpus_per_trial: float | None = Field(None, gt=0)


class CheckpointsConfig(Section):
    """Trial weights kept in DIR/<study>/checkpoints/: the best `keep`, within `budget_mb`."""

    keep: int = Field(1, ge=0, le=1000)
    # A running trial saves a resumable state (DIR/<study>/resume/) every this many epochs, and/or
    # at the first epoch's end after this many minutes, so a rerun after a crash or a stop goes on
    # from there; None for both: never (short trials just rerun).
    every: int | None = Field(None, ge=1)
    every_minutes: float | None = Field(None, gt=0, allow_inf_nan=False)
    budget_mb: float | None = Field(None, gt=0)


class ObjectiveConfig(Section):
    metric: str | list[str] = "val_f1"
    direction: Literal["maximize", "minimize"] | list[Literal["maximize", "minimize"]] | None = None
    # A program as the objective instead of the built-in trainer (engine.command): each trial runs
    # it with its parameters (as flags, in the environment, or in a file: engine.command.argv) and
    # reads the metrics it reports (JSON lines on stdout, a metrics file, a results file). With a
    # command, `train:` holds the program's fixed values, under any names.
    command: list[Annotated[str, Field(min_length=1)]] | None = Field(None, min_length=1)
    cwd: str | None = Field(None, min_length=1)  # None: the config file's folder (else the current one)
    env: dict[str, str] = Field(default_factory=dict)  # {LEARNING_RATE: lr}: a parameter in a variable of yours
    # `--name=value` for every parameter after the command; None: when the command takes them no
    # other way (no {args...}/{config} macro and no `env` mapping)
    flags: bool | None = None
    result_file: str | None = Field(None, min_length=1)  # a JSON file the program writes; metrics are key paths in it
    grace_s: float = Field(10.0, ge=0, le=3600)  # SIGTERM to SIGKILL, for a trial pruned, timed out or stopped

    @field_validator("command", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        """`command: python train.py --fast` is split as a shell would (no shell runs it)."""
        if isinstance(value, str):
            import shlex

            try:
                return shlex.split(value)
            except ValueError as exc:
                raise ValueError(f"cannot split the command: {exc}") from None
        return [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in value] \
            if isinstance(value, list) else value

    def metrics(self) -> list[str]:
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    def directions(self) -> list[str]:
        if self.direction is None:
            return [METRIC_DIRECTIONS.get(m, "maximize") for m in self.metrics()]
        return [self.direction] if isinstance(self.direction, str) else list(self.direction)


SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc", "nsga2")
PRUNERS = ("none", "median", "successive_halving", "hyperband", "wilcoxon", "percentile", "threshold")


class SamplerConfig(Section):
    name: str = "tpe"
    seed: int | None = Field(None, ge=0, lt=2**32)
    options: dict[str, Any] = Field(default_factory=dict)


class PrunerConfig(Section):
    name: str = "median"
    patience: int | None = Field(None, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------- backend: ray (engine.tune)
# Ray Tune's trial schedulers, their options counted in epochs (Ray's training iterations). Each
# is its own section, told apart by `name`, which only asha's may leave out (in the JSON Schema
# too, where `{grace_period: 2}` would otherwise fit asha and median alike); engine.tune.schedulers
# builds the Ray object.


class AshaConfig(Section):
    """Asynchronous successive halving: at each rung (grace_period x reduction_factor^k epochs)
    only the best 1/reduction_factor of the trials that reached it go on."""

    name: Literal["asha"] = "asha"
    grace_period: int = Field(1, ge=1)  # epochs every trial runs before it can be stopped
    reduction_factor: float = Field(3.0, gt=1)
    max_t: int | None = Field(None, ge=1)  # the most epochs a trial runs; None: its epochs (check() fills it)
    brackets: int = Field(1, ge=1)


class HyperbandConfig(Section):
    """Synchronous HyperBand: brackets of successive halving, each waiting for its trials."""

    name: Literal["hyperband"]
    max_t: int | None = Field(None, ge=1)  # None: the trial's epochs (check() fills it)
    reduction_factor: float = Field(3.0, gt=1)


class MedianConfig(Section):
    """The median stopping rule: a trial whose best is below the median of the others' running
    averages at the same epoch stops."""

    name: Literal["median"]
    grace_period: int = Field(1, ge=1)  # epochs before a trial can be stopped
    min_samples_required: int = Field(3, ge=1)  # other trials needed before the median means anything


class Mutation(Section):
    """How population-based training may change one parameter: a list of choices (`[16, 32, 64]`,
    written back as `{choices: [...]}`), or a range (`{low: 1e-4, high: 1e-2, log: true}`), which
    also bounds the values perturbation reaches."""

    choices: list[Any] | None = Field(None, min_length=1)
    low: int | float | None = None
    high: int | float | None = None
    log: bool | None = None  # a range's: sample it on a log scale

    @model_validator(mode="before")
    @classmethod
    def _list_is_choices(cls, value: Any) -> Any:
        return {"choices": value} if isinstance(value, list) else value

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        """Editors are told of the list form too."""
        return {"anyOf": [{"type": "array", "minItems": 1}, handler(core_schema)]}

    @model_validator(mode="after")
    def _one_kind(self) -> Mutation:
        ranged = self.low is not None or self.high is not None
        if (self.choices is None) == (not ranged) or (ranged and (self.low is None or self.high is None)):
            raise ValueError("give a list of choices, or low and high")
        if self.choices is not None and self.log is not None:
            raise ValueError("log is a range's: choices have none")
        if self.low is not None and self.high is not None and self.low >= self.high:
            raise ValueError(f"low must be < high ({self.low:g} >= {self.high:g})")
        if self.log and self.low is not None and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class PbtConfig(Section):
    """Population-based training: every perturbation_interval epochs, a trial in the bottom
    quantile_fraction copies the weights and parameters of one in the top, then mutates them."""

    name: Literal["pbt"]
    perturbation_interval: int = Field(2, ge=1)  # epochs between two exploit/explore steps
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)
    resample_probability: float = Field(0.25, ge=0, le=1)  # a mutation draws afresh instead of x0.8/x1.2
    # Parameter (of search_space) -> how it may change. None: every float parameter, in its own range
    # (check() fills it).
    mutations: dict[str, Mutation] | None = None
    # True: the whole population waits at each perturbation, and the trials behind always clone
    # the ones ahead as they stand then. False (Ray's default): each trial is judged when it gets
    # there, against the others' last results, which wastes no time on waiting but may skip an
    # exploit in a small population (the one ahead has not reached a perturbation yet).
    synch: bool = False


class Pb2Config(Section):
    """Population-based bandits: PBT whose new values come from a Gaussian-process bandit over the
    population's results, within bounds; works with smaller populations than PBT."""

    name: Literal["pb2"]
    perturbation_interval: int = Field(2, ge=1)
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)
    # Float parameter (of search_space) -> [low, high]. None: every float parameter with its range
    # (check() fills it).
    hyperparam_bounds: dict[str, tuple[float, float]] | None = None


class FifoConfig(Section):
    """No early stopping: every trial runs to its end, in the order they come."""

    name: Literal["fifo"]


SCHEDULER_MODELS: dict[str, type[Section]] = {
    "asha": AshaConfig, "hyperband": HyperbandConfig, "pbt": PbtConfig, "pb2": Pb2Config,
    "median": MedianConfig, "fifo": FifoConfig,
}
SCHEDULERS = tuple(SCHEDULER_MODELS)
SchedulerConfig = Annotated[AshaConfig | HyperbandConfig | PbtConfig | Pb2Config | MedianConfig | FifoConfig,
                            Field(discriminator="name")]
# The most epochs a program's trial runs, when neither its `train:` values nor its space say:
# Ray's own default for ASHA (rungs at 1, 3, 9, 27 and 81 epochs); a shorter trial just ends.
RAY_ADDRESS = re.compile(r"(?:ray://)?(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):(\d{1,5})")


class RayConfig(Section):
    """Where a `backend: ray` sweep runs."""

    # None: a local Ray that tui-hpo starts and stops; `auto`: the cluster this machine is part of
    # (`ray start` here, or RAY_ADDRESS); `ray://HOST:10001`: a cluster through Ray Client;
    # `HOST:6379`: a cluster's head node, joined directly.
    address: str | None = None
    dashboard: bool = False  # start the local Ray's dashboard (its address is printed); a cluster has its own

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        match = RAY_ADDRESS.fullmatch(value) if value is not None else None
        if value is not None and value != "auto" and not (match and 0 < int(match.group(1)) < 65536):
            raise ValueError("must be auto, ray://HOST:PORT (Ray Client) or HOST:PORT (the head node)")
        return value


class BudgetConfig(Section):
    n_trials: int = Field(20, ge=1, le=2**31 - 1)  # stored in a 32-bit INTEGER column (PostgreSQL)
    timeout: float | None = Field(None, gt=0)
    max_consecutive_failures: int = Field(5, ge=1)
    max_retries: int = Field(1, ge=0, le=10)  # reruns of a trial whose worker died, same params
    # A trial running longer is stopped and failed (a command's process group is killed); None: no limit
    trial_timeout: float | None = Field(None, gt=0)


class WandbConfig(Section):
    """Each finished trial as a W&B run (engine.sweep.tracking), written under DIR/<study>/wandb."""

    project: str = Field(min_length=1)
    entity: str | None = Field(None, min_length=1)
    mode: Literal["online", "offline", "disabled"] | None = None  # None: W&B's own (WANDB_MODE, `wandb offline`)


class MlflowConfig(Section):
    """Each finished trial as an MLflow run (engine.sweep.tracking)."""

    # file:///path, sqlite:////path/mlflow.db, http://server; None: $MLFLOW_TRACKING_URI, else
    # sqlite:///DIR/<study>/mlflow.db
    tracking_uri: str | None = Field(None, min_length=1)
    experiment: str | None = Field(None, min_length=1)  # None: the study's name


class IntegrationsConfig(Section):
    """Opt-in logging of every finished trial to experiment trackers. Not part of a study's
    identity: a resume may add, change or drop it."""

    wandb: WandbConfig | None = None
    mlflow: MlflowConfig | None = None


class NotifyConfig(Section):
    """A command run when the sweep finishes or stops, trials fail repeatedly, or a new best is
    found (engine.sweep.notify): by the shell, with the event in TUI_HPO_* variables, never waited
    on and never failing the sweep. Not part of a study's identity."""

    command: str = Field(min_length=1)


class SweepConfig(Section):
    name: str | None = None
    description: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    checkpoints: CheckpointsConfig = Field(default_factory=CheckpointsConfig)
    search_space: dict[str, ParamSpec] = Field(default_factory=dict)
    # What runs the trials: Optuna's own workers (the Basic and Advanced tiers), or Ray Tune (the
    # Expert tier, engine.tune), on this machine or a Ray cluster.
    backend: Literal["optuna", "ray"] = "optuna"
    # backend: ray only: Ray Tune's trial scheduler, which stops or evolves trials (Optuna's tier has
    # `pruner:`). None with ray: asha; check() fills in the defaults that depend on the rest.
    scheduler: SchedulerConfig | None = None
    ray: RayConfig = Field(default_factory=RayConfig)
    integrations: IntegrationsConfig = Field(default_factory=IntegrationsConfig)
    notify: NotifyConfig | None = None
    # A command's fixed values (`train:` in the file, any names); empty for the built-in trainer,
    # whose `train:` is TrainConfig. Written back as `train:` (the serializer below).
    params: SkipJsonSchema[dict[str, Any]] = Field(default_factory=dict)
    # What translating a foreign file (a W&B sweep) left out, said once when the sweep starts; not saved.
    _notes: list[str] = PrivateAttr(default_factory=list)

    @property
    def notes(self) -> list[str]:
        return self._notes

    @notes.setter
    def notes(self, value: list[str]) -> None:
        self._notes = value

    @model_validator(mode="before")
    @classmethod
    def _command_params(cls, data: Any) -> Any:
        """With a command, `train:` is the program's: any names, kept as they are (a null drops
        one, as the EPOCHS habit does with min_steps). The trainer's keys are not checked."""
        objective = data.get("objective") if isinstance(data, dict) else None
        if not isinstance(objective, dict) or not objective.get("command"):
            return data
        data = dict(data)
        train = data.pop("train", None) or {}
        if not isinstance(train, dict):
            raise ValueError("train: must be a mapping of the program's fixed values")
        data["params"] = {**(data.get("params") or {}), **{k: v for k, v in train.items() if v is not None}}
        return data

    @field_validator("scheduler", mode="before")
    @classmethod
    def _asha_by_default(cls, value: Any) -> Any:
        """`scheduler: {grace_period: 2}` is asha's: the name is the one key with a default."""
        return {"name": "asha", **value} if isinstance(value, dict) and "name" not in value else value

    @model_serializer(mode="wrap")
    def _write_params_as_train(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        if self.objective.command is not None:  # the trainer's sections mean nothing to a program
            out["train"] = out.pop("params", {})
            out.pop("data", None)
            out.pop("checkpoints", None)
        else:
            out.pop("params", None)
        return out

    @property
    def runs_command(self) -> bool:
        return self.objective.command is not None

    def fixed(self) -> dict[str, Any]:
        """Every value a trial gets besides the sampled ones: the program's for a command,
        the trainer's otherwise."""
        return dict(self.params) if self.runs_command else self.train.model_dump()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def models(self) -> list[str]:
        spec = self.search_space.get("model")
        return [str(m) for m in spec.choices] if spec and spec.choices else [self.train.model]

    def model_key(self, index: int) -> str:
        """The key that names `models()[index]`, for an error about that model."""
        return f"search_space.model.choices[{index}]" if "model" in self.search_space else "train.model"


# ---------------------------------------------------------------- validation


def validate(merged: dict[str, Any], source: str | None) -> SweepConfig:
    """Merged layers -> a checked SweepConfig, or one ConfigError naming the key path."""
    try:
        config = SweepConfig.model_validate(merged)
    except ValidationError as exc:
        raise one_line_error(exc, source) from None
    try:
        check(config)
    except ConfigError as exc:
        raise ConfigError(exc.detail, source=source, key=exc.key) from None
    return config


# How pydantic tags the branch of a union in an error's location ("constrained-int", "bool",
# "literal['auto']"): not a key of ours, so never shown as one.
UNION_BRANCH = re.compile(r"^(constrained-\w+|literal\[.*\]|bool|int|float|str|none|list\[.*\]|dict\[.*\])$")


def _key_path(loc: tuple[Any, ...]) -> tuple[str, bool]:
    """(the dotted key path, whether the last element was a union branch). The scheduler's name
    (pydantic's tag of the section it picked: `scheduler.pbt.mutations`) is no key either."""
    if len(loc) > 1 and loc[0] == "scheduler" and loc[1] in SCHEDULER_MODELS:
        loc = (loc[0], *loc[2:])
    parts = [str(p) for p in loc]
    branch = bool(parts) and isinstance(loc[-1], str) and bool(UNION_BRANCH.match(parts[-1]))
    return ".".join(parts[:-1] if branch else parts), branch


def one_line_error(exc: ValidationError, source: str | None) -> ConfigError:
    errors = exc.errors()
    # An unknown key first: a misspelt required key (`comand:`) is also reported missing
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    path, branch = _key_path(err["loc"])
    scheduler = err["loc"][1] if len(err["loc"]) > 2 and err["loc"][0] == "scheduler" else None
    if err["type"] == "extra_forbidden" and path.count(".") == 1 and scheduler in SCHEDULER_MODELS:
        options = [k for k in SCHEDULER_MODELS[scheduler].model_fields if k != "name"]
        return ConfigError(f"unknown option of the {scheduler} scheduler (its options: {', '.join(options) or 'none'})",
                           source=source, key=path)
    if err["type"] == "union_tag_invalid" and path == "scheduler":  # `scheduler: {name: bohb}`
        return ConfigError(f"unknown scheduler '{err['ctx']['tag']}' (use one of {', '.join(SCHEDULERS)})",
                           source=source, key=f"{path}.name")
    if err["type"] == "extra_forbidden":
        key = path.rpartition(".")[2]
        hint = f" (did you mean '{PARAM_ALIASES[key]}'?)" if key in PARAM_ALIASES else ""
        return ConfigError(f"unknown key '{key}'{hint}", source=source, key=path)
    msg = err["msg"].removeprefix("Value error, ")
    if branch:  # a value fitting none of a union's types: say what each would take
        wants = [e["msg"].removeprefix("Input should be ").split(", unable to")[0]
                 for e in errors if _key_path(e["loc"]) == (path, True)]
        msg = "input should be " + " or ".join(dict.fromkeys(wants))
    value = err.get("input")
    shown = f" (got {value!r})" if value is not None and not isinstance(value, dict | list) else ""
    return ConfigError(f"{msg[0].lower()}{msg[1:]}{shown}", source=source, key=path)


def check(config: SweepConfig) -> None:
    """Rules across keys: names that must exist, and combinations that cannot work. A command's
    metrics and parameters are its program's: any names (a metric it never reports is found when
    the first trial ends, engine.command.trial)."""
    if config.name is not None:
        check_study_name(config.name, "name")
    command = config.runs_command
    metrics = config.objective.metrics() if command else [canonical_metric(m) for m in config.objective.metrics()]
    for metric in metrics:
        if metric not in METRIC_DIRECTIONS and not command:
            raise ConfigError(f"unknown metric '{metric}' (use one of {', '.join(METRIC_DIRECTIONS)})",
                              key="objective.metric")
        if metric not in METRIC_DIRECTIONS and config.objective.direction is None:
            raise ConfigError(f"say maximize or minimize: '{metric}' is your program's metric",
                              key="objective.direction")
    config.objective.metric = metrics[0] if len(metrics) == 1 else metrics
    if len(config.objective.directions()) != len(metrics):
        raise ConfigError(f"{len(metrics)} metric(s) but {len(config.objective.directions())} direction(s)",
                          key="objective.direction")
    if config.backend == "ray" and len(metrics) > 1:
        raise ConfigError("Ray Tune's schedulers follow one metric: give one, or use backend: optuna",
                          key="objective.metric")
    if config.sampler.name not in SAMPLERS:
        raise ConfigError(f"unknown sampler '{config.sampler.name}' (use one of {', '.join(SAMPLERS)})",
                          key="sampler.name")
    if config.pruner.name not in PRUNERS:
        raise ConfigError(f"unknown pruner '{config.pruner.name}' (use one of {', '.join(PRUNERS)})",
                          key="pruner.name")
    if len(metrics) > 1 and config.pruner.name != "none":
        raise ConfigError("pruning needs a single objective: set pruner.name: none", key="pruner.name")
    if config.pruner.name == "wilcoxon" and (command or config.data.folds < 2):
        raise ConfigError("the wilcoxon pruner compares folds: "
                          + ("a program has none (use median or hyperband)" if command else "set data.folds >= 2"),
                          key="pruner.name")
    if config.sampler.name == "cmaes" and len(metrics) > 1:
        raise ConfigError("CMA-ES is single-objective: use nsga2 or tpe", key="sampler.name")
    if command:
        _check_command(config)
    else:
        _check_trainer(config)
    _check_scheduler(config)
    if config.sampler.name == "grid":
        from engine.config.space import grid_points

        grid_points(config.search_space, config.fixed())


def _check_scheduler(config: SweepConfig) -> None:
    """`scheduler:` belongs to backend ray, which gets asha when it has none; fills in the
    defaults that follow from the rest of the config (max_t, the parameters PBT and PB2 change),
    so the saved config says what ran. Mutated parameters must be the search space's."""
    if config.backend != "ray":
        if config.scheduler is not None:
            raise ConfigError("only used with backend: ray (the optuna backend stops trials early with `pruner:`)",
                              key="scheduler")
        return
    if config.data.folds > 1:
        raise ConfigError("backend: ray trains one split per trial: set data.folds to 1, or use backend: optuna",
                          key="data.folds")
    if config.scheduler is None:
        config.scheduler = AshaConfig()
    scheduler = config.scheduler
    if config.runs_command:
        # A program's trials report at their own pace, and keep their own state (engine.tune.program)
        if isinstance(scheduler, PbtConfig | Pb2Config):
            raise ConfigError(f"{scheduler.name} hands one trial's model to another as they train, which a program "
                              "of yours cannot do through tui-hpo: use asha, hyperband, median or fifo",
                              key="scheduler.name")
        if isinstance(scheduler, AshaConfig | HyperbandConfig) and scheduler.max_t is None:
            raise ConfigError(f"{scheduler.name} needs the most reports a trial of your program makes (its epochs, "
                              "or steps): set scheduler.max_t", key="scheduler.max_t")
    if isinstance(scheduler, AshaConfig | HyperbandConfig) and scheduler.max_t is None:
        scheduler.max_t = _trial_epochs(config)
    if isinstance(scheduler, AshaConfig) and scheduler.grace_period > (scheduler.max_t or 0):
        raise ConfigError(f"must be <= max_t ({scheduler.grace_period} > {scheduler.max_t})",
                          key="scheduler.grace_period")
    # Parameters every trial has, in one range (not `when`, not `by`): what PBT and PB2 change by default
    floats = {name: spec for name, spec in config.search_space.items()
              if spec.kind() == "float" and spec.low is not None and spec.high is not None and not spec.when
              and not spec.by}
    if isinstance(scheduler, PbtConfig):
        if scheduler.mutations is None:
            scheduler.mutations = {name: Mutation(low=spec.low, high=spec.high, log=spec.is_log())
                                   for name, spec in floats.items()}
        if not scheduler.mutations:
            raise ConfigError("pbt needs parameters to mutate: the search space has no float range; list some here",
                              key="scheduler.mutations")
        for name, mutation in scheduler.mutations.items():
            key = f"scheduler.mutations.{name}"
            _check_mutated(config, name, key)
            if not config.runs_command:
                for i, choice in enumerate(mutation.choices or []):
                    _check_value(name, choice, f"{key}.choices[{i}]")
                for bound in ("low", "high"):
                    if getattr(mutation, bound) is not None:
                        _check_value(name, getattr(mutation, bound), f"{key}.{bound}")
    if isinstance(scheduler, Pb2Config):
        if scheduler.hyperparam_bounds is None:
            scheduler.hyperparam_bounds = {name: (float(spec.low), float(spec.high))  # type: ignore[arg-type]
                                           for name, spec in floats.items()}
        if not scheduler.hyperparam_bounds:
            raise ConfigError("pb2 needs parameters to explore: the search space has no float range; list some here",
                              key="scheduler.hyperparam_bounds")
        for name, (low, high) in scheduler.hyperparam_bounds.items():
            key = f"scheduler.hyperparam_bounds.{name}"
            _check_mutated(config, name, key)
            if config.search_space[name].kind() != "float":
                raise ConfigError(f"pb2 explores continuous values: '{name}' is not a float parameter", key=key)
            if low >= high:
                raise ConfigError(f"low must be < high ({low:g} >= {high:g})", key=key)


def _check_mutated(config: SweepConfig, name: str, key: str) -> None:
    """A parameter PBT or PB2 changes: one of the search space's, present in every trial."""
    if name not in config.search_space:
        known = ", ".join(config.search_space) or "none"
        raise ConfigError(f"'{name}' is not a parameter of search_space (its parameters: {known})", key=key)
    if config.search_space[name].when:
        raise ConfigError(f"'{name}' exists only in some trials (when:): a population changes parameters every "
                          "trial has", key=key)


def _trial_epochs(config: SweepConfig) -> int:
    """The most epochs a trial can run: the highest the search space picks, else `train.epochs`."""
    spec = config.search_space.get("epochs")
    if spec is not None:
        values = [*(spec.choices or [spec.high])]
        values += [v for cases in (spec.by or {}).values() for case in cases.values()
                   for v in (case.choices or [case.high])]
        numbers = [int(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if numbers:
            return max(numbers)
    return config.train.epochs


def _check_command(config: SweepConfig) -> None:
    """A command's parameters: any names; those its environment mapping names must exist."""
    for var, name in config.objective.env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
            raise ConfigError(f"'{var}' is not an environment variable name", key=f"objective.env.{var}")
        if name not in config.search_space and name not in config.params:
            raise ConfigError(f"'{name}' is neither in search_space nor in train", key=f"objective.env.{var}")
    check_space(config.search_space, set(config.search_space), config.params)


def _check_trainer(config: SweepConfig) -> None:
    """The built-in trainer's keys, and what each parameter may sample for them."""
    if config.data.val is not None and config.data.folds > 1:
        raise ConfigError(f"a validation set of your own replaces the folds: remove it or set data.folds: 1 "
                          f"(not {config.data.folds})", key="data.val")
    if config.train.min_steps and config.train.max_steps and config.train.min_steps > config.train.max_steps:
        raise ConfigError(f"must be <= max_steps ({config.train.min_steps} > {config.train.max_steps})",
                          key="train.min_steps")
    if isinstance(config.train.weights, dict):
        for name in config.train.weights:
            if name not in config.models():
                raise ConfigError(f"'{name}' is not a model this sweep can pick ({', '.join(config.models())})",
                                  key=f"train.weights.{name}")
    if config.train.batch_size == "auto" and "batch_size" in config.search_space:
        raise ConfigError("auto finds one batch per model: remove search_space.batch_size, or give a number here",
                          key="train.batch_size")
    check_space(config.search_space, TUNABLE, config.fixed())
    for name, spec in config.search_space.items():
        _check_domain(name, spec)


def _check_domain(name: str, spec: ParamSpec) -> None:
    """Whatever a trial samples must be a valid value of its training key (workers apply it
    unchecked): every choice and every bound, in the spec and in each `by` case, and whole numbers
    for a key that takes them (`accum_steps: {low: 1, high: 4.0}` would sample 2.7)."""
    path = f"search_space.{name}"
    cases = [(path, spec.low, spec.high, spec.choices)]
    cases += [(f"{path}.by.{other}.{value}", o.low, o.high, o.choices)
              for other, by_value in (spec.by or {}).items() for value, o in by_value.items()]
    for where, low, high, choices in cases:
        for i, choice in enumerate(choices or []):
            _check_value(name, choice, f"{where}.choices[{i}]")
        for bound, value in (("low", low), ("high", high)):
            if value is not None:
                _check_value(name, value, f"{where}.{bound}")
    if _takes_whole_numbers(name) and spec.kind() == "float":
        raise ConfigError(f"'{name}' takes whole numbers: give whole bounds and step, or type: int", key=path)


def _takes_whole_numbers(name: str) -> bool:
    """Whether a training key's numbers are ints (`epochs`, and `image_size`, which may also be "auto")."""
    annotation = TrainConfig.model_fields[name].annotation
    branches = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    return annotation is int or any(b is int or typing.get_args(b)[:1] == (int,) for b in branches)


def _check_value(name: str, value: Any, key: str) -> None:
    """A value a parameter can take (a choice, a bound) must be valid for its training key."""
    try:
        TrainConfig.model_validate({name: value})
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{msg[0].lower()}{msg[1:]} (got {value!r})", key=key) from None


