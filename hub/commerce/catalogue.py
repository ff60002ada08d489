"""The shop's catalogue: products, their fields' rules, and search at chat speed (pure).

Reading a catalogue file (CSV or YAML) is hub.commerce.catalogue_files; SKUs are unique
ignoring case and accents, because advisers type them in ``!cart add``.
"""

from __future__ import annotations

import heapq
import re
import unicodedata
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar
from urllib.parse import urlsplit

from hub.commerce.money import Money, currency_exponent
from hub.errors import UserError

T = TypeVar("T")

REQUIRED = ("sku", "name", "price")
OPTIONAL = ("currency", "vat_rate", "variant_id", "image_url", "product_url", "in_stock")
COLUMNS = REQUIRED + OPTIONAL

# Long enough for any real shop, short enough that a cart stays well inside Matrix's 64 KiB event.
MAX_SKU, MAX_NAME, MAX_ID, MAX_URL = 64, 200, 64, 2048
# An import with thousands of broken rows should not print thousands of lines.
SHOWN_PROBLEMS = 20

_TRUE, _FALSE = frozenset({"true", "yes", "1"}), frozenset({"false", "no", "0"})
_RATE_RE = re.compile(r"([0-9]+(?:[.,][0-9]{1,2})?)\s*%?")


@dataclass(frozen=True, slots=True)
class Product:
    """One sellable item. ``vat_rate`` is a percentage (Decimal("19")) and included in ``price``."""

    sku: str
    name: str
    price: Money
    vat_rate: Decimal
    variant_id: str | None = None
    image_url: str | None = None
    product_url: str | None = None
    in_stock: bool = True

    def __post_init__(self) -> None:
        # Products also come from code (a WhatsApp order, tests); a float price must not slip in.
        if not isinstance(self.price, Money) or not isinstance(self.vat_rate, Decimal):
            raise TypeError("Product.price must be Money and vat_rate a Decimal percentage")


class CatalogueError(UserError):
    """The file cannot be imported; ``problems`` holds every problem found, each naming a line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = self.problems[:SHOWN_PROBLEMS]
        more = len(self.problems) - len(shown)
        lines = [f"the catalogue has {len(self.problems)} problem(s):", *shown]
        if more:
            lines.append(f"... and {more} more")
        super().__init__("\n".join(lines))


# --- single values ----------------------------------------------------------------------------


def parse_vat_rate(text: str) -> Decimal:
    """A VAT percentage from "19", "19%", "19 %", "7,5" or "5.5"; raises ValueError otherwise."""
    match = _RATE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"'{text}' is not a VAT percentage (like 19 or 7,5)")
    rate = canonical_rate(Decimal(match.group(1).replace(",", ".")))
    if 0 < rate < 1:
        raise ValueError(f"'{text}' looks like a fraction; write the VAT rate in percent, e.g. 19")
    if rate >= 100:
        raise ValueError(f"'{text}' is not a VAT percentage below 100")
    return rate


def canonical_rate(rate: Decimal) -> Decimal:
    """One spelling per rate (19, not 19.00 or 1.9E+1) so keys and JSON stay stable."""
    if rate == rate.to_integral_value():
        return rate.quantize(Decimal(1))
    return rate.normalize()


def parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"'{text}' is not one of true/false/yes/no/1/0")


def check_url(text: str) -> str:
    url = text.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in url):
        raise ValueError(f"'{url}' is not an http(s) address")
    if len(url) > MAX_URL:
        raise ValueError(f"address longer than {MAX_URL} characters")
    return url


def check_sku(text: str) -> str:
    if any(c.isspace() for c in text):
        raise ValueError(f"'{text}' contains spaces; a SKU is one word (advisers type it)")
    if not text.isprintable():
        raise ValueError(f"{text!r} contains control characters")
    if len(text) > MAX_SKU:
        raise ValueError(f"longer than {MAX_SKU} characters")
    return text


# --- rows -------------------------------------------------------------------------------------


def check_name(text: str) -> str:
    name = " ".join(text.split())  # a newline inside a quoted cell would break the cart notice
    if len(name) > MAX_NAME:
        raise ValueError(f"longer than {MAX_NAME} characters")
    return name


def check_currency(text: str) -> str:
    code = text.upper()
    currency_exponent(code)
    return code


def check_id(text: str) -> str:
    if len(text) > MAX_ID or not text.isprintable():
        raise ValueError(f"'{text}' is not a usable variant id")
    return text


# --- search -------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"[^\W_]+")


def fold(text: str) -> str:
    """Case and accents removed: "Farbé" -> "farbe", "Straße" -> "strasse"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(fold(text))


class CatalogueIndex:
    """Products prepared for lookup by SKU and search by name; build once per catalogue load.

    Name words go into a sorted vocabulary, so the products matching a prefix are found by a
    binary search and a union of posting lists instead of a scan over every product.
    """

    def __init__(self, products: Iterable[Product]) -> None:
        self.products: tuple[Product, ...] = tuple(products)
        self._by_sku: dict[str, int] = {}
        postings: dict[str, list[int]] = {}
        self._name_tokens: list[frozenset[str]] = []
        self._sort_keys: list[tuple[int, str, str]] = []
        for i, product in enumerate(self.products):
            key = fold(product.sku)
            if key in self._by_sku:
                raise ValueError(f"duplicate SKU {product.sku!r}")
            self._by_sku[key] = i
            name_tokens = tokens(product.name)
            self._name_tokens.append(frozenset(name_tokens))
            self._sort_keys.append((len(name_tokens), fold(product.name), key))
            for token in set(name_tokens):
                postings.setdefault(token, []).append(i)
        self._vocab = sorted(postings)
        self._postings = postings
        self._skus = sorted(self._by_sku)

    def __len__(self) -> int:
        return len(self.products)

    def get(self, sku: str) -> Product | None:
        """The product with this SKU, ignoring case; None if there is none."""
        i = self._by_sku.get(fold(sku.strip()))
        return None if i is None else self.products[i]

    def search(self, query: str, limit: int = 10) -> list[Product]:
        """Best matches, in tiers: the exact SKU; names where every query word starts a name
        word; names where every word (3+ letters) is inside a name word, because German
        compounds hide the word people type ("farbe" in "Wandfarbe"); SKUs starting with the
        query. Within a name tier: more whole-word hits, name starting with the first word,
        in stock, fewer words, then alphabetical."""
        query = query.strip()
        words = tokens(query)
        found: list[int] = []
        exact = self._by_sku.get(fold(query))
        if exact is not None:
            found.append(exact)
        for inside in (False, True):
            if len(found) < limit:
                found += self._name_matches(words, limit, set(found), inside=inside)
        if len(found) < limit and query and not any(c.isspace() for c in query):
            found += [i for i in self._sku_prefix(fold(query), limit) if i not in found]
        return [self.products[i] for i in found[:limit]]

    def _matching(self, word: str, inside: bool) -> set[int]:
        hits: set[int] = set()
        # Short words inside other words would match nearly everything: prefix only for those.
        if inside and len(word) >= 3:
            # A scan of the vocabulary (distinct words, far fewer than products) is fast enough.
            for token in self._vocab:
                if word in token:
                    hits.update(self._postings[token])
            return hits
        for token in _starting_with(self._vocab, word):
            hits.update(self._postings[token])
        return hits

    def _name_matches(
        self, words: list[str], limit: int, skip: set[int], inside: bool
    ) -> list[int]:
        if not words:
            return []
        # Longest words first: they have the fewest matches, so the intersection shrinks fast.
        candidates: set[int] | None = None
        for word in sorted(set(words), key=len, reverse=True):
            hits = self._matching(word, inside)
            candidates = hits if candidates is None else candidates & hits
            if not candidates:
                return []
        assert candidates is not None
        candidates -= skip
        first = words[0]

        def rank(i: int) -> tuple[int, bool, bool, tuple[int, str, str]]:
            whole = sum(w in self._name_tokens[i] for w in words)
            starts = self._sort_keys[i][1].startswith(first)
            return (-whole, not starts, not self.products[i].in_stock, self._sort_keys[i])

        return heapq.nsmallest(limit, candidates, key=rank)

    def _sku_prefix(self, prefix: str, limit: int) -> list[int]:
        return [self._by_sku[sku] for sku in _starting_with(self._skus, prefix, limit)]


def _starting_with(ordered: list[str], prefix: str, limit: int | None = None) -> list[str]:
    """The entries of a sorted list that start with ``prefix`` (one bisect, then a short walk)."""
    out: list[str] = []
    i = bisect_left(ordered, prefix)
    while i < len(ordered) and ordered[i].startswith(prefix) and len(out) != limit:
        out.append(ordered[i])
        i += 1
    return out


def search(products: Iterable[Product], query: str, limit: int = 10) -> list[Product]:
    """One-off search; keep a CatalogueIndex instead when searching the same catalogue often."""
    return CatalogueIndex(products).search(query, limit)
