"""Payment providers behind one protocol (see base.py).

Each module holds one provider class, its settings model (commerce.<name> in the config) and
the pure mapping of its payloads:

    builtin          BuiltinProvider        BuiltinSettings        the hub's own checkout page
    shopify          ShopifyProvider        ShopifySettings        cart permalink + order webhooks
    woocommerce      WooCommerceProvider    WooCommerceSettings    add-to-cart link / REST order
    stripe_checkout  StripeProvider         StripeSettings         Checkout Session (stripe SDK)
    mollie           MollieProvider         MollieSettings         payment (mollie-api-python)

Every constructor takes ``(settings, http)`` where ``http`` is the hub's aiohttp session.
Modules are imported by name only when configured, so an unused provider's SDK is never loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from hub.commerce.providers.base import (
    CheckoutLink,
    CheckoutRequest,
    PaymentEvent,
    PaymentProvider,
    WebhookRejected,
)
from hub.errors import ExternalError

if TYPE_CHECKING:
    import aiohttp

# name -> ("module:ProviderClass", "SettingsClass" in the same module).
PROVIDERS: dict[str, tuple[str, str]] = {
    "builtin": ("hub.commerce.providers.builtin:BuiltinProvider", "BuiltinSettings"),
    "shopify": ("hub.commerce.providers.shopify:ShopifyProvider", "ShopifySettings"),
    "woocommerce": (
        "hub.commerce.providers.woocommerce:WooCommerceProvider",
        "WooCommerceSettings",
    ),
    "stripe": ("hub.commerce.providers.stripe_checkout:StripeProvider", "StripeSettings"),
    "mollie": ("hub.commerce.providers.mollie:MollieProvider", "MollieSettings"),
}


def build_provider(
    name: str, settings: BaseModel | Mapping[str, Any], http: aiohttp.ClientSession, **extra: Any
) -> PaymentProvider:
    """The provider ``name`` with ``settings`` validated by its own settings model.

    ``settings`` may be the provider's settings model, another pydantic model with the same
    fields (a config section) or a mapping; ``extra`` adds fields the section does not hold,
    e.g. ``public_base_url`` for the builtin page. Raises KeyError for an unknown name and
    pydantic.ValidationError for bad settings.
    """
    target, settings_class = PROVIDERS[name]
    module_name, class_name = target.split(":")
    module = importlib.import_module(module_name)
    values = dict(settings.model_dump() if isinstance(settings, BaseModel) else settings)
    plain = {key: _plain(value) for key, value in (values | extra).items()}
    model = getattr(module, settings_class).model_validate(plain)
    provider: PaymentProvider = getattr(module, class_name)(model, http)
    return provider


def _plain(value: Any) -> Any:
    """Config types the provider models take as text: SecretStr -> its value, URL/Path -> str."""
    if hasattr(value, "get_secret_value"):
        return value.get_secret_value()
    if value is None or isinstance(value, str | int | float | bool | list | tuple | dict):
        return value
    return str(value)


__all__ = [
    "PROVIDERS",
    "CheckoutLink",
    "CheckoutRequest",
    "ExternalError",
    "PaymentEvent",
    "PaymentProvider",
    "WebhookRejected",
    "build_provider",
]
