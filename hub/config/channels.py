"""The `channels` section of the config: web chat and the messenger channels."""

from __future__ import annotations

import re

from pydantic import AnyHttpUrl, Field, field_validator, model_validator

from hub.config.section import Section


class WebchatLimits(Section):
    """The widget's API is anonymous: these keep one address or visitor from flooding the
    shop with conversations (each makes a room and invites every adviser). Over a limit: 429
    with Retry-After, nothing stored. Per minute, sliding."""

    sessions_per_address: int = Field(10, ge=1, le=10_000)
    messages_per_visitor: int = Field(30, ge=1, le=10_000)
    messages_per_address: int = Field(120, ge=1, le=100_000)
    uploads_per_visitor: int = Field(10, ge=1, le=10_000)
    # New conversations (a visitor's first message) for the whole shop.
    new_conversations: int = Field(30, ge=1, le=100_000)


class WebchatConfig(Section):
    enabled: bool = True
    limits: WebchatLimits = Field(default_factory=WebchatLimits)
    # Texts left at None come from the catalogues in the shop's language (hub.i18n).
    title: str | None = None
    welcome_text: str | None = None
    allowed_origins: list[str] = Field(default_factory=list)
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024, le=50 * 1024 * 1024)
    max_text_chars: int = Field(4000, ge=1, le=20000)
    demo_page: bool = True

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        bad = [o for o in v if not re.fullmatch(r"https?://[^/\s]+", o)]
        if bad:
            raise ValueError(
                f"origins must look like https://shop.example (no path): {', '.join(bad)}"
            )
        return v


class _ProviderChannel(Section):
    """Shared by the messenger channels: off by default; secrets required once enabled."""

    enabled: bool = False
    request_timeout_seconds: float = Field(15.0, gt=0, le=120)
    max_media_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)

    def _require(self, *names: str) -> None:
        if not self.enabled:
            return
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            raise ValueError(
                f"enabled, but {', '.join(missing)} not set (from the provider's developer "
                "console; or set enabled: false)"
            )


class WhatsappTemplate(Section):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    language: str = Field("en", pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")
    params: int = Field(0, ge=0, le=20)  # how many {{n}} body parameters it takes
    description: str = ""


class WhatsappConfig(_ProviderChannel):
    api_base_url: AnyHttpUrl = AnyHttpUrl("https://graph.facebook.com")
    api_version: str = Field("v21.0", pattern=r"^v\d+\.\d+$")
    phone_number_id: str = ""
    access_token: str = ""
    app_secret: str = ""
    verify_token: str = ""
    # None: the catalogue's text in the shop's language; "": no reply to voice notes.
    voice_note_reply: str | None = None
    templates: list[WhatsappTemplate] = Field(default_factory=list)
    catalog_id: str | None = None

    @model_validator(mode="after")
    def _secrets(self) -> WhatsappConfig:
        self._require("phone_number_id", "access_token", "app_secret", "verify_token")
        return self


class TelegramConfig(_ProviderChannel):
    api_base_url: AnyHttpUrl = AnyHttpUrl("https://api.telegram.org")
    bot_token: str = ""
    webhook_secret: str = ""
    set_webhook_on_start: bool = False
    # None: the catalogue's greeting in the shop's language; "": no greeting.
    start_greeting: str | None = None

    @field_validator("webhook_secret")
    @classmethod
    def _secret_chars(cls, v: str) -> str:
        # Telegram allows only these in X-Telegram-Bot-Api-Secret-Token (1-256 chars).
        if v and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", v):
            raise ValueError("may contain only A-Z, a-z, 0-9, _ and - (1 to 256 characters)")
        return v

    @model_validator(mode="after")
    def _secrets(self) -> TelegramConfig:
        self._require("bot_token", "webhook_secret")
        return self


class MetaPageConfig(_ProviderChannel):
    """Facebook Messenger (a Page) or Instagram (a professional account) via Meta webhooks."""

    api_base_url: AnyHttpUrl = AnyHttpUrl("https://graph.facebook.com")
    api_version: str = Field("v21.0", pattern=r"^v\d+\.\d+$")
    page_id: str = ""
    page_access_token: str = ""
    app_secret: str = ""
    verify_token: str = ""
    # Outside the 24-hour window, send with the HUMAN_AGENT tag (up to 7 days).
    human_agent_tag: bool = False

    @model_validator(mode="after")
    def _secrets(self) -> MetaPageConfig:
        self._require("page_id", "page_access_token", "app_secret", "verify_token")
        return self


class ChannelsConfig(Section):
    webchat: WebchatConfig = Field(default_factory=WebchatConfig)
    whatsapp: WhatsappConfig = Field(default_factory=WhatsappConfig)
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    messenger: MetaPageConfig = Field(default_factory=MetaPageConfig)
    instagram: MetaPageConfig = Field(default_factory=MetaPageConfig)
