"""What end-to-bridge encryption needs of the homeserver, as the hub writes it: the keys of
the appservice registration (hub.matrix.registration) and of the dev Synapse's
homeserver.yaml (hub.devserver.homeserver_yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.config import Config, parse_config
from hub.devserver.homeserver_yaml import SynapseConfig, homeserver_yaml
from hub.devserver.synapse import synapse_for_hub
from hub.matrix.registration import registration


def config(encryption: bool) -> Config:
    return parse_config(
        {
            "homeserver": {"url": "http://127.0.0.1:8448", "domain": "shop.example"},
            "appservice": {"as_token": "a1" * 20, "hs_token": "b2" * 20},
            "encryption": {"enabled": encryption},
        }
    )


def test_the_registration_asks_for_what_an_encrypting_bot_needs_only_when_enabled() -> None:
    on = registration(config(True))
    assert on["org.matrix.msc3202"] is True
    assert on["io.element.msc4190"] is True
    assert on["receive_ephemeral"] is True  # to-device messages (MSC2409) come with it
    off = registration(config(False))
    assert "org.matrix.msc3202" not in off and "io.element.msc4190" not in off
    assert off["receive_ephemeral"] is True


def written(cfg: SynapseConfig) -> dict[str, Any]:
    """homeserver.yaml as Synapse reads it back (quoting of `off` included)."""
    doc = homeserver_yaml(cfg, "http://127.0.0.1:1", Path("/tmp/log.yaml"))
    loaded = yaml.safe_load(yaml.safe_dump(doc))
    assert isinstance(loaded, dict)
    return loaded


def test_a_loopback_synapse_encrypts_new_rooms_only_when_asked(tmp_path: Path) -> None:
    base = SynapseConfig(data_dir=tmp_path, server_name="shop.example", port=1)
    assert written(base)["encryption_enabled_by_default_for_room_type"] == "off"
    assert "experimental_features" not in written(base)
    for mode in ("invite", "all"):
        cfg = SynapseConfig(
            data_dir=tmp_path, server_name="shop.example", port=1, encrypt_new_rooms=mode
        )
        assert written(cfg)["encryption_enabled_by_default_for_room_type"] == mode


def test_appservice_encryption_turns_on_synapses_experimental_options(tmp_path: Path) -> None:
    cfg = SynapseConfig(
        data_dir=tmp_path, server_name="shop.example", port=1, appservice_encryption=True
    )
    assert written(cfg)["experimental_features"] == {
        "msc2409_to_device_messages_enabled": True,
        "msc3202_transaction_extensions": True,
    }


@pytest.mark.parametrize("enabled", [True, False])
def test_synapse_for_hub_follows_the_hubs_encryption_unless_told(
    tmp_path: Path, enabled: bool
) -> None:
    hub = config(enabled)
    args = (hub, tmp_path / "reg.yaml", tmp_path, Path("python"), "secret")
    synapse = synapse_for_hub(*args)
    assert synapse.config.appservice_encryption is enabled
    assert synapse.config.encrypt_new_rooms == "off"
    told = synapse_for_hub(*args, encrypt_new_rooms="all", appservice_encryption=not enabled)
    assert told.config.appservice_encryption is not enabled
    assert told.config.encrypt_new_rooms == "all"


def test_the_registration_file_is_never_readable_by_everyone(tmp_path: Path) -> None:
    """It holds both tokens; a permissive umask must not make it world-readable."""
    import os

    from hub.matrix.registration import write_registration

    old = os.umask(0o000)
    try:
        path = tmp_path / "registration.yaml"
        write_registration(config(False), path)
        write_registration(config(False), path)  # again over the first one
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
    assert yaml.safe_load(path.read_text())["as_token"] == "a1" * 20
