"""Reading the shop's catalogue from a CSV or YAML file, validated row by row.

Parsing is pure (text in, products or a CatalogueError out); only ``load_catalogue`` touches the
file system. A catalogue is usually exported by a person from a spreadsheet, so every problem in
the file is collected and reported with its line and field at once: fixing one error per import
run would be maddening with a file of thousands of rows.

File rules (also the import documentation):
- columns: sku, name, price (required); currency, vat_rate, variant_id, image_url, product_url,
  in_stock (optional). Header names are case-insensitive; unknown columns are refused, because a
  misspelt "vat_rate" would otherwise silently give every product the default rate.
- CSV: UTF-8 (a BOM is fine, Excel writes one), separated by "," or ";" (German Excel writes ";"
  with "12,50" prices), detected from the header line.
- YAML: a list of mappings, or a mapping with one key ``products`` holding that list. Values are
  read as the text written, so ``price: 12.50`` never becomes a float and ``sku: 0123`` keeps its
  leading zero.
- price: major units with "." or "," as decimal separator, no thousands separators, no more
  decimals than the currency has (see money.parse_money).
- vat_rate: a percentage, "19", "19%" or "7,5". A value between 0 and 1 ("0.19") is refused as an
  ambiguous fraction. Empty means the shop's default rate, if one is configured.
- in_stock: true/false/yes/no/1/0 (any case); empty means in stock.
- URLs: absolute http or https.
SKUs are unique ignoring case and accents, because advisers type them in ``!cart add``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import yaml

from hub.commerce.catalogue import (
    COLUMNS,
    REQUIRED,
    CatalogueError,
    Product,
    check_currency,
    check_id,
    check_name,
    check_sku,
    check_url,
    fold,
    parse_bool,
    parse_vat_rate,
)
from hub.commerce.money import parse_money

T = TypeVar("T")
Where = Callable[[str | None], str]  # field name (None: the whole row) -> "line 7, price"


class _Rows:
    """Collects products and problems during one parse call (never shared, never kept)."""

    def __init__(self, default_currency: str, default_vat_rate: Decimal | None) -> None:
        self.currency = default_currency
        self.vat_rate = default_vat_rate
        self.products: list[Product] = []
        self.problems: list[str] = []
        self._sku_places: dict[str, str] = {}

    def result(self) -> list[Product]:
        if self.problems:
            raise CatalogueError(self.problems)
        return self.products

    def add(
        self, raw: Mapping[str, str], where: Where, reported: frozenset[str] = frozenset()
    ) -> None:
        """Validate one row; report every bad field; keep the product only if all were good."""
        before = len(self.problems)

        def field(name: str, check: Callable[[str], T], required: bool = False) -> T | None:
            text = raw.get(name, "").strip()
            if name in reported:  # already reported by the reader (e.g. a YAML list value)
                return None
            if not text:
                if required:
                    self.problems.append(f"{where(name)}: required but empty")
                return None
            try:
                return check(text)
            except ValueError as exc:  # MoneyError is a ValueError too
                self.problems.append(f"{where(name)}: {exc}")
                return None

        sku = field("sku", check_sku, required=True)
        if sku is not None:
            self._check_unique(sku, where)
        name = field("name", check_name, required=True)
        currency = field("currency", check_currency)
        price = None
        if currency is not None or not raw.get("currency", "").strip():
            # With a bad currency any price check would add a second, misleading problem.
            currency = currency or self.currency
            price = field("price", lambda t: parse_money(t, currency), required=True)
        vat_rate = field("vat_rate", parse_vat_rate)
        if not raw.get("vat_rate", "").strip() and "vat_rate" not in reported:
            vat_rate = self.vat_rate
            if vat_rate is None:
                self.problems.append(f"{where('vat_rate')}: required (no default rate configured)")
        variant_id = field("variant_id", check_id)
        image_url = field("image_url", check_url)
        product_url = field("product_url", check_url)
        in_stock = field("in_stock", parse_bool)
        if len(self.problems) > before or sku is None or name is None:
            return
        if price is None or vat_rate is None:
            return
        stock = True if in_stock is None else in_stock
        product = Product(sku, name, price, vat_rate, variant_id, image_url, product_url, stock)
        self.products.append(product)

    def _check_unique(self, sku: str, where: Where) -> None:
        # Checked even when the rest of the row is bad, so a duplicate is reported in one run.
        key = fold(sku)
        if key in self._sku_places:
            self.problems.append(
                f"{where('sku')}: '{sku}' is already used ({self._sku_places[key]})"
            )
        else:
            self._sku_places[key] = where(None)


# --- CSV ----------------------------------------------------------------------------------------


def parse_catalogue_csv(
    text: str, default_currency: str, *, default_vat_rate: Decimal | None = None
) -> list[Product]:
    """Products from CSV text (see the module docstring for the rules); raises CatalogueError."""
    text = text.removeprefix("\ufeff")
    header_line = text.split("\n", 1)[0]
    # Counting beats csv.Sniffer here: a header is plain words, and Sniffer's quote heuristics
    # can pick an odd delimiter on a single line.
    delimiter = max((";", ",", "\t"), key=header_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = _Rows(default_currency, default_vat_rate)
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise CatalogueError(["line 1: the header row is missing (sku, name, price, ...)"])
        columns = _columns(header)
        previous_end = reader.line_num
        for row in reader:
            # line_num counts physical lines, so a quoted multi-line cell still gives the start.
            start, previous_end = previous_end + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # blank lines between blocks are common in hand-edited files
            cells = _fit(row, len(columns), f"line {start}", rows.problems)
            if cells is not None:
                rows.add(dict(zip(columns, cells, strict=True)), _csv_where(f"line {start}"))
    except csv.Error as exc:  # e.g. an unclosed quote running to the end of the file
        raise CatalogueError([f"line {reader.line_num}: CSV error: {exc}"]) from exc
    return rows.result()


def _csv_where(place: str) -> Where:
    return lambda f: f"{place}, {f}" if f else place


def _columns(header: list[str]) -> list[str]:
    names = [h.strip().lower().replace(" ", "_").replace("-", "_") for h in header]
    problems = []
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        problems.append(
            f"line 1: unknown column(s) {', '.join(repr(n) for n in unknown)}; "
            f"known: {', '.join(COLUMNS)}"
        )
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        problems.append(f"line 1: required column(s) missing: {', '.join(missing)}")
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        problems.append(f"line 1: column(s) appear twice: {', '.join(doubled)}")
    if problems:
        raise CatalogueError(problems)
    return names


def _fit(row: list[str], width: int, place: str, problems: list[str]) -> list[str] | None:
    # Spreadsheets sometimes pad rows with empty cells; anything else means a stray separator.
    if len(row) > width and not any(c.strip() for c in row[width:]):
        return row[:width]
    if len(row) != width:
        problems.append(
            f"{place}: {len(row)} fields but the header has {width} "
            "(a separator inside a value needs quotes)"
        )
        return None
    return row


# --- YAML ---------------------------------------------------------------------------------------


def parse_catalogue_yaml(
    text: str, default_currency: str, *, default_vat_rate: Decimal | None = None
) -> list[Product]:
    """Products from YAML text (see the module docstring); raises CatalogueError."""
    try:
        # compose, not load: we want each value's source text and line, and no float conversion.
        root = yaml.compose(text.removeprefix("\ufeff"), Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise CatalogueError([f"{where}YAML syntax error: {reason}"]) from exc
    rows = _Rows(default_currency, default_vat_rate)
    for number, item in enumerate(_yaml_items(root).value, start=1):
        place = f"item {number} (line {item.start_mark.line + 1})"
        if not isinstance(item, yaml.MappingNode):
            rows.problems.append(
                f"{place}: expected a mapping like 'sku: ..., name: ..., price: ...'"
            )
            continue
        raw, lines, reported = _yaml_fields(item, number, rows.problems)
        rows.add(raw, _yaml_where(number, lines, place), reported)
    return rows.result()


def _yaml_where(number: int, lines: Mapping[str, int], place: str) -> Where:
    # A field's own line where it exists; the item's line for a missing required field.
    def where(f: str | None) -> str:
        if f is not None and f in lines:
            return f"item {number} (line {lines[f]}), {f}"
        return f"{place}, {f}" if f else place

    return where


def _yaml_items(root: yaml.Node | None) -> yaml.SequenceNode:
    if isinstance(root, yaml.MappingNode) and [k.value for k, _ in root.value] == ["products"]:
        root = root.value[0][1]
    if not isinstance(root, yaml.SequenceNode):
        raise CatalogueError(["the YAML file must be a list of products (or 'products:' + list)"])
    return root


def _yaml_fields(
    item: yaml.MappingNode, number: int, problems: list[str]
) -> tuple[dict[str, str], dict[str, int], frozenset[str]]:
    """Source text and line of each field; ``reported`` names fields with a problem already."""
    raw: dict[str, str] = {}
    lines: dict[str, int] = {}
    reported: set[str] = set()
    for key_node, value_node in item.value:
        key = str(key_node.value).strip().lower()
        line = key_node.start_mark.line + 1
        place = f"item {number} (line {line})"
        if key not in COLUMNS:
            problems.append(f"{place}: unknown field '{key}'; known: {', '.join(COLUMNS)}")
        elif key in lines:
            problems.append(f"{place}, {key}: appears twice")
        elif not isinstance(value_node, yaml.ScalarNode):
            problems.append(f"{place}, {key}: must be a single value, not a list or mapping")
            reported.add(key)
        else:
            null = value_node.tag == "tag:yaml.org,2002:null"
            raw[key] = "" if null else str(value_node.value)
        lines[key] = lines.get(key, line)
    return raw, lines, frozenset(reported)


# --- loading ------------------------------------------------------------------------------------


def load_catalogue(
    path: str | Path, default_currency: str, *, default_vat_rate: Decimal | None = None
) -> list[Product]:
    """Read a .csv, .yaml or .yml file and parse it; every failure is a CatalogueError."""
    path = Path(path)
    parsers = {".csv": parse_catalogue_csv, ".yaml": parse_catalogue_yaml}
    parse = parsers.get(".yaml" if path.suffix.lower() == ".yml" else path.suffix.lower())
    if parse is None:
        raise CatalogueError([f"{path.name}: expected a .csv, .yaml or .yml file"])
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CatalogueError([f"{path}: cannot be read ({exc.strerror})"]) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        # Guessing cp1252 would turn a wrong guess into garbled names in every customer chat.
        raise CatalogueError(
            [f"line {line}: the file is not UTF-8; in Excel save it as 'CSV UTF-8'"]
        ) from exc
    return parse(text, default_currency, default_vat_rate=default_vat_rate)
