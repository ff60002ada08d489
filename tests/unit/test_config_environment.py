"""Config values from the environment (hub.config.environment): values and _FILE, errors
that name the variable and never show a secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hub.config import ConfigError, parse_config

BASE: dict[str, Any] = {
    "homeserver": {"url": "http://127.0.0.1:8008", "domain": "shop.example"},
    "appservice": {"as_token": "CHANGE_ME", "hs_token": "CHANGE_ME"},
}


def test_secrets_come_from_variables_and_files_instead_of_the_yaml(tmp_path: Path) -> None:
    secret = tmp_path / "hs_token"
    secret.write_text("h" * 40 + "\n")
    env = {
        "HUB__APPSERVICE__AS_TOKEN": "a" * 40,
        "hub__appservice__hs_token_file": str(secret),
        "HUB__CHANNELS__WHATSAPP__APP_SECRET": "s" * 32,
        "HUB__HOMESERVER__ADMIN_TOKEN_FILE": str(secret),
        "PATH": "/usr/bin",
    }
    config = parse_config(BASE, environ=env)
    assert config.appservice.as_token == "a" * 40
    assert config.appservice.hs_token == "h" * 40  # the newline dropped
    assert config.channels.whatsapp.app_secret == "s" * 32
    assert config.homeserver.admin_token == "h" * 40
    # A key named catalogue_file is a key, not a file reference.
    env2 = {**env, "HUB__COMMERCE__CATALOGUE_FILE": "paint.csv"}
    assert str(parse_config(BASE, environ=env2).commerce.catalogue_file).endswith("paint.csv")


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"HUB__APPSERVICE__AS_TOKN": "x"}, "HUB__APPSERVICE__AS_TOKN: names no config key"),
        ({"HUB__NOSECTION__KEY": "x"}, "HUB__NOSECTION__KEY: names no config key"),
        ({"HUB__APPSERVICE": "x"}, "HUB__APPSERVICE: names no config key"),
        ({"HUB__APPSERVICE__AS_TOKEN_FILE": "/nonexistent/t"}, "cannot read /nonexistent/t"),
    ],
)
def test_a_variable_that_names_no_key_or_no_file_is_an_error(
    env: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(BASE, environ={"HUB__APPSERVICE__HS_TOKEN": "h" * 40, **env})
    assert any(problem in p for p in refused.value.problems)


def test_an_invalid_secret_is_never_shown() -> None:
    env = {"HUB__APPSERVICE__AS_TOKEN": "short-secret", "HUB__APPSERVICE__HS_TOKEN": "h" * 40}
    with pytest.raises(ConfigError) as refused:
        parse_config(BASE, environ=env)
    assert "short-secret" not in str(refused.value)
    assert "appservice.as_token" in str(refused.value)
