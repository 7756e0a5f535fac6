"""A trial's command line and environment: the program's parameters go in the ways real scripts
take them, and W&B's macros mean what they mean to `wandb agent`, so a W&B sweep file runs
unchanged.

Macros are written `${name}` (W&B) or `{name}` (native); only the names below are macros, so
any other braces in a command are left alone:

- whole tokens, replaced by zero or more arguments: `args` (`--lr=0.001 --optimizer.beta=0.9`),
  `args_no_hyphens` (`lr=0.001`), `args_no_boolean_flags` (`--augment` for true, nothing for
  false), `env` (`/usr/bin/env`), `interpreter`/`python` (the Python running tui-hpo);
- anywhere in a token: `args_json` (the parameters as JSON), `args_json_file`, `config` (the
  trial's parameters as a YAML file), `config_json`, `trial`, `study`, `output_dir`,
  `envvar:NAME` (a variable of the environment).

Dotted names (`optimizer.lr`, from W&B's nested parameters) are nested again in JSON and YAML.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

ARG_MACROS = ("args", "args_no_hyphens", "args_no_boolean_flags")
WHOLE_MACROS = (*ARG_MACROS, "env", "interpreter", "python")
INLINE_MACROS = ("args_json", "args_json_file", "config", "config_json", "trial", "study", "output_dir")
# Macros through which the program receives its parameters: without one (and without an `env`
# mapping), `--name=value` flags are appended, as W&B's default command does.
PARAM_MACROS = (*ARG_MACROS, "args_json", "args_json_file", "config", "config_json")
MACRO = re.compile(r"\$?\{(envvar:[A-Za-z_][A-Za-z0-9_]*|[a-z_]+)\}")
ENVVAR = re.compile(r"envvar:[A-Za-z_][A-Za-z0-9_]*")
PARAM_PREFIX = "TUI_HPO_PARAM_"
ENV_PATH = "/usr/bin/env"


def macros_in(token: str) -> list[str]:
    """The macro names a token uses; braces around other words are not macros."""
    return [m for m in MACRO.findall(token) if m in WHOLE_MACROS or m in INLINE_MACROS or m.startswith("envvar:")]


def check_command(command: list[str], key: str = "objective.command") -> None:
    """Unknown `${...}` macros, and whole-token macros inside a longer token, are errors here:
    W&B refuses them too, and a trial would otherwise run a literal `${arg}`."""
    for i, token in enumerate(command):
        for name in re.findall(r"\$\{([^}]*)\}", token):
            if name not in WHOLE_MACROS and name not in INLINE_MACROS and not ENVVAR.fullmatch(name):
                known = ", ".join(f"${{{m}}}" for m in (*WHOLE_MACROS, *INLINE_MACROS))
                raise ConfigError(f"unknown macro ${{{name}}} (known: {known}, ${{envvar:NAME}})", key=f"{key}[{i}]")
        for name in macros_in(token):
            if name in WHOLE_MACROS and MACRO.fullmatch(token) is None:
                raise ConfigError(f"{{{name}}} stands for whole arguments: give it a token of its own",
                                  key=f"{key}[{i}]")


def takes_params(command: list[str]) -> bool:
    return any(m in PARAM_MACROS for token in command for m in macros_in(token))


def nested(params: Mapping[str, Any]) -> dict[str, Any]:
    """`{"optimizer.lr": 0.1}` -> `{"optimizer": {"lr": 0.1}}`, as W&B hands nested parameters to a
    program; a name that is both a value and a group keeps its value under the dotted name."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        node, parts = out, name.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                node = None
                break
            node = child
        if node is None or not isinstance(node, dict) or (parts[-1] in node and isinstance(node[parts[-1]], dict)):
            out[name] = value
        else:
            node[parts[-1]] = value
    return out


def _text(value: Any) -> str:
    """A value as W&B writes it on a command line: Python's str for scalars, JSON for lists and maps."""
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def arg_list(params: Mapping[str, Any], style: str) -> list[str]:
    if style == "args_no_hyphens":
        return [f"{k}={_text(v)}" for k, v in params.items()]
    if style == "args_no_boolean_flags":
        return [f"--{k}" if v is True else f"--{k}={_text(v)}" for k, v in params.items() if v is not False]
    return [f"--{k}={_text(v)}" for k, v in params.items()]


@dataclass(frozen=True)
class TrialFiles:
    """Where a trial's files go: `DIR/<study>/trials/<n>/` (the program's TUI_HPO_OUTPUT_DIR)."""

    folder: Path

    @classmethod
    def of(cls, study_folder: Path, number: int) -> TrialFiles:
        return cls(study_folder / "trials" / str(number))

    @property
    def log(self) -> Path:
        return self.folder / "output.log"

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.jsonl"

    @property
    def config_yaml(self) -> Path:
        return self.folder / "config.yaml"

    @property
    def config_json(self) -> Path:
        return self.folder / "config.json"


def expand(command: list[str], params: Mapping[str, Any], files: TrialFiles, study: str, trial: int,
           flags: bool | None, environ: Mapping[str, str]) -> list[str]:
    """The argument list a trial runs. The files a macro names (`{config}`, `{args_json_file}`)
    are written by `write_param_files` first."""
    values = {
        "args_json": json.dumps(nested(params)), "args_json_file": str(files.config_json),
        "config": str(files.config_yaml), "config_json": str(files.config_json),
        "trial": str(trial), "study": study, "output_dir": str(files.folder),
    }

    def inline(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("envvar:"):
            return environ.get(name.partition(":")[2], "")
        return values.get(name, match.group(0))

    argv: list[str] = []
    for token in command:
        whole = MACRO.fullmatch(token)
        name = whole.group(1) if whole else None
        if name in ARG_MACROS:
            argv += arg_list(params, name)
        elif name == "env":
            argv += [ENV_PATH] if os.path.exists(ENV_PATH) else []
        elif name in ("interpreter", "python"):
            argv.append(sys.executable)
        else:
            argv.append(MACRO.sub(inline, token))
    if flags or (flags is None and not takes_params(command)):
        argv += arg_list(params, "args")
    return argv


def write_param_files(params: Mapping[str, Any], files: TrialFiles) -> None:
    """The trial's parameters as YAML and JSON, nested by their dotted names: what `{config}` and
    `{args_json_file}` point at, and a record of what it ran with. Written plainly, not synced to
    the disk (a trial's start waits for them; a crash loses the trial's run, and these with it)."""
    import yaml

    tree = nested(params)
    files.config_yaml.write_text(yaml.safe_dump(tree, sort_keys=False, allow_unicode=True))
    files.config_json.write_text(json.dumps(tree, indent=2))


def env_name(param: str) -> str:
    """`optimizer.lr` -> `TUI_HPO_PARAM_OPTIMIZER_LR`."""
    return PARAM_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", param).upper()


def trial_env(params: Mapping[str, Any], mapping: Mapping[str, str], files: TrialFiles, study: str,
              trial: int) -> dict[str, str]:
    """What a trial adds to the worker's environment: every parameter as TUI_HPO_PARAM_<NAME>, the
    user's own names for some (`env: {LEARNING_RATE: lr}`), and where the trial's files go.
    PYTHONUNBUFFERED makes a Python program's printed metrics arrive as they are printed (a pipe
    would otherwise hold them until the program ends, and pruning would come too late)."""
    env = {env_name(k): _text(v) for k, v in params.items()}
    env |= {var: _text(params[name]) for var, name in mapping.items() if name in params}
    return env | {"TUI_HPO_TRIAL": str(trial), "TUI_HPO_STUDY": study, "TUI_HPO_OUTPUT_DIR": str(files.folder),
                  "TUI_HPO_METRICS_FILE": str(files.metrics), "PYTHONUNBUFFERED": "1"}


def check_runnable(command: list[str], cwd: Path, key: str = "objective.command") -> None:
    """What can be known before any trial: the macros, the folder, the program (on PATH or a
    file), and a script the interpreter is given (`train.py`, relative to the folder). A typo
    here would otherwise fail every trial the same way."""
    check_command(command, key)
    if not cwd.is_dir():
        raise ConfigError(f"{cwd} is not a folder", key="objective.cwd")
    # `${env} ${interpreter} train.py`: env runs the next token; the interpreter is this Python
    tokens = [(i, t) for i, t in enumerate(command) if MACRO.fullmatch(t) is None or t.strip("${}") in
              ("interpreter", "python")]
    tokens = [(i, sys.executable if MACRO.fullmatch(t) else t) for i, t in tokens]
    if not tokens:
        raise ConfigError("names no program to run", key=key)
    index, program = tokens[0]
    found = (cwd / program) if "/" in program else None
    if found is not None and not (found.is_file() and os.access(found, os.X_OK)):
        raise ConfigError(f"{found} is not an executable file", key=f"{key}[{index}]")
    if found is None and shutil.which(program) is None:
        raise ConfigError(f"'{program}' is not a program on PATH", key=f"{key}[{index}]")
    if Path(program).name.startswith("python") and len(tokens) > 1:
        index, script = tokens[1]
        if script.endswith(".py") and not (cwd / script).is_file():
            raise ConfigError(f"{script} is not in {cwd} (set objective.cwd, or run from its folder)",
                              key=f"{key}[{index}]")
