"""The one typed configuration model of the hub, loaded from a single YAML file.

Unknown keys, wrong types, missing secrets and example placeholders are refused at start
with a message that names the key and says what to do (never a traceback).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    Field,
    IPvAnyNetwork,
    ValidationError,
    field_validator,
    model_validator,
)

from hub.config.advisers import CannedReply, NotesConfig, RoutingConfig
from hub.config.channels import (
    ChannelsConfig,
    MetaPageConfig,
    TelegramConfig,
    WebchatConfig,
    WhatsappConfig,
    WhatsappTemplate,
)
from hub.config.commerce import BuiltinCheckoutConfig, CommerceConfig, CommerceTexts
from hub.config.dashboard import DashboardConfig, MetricsConfig
from hub.config.encryption import EncryptionConfig
from hub.config.environment import apply_environment
from hub.config.hours import (
    HoursConfig,
    MissedConfig,
    RepliesConfig,
    ScheduledConfig,
    check_timezone,
)
from hub.config.privacy import NewsletterConfig, PhotoConsentConfig, PrivacyConfig
from hub.config.section import Section

PLACEHOLDER_MARKER = "CHANGE_ME"
# Keys whose values never appear in an error message.
SECRET_WORDS = ("token", "secret", "password", "key")
MXID_RE = re.compile(r"^@[a-z0-9._=\-/+]+:[A-Za-z0-9.\-]+(:\d+)?$")
LOCALPART_RE = re.compile(r"^[a-z0-9._=\-/]+$")


__all__ = [
    "BuiltinCheckoutConfig",
    "ChannelsConfig",
    "CommerceConfig",
    "CommerceTexts",
    "Config",
    "ConfigError",
    "HoursConfig",
    "MetaPageConfig",
    "MissedConfig",
    "NewsletterConfig",
    "PhotoConsentConfig",
    "PrivacyConfig",
    "RepliesConfig",
    "ScheduledConfig",
    "TelegramConfig",
    "WebchatConfig",
    "WhatsappConfig",
    "WhatsappTemplate",
    "load_config",
    "parse_config",
]


class ConfigError(Exception):
    """A configuration problem a human can fix; carries one line per problem."""

    def __init__(self, path: str | Path, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"configuration {self.path} is not valid:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


Secret = Annotated[str, Field(min_length=16)]


class HomeserverConfig(Section):
    url: AnyHttpUrl = Field(description="client-server API base URL the hub calls")
    domain: str = Field(description="the homeserver's server_name (after the colon in MXIDs)")
    request_timeout_seconds: float = Field(30.0, gt=0, le=600)
    # An access token of a server admin (Synapse admin API): deleting refused photos from the
    # media store, purging erased customers' rooms, deactivating their ghosts.
    admin_token: Annotated[str, Field(min_length=16)] | None = None

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9.\-]+(:\d+)?", v):
            raise ValueError("must be a server name like shop.example (no scheme, no slash)")
        return v

    @property
    def base_url(self) -> str:
        return str(self.url).rstrip("/")


class AppserviceConfig(Section):
    id: str = Field("commerce-hub", pattern=r"^[A-Za-z0-9_.\-]+$")
    as_token: Secret
    hs_token: Secret
    bot_localpart: str = "shopbot"
    bot_displayname: str = "Shop assistant"
    ghost_prefix: str = "customer_"
    alias_prefix: str = "hubportal_"

    @field_validator("bot_localpart", "ghost_prefix", "alias_prefix")
    @classmethod
    def _localpart(cls, v: str) -> str:
        if not LOCALPART_RE.fullmatch(v):
            raise ValueError("may contain only a-z, 0-9 and . _ = - /")
        return v

    @model_validator(mode="after")
    def _distinct_tokens(self) -> AppserviceConfig:
        if self.as_token == self.hs_token:
            raise ValueError("as_token and hs_token must differ")
        if self.bot_localpart.startswith(self.ghost_prefix):
            raise ValueError("bot_localpart must not start with ghost_prefix")
        return self


class HttpConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(29330, ge=1, le=65535)
    public_url: AnyHttpUrl | None = None
    appservice_url: AnyHttpUrl | None = None
    max_body_bytes: int = Field(1_048_576, ge=1024)
    # Reverse proxies in front of the hub (addresses or networks): only from them is
    # X-Forwarded-For believed, and the client is its last address that is not one of them.
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)

    @property
    def public_base(self) -> str:
        return str(self.public_url).rstrip("/") if self.public_url else self._local

    @property
    def appservice_base(self) -> str:
        return str(self.appservice_url).rstrip("/") if self.appservice_url else self._local

    @property
    def _local(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


class DatabaseConfig(Section):
    url: str = "sqlite+aiosqlite:///hub.db"
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _driver(cls, v: str) -> str:
        if not (v.startswith("sqlite+aiosqlite:///") or v.startswith("postgresql+asyncpg://")):
            raise ValueError(
                "must start with sqlite+aiosqlite:/// (embedded) or postgresql+asyncpg:// "
                "(PostgreSQL)"
            )
        return v


class ShopConfig(Section):
    name: str = "Our shop"
    advisers: list[str] = Field(default_factory=list)
    locale: str = "en_US"
    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")
    timezone: str = "UTC"
    # The advisers' room: alerts (missed conversations, closed reply windows) go there.
    # Room ids of room version 12 have no ":server" part.
    lobby_room: str | None = Field(None, pattern=r"^![^:\s]+(:[A-Za-z0-9.\-]+(:\d+)?)?$")

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        return check_timezone(v)

    @field_validator("locale")
    @classmethod
    def _locale(cls, v: str) -> str:
        from babel import Locale, UnknownLocaleError

        try:
            Locale.parse(v)
        except (UnknownLocaleError, ValueError):
            raise ValueError(f"unknown locale {v!r} (e.g. de_DE, de_AT, en_US)") from None
        return v

    @field_validator("advisers")
    @classmethod
    def _mxids(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if not MXID_RE.fullmatch(m)]
        if bad:
            raise ValueError(f"not Matrix user IDs (like @anna:shop.example): {', '.join(bad)}")
        return v


class BotConfig(Section):
    command_prefix: str = Field("!", min_length=1, max_length=3)

    @field_validator("command_prefix")
    @classmethod
    def _no_space(cls, v: str) -> str:
        if any(c.isspace() or c.isalnum() for c in v):
            raise ValueError("must be punctuation such as ! or / (no letters, digits or spaces)")
        return v


class OutboxConfig(Section):
    concurrency: int = Field(16, ge=1, le=256)
    max_attempts: int = Field(12, ge=1, le=100)
    base_delay_seconds: float = Field(1.0, gt=0)
    max_delay_seconds: float = Field(300.0, gt=0)
    lease_seconds: float = Field(120.0, ge=5)
    poll_seconds: float = Field(1.0, gt=0, le=60)


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # text: lines for people; json: one object per line for log shippers (hub.logs).
    format: Literal["text", "json"] = "text"


class Config(Section):
    """The whole hub configuration. Relative paths are resolved against `data_dir`."""

    data_dir: Path = Path(".")
    homeserver: HomeserverConfig
    appservice: AppserviceConfig
    http: HttpConfig = Field(default_factory=HttpConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    shop: ShopConfig = Field(default_factory=ShopConfig)
    bot: BotConfig = Field(default_factory=BotConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    channels: ChannelsConfig = Field(default_factory=ChannelsConfig)
    commerce: CommerceConfig = Field(default_factory=CommerceConfig)
    hours: HoursConfig = Field(default_factory=HoursConfig)
    replies: RepliesConfig = Field(default_factory=RepliesConfig)
    missed: MissedConfig = Field(default_factory=MissedConfig)
    scheduled: ScheduledConfig = Field(default_factory=ScheduledConfig)
    consent: PhotoConsentConfig = Field(default_factory=PhotoConsentConfig)
    newsletter: NewsletterConfig = Field(default_factory=NewsletterConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    encryption: EncryptionConfig = Field(default_factory=EncryptionConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    notes: NotesConfig = Field(default_factory=NotesConfig)
    canned_replies: list[CannedReply] = Field(default_factory=list)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _canned_names_unique(self) -> Config:
        names = [c.name.casefold() for c in self.canned_replies]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"canned_replies: names used twice: {', '.join(doubled)}")
        return self

    @property
    def bot_mxid(self) -> str:
        return f"@{self.appservice.bot_localpart}:{self.homeserver.domain}"

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def database_url(self) -> str:
        """The database URL with a relative SQLite path made relative to data_dir."""
        url = self.database.url
        prefix = "sqlite+aiosqlite:///"
        if url.startswith(prefix):
            path = url[len(prefix) :]
            if path and path != ":memory:" and not Path(path).is_absolute():
                return prefix + str((self.data_dir / path).resolve())
        return url


def _find_placeholders(data: Any, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(data, dict):
        for k, v in data.items():
            found += _find_placeholders(v, f"{path}.{k}" if path else str(k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found += _find_placeholders(v, f"{path}[{i}]")
    elif isinstance(data, str) and PLACEHOLDER_MARKER in data:
        found.append(path)
    return found


def _describe(err: Mapping[str, Any]) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key (misspelt? every key is documented in config.example.yaml)"
    if kind == "missing":
        return f"{key}: required but missing (see config.example.yaml)"
    if kind == "string_too_short" and key.endswith("_token"):
        return (
            f"{key}: too short for a secret; run `hub generate-registration` to create "
            "random tokens"
        )
    msg = str(err["msg"]).removeprefix("Value error, ")
    given = err.get("input")
    secret = any(word in key for word in SECRET_WORDS)
    shown = "" if isinstance(given, dict | list) or given is None or secret else f" (got {given!r})"
    return f"{key}: {msg}{shown}"


def parse_config(
    data: Any,
    source: str = "<config>",
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate already-loaded YAML data, with the keys the environment sets
    (hub.config.environment), into a Config, or raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(source, ["the file must contain a YAML mapping of sections"])
    data = copy.deepcopy(data)
    problems = apply_environment(data, Config, os.environ if environ is None else environ)
    if problems:
        raise ConfigError(source, problems)
    placeholders = _find_placeholders(data)
    if placeholders:
        raise ConfigError(
            source,
            [
                f"{p}: still the example placeholder {PLACEHOLDER_MARKER}; set a real value "
                "(tokens: `hub generate-registration` writes random ones)"
                for p in placeholders
            ],
        )
    data = dict(data)
    base = base_dir or Path.cwd()
    raw_dir = data.get("data_dir", ".")
    if isinstance(raw_dir, str):  # anything else is left to validation, which refuses it
        data_dir = Path(raw_dir)
        data["data_dir"] = data_dir if data_dir.is_absolute() else (base / data_dir).resolve()
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(e) for e in exc.errors()]) from None


def load_config(path: str | Path) -> Config:
    """Read and validate the YAML file at path, or raise ConfigError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(p, ["file not found (copy config.example.yaml to start)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(p, [f"cannot read the file: {exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(p, [f"{where}not valid YAML ({problem})"]) from None
    return parse_config(data, str(p), p.resolve().parent)
