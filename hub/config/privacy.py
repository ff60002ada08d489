"""Config of what the customer consents to and what the shop keeps: photo consent (`consent`),
the newsletter's double opt-in and broadcasts (`newsletter`), export, erasure and retention
(`privacy`). Texts left empty come from the catalogues in the shop's language (hub.i18n).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from hub.config.section import Section


def _words(value: list[str]) -> list[str]:
    """Answer words are compared case-folded, without surrounding blanks and punctuation."""
    words = [w.strip().casefold() for w in value if w.strip()]
    if not words:
        raise ValueError("needs at least one word")
    return words


class PhotoConsentConfig(Section):
    # The consent text the customer is asked, and its version: both stored with every answer
    # as proof. Change the version whenever the text changes. null: the catalogue's text.
    text: str | None = None
    version: str = Field("1", min_length=1, max_length=64)
    # Words that answer a request where the channel has no buttons (and beside them).
    yes_words: list[str] = Field(default_factory=lambda: ["ja", "yes", "ok", "einverstanden"])
    no_words: list[str] = Field(default_factory=lambda: ["nein", "no"])
    # A customer's message that is one of these withdraws every consent they gave.
    revoke_words: list[str] = Field(
        default_factory=lambda: ["widerrufen", "widerruf", "revoke", "withdraw"]
    )
    # An unanswered request expires (a late answer still counts, recorded as late).
    expire_hours: int = Field(72, ge=1, le=24 * 90)

    _check_words = field_validator("yes_words", "no_words", "revoke_words")(_words)


class NewsletterConfig(Section):
    # Named in the opt-in request, as WhatsApp's opt-in rules require. null: shop.name.
    business_name: str | None = None
    # What the customer will receive (null: the catalogue's text).
    purpose: str | None = None
    version: str = Field("1", min_length=1, max_length=64)
    confirm_words: list[str] = Field(default_factory=lambda: ["ja", "yes", "ok"])
    # A customer's message that is one of these opts them out, at any time.
    stop_words: list[str] = Field(
        default_factory=lambda: ["stop", "abmelden", "unsubscribe", "abbestellen"]
    )
    expire_hours: int = Field(72, ge=1, le=24 * 90)
    # `hub broadcast`: messages per minute handed to the channels.
    broadcast_per_minute: int = Field(60, ge=1, le=6000)

    _check_words = field_validator("confirm_words", "stop_words")(_words)


class PrivacyConfig(Section):
    # `hub gdpr erase` and retention: orders are kept with the customer's details removed
    # (accounting must keep invoices) or deleted with everything else.
    orders: Literal["anonymise", "delete"] = "anonymise"
    # Conversations with no message for this many days are erased by a daily job; 0: never.
    retention_days: int = Field(0, ge=0, le=36500)
