"""The `commerce` section of the config: catalogue, payment provider, texts to customers."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, Field, model_validator

from hub.commerce.providers.settings import (
    MollieSettings,
    ShopifySettings,
    StripeSettings,
    WooCommerceSettings,
)
from hub.config.section import Section


class CommerceTexts(Section):
    """Messages to the customer; {number}, {amount}, {tracking_url}, {reason}, {link},
    {instructions} are filled in. None: the catalogue's text in the shop's language (hub.i18n;
    the defaults are where each text is used, in hub.commerce)."""

    checkout_link: str | None = None
    thank_you: str | None = None
    shipped: str | None = None
    delivered: str | None = None
    cancelled: str | None = None
    order_placed: str | None = None


PaymentMethod = Literal["invoice", "prepayment"]
PAYMENT_METHODS: tuple[PaymentMethod, ...] = ("invoice", "prepayment")


class BuiltinCheckoutConfig(Section):
    # Offline payment methods offered on the hub's own checkout page.
    payment_methods: list[PaymentMethod] = Field(
        default_factory=lambda: list(PAYMENT_METHODS), min_length=1
    )
    # Shown after ordering with prepayment (bank account, reference to use...); None: the
    # catalogue's text in the shop's language, "": none.
    prepayment_instructions: str | None = None
    invoice_instructions: str | None = None
    # Countries offered in the address form (ISO 3166 alpha-2).
    countries: list[str] = Field(
        default_factory=lambda: [
            "DE",
            "AT",
            "CH",
            "NL",
            "BE",
            "LU",
            "FR",
            "IT",
            "ES",
            "DK",
            "PL",
            "GB",
            "US",
        ],
        min_length=1,
    )


class CommerceConfig(Section):
    # A CSV or YAML product file loaded at start (relative to data_dir); `hub catalog import`
    # loads one into the database at any time.
    catalogue_file: Path | None = None
    default_vat_rate: Decimal | None = Field(None, ge=0, lt=100)
    max_quantity: int = Field(99, ge=1, le=100_000)
    provider: Literal["builtin", "shopify", "woocommerce", "stripe", "mollie"] = "builtin"
    order_number_prefix: str = Field("", max_length=8)
    # WhatsApp template for order updates once the 24-hour window has closed; it gets two
    # body parameters: the order number and the update text.
    order_update_template: str | None = None
    short_link_base: AnyHttpUrl | None = None  # default: http.public_url
    texts: CommerceTexts = Field(default_factory=CommerceTexts)
    builtin: BuiltinCheckoutConfig = Field(default_factory=BuiltinCheckoutConfig)
    shopify: ShopifySettings | None = None
    woocommerce: WooCommerceSettings | None = None
    stripe: StripeSettings | None = None
    mollie: MollieSettings | None = None

    @model_validator(mode="after")
    def _provider_configured(self) -> CommerceConfig:
        if self.provider != "builtin" and getattr(self, self.provider) is None:
            raise ValueError(
                f"provider is {self.provider}, but the commerce.{self.provider} section is "
                "missing (see config.example.yaml)"
            )
        return self
