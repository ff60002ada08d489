"""docs/deploy.md cannot drift from the code: every `hub` command it shows exists in the CLI
(and, in its code blocks, parses with the arguments shown), every config key it names in
backticks exists in the config model, every `HUB__...` variable names a config key, the
guide's config edits validate, and the contrib files it shows are the repository's, byte for
byte. tests/e2e/test_deploy_guide.py runs the blocks marked `test-deploy`.

Conventions of the guide's fenced blocks (their info string after the language):
`test-deploy id=NAME` a block the e2e test runs or applies; `file=PATH` the whole file PATH.
"""

from __future__ import annotations

import argparse
import copy
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from hub.__main__ import build_parser
from hub.config import Config, parse_config
from hub.config.environment import apply_environment

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "deploy.md"
CONTRIB_FILES = [
    "contrib/hub.service",
    "contrib/hub@.service",
    "contrib/nginx/hub.conf",
    "contrib/Caddyfile",
]

_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


@dataclass
class Block:
    lang: str
    attrs: dict[str, str]
    text: str

    @property
    def id(self) -> str | None:
        return self.attrs.get("id") if "test-deploy" in self.attrs else None


def guide_blocks(text: str | None = None) -> list[Block]:
    """The fenced blocks of docs/deploy.md with their info strings parsed."""
    blocks = []
    for match in _FENCE.finditer(GUIDE.read_text(encoding="utf-8") if text is None else text):
        lang, *words = match.group(1).split() or [""]
        attrs = {}
        for word in words:
            name, _, value = word.partition("=")
            attrs[name] = value
        blocks.append(Block(lang, attrs, match.group(2)))
    return blocks


def marked_block(block_id: str) -> Block:
    """The guide's block marked `test-deploy id=block_id` (exactly one)."""
    found = [b for b in guide_blocks() if b.id == block_id]
    assert len(found) == 1, f"docs/deploy.md: {len(found)} blocks with test-deploy id={block_id}"
    return found[0]


def _code_spans() -> list[str]:
    """The guide's inline code spans (outside fenced blocks), line breaks as spaces."""
    prose = _FENCE.sub("", GUIDE.read_text(encoding="utf-8"))
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]


# -- contrib files ---------------------------------------------------------------------------


def test_the_guide_shows_each_contrib_file_verbatim() -> None:
    shown = {b.attrs["file"]: b.text for b in guide_blocks() if "file" in b.attrs}
    assert sorted(shown) == sorted(CONTRIB_FILES)
    for path, text in shown.items():
        assert text == (REPO / path).read_text(encoding="utf-8"), (
            f"docs/deploy.md shows another {path} than the repository's: copy the file into "
            "its block again"
        )


def test_block_ids_are_unique() -> None:
    ids = [b.id for b in guide_blocks() if b.id is not None]
    assert ids and len(ids) == len(set(ids)), ids


# -- commands --------------------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _known_command(words: list[str]) -> str | None:
    """None when `hub WORDS...` starts with a real command (and sub-command), else why not."""
    commands = _subcommands(build_parser())
    if not words or words[0] not in commands:
        return f"no command {words[:1]}"
    sub = _subcommands(commands[words[0]])
    if sub and (len(words) < 2 or words[1] not in sub):
        return f"{words[0]} has no sub-command {words[1:2]} (it has {sorted(sub)})"
    return None


def _command_lines(block: Block) -> list[str]:
    """The `hub ...` invocations of a shell block: pipelines and lists split, `runuser -u
    USER --` removed, continuation lines joined."""
    found = []
    text = block.text.replace("\\\n", " ")
    for line in text.splitlines():
        for part in re.split(r"\|\||&&|[|;]", line):
            part = part.strip()
            part = re.sub(r"^runuser -u \S+ -- ", "", part)
            if part.startswith("hub "):
                found.append(part.split(" #", 1)[0].split(" <", 1)[0].split(" >", 1)[0])
    return found


def test_every_hub_command_in_code_blocks_parses() -> None:
    parser = build_parser()
    seen = []
    for block in guide_blocks():
        if block.lang not in ("sh", "ini"):
            continue
        lines = _command_lines(block)
        if block.lang == "ini":  # the units' ExecStart
            lines = [
                line.split("/bin/hub ", 1)[1]
                for line in block.text.splitlines()
                if line.startswith("ExecStart=")
            ]
            lines = [f"hub {line}" for line in lines]
        for line in lines:
            argv = shlex.split(line)[1:]
            assert _known_command(argv) is None, f"{line}: {_known_command(argv)}"
            try:
                parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"docs/deploy.md: `{line}` is not a valid hub command line")
            seen.append(argv[0])
    assert {"generate-registration", "check-config", "run", "telegram"} <= set(seen)


def test_every_hub_command_in_the_text_exists() -> None:
    commands = [s for s in _code_spans() if re.match(r"hub [a-z]", s)]
    assert commands
    for span in commands:
        words = re.findall(r"[a-z][a-z-]*", span.split(" -", 1)[0])[1:]
        assert _known_command(words) is None, f"`{span}`: {_known_command(words)}"


# -- config keys -----------------------------------------------------------------------------


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The section model of a field (also inside Optional[...] and list[...])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        model = _model_of(arg)
        if model is not None:
            return model
    return None


def config_key_exists(path: str) -> bool:
    """`http.public_url`, `dashboard.admins[].password_hash`, `commerce.stripe` ..."""
    model: type[BaseModel] | None = Config
    for part in path.replace("[]", "").split("."):
        if model is None or part not in model.model_fields:
            return False
        model = _model_of(model.model_fields[part].annotation)
    return True


_KEY = re.compile(r"^[a-z_]+(?:\[\])?(?:\.[a-z_0-9]+(?:\[\])?)+$")
# File names and the guide's host names are dotted too.
_NOT_A_KEY = re.compile(r"\.(ya?ml|md|conf|service|py|db|js|env|txt|csv|example)$")


def test_every_config_key_named_exists() -> None:
    # `http.port`, or `http.port: 29331`: a dotted name whose first part is a section.
    spans = {s.split(": ", 1)[0] for s in _code_spans()}
    keys = sorted(
        s
        for s in spans
        if _KEY.match(s)
        and not _NOT_A_KEY.search(s)
        and s.split(".")[0].rstrip("[]") in Config.model_fields
    )
    assert len(keys) > 20, keys
    missing = [k for k in keys if not config_key_exists(k)]
    assert not missing, f"docs/deploy.md names config keys that do not exist: {missing}"
    # Single top-level names in backticks that the text uses as keys.
    assert config_key_exists("data_dir")


def test_every_environment_variable_names_a_config_key() -> None:
    texts = [GUIDE.read_text(encoding="utf-8")]
    texts += [(REPO / p).read_text(encoding="utf-8") for p in CONTRIB_FILES]
    names = sorted({n for t in texts for n in re.findall(r"\bHUB__[A-Z0-9_]+", t)})
    assert "HUB__HTTP__PORT" in names
    for name in names:
        problems = apply_environment(
            {}, Config, {name: "/dev/null" if name.endswith("_FILE") else "1"}
        )
        assert not problems, f"{name}: {problems}"


def test_the_guides_config_edits_validate() -> None:
    """The guide's first edits on top of config.example.yaml make a config the hub accepts
    (with tokens, as `hub generate-registration` leaves them)."""
    example = yaml.safe_load((REPO / "config.example.yaml").read_text(encoding="utf-8"))
    edits = yaml.safe_load(marked_block("config").text)
    data = merge(example, edits)
    data["appservice"]["as_token"] = "a" * 64
    data["appservice"]["hs_token"] = "b" * 64
    config = parse_config(data, "docs/deploy.md", environ={})
    assert str(config.http.public_url).startswith("https://")
    assert config.http.trusted_proxies
    assert not config.channels.webchat.demo_page
    # The guide's other yaml blocks are fragments of the same file: their keys exist.
    for block in guide_blocks():
        if block.lang != "yaml" or block.id == "config":
            continue
        doc = yaml.safe_load(block.text)
        if "scrape_configs" in doc or "app_service_config_files" in doc:
            continue  # Prometheus' and Synapse's files
        for key in _leaf_keys(doc):
            assert config_key_exists(key), f"docs/deploy.md yaml block: no config key {key}"


def merge(base: dict[str, Any], edits: dict[str, Any]) -> dict[str, Any]:
    """base with edits applied, section by section (what "change these keys" means)."""
    out = copy.deepcopy(base)
    for key, value in edits.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _leaf_keys(doc: Any, prefix: str = "") -> list[str]:
    if not isinstance(doc, dict):
        return [prefix] if prefix else []
    keys = []
    for key, value in doc.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and _model_of_path(path) is not None:
            keys += _leaf_keys(value, path)
        elif isinstance(value, list) and _model_of_path(path) is not None:
            for item in value:  # a list of sections: dashboard.admins[].username
                keys += _leaf_keys(item, f"{path}[]") if isinstance(item, dict) else [path]
        else:
            keys.append(path)
    return keys


def _model_of_path(path: str) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Config
    for part in path.replace("[]", "").split("."):
        if model is None or part not in model.model_fields:
            return None
        model = _model_of(model.model_fields[part].annotation)
    return model


# -- install ---------------------------------------------------------------------------------


def test_install_is_editable_while_web_files_live_outside_the_package() -> None:
    """hub/http/pages.py reads widget.js, the templates and the dashboard's files from the
    checkout's web/ folder, which `pip install` of the checkout does not copy into the venv:
    the guide installs editable until they are package data."""
    from hub.http.pages import WEB_DIR

    package = REPO / "hub"
    if package in WEB_DIR.resolve().parents:
        return
    installs = [
        line
        for b in guide_blocks()
        if b.lang == "sh"
        for line in b.text.splitlines()
        if re.search(r"\bpip install\b", line)
    ]
    assert installs and all(re.search(r"pip install (-e|--editable) ", i) for i in installs), (
        installs
    )
