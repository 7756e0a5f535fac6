"""Reading YAML safely: only what JSON can hold, no tags that run code, no alias bombs; and
writing it back so that it reads the same (`1e-4` stays a number)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from engine.errors import ConfigError


class _SafeLoader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` as a float (YAML 1.1 wants `1.0e-4`)."""


class SafeDumper(yaml.SafeDumper):
    """Quotes the strings _SafeLoader would read as something else (`'1e-4'`), so a config we
    write (config.yaml, the resume file) loads back the same."""


for _cls in (_SafeLoader, SafeDumper):
    _cls.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )


def _refuse_tag(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    raise yaml.constructor.ConstructorError(None, None, f"{tag} is not supported", node.start_mark)


# Only what JSON has: a config is saved as JSON in the storage. Bytes, sets and pairs would fail
# there, after the study exists; a date stays the text it was written as (`2024-01-01`).
for _tag in ("binary", "set", "omap", "pairs"):
    _SafeLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_tag)
_SafeLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)


MAX_CONFIG_BYTES = 4 * 2**20  # sweep configs are a few KB; more is a wrong file
MAX_YAML_NODES = 100_000  # values in a document, counting each use of an alias again


def parse_yaml(text: str, source: str) -> Any:
    """Safe YAML only: a python/object tag is an error, never executed. A document whose aliases
    expand past MAX_YAML_NODES values (a "billion laughs"), or refer to themselves, is refused:
    every later step (merging, validation, messages, saving) walks the expanded tree."""
    try:
        data = yaml.load(text, Loader=_SafeLoader)
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", source=source) from None
    except yaml.constructor.ConstructorError as exc:
        where = f"line {exc.problem_mark.line + 1}: " if exc.problem_mark else ""
        raise ConfigError(f"{where}unsafe or unknown YAML tag ({exc.problem})", source=source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}invalid YAML: {problem}", source=source) from None
    if _expanded_size(data, MAX_YAML_NODES) > MAX_YAML_NODES:
        raise ConfigError(f"more than {MAX_YAML_NODES} values once aliases are expanded (an alias bomb, "
                          "or an alias inside itself)", source=source)
    return data


def _expanded_size(data: Any, limit: int) -> int:
    """How many values `data` holds with shared (aliased) parts counted at each use; stops
    counting past `limit`, so a bomb or a cycle costs at most `limit` steps."""
    count, stack = 0, [data]
    while stack and count <= limit:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def read_yaml_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError("no such config file", source=str(path))
    if path.is_dir():
        raise ConfigError("is a folder, not a config file", source=str(path))
    if not path.is_file():  # /dev/zero, a FIFO: reading would never end
        raise ConfigError("is not a regular file", source=str(path))
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES // 2**20} MB: not a sweep config", source=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc.__class__.__name__}", source=str(path)) from None
    data = parse_yaml(text, str(path))
    if data is None:  # nothing, or only comments: a wrong file, not a request for the defaults
        raise ConfigError("is empty: a sweep config needs at least one key (see configs/presets/)",
                          source=str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping, not {type(data).__name__}", source=str(path))
    return data


