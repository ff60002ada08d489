"""Config values from the environment, for deployments that keep secrets out of files:

    HUB__APPSERVICE__AS_TOKEN=…                      the value itself
    HUB__APPSERVICE__AS_TOKEN_FILE=/run/secrets/as   the value is that file's content

A name is `HUB__` and the key's path in the YAML, sections joined by `__`, in any case. The
`_FILE` form reads the file (a trailing newline dropped), as Docker and systemd credentials
hand secrets over. Either wins over the YAML. A name that names no key is an error, so a typo
cannot leave a secret silently unset. Values are never shown in errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

PREFIX = "HUB__"
FILE_SUFFIX = "_file"


def _section(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    field = model.model_fields.get(name)
    if field is None:
        return None
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _key(model: type[BaseModel], parts: list[str]) -> tuple[list[str], bool] | None:
    """The path of a key of `model` (and whether the variable names its file), or None."""
    *sections, last = parts
    current = model
    for part in sections:
        inner = _section(current, part)
        if inner is None:
            return None
        current = inner
    if last in current.model_fields and _section(current, last) is None:
        return parts, False
    if last.endswith(FILE_SUFFIX):
        plain = last[: -len(FILE_SUFFIX)]
        if plain in current.model_fields and _section(current, plain) is None:
            return [*sections, plain], True
    return None


def apply_environment(
    data: dict[str, Any], model: type[BaseModel], environ: Mapping[str, str]
) -> list[str]:
    """Set the keys the environment names into `data` (in place); the problems found."""
    problems: list[str] = []
    for name in sorted(environ):
        if not name.upper().startswith(PREFIX):
            continue
        parts = [p.lower() for p in name[len(PREFIX) :].split("__")]
        found = _key(model, parts) if all(parts) else None
        if found is None:
            problems.append(f"{name}: names no config key (e.g. HUB__APPSERVICE__AS_TOKEN)")
            continue
        path, from_file = found
        value = environ[name]
        if from_file:
            try:
                value = Path(value).read_text(encoding="utf-8").removesuffix("\n")
            except OSError as exc:
                problems.append(f"{name}: cannot read {value}: {exc.strerror or exc}")
                continue
            except UnicodeDecodeError:
                problems.append(f"{name}: {value} is not UTF-8 text")
                continue
        target = data
        for part in path[:-1]:
            inner = target.get(part)
            if not isinstance(inner, dict):
                inner = target[part] = {}
            target = inner
        target[path[-1]] = value
    return problems
