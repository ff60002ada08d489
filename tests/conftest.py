"""Shared by every test: the hub's language (hub.i18n) is English unless a test asks for
another with the `shop_language` fixture, and English again after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from hub import i18n


@pytest.fixture(autouse=True)
def _english_after_each_test() -> Iterator[None]:
    yield
    i18n.set_locale("en")


@pytest.fixture
def shop_language() -> Callable[[str], None]:
    """Switch the texts to a shop locale for one test: `shop_language("de_DE")`."""
    return i18n.set_locale
