"""The command line as an admin runs it: `python -m hub check-config | generate-registration |
migrate`, each in a subprocess (exit codes, stdout/stderr, files written)."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.example.yaml"


def hub(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


def example_copy(tmp_path: Path, *, fill_tokens: bool) -> Path:
    text = EXAMPLE.read_text(encoding="utf-8")
    if fill_tokens:
        text = text.replace("as_token: CHANGE_ME", "as_token: " + "a1" * 20)
        text = text.replace("hs_token: CHANGE_ME", "hs_token: " + "b2" * 20)
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def with_data_dir(path: Path, data_dir: Path) -> Path:
    path.write_text(
        path.read_text(encoding="utf-8").replace("data_dir: .", f"data_dir: {data_dir}"),
        encoding="utf-8",
    )
    return path


# --- check-config -----------------------------------------------------------------------------


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    path = example_copy(tmp_path, fill_tokens=True)
    result = hub("check-config", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert f"{path}: OK" in result.stdout
    assert "@shopbot:shop.example" in result.stdout
    assert "a1a1" not in result.stdout + result.stderr  # never print the tokens
    assert not (tmp_path / "hub.db").exists()  # checking creates nothing


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t, "appservice.as_token: still the example placeholder CHANGE_ME"),
        (lambda t: t + "\nhomeservr: {}\n", "homeservr: unknown key"),
        (lambda t: t.replace("port: 29330", "port: eighty"), "http.port: Input should be"),
        (lambda t: t.replace("  domain: shop.example", "  domain: [x"), "not valid YAML"),
        (lambda t: "- just\n- a list\n", "the file must contain a YAML mapping"),
    ],
    ids=["placeholder", "unknown-key", "wrong-type", "bad-yaml", "not-a-mapping"],
)
def test_check_config_refuses_a_bad_file_with_exit_2(
    tmp_path: Path, edit: object, expected: str
) -> None:
    # Only the placeholder case keeps CHANGE_ME (placeholders are reported before the rest).
    path = example_copy(tmp_path, fill_tokens="placeholder" not in expected)
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")  # type: ignore[operator]
    result = hub("check-config", "-c", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"configuration {path} is not valid:\n  - ")
    assert expected in result.stderr
    assert result.stdout == ""
    assert_no_traceback(result)


def test_check_config_missing_file_is_exit_2(tmp_path: Path) -> None:
    result = hub("check-config", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "file not found" in result.stderr
    assert_no_traceback(result)


# --- generate-registration --------------------------------------------------------------------


def test_generate_registration_fills_tokens_and_writes_the_registration(tmp_path: Path) -> None:
    config_path = example_copy(tmp_path, fill_tokens=False)
    original = config_path.read_text(encoding="utf-8")
    reg_path = tmp_path / "out" / "registration.yaml"

    result = hub("generate-registration", "-c", str(config_path), "-o", str(reg_path))
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    assert "wrote random as_token and hs_token" in result.stdout

    updated = config_path.read_text(encoding="utf-8")
    assert "CHANGE_ME" not in yaml.safe_dump(yaml.safe_load(updated))
    app = yaml.safe_load(updated)["appservice"]
    tokens = {k: app[k] for k in ("as_token", "hs_token")}
    # Strings even when all digits (e.g. quoted), 64 hex characters each.
    assert all(isinstance(t, str) and re.fullmatch(r"[0-9a-f]{64}", t) for t in tokens.values())
    assert tokens["as_token"] != tokens["hs_token"]
    # Only the two token lines changed: every comment and every other line is kept.
    old_lines, new_lines = original.splitlines(), updated.splitlines()
    assert len(old_lines) == len(new_lines)
    changed = [(o, n) for o, n in zip(old_lines, new_lines, strict=True) if o != n]
    assert [o.strip() for o, _ in changed] == ["as_token: CHANGE_ME", "hs_token: CHANGE_ME"]

    reg = yaml.safe_load(reg_path.read_text(encoding="utf-8"))
    assert reg["id"] == "commerce-hub"
    assert reg["url"] == "http://127.0.0.1:29330"
    assert reg["as_token"] == tokens["as_token"]
    assert reg["hs_token"] == tokens["hs_token"]
    assert reg["sender_localpart"] == "shopbot"
    assert reg["rate_limited"] is False
    assert [ns["exclusive"] for ns in reg["namespaces"]["users"]] == [True]
    assert reg["namespaces"]["rooms"] == []
    assert not list(reg_path.parent.glob("*.tmp"))  # written atomically, nothing left over

    # The file is now a good config.
    assert hub("check-config", "-c", str(config_path)).returncode == 0


def test_generate_registration_again_keeps_the_tokens(tmp_path: Path) -> None:
    config_path = example_copy(tmp_path, fill_tokens=False)
    reg_path = tmp_path / "registration.yaml"
    assert hub("generate-registration", "-c", str(config_path), "-o", str(reg_path)).returncode == 0
    config_once, reg_once = config_path.read_text(), yaml.safe_load(reg_path.read_text())

    result = hub("generate-registration", "-c", str(config_path), "-o", str(reg_path))
    assert result.returncode == 0, result.stderr
    assert "wrote random" not in result.stdout
    assert config_path.read_text() == config_once
    assert yaml.safe_load(reg_path.read_text()) == reg_once


def test_generate_registration_fills_quoted_placeholders(tmp_path: Path) -> None:
    config_path = example_copy(tmp_path, fill_tokens=False)
    text = config_path.read_text()
    text = text.replace("as_token: CHANGE_ME", 'as_token: "CHANGE_ME"')
    text = text.replace("hs_token: CHANGE_ME", "hs_token: 'CHANGE_ME_TOO'  # keep me")
    config_path.write_text(text)
    result = hub("generate-registration", "-c", str(config_path), "-o", str(tmp_path / "r.yaml"))
    assert result.returncode == 0, result.stderr
    updated = config_path.read_text()
    assert "CHANGE_ME" not in yaml.safe_dump(yaml.safe_load(updated))
    assert re.search(r"(?m)^  hs_token: \"?[0-9a-f]{64}\"?  # keep me$", updated)


def test_generate_registration_with_a_bad_config_is_exit_2(tmp_path: Path) -> None:
    config_path = example_copy(tmp_path, fill_tokens=False)
    config_path.write_text(config_path.read_text() + "\nunknown_section: 1\n")
    reg_path = tmp_path / "registration.yaml"
    result = hub("generate-registration", "-c", str(config_path), "-o", str(reg_path))
    assert result.returncode == 2
    assert "unknown_section: unknown key" in result.stderr
    assert_no_traceback(result)
    assert not reg_path.exists()


def _registration_for(tmp_path: Path, domain: str) -> dict[str, object]:
    config_path = example_copy(tmp_path, fill_tokens=False)
    text = config_path.read_text().replace("domain: shop.example", f"domain: {domain}")
    config_path.write_text(text.replace('"@anna:shop.example"', f'"@anna:{domain}"'))
    reg_path = tmp_path / "registration.yaml"
    result = hub("generate-registration", "-c", str(config_path), "-o", str(reg_path))
    assert result.returncode == 0, result.stderr
    reg = yaml.safe_load(reg_path.read_text())
    assert isinstance(reg, dict)
    return reg


def _matches(namespace: list[dict[str, object]], mxid: str) -> bool:
    # Synapse tests each namespace with re.match (anchored at the start only).
    return any(re.match(str(ns["regex"]), mxid) for ns in namespace)


def test_registration_regexes_claim_exactly_our_ghosts_and_aliases(tmp_path: Path) -> None:
    reg = _registration_for(tmp_path, "shop.example")
    namespaces = reg["namespaces"]
    assert isinstance(namespaces, dict)
    users, aliases = namespaces["users"], namespaces["aliases"]
    assert "shop\\.example" in users[0]["regex"]  # dots escaped

    for mxid in ["@customer_web_k3j2x:shop.example", "@customer_:shop.example"]:
        assert _matches(users, mxid), mxid
    for mxid in [
        "@customer_web_k3j2x:shopXexample",  # an unescaped dot would match this
        "@customer_web_k3j2x:other.example",
        "@anna:shop.example",
        "@shopbot:shop.example",  # the bot is the sender_localpart, not a ghost
        "@xcustomer_web:shop.example",
        "@customer_web_k3j2x:shop.example.evil.example",  # a longer server name
        "@customer_web_k3j2x:shop.example:8448",
    ]:
        assert not _matches(users, mxid), mxid

    assert _matches(aliases, "#hubportal_42:shop.example")
    for alias in [
        "#hubportal_42:shopXexample",
        "#hubportal_42:other.example",
        "#general:shop.example",
        "@hubportal_42:shop.example",
        "#hubportal_42:shop.example.evil.example",
    ]:
        assert not _matches(aliases, alias), alias


def test_registration_regexes_with_a_port_in_the_server_name(tmp_path: Path) -> None:
    reg = _registration_for(tmp_path, "localhost:8448")
    users = reg["namespaces"]["users"]  # type: ignore[index]
    assert _matches(users, "@customer_x:localhost:8448")
    assert not _matches(users, "@customer_x:localhost")


# --- migrate ----------------------------------------------------------------------------------


def _tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {r[0] for r in rows}


def test_migrate_creates_the_schema_and_can_run_twice(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config_path = with_data_dir(example_copy(tmp_path, fill_tokens=True), data_dir)
    for _ in range(2):
        result = hub("migrate", "-c", str(config_path))
        assert result.returncode == 0, result.stderr
        assert "database schema is up to date" in result.stdout
        assert_no_traceback(result)
    tables = _tables(data_dir / "hub.db")
    assert {"alembic_version", "outbox", "messages", "conversations"} <= tables


def test_migrate_refuses_a_newer_schema_with_exit_1(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with sqlite3.connect(data_dir / "hub.db") as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('9999_future')")
    config_path = with_data_dir(example_copy(tmp_path, fill_tokens=True), data_dir)
    result = hub("migrate", "-c", str(config_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("hub cannot start: ")
    assert "9999_future" in result.stderr and "newer" in result.stderr
    assert_no_traceback(result)


def test_migrate_with_a_bad_config_is_exit_2(tmp_path: Path) -> None:
    result = hub("migrate", "-c", str(example_copy(tmp_path, fill_tokens=False)))
    assert result.returncode == 2
    assert "CHANGE_ME" in result.stderr
    assert_no_traceback(result)


# --- hours simulate ---------------------------------------------------------------------------

SHOP_HOURS = """
shop:
  name: Farben Müller
  locale: de_DE
  timezone: Europe/Berlin
  advisers: ["@anna:shop.example"]
hours:
  weekly: {mon: "9-13, 14-18", tue: "9-13, 14-18", wed: "9-13, 14-18",
           thu: "9-13, 14-18", fri: "9-13, 14-18", sat: "9-14"}
  holidays: {country: DE, region: NW}
  special: {2026-12-24: "9-13"}
replies:
  back: {enabled: true}
"""


def shop_config(tmp_path: Path, extra: str = SHOP_HOURS) -> Path:
    data = yaml.safe_load(example_copy(tmp_path, fill_tokens=True).read_text(encoding="utf-8"))
    data.update(yaml.safe_load(extra))
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_hours_simulate_shows_the_holding_reply_and_the_closing_window(tmp_path: Path) -> None:
    path = shop_config(tmp_path)
    result = hub("hours", "simulate", "2026-12-26 22:10", "-c", str(path))
    assert_no_traceback(result)
    assert result.returncode == 0, result.stderr
    out = result.stdout.replace("\xa0", " ")
    assert "Moment:   Saturday 2026-12-26 22:10 CET (Europe/Berlin)" in out
    assert "Shop:     Jetzt geschlossen; öffnet wieder am Montag, 9:00 Uhr." in out
    assert "Holding reply (closed all day; once until the shop opens):" in out
    assert "Heute haben wir geschlossen. Unser Beratungsteam antwortet Ihnen ab Montag" in out
    assert "Holiday:  Zweiter Weihnachtstag" in out
    # WhatsApp's window closes on Sunday evening, before Monday's opening.
    assert "Window:   closes Sun 2026-12-27 22:10 before the shop opens" in out
    assert "„Ich bin da“" in out
    assert "At the opening (Montag, 9:00 Uhr):" in out


def test_hours_simulate_on_an_open_weekday_and_for_a_channel_without_window(
    tmp_path: Path,
) -> None:
    path = shop_config(tmp_path)
    result = hub("hours", "simulate", "2026-12-28 10:00", "--channel", "telegram", "-c", str(path))
    assert result.returncode == 0, result.stderr
    out = result.stdout.replace("\xa0", " ")
    assert "Holding reply: none (the shop is open)" in out
    assert "Missed:   counts as missed without an adviser reply by Montag, 10:15 Uhr" in out
    result = hub("hours", "simulate", "2026-12-27 10:00", "--channel", "telegram", "-c", str(path))
    assert "Window:" not in result.stdout


def test_hours_simulate_refuses_a_moment_it_cannot_read(tmp_path: Path) -> None:
    result = hub("hours", "simulate", "Sonntag abend", "-c", str(shop_config(tmp_path)))
    assert result.returncode == 2
    assert "'Sonntag abend': not a moment" in result.stderr
    assert_no_traceback(result)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "hours: {weekly: {mon: '9-13, 12-18'}}",
            "hours.weekly: mon: 09:00-13:00 and 12:00-18:00 overlap",
        ),
        (
            "hours: {weekly: {mon: '18-9'}}",
            "hours.weekly: mon: 18-9: the end must be after the start",
        ),
        ("hours: {holidays: {country: DE, region: XX}}", "region 'XX' is not a region of DE"),
        ("shop: {timezone: Europe/Bonn}", "unknown time zone 'Europe/Bonn'"),
        ("shop: {timezone: Europe/Berlinn}", "unknown time zone 'Europe/Berlinn'"),
        ("shop: {locale: de_XX}", "unknown locale 'de_XX'"),
    ],
)
def test_check_config_names_a_bad_hours_key(tmp_path: Path, extra: str, message: str) -> None:
    result = hub("check-config", "-c", str(shop_config(tmp_path, extra)))
    assert result.returncode == 2
    assert message in result.stderr
    assert_no_traceback(result)
