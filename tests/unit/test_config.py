"""Unit tests for the typed configuration (hub.config): good files load, and every mistake
is refused with a ConfigError whose problems name the key and say what to do."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.config import Config, ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.example.yaml"
AS_TOKEN = "a1" * 20
HS_TOKEN = "b2" * 20


def filled_example_text() -> str:
    """config.example.yaml with its two CHANGE_ME tokens replaced (what an admin does)."""
    text = EXAMPLE.read_text(encoding="utf-8")
    text, n_as = re.subn(r"(?m)^(\s*as_token:\s*)CHANGE_ME\s*$", rf"\g<1>{AS_TOKEN}", text)
    text, n_hs = re.subn(r"(?m)^(\s*hs_token:\s*)CHANGE_ME\s*$", rf"\g<1>{HS_TOKEN}", text)
    assert (n_as, n_hs) == (1, 1), "config.example.yaml no longer has the two token lines"
    return text


def example_data() -> dict[str, Any]:
    data = yaml.safe_load(filled_example_text())
    assert isinstance(data, dict)
    return data


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(data: Any, base_dir: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test.yaml", base_dir)
    assert info.value.problems, "a ConfigError must carry at least one problem"
    return info.value.problems


def load_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == str(path)
    return info.value.problems


# --- good files -------------------------------------------------------------------------------


def test_filled_example_loads(tmp_path: Path) -> None:
    path = write(tmp_path / "conf" / "config.yaml", filled_example_text())
    config = load_config(path)
    assert config.homeserver.base_url == "http://127.0.0.1:8008"
    assert config.homeserver.domain == "shop.example"
    assert config.appservice.as_token == AS_TOKEN
    assert config.appservice.hs_token == HS_TOKEN
    assert config.bot_mxid == "@shopbot:shop.example"
    assert config.shop.advisers == ["@anna:shop.example"]
    assert config.bot.command_prefix == "!"
    # data_dir "." is the directory of the config file, not the working directory.
    assert config.data_dir == (tmp_path / "conf").resolve()
    assert config.media_dir == (tmp_path / "conf").resolve() / "media"
    assert config.database_url == f"sqlite+aiosqlite:///{(tmp_path / 'conf').resolve()}/hub.db"


def test_example_documents_the_defaults() -> None:
    """config.example.yaml says it lists every key with its default: check that it does."""
    example = parse_config(example_data(), "example", Path("/srv/hub"))
    minimal = parse_config(
        {
            "homeserver": example_data()["homeserver"],
            "appservice": {"as_token": AS_TOKEN, "hs_token": HS_TOKEN},
            "shop": {"advisers": ["@anna:shop.example"]},
        },
        "minimal",
        Path("/srv/hub"),
    )
    assert example.model_dump() == minimal.model_dump()


def test_relative_data_dir_is_resolved_against_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = example_data()
    data["data_dir"] = "state/../var"
    data["database"]["url"] = "sqlite+aiosqlite:///db/hub.sqlite"
    path = write(tmp_path / "etc" / "hub.yaml", yaml.safe_dump(data))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(path)
    var = (tmp_path / "etc" / "var").resolve()
    assert config.data_dir == var
    assert config.database_url == f"sqlite+aiosqlite:///{var}/db/hub.sqlite"


def test_parse_config_without_base_dir_uses_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = example_data()
    data["data_dir"] = "data"
    config = parse_config(data)
    assert config.data_dir == (tmp_path / "data").resolve()


def test_absolute_paths_and_other_urls_are_kept(tmp_path: Path) -> None:
    data = example_data()
    data["data_dir"] = str(tmp_path / "abs")
    data["database"]["url"] = "sqlite+aiosqlite:////var/lib/hub/hub.db"
    config = parse_config(data, "t", Path("/nowhere"))
    assert config.data_dir == tmp_path / "abs"
    assert config.database_url == "sqlite+aiosqlite:////var/lib/hub/hub.db"

    data["database"]["url"] = "sqlite+aiosqlite:///:memory:"
    assert parse_config(data, "t").database_url == "sqlite+aiosqlite:///:memory:"
    pg = "postgresql+asyncpg://hub:secret@db.internal:5432/hub"
    data["database"]["url"] = pg
    assert parse_config(data, "t").database_url == pg


def test_config_is_immutable() -> None:
    config = parse_config(example_data(), "t", Path("/srv"))
    with pytest.raises(ValueError):
        config.homeserver.domain = "other.example"  # type: ignore[misc]


# --- placeholders -----------------------------------------------------------------------------


def test_example_file_as_is_is_refused_for_its_placeholders(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", EXAMPLE.read_text(encoding="utf-8"))
    problems = load_problems(path)
    assert len(problems) == 2
    assert problems[0].startswith("appservice.as_token: ")
    assert problems[1].startswith("appservice.hs_token: ")
    for p in problems:
        assert "CHANGE_ME" in p
        assert "hub generate-registration" in p


def test_placeholder_anywhere_is_refused_with_its_path() -> None:
    data = example_data()
    data["shop"]["advisers"] = ["@anna:shop.example", "@CHANGE_ME:shop.example"]
    data["homeserver"]["url"] = "https://CHANGE_ME.example"
    problems = problems_of(data)
    assert [p.split(":")[0] for p in problems] == ["homeserver.url", "shop.advisers[1]"]


# --- every class of mistake -------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def _delete(key: str) -> Mutation:
    return lambda data: data.pop(key)


# (mutation, the key the problem must name, words that say what is wrong / what to do)
MISTAKES: dict[str, tuple[Mutation, str, tuple[str, ...]]] = {
    "unknown top-level key": (_set("homeservr", {}), "homeservr", ("unknown key",)),
    "unknown nested key": (_set("homeserver.urll", "x"), "homeserver.urll", ("unknown key",)),
    "unknown deeply nested key": (
        _set("channels.webchat.colour", "red"),
        "channels.webchat.colour",
        ("unknown key",),
    ),
    "wrong type (port)": (_set("http.port", "eighty"), "http.port", ("integer", "'eighty'")),
    "wrong type (section)": (_set("homeserver", "x"), "homeserver", ("dictionary",)),
    "wrong type (list)": (_set("shop.advisers", "@anna:shop.example"), "shop.advisers", ("list",)),
    "out of range": (_set("http.port", 70000), "http.port", ("65535",)),
    "missing homeserver": (_delete("homeserver"), "homeserver", ("required but missing",)),
    "missing appservice": (_delete("appservice"), "appservice", ("required but missing",)),
    "missing token": (
        lambda d: d["appservice"].pop("hs_token"),
        "appservice.hs_token",
        ("required but missing",),
    ),
    "token too short": (
        _set("appservice.as_token", "short"),
        "appservice.as_token",
        ("too short", "hub generate-registration"),
    ),
    "same tokens": (_set("appservice.hs_token", AS_TOKEN), "appservice", ("must differ",)),
    "bad adviser MXID": (
        _set("shop.advisers", ["@anna:shop.example", "anna"]),
        "shop.advisers",
        ("not Matrix user IDs", "@anna:shop.example)", ": anna"),
    ),
    "adviser MXID with space": (
        _set("shop.advisers", ["@anna smith:shop.example"]),
        "shop.advisers",
        ("not Matrix user IDs",),
    ),
    "bad db URL": (
        _set("database.url", "mysql://hub@localhost/hub"),
        "database.url",
        ("sqlite+aiosqlite:///", "postgresql+asyncpg://", "mysql://"),
    ),
    "sync postgres driver": (
        _set("database.url", "postgresql://hub@localhost/hub"),
        "database.url",
        ("postgresql+asyncpg://",),
    ),
    "prefix with a letter": (
        _set("bot.command_prefix", "x"),
        "bot.command_prefix",
        ("punctuation",),
    ),
    "prefix with a space": (
        _set("bot.command_prefix", "! "),
        "bot.command_prefix",
        ("punctuation",),
    ),
    "empty prefix": (_set("bot.command_prefix", ""), "bot.command_prefix", ("at least 1",)),
    "long prefix": (_set("bot.command_prefix", "!!!!"), "bot.command_prefix", ("at most 3",)),
    "domain with scheme": (
        _set("homeserver.domain", "https://shop.example"),
        "homeserver.domain",
        ("server name",),
    ),
    "homeserver url not http": (_set("homeserver.url", "shop.example"), "homeserver.url", ("URL",)),
    "bad localpart": (
        _set("appservice.ghost_prefix", "Customer "),
        "appservice.ghost_prefix",
        ("a-z",),
    ),
    "bad currency": (_set("shop.currency", "euro"), "shop.currency", ("pattern",)),
    "bad origin": (
        _set("channels.webchat.allowed_origins", ["https://shop.example/path"]),
        "channels.webchat.allowed_origins",
        ("no path",),
    ),
    "bad log level": (_set("logging.level", "verbose"), "logging.level", ("DEBUG",)),
    # data_dir is converted to a Path before validation: a non-string must not slip through
    # as a directory literally named "None" or "['a', 'b']".
    "data_dir null": (_set("data_dir", None), "data_dir", ()),
    "data_dir list": (_set("data_dir", ["a", "b"]), "data_dir", ()),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_mistake_is_a_config_error_naming_the_key(case: str) -> None:
    mutate, key, words = MISTAKES[case]
    data = example_data()
    mutate(data)
    problems = problems_of(data, Path("/srv/hub"))
    mine = [p for p in problems if p.startswith(f"{key}: ")]
    assert mine, f"no problem names {key!r}: {problems}"
    for word in words:
        assert any(word in p for p in mine), f"{word!r} not in {mine}"


def test_all_problems_are_reported_at_once() -> None:
    data = example_data()
    data["homeserver"]["urll"] = "x"
    data["http"]["port"] = "eighty"
    data["shop"]["advisers"] = ["anna"]
    problems = problems_of(data)
    assert {p.split(":")[0] for p in problems} == {"homeserver.urll", "http.port", "shop.advisers"}


def test_secret_values_are_not_echoed_in_problems() -> None:
    data = example_data()
    data["appservice"]["as_token"] = "tiny-secret"
    (problem,) = problems_of(data)
    assert "tiny-secret" not in problem


# --- files ------------------------------------------------------------------------------------


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    good = filled_example_text()
    line = 1 + good.splitlines().index("  domain: shop.example")
    text = good.replace("  domain: shop.example", "  domain: shop.example: oops")
    problems = load_problems(write(tmp_path / "config.yaml", text))
    assert len(problems) == 1
    assert problems[0].startswith(f"line {line}, column 23: not valid YAML (")


def test_invalid_yaml_tab_indentation(tmp_path: Path) -> None:
    problems = load_problems(write(tmp_path / "c.yaml", "homeserver:\n\turl: x\n"))
    assert problems[0].startswith("line 2, column 1: not valid YAML")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "", "# only a comment\n", "42\n"])
def test_file_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    problems = load_problems(write(tmp_path / "config.yaml", text))
    assert problems == ["the file must contain a YAML mapping of sections"]


def test_file_not_found(tmp_path: Path) -> None:
    problems = load_problems(tmp_path / "missing.yaml")
    assert problems == ["file not found (copy config.example.yaml to start)"]


def test_unreadable_files(tmp_path: Path) -> None:
    assert load_problems(tmp_path)[0].startswith("cannot read the file")  # a directory
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("shop:\n  name: Caf\xe9\n".encode("latin-1"))
    assert load_problems(latin1)[0].startswith("cannot read the file")


def test_error_renders_path_and_each_problem() -> None:
    err = ConfigError("/etc/hub.yaml", ["a: one", "b: two"])
    assert str(err) == "configuration /etc/hub.yaml is not valid:\n  - a: one\n  - b: two"


def test_model_is_the_one_config_type() -> None:
    assert isinstance(parse_config(example_data(), "t", Path("/srv")), Config)
