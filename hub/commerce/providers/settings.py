"""Settings models of the external payment providers: commerce.<provider> in the config.

Kept apart from the provider modules so the config can be validated without importing the
providers' SDKs (stripe, mollie-api-python)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class MollieSettings(BaseModel):
    """commerce.mollie in the hub's config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: str = Field(pattern=r"^(live|test)_\w{8,}$", repr=False)
    api_base_url: str = Field("https://api.mollie.com", pattern=r"^https?://[^?#\s]+$")
    request_timeout_seconds: float = Field(15.0, gt=0, le=120)
    # "{order_number}" and "{items}" are filled in; shown on the customer's bank statement.
    description: str = Field("Order {order_number}", min_length=1, max_length=255)

    @field_validator("api_base_url")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.rstrip("/")


# --- mapping (pure) ---------------------------------------------------------------------------


class ShopifySettings(BaseModel):
    """commerce.shopify in the hub's config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The storefront the customer checks out on, e.g. https://my-shop.myshopify.com or the
    # shop's own domain.
    shop_url: str = Field(pattern=r"^https?://[^/?#\s]+/?$")
    # The secret Shopify signs webhooks with (app client secret, or the key shown under
    # Settings > Notifications > Webhooks for webhooks created in the admin).
    webhook_secret: str = Field(min_length=16, repr=False)
    # Cart attribute that carries our reference into the order's note_attributes.
    reference_attribute: str = Field("hub_reference", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    # Optional `ref` parameter for the shop's own order attribution (landing_site_ref).
    ref: str | None = Field(None, pattern=r"^[A-Za-z0-9_\-]{1,64}$")

    @field_validator("shop_url")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.rstrip("/")


# --- pure mapping -----------------------------------------------------------------------------


class StripeSettings(BaseModel):
    """commerce.stripe in the hub's config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret_key: str = Field(min_length=16, repr=False)  # sk_live_... / sk_test_... / rk_...
    webhook_secret: str = Field(min_length=16, repr=False)  # whsec_... of the webhook endpoint
    api_base_url: str = Field("https://api.stripe.com", pattern=r"^https?://[^?#\s]+$")
    request_timeout_seconds: float = Field(20.0, gt=0, le=120)
    # The SDK's own retries (with the idempotency key); long-term retry is the job queue's.
    max_network_retries: int = Field(1, ge=0, le=5)
    signature_tolerance_seconds: int = Field(300, ge=10, le=3600)

    @field_validator("api_base_url")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.rstrip("/")


# --- amounts and mapping (pure) ---------------------------------------------------------------


class WooCommerceSettings(BaseModel):
    """commerce.woocommerce in the hub's config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The WordPress site, e.g. https://shop.example (https: REST keys travel as Basic auth).
    store_url: str = Field(pattern=r"^https?://[^?#\s]+$")
    webhook_secret: str = Field(min_length=16, repr=False)  # the secret set on the webhook
    mode: Literal["link", "order"] = "link"
    cart_path: str = Field("/cart/", pattern=r"^/[^?#\s]*$")  # where add-to-cart links land
    multi_product_links: bool = False  # only with a plugin that reads add-to-cart=ID:QTY,...
    utm_source: str = Field("matrix-hub", max_length=64)
    utm_medium: str = Field("chat", max_length=64)
    # mode "order": REST API keys (WooCommerce > Settings > Advanced > REST API, read/write).
    consumer_key: str | None = Field(None, repr=False)
    consumer_secret: str | None = Field(None, repr=False)
    reference_meta_key: str = Field("hub_reference", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    request_timeout_seconds: float = Field(15.0, gt=0, le=120)

    @field_validator("store_url")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.rstrip("/")

    @model_validator(mode="after")
    def _keys_for_orders(self) -> WooCommerceSettings:
        if self.mode == "order" and not (self.consumer_key and self.consumer_secret):
            raise ValueError("mode 'order' needs consumer_key and consumer_secret")
        return self


# --- pure mapping -----------------------------------------------------------------------------
