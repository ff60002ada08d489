"""Synapse's homeserver.yaml and log config for a loopback server (hub.devserver.synapse):
offline (no federation, key servers, previews or presence), SQLite, and rate limits that
tests never reach or that a few demo advisers on one address never see.

With `SynapseConfig.federation` the server also federates, on loopback only, with the peers
named there (tests of advisers from another homeserver): a TLS federation listener on
127.0.0.1, server names with explicit ports ("localhost:8448", so no .well-known or SRV
lookup happens), self-signed certificates nobody verifies, and 127.0.0.1 allowed as a
destination. Still no key servers: peers fetch each other's signing keys directly."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

LOOPBACK = "127.0.0.1"
# A limit nobody reaches in a test run; Synapse silently ignores misspelt rc_* keys, so the
# key shapes below were checked against synapse/config/ratelimiting.py of 1.163.
_UNLIMITED = {"per_second": 1000, "burst_count": 1000}


@dataclass
class FederationSettings:
    """Federation with a few other loopback homeservers (all keys as Synapse 1.163 reads
    them in synapse/config/server.py, tls.py and federation.py)."""

    # The TLS federation listener on 127.0.0.1. The server name must carry this port
    # ("localhost:PORT"): other servers connect to exactly the host and port it names.
    port: int
    # Server names ("localhost:PORT") this server federates with: its
    # federation_domain_whitelist, which also refuses everyone else's inbound requests.
    peers: list[str] = field(default_factory=list)
    # PEM files of the listener; None: a self-signed pair in data_dir (tls.crt, tls.key)
    # that hub.devserver.synapse creates on first use.
    tls_certificate_path: Path | None = None
    tls_private_key_path: Path | None = None


def federation_tls_paths(config: SynapseConfig) -> tuple[Path, Path]:
    """The certificate and key files of the federation listener (config.federation set)."""
    assert config.federation is not None
    fed = config.federation
    return (
        fed.tls_certificate_path or config.data_dir / "tls.crt",
        fed.tls_private_key_path or config.data_dir / "tls.key",
    )


@dataclass
class SynapseConfig:
    """What homeserver.yaml needs; everything else is fixed for a loopback server."""

    data_dir: Path  # everything of this Synapse lives here (DB, media, keys, logs)
    server_name: str  # e.g. "shop.example" or "localhost"; part of every MXID
    port: int
    registration_files: list[Path] = field(default_factory=list)  # appservice YAMLs
    registration_shared_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    for_tests: bool = False  # cheap bcrypt and rate limits nobody reaches
    log_level: str = "INFO"  # of homeserver.log
    # Synapse's encryption_enabled_by_default_for_room_type: what many production servers
    # set, so tests can meet a homeserver that makes every new room encrypted.
    encrypt_new_rooms: Literal["off", "invite", "all"] = "off"
    # The experimental options an appservice that takes part in encrypted rooms needs: the
    # bot's to-device messages (room keys) and its device lists and one-time key counts are
    # pushed in transactions instead of being fetched through /sync, which appservices lack.
    appservice_encryption: bool = False
    # None: no federation at all (the demo and most tests).
    federation: FederationSettings | None = None


def _rate_limits(for_tests: bool) -> dict[str, Any]:
    if for_tests:
        u = _UNLIMITED
        return {
            "rc_message": u,
            "rc_registration": u,
            "rc_login": {"address": u, "account": u, "failed_attempts": u},
            "rc_admin_redaction": u,
            "rc_joins": {"local": u, "remote": u},
            "rc_joins_per_room": u,
            "rc_invites": {"per_room": u, "per_user": u, "per_issuer": u},
            "rc_room_creation": u,
            # Not in the notes but hit by tests too: uploads, profile and presence updates.
            "rc_media_create": u,
            "rc_profile": u,
            "rc_presence": {"per_user": u},
            "rc_key_requests": u,
            "rc_user_directory": u,
        }

    # The demo: a few advisers on one IP (everybody is 127.0.0.1 behind loopback) should
    # never see "Too many requests", while the defaults stay within an order of magnitude.
    def rl(per_second: float, burst_count: int) -> dict[str, float]:
        return {"per_second": per_second, "burst_count": burst_count}

    return {
        "rc_message": rl(10, 50),
        "rc_registration": rl(1, 20),
        "rc_login": {"address": rl(1, 20), "account": rl(0.5, 10), "failed_attempts": rl(0.2, 10)},
        "rc_admin_redaction": rl(5, 50),
        "rc_joins": {"local": rl(2, 50), "remote": rl(0.1, 10)},
        "rc_joins_per_room": rl(5, 50),
        "rc_invites": {"per_room": rl(5, 50), "per_user": rl(1, 20), "per_issuer": rl(5, 50)},
        "rc_room_creation": rl(1, 20),
        "rc_media_create": rl(10, 100),
    }


def log_config(log_file: Path, level: str) -> dict[str, Any]:
    return {
        "version": 1,
        "formatters": {
            "precise": {
                "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - "
                "%(request)s - %(message)s"
            }
        },
        "handlers": {
            "file": {
                "class": "logging.handlers.RotatingFileHandler",
                "formatter": "precise",
                "filename": str(log_file),
                "maxBytes": 20_000_000,  # the demo may run for days
                "backupCount": 2,
                "encoding": "utf8",
            },
        },
        # DEBUG on synapse.storage.SQL would log access tokens.
        "loggers": {"synapse.storage.SQL": {"level": "INFO"}},
        "root": {"level": level, "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


def _client_listener(config: SynapseConfig) -> dict[str, Any]:
    return {
        "port": config.port,
        "type": "http",
        "tls": False,
        "bind_addresses": [LOOPBACK],
        "x_forwarded": False,
        # `client` also serves /_synapse/admin; federation, if any, has its own listener.
        "resources": [{"names": ["client"], "compress": False}],
    }


def homeserver_yaml(config: SynapseConfig, url: str, log_config_path: Path) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "server_name": config.server_name,
        "public_baseurl": url + "/",
        "report_stats": False,  # Synapse refuses to start without it
        "listeners": [_client_listener(config)],
        "database": {
            "name": "sqlite3",
            "args": {"database": str(config.data_dir / "homeserver.db")},
        },
        "media_store_path": str(config.data_dir / "media_store"),
        "max_upload_size": "50M",
        "signing_key_path": str(config.data_dir / "signing.key"),
        "macaroon_secret_key_path": str(config.data_dir / "macaroon_secret.key"),
        "form_secret_path": str(config.data_dir / "form_secret.key"),
        "log_config": str(log_config_path),
        # Offline: no key servers, no federation, no URL previews, no presence traffic.
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_domain_whitelist": [],
        "url_preview_enabled": False,
        "presence": {"enabled": False},
        "enable_registration": False,
        "registration_shared_secret": config.registration_shared_secret,
        "app_service_config_files": [
            str(p.expanduser().absolute()) for p in config.registration_files
        ],
        # Quoted by the dumper: a bare `off` would load as the boolean false (which Synapse
        # happens to accept too, but the file should say what it means).
        "encryption_enabled_by_default_for_room_type": config.encrypt_new_rooms,
        **({"bcrypt_rounds": 4} if config.for_tests else {}),
        **_rate_limits(config.for_tests),
    }
    if config.appservice_encryption:
        # Names as synapse/config/experimental.py of 1.163 reads them; misspelt keys are
        # ignored silently, and the hub would then never see a room key.
        cfg["experimental_features"] = {
            "msc2409_to_device_messages_enabled": True,
            "msc3202_transaction_extensions": True,
        }
    if config.federation is not None:
        cfg.update(_federation(config, config.federation))
    return cfg


def _federation(config: SynapseConfig, fed: FederationSettings) -> dict[str, Any]:
    cert, key = federation_tls_paths(config)
    listener = {
        "port": fed.port,
        "type": "http",
        "tls": True,
        "bind_addresses": [LOOPBACK],
        "x_forwarded": False,
        # `federation` also serves /_matrix/key/v2: the peers fetch our signing key here.
        "resources": [{"names": ["federation"], "compress": False}],
    }
    return {
        "listeners": [_client_listener(config), listener],
        "tls_certificate_path": str(cert.expanduser().absolute()),
        "tls_private_key_path": str(key.expanduser().absolute()),
        # Self-signed certificates on both sides.
        "federation_verify_certificates": False,
        # Only the peers, never anyone on the internet (an empty list: no federation).
        "federation_domain_whitelist": list(fed.peers),
        # Synapse refuses outbound requests to loopback and private ranges by default
        # (ip_range_blacklist, which federation falls back to). Allowing 127.0.0.1 only:
        # "localhost" may also resolve to ::1, which stays blocked, and the peers listen on
        # 127.0.0.1 anyway.
        "ip_range_whitelist": [f"{LOOPBACK}/32"],
    }
