"""config.example.yaml documents every key of the config model, and only real keys."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from hub.config import Config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"


def model_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.add(path)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths |= model_paths(annotation, path + ".")
    return paths


def yaml_paths(data: Any, keys: set[str], prefix: str = "") -> set[str]:
    """The example's key paths; a mapping the model does not name key by key (a dict
    field such as hours.weekly) is one key."""
    paths: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}{key}"
            paths.add(path)
            if path not in keys or any(k.startswith(path + ".") for k in keys):
                paths |= yaml_paths(value, keys, path + ".")
    return paths


def test_every_key_is_in_the_example_and_nothing_else() -> None:
    example = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    keys = model_paths(Config)
    assert yaml_paths(example, keys) == keys


def test_every_key_has_a_comment() -> None:
    """Each key line is preceded by a comment line (or is a section whose first child is)."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([a-z_]+):", line)
        if not m:
            continue
        before = [ln for ln in lines[max(0, i - 3) : i] if ln.strip()]
        previous = before[-1].strip() if before else ""
        # A key is documented by a comment right above it, or shares the comment of the
        # run of keys (or the section header) it follows.
        if not previous.startswith("#") and not re.match(r"^[a-z_]+:", previous):
            undocumented.append(line.strip())
    assert undocumented == []


def test_example_with_tokens_filled_in_is_valid(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace("as_token: CHANGE_ME", 'as_token: "' + "0" * 32 + '"')
    text = text.replace("hs_token: CHANGE_ME", 'hs_token: "' + "1e" * 16 + '"')
    config = parse_config(yaml.safe_load(text), "example", tmp_path)
    assert config.channels.webchat.enabled
    assert not config.channels.whatsapp.enabled
