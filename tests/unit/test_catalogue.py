"""Catalogue import (CSV, YAML, every problem with its line and field) and product search."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from hub.commerce.catalogue import (
    CatalogueError,
    CatalogueIndex,
    Product,
    check_url,
    fold,
    parse_bool,
    parse_vat_rate,
    search,
)
from hub.commerce.catalogue_files import load_catalogue, parse_catalogue_csv, parse_catalogue_yaml
from hub.commerce.money import Money

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "catalogue"
VAT19 = Decimal("19")


def by_sku(products: list[Product]) -> dict[str, Product]:
    return {p.sku: p for p in products}


def problems_of(text: str, *, yaml: bool = False, **kwargs: object) -> list[str]:
    parse = parse_catalogue_yaml if yaml else parse_catalogue_csv
    with pytest.raises(CatalogueError) as info:
        parse(text, "EUR", **kwargs)  # type: ignore[arg-type]
    return info.value.problems


# --- the fixture files ----------------------------------------------------------------------------


def test_paint_csv_loads_every_product_with_its_fields() -> None:
    products = load_catalogue(FIXTURES / "paint.csv", "EUR")
    assert len(products) == 30
    assert products[0].sku == "WF-W-10"  # file order is kept
    shop = by_sku(products)
    assert shop["WF-W-10"] == Product(
        sku="WF-W-10",
        name="Wandfarbe Weiß matt 10 l",
        price=Money(5990, "EUR"),
        vat_rate=VAT19,
        variant_id="41230987001",
        image_url="https://img.farbenhaus.example/wf-w-10.jpg",
        product_url="https://farbenhaus.example/p/wandfarbe-weiss-10l",
        in_stock=True,
    )
    assert shop["AC-TW-500"].in_stock is False  # "false"
    assert shop["KF-TB-750"].in_stock is False  # "no"
    assert shop["GR-TG-5"].in_stock is True  # "1"
    assert shop["AC-KR-500"].image_url is None
    assert shop["AC-KR-500"].variant_id is None
    assert shop["LK-RAL9010-375"].name == "Buntlack RAL 9010 Reinweiß, seidenmatt 375 ml"
    assert shop["BU-FB-100"].vat_rate == Decimal("0")
    assert shop["MU-FK-1"].price == Money(0, "EUR")  # free items are allowed
    assert shop["KF-SB-750"].name.startswith("Farbé")
    assert shop["AB-VL-20"].name == "Abdeckvlies 20 m²"
    assert all(p.price.currency == "EUR" and p.vat_rate in (VAT19, 0) for p in products)


def test_paint_yaml_reads_values_as_written() -> None:
    shop = by_sku(load_catalogue(FIXTURES / "paint.yaml", "EUR"))
    assert len(shop) == 7
    assert shop["WF-W-10"].price == Money(5990, "EUR")  # YAML float 59.90, never a float here
    assert shop["WF-W-10"].variant_id == "41230987001"
    assert shop["AC-KB-500"].price == Money(1250, "EUR")  # "12,50"
    assert shop["AC-KB-500"].vat_rate == VAT19  # "19%"
    assert shop["KF-SB-750"].variant_id == "52001"  # an unquoted number becomes text
    assert shop["AC-TW-500"].in_stock is False
    assert shop["BU-FB-100"].price == Money(2500, "EUR")
    assert shop["IMP-CH-1"].price == Money(2990, "CHF")
    assert shop["IMP-CH-1"].vat_rate == Decimal("8.1")


def test_german_excel_csv_with_bom_semicolons_crlf_and_comma_decimals() -> None:
    products = load_catalogue(FIXTURES / "paint_excel_de.csv", "EUR")
    shop = by_sku(products)
    assert list(shop) == ["WF-W-10", "LK-RAL9010-375", "PI-RD-12", "BU-FB-100"]
    assert shop["WF-W-10"].price == Money(5990, "EUR")
    assert shop["WF-W-10"].vat_rate == VAT19  # "19 %"
    assert shop["WF-W-10"].product_url == "https://farbenhaus.example/p/wandfarbe-weiss-10l"
    assert shop["LK-RAL9010-375"].name == "Buntlack RAL 9010; Reinweiß"
    assert shop["PI-RD-12"].in_stock is False
    assert shop["BU-FB-100"].price == Money(2500, "EUR")


def test_bad_csv_reports_every_problem_with_line_and_field() -> None:
    with pytest.raises(CatalogueError) as info:
        load_catalogue(FIXTURES / "bad.csv", "EUR")
    assert info.value.problems == [
        "line 3, price: '12,5x' is not an amount",
        "line 4, sku: 'pi-fl-50' is already used (line 2)",
        "line 5, name: required but empty",
        "line 5, vat_rate: '0.19' looks like a fraction; write the VAT rate in percent, e.g. 19",
        "line 6, image_url: 'ftp://img.example/roller.jpg' is not an http(s) address",
        "line 7, in_stock: 'maybe' is not one of true/false/yes/no/1/0",
        # line 8-9 is one record with a line break inside quotes; numbering stays right after it
        "line 10, currency: 'EURO' is not a currency code (three capital letters, like EUR)",
        "line 12: 8 fields but the header has 7 (a separator inside a value needs quotes)",
        "line 13, price: '1500.5' has decimals; JPY amounts are whole numbers",
        "line 14, sku: 'WF W 10' contains spaces; a SKU is one word (advisers type it)",
    ]
    assert str(info.value).startswith("the catalogue has 10 problem(s):\nline 3, price:")


# --- CSV rules ------------------------------------------------------------------------------------


def test_header_problems_are_reported_together() -> None:
    problems = problems_of("sku;Name;Prcie;vat\nA;x;1;19\n")
    assert len(problems) == 2
    assert problems[0].startswith("line 1: unknown column(s) 'prcie', 'vat'; known: sku, name")
    assert problems[1] == "line 1: required column(s) missing: price"
    assert problems_of("sku,name,price,name\n") == ["line 1: column(s) appear twice: name"]
    assert problems_of("") == ["line 1: the header row is missing (sku, name, price, ...)"]


def test_header_only_is_an_empty_catalogue() -> None:
    assert parse_catalogue_csv("sku,name,price\n", "EUR") == []


def test_default_currency_and_per_row_currency() -> None:
    text = "sku,name,price,currency,vat_rate\nA,Alpha,10,,19\nB,Beta,1500,jpy,10\n"
    shop = by_sku(parse_catalogue_csv(text, "EUR"))
    assert shop["A"].price == Money(1000, "EUR")
    assert shop["B"].price == Money(1500, "JPY")  # the code is upper-cased


def test_a_bad_currency_does_not_add_a_misleading_price_problem() -> None:
    text = "sku,name,price,currency,vat_rate\nA,Alpha,1.234,KWDX,19\n"
    assert problems_of(text) == [
        "line 2, currency: 'KWDX' is not a currency code (three capital letters, like EUR)"
    ]


def test_default_vat_rate_fills_empty_cells_and_missing_column() -> None:
    text = "sku,name,price,vat_rate\nA,Alpha,10,\nB,Beta,10,7\n"
    shop = by_sku(parse_catalogue_csv(text, "EUR", default_vat_rate=VAT19))
    assert shop["A"].vat_rate == VAT19
    assert shop["B"].vat_rate == Decimal("7")
    products = parse_catalogue_csv("sku,name,price\nA,Alpha,10\n", "EUR", default_vat_rate=VAT19)
    assert products[0].vat_rate == VAT19
    assert problems_of("sku,name,price\nA,Alpha,10\n") == [
        "line 2, vat_rate: required (no default rate configured)"
    ]


def test_required_fields_and_blank_lines() -> None:
    text = "sku,name,price,vat_rate\n\n,Alpha,,19\n\nC,,5,19\n"
    assert problems_of(text) == [
        "line 3, sku: required but empty",
        "line 3, price: required but empty",
        "line 5, name: required but empty",
    ]


def test_duplicate_skus_ignore_case_and_are_found_even_in_bad_rows() -> None:
    text = "sku,name,price,vat_rate\nab-1,Alpha,x,19\nAB-1,Beta,1,19\nab-1,Gamma,1,19\n"
    assert problems_of(text) == [
        "line 2, price: 'x' is not an amount",
        "line 3, sku: 'AB-1' is already used (line 2)",
        "line 4, sku: 'ab-1' is already used (line 2)",
    ]


def test_names_are_trimmed_and_whitespace_collapsed() -> None:
    text = 'sku,name,price,vat_rate\nA,"  Acryl\n  Farbe  ",1,19\n'
    assert parse_catalogue_csv(text, "EUR")[0].name == "Acryl Farbe"


def test_limits_on_lengths() -> None:
    text = f"sku,name,price,vat_rate\n{'S' * 65},{'n' * 201},1,19\n"
    assert problems_of(text) == [
        "line 2, sku: longer than 64 characters",
        "line 2, name: longer than 200 characters",
    ]


def test_trailing_empty_cells_are_tolerated_but_stray_values_are_not() -> None:
    assert len(parse_catalogue_csv("sku;name;price;vat_rate\nA;Alpha;1;19;;\n", "EUR")) == 1
    assert problems_of("sku,name,price\nA,Alpha,1\n,B\n", default_vat_rate=VAT19) == [
        "line 3: 2 fields but the header has 3 (a separator inside a value needs quotes)"
    ]


def test_tab_separated_and_unclosed_quote() -> None:
    products = parse_catalogue_csv("sku\tname\tprice\tvat_rate\nA\tAlpha\t1,5\t19\n", "EUR")
    assert products[0].price == Money(150, "EUR")
    assert problems_of('sku,name,price\nA,"Alpha,1\n', default_vat_rate=VAT19)[0].startswith(
        "line 2: 2 fields"
    )


def test_many_problems_are_kept_but_the_message_is_capped() -> None:
    rows = "".join(f"S{i},Name,x,19\n" for i in range(30))
    with pytest.raises(CatalogueError) as info:
        parse_catalogue_csv("sku,name,price,vat_rate\n" + rows, "EUR")
    assert len(info.value.problems) == 30
    message = str(info.value)
    assert message.count("\n") == 21  # heading + 20 problems + the "more" line
    assert message.endswith("... and 10 more")


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("19", "19"),
        ("19%", "19"),
        ("19 %", "19"),
        ("19.00", "19"),
        ("7,5", "7.5"),
        ("5.5", "5.5"),
        ("0", "0"),
        ("1", "1"),
    ],
)
def test_vat_rate_is_a_percentage(text: str, rate: str) -> None:
    parsed = parse_vat_rate(text)
    assert parsed == Decimal(rate)
    assert str(parsed) == rate  # canonical spelling: stable JSON and dict keys


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.19", "looks like a fraction"),
        ("0,07", "looks like a fraction"),
        ("100", "below 100"),
        ("-7", "not a VAT percentage"),
        ("19.555", "not a VAT percentage"),
        ("nineteen", "not a VAT percentage"),
    ],
)
def test_vat_rate_refusals(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_vat_rate(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("Yes", True),
        ("1", True),
        ("false", False),
        ("no", False),
        ("NO", False),
        ("0", False),
    ],
)
def test_in_stock_words(text: str, value: bool) -> None:
    assert parse_bool(text) is value


@pytest.mark.parametrize("text", ["maybe", "ja", "on", "2", ""])
def test_in_stock_refusals(text: str) -> None:
    with pytest.raises(ValueError):
        parse_bool(text)


@pytest.mark.parametrize(
    "url", ["https://shop.example/p/1", "http://shop.example", "https://shop.example/p?x=1#y"]
)
def test_urls_accepted(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://shop.example/x",
        "javascript:alert(1)",
        "https://",
        "www.shop.example",
        "https://a b",
        "/p/1",
        "https://shop.example/" + "x" * 2048,
    ],
)
def test_urls_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_url(url)


# --- YAML -----------------------------------------------------------------------------------------


def test_yaml_plain_list_keeps_leading_zeros_and_exact_prices() -> None:
    text = "- sku: 0123\n  name: Pinsel\n  price: 0.10\n  vat_rate: 19\n  in_stock: no\n"
    [product] = parse_catalogue_yaml(text, "EUR")
    assert product.sku == "0123"  # yaml.safe_load would give the octal int 83
    assert product.price == Money(10, "EUR")
    assert product.in_stock is False


def test_yaml_problems_name_item_line_and_field() -> None:
    text = (
        "products:\n"  # 1
        "  - sku: A-1\n"  # 2
        "    name: Alpha\n"  # 3
        "    price: 12,5x\n"  # 4
        "    vat_rate: 19\n"  # 5
        "  - sku: B-1\n"  # 6
        "    name: [not, a, name]\n"  # 7
        "    price: 1\n"  # 8
        "    colour: red\n"  # 9
        "    price: 2\n"  # 10
        "  - just text\n"  # 11
        "  - name: Gamma\n"  # 12
        "    price: 1\n"  # 13
        "    vat_rate: 19\n"  # 14
    )
    assert problems_of(text, yaml=True) == [
        "item 1 (line 4), price: '12,5x' is not an amount",
        "item 2 (line 7), name: must be a single value, not a list or mapping",
        "item 2 (line 9): unknown field 'colour'; known: sku, name, price, currency, vat_rate, "
        "variant_id, image_url, product_url, in_stock",
        "item 2 (line 10), price: appears twice",
        "item 2 (line 6), vat_rate: required (no default rate configured)",
        "item 3 (line 11): expected a mapping like 'sku: ..., name: ..., price: ...'",
        "item 4 (line 12), sku: required but empty",
    ]


def test_yaml_syntax_and_shape_errors() -> None:
    [problem] = problems_of("products:\n  - sku: A\n    name: [oops\n", yaml=True)
    assert problem.startswith("line 4: YAML syntax error:")
    assert problems_of("products: 3\n", yaml=True) == [
        "the YAML file must be a list of products (or 'products:' + list)"
    ]
    assert problems_of("", yaml=True) == problems_of("products: 3\n", yaml=True)


def test_yaml_duplicate_skus() -> None:
    text = "- {sku: A, name: x, price: 1, vat_rate: 19}\n- {sku: a, name: y, price: 1}\n"
    assert problems_of(text, yaml=True) == [
        "item 2 (line 2), sku: 'a' is already used (item 1 (line 1))",
        "item 2 (line 2), vat_rate: required (no default rate configured)",
    ]


# --- loading files --------------------------------------------------------------------------------


def test_load_by_suffix(tmp_path: Path) -> None:
    yml = tmp_path / "shop.YML"
    yml.write_text("- {sku: A, name: x, price: 1}\n", encoding="utf-8")
    assert load_catalogue(yml, "EUR", default_vat_rate=VAT19)[0].sku == "A"
    with pytest.raises(CatalogueError, match=r"expected a \.csv, \.yaml or \.yml file"):
        load_catalogue(tmp_path / "shop.xlsx", "EUR")
    with pytest.raises(CatalogueError, match="cannot be read"):
        load_catalogue(tmp_path / "missing.csv", "EUR")


def test_non_utf8_file_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("sku;name;price\nA;Weiß;1\n".encode("cp1252"))
    with pytest.raises(CatalogueError) as info:
        load_catalogue(path, "EUR")
    assert info.value.problems == ["line 2: the file is not UTF-8; in Excel save it as 'CSV UTF-8'"]


# --- search ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paint() -> CatalogueIndex:
    return CatalogueIndex(load_catalogue(FIXTURES / "paint.csv", "EUR"))


def skus(products: list[Product]) -> list[str]:
    return [p.sku for p in products]


def test_fold_removes_case_and_accents() -> None:
    assert fold("Farbé") == "farbe"
    assert fold("WEISS") == fold("Weiß") == "weiss"
    assert fold("Ça") == "ca"


def test_get_by_sku_ignores_case(paint: CatalogueIndex) -> None:
    product = paint.get(" ac-kb-500 ")
    assert product is not None and product.sku == "AC-KB-500"
    assert paint.get("NOPE") is None
    assert len(paint) == 30


def test_exact_sku_comes_first(paint: CatalogueIndex) -> None:
    assert skus(paint.search("ac-kb-500"))[:1] == ["AC-KB-500"]
    assert skus(paint.search("RO-SET")) == ["RO-SET"]


def test_accents_and_case_do_not_matter(paint: CatalogueIndex) -> None:
    expected = ["KF-ALT-750", "KF-SB-750", "KF-TB-750"]
    assert skus(paint.search("farbe"))[:3] == expected  # "farbe" finds "Farbé" first
    assert skus(paint.search("FARBÉ"))[:3] == expected
    assert "WF-W-10" in skus(paint.search("weiss 10"))


def test_every_query_word_must_match(paint: CatalogueIndex) -> None:
    assert skus(paint.search("kreide salbei")) == ["KF-SB-750"]
    assert paint.search("kreide xyz") == []
    assert paint.search("") == paint.search("   ") == []


def test_words_inside_german_compounds_come_after_prefix_hits(paint: CatalogueIndex) -> None:
    found = skus(paint.search("farbe", limit=30))
    assert found[:3] == ["KF-ALT-750", "KF-SB-750", "KF-TB-750"]  # a name word starts with it
    later = set(found[3:])
    assert {"WF-W-10", "AC-KB-500", "SP-FAS-10", "KF-SB-750"} - later == {"KF-SB-750"}
    assert skus(paint.search("rot")) == ["AC-KR-500", "LK-RAL3000-375"]  # Karminrot, Feuerrot
    assert skus(paint.search("rot 5")) == ["AC-KR-500"]  # a short word still matches as a prefix


def test_ranking_whole_words_start_stock_length() -> None:
    def p(sku: str, name: str, in_stock: bool = True) -> Product:
        return Product(sku, name, Money(100, "EUR"), VAT19, in_stock=in_stock)

    index = CatalogueIndex(
        [
            p("1", "Buntlack Rot"),  # only inside a word
            p("2", "Lackstift Rot"),  # prefix "lack"
            p("3", "Lack Rot seidenmatt 375 ml"),  # both whole words, longer name
            p("4", "Lack Rot 375 ml"),  # both whole words, shorter name
            p("5", "Roter Lack", in_stock=False),  # both match, not at the start, out of stock
            p("6", "Roter Lack"[::-1]),  # noise
            p("7", "Rot Lack"),  # whole words but does not start with the first query word
        ]
    )
    assert skus(index.search("lack rot")) == ["4", "3", "7", "2", "5", "1"]
    assert skus(index.search("lack rot", limit=2)) == ["4", "3"]


def test_sku_prefix_fills_up_when_names_do_not_match(paint: CatalogueIndex) -> None:
    assert skus(paint.search("lk-ral")) == ["LK-RAL3000-375", "LK-RAL7016-375", "LK-RAL9010-375"]


def test_out_of_stock_ranks_after_in_stock_at_equal_match(paint: CatalogueIndex) -> None:
    found = skus(paint.search("acrylfarbe"))
    assert found[-1] == "AC-TW-500"
    assert len(found) == 5


def test_module_search_and_duplicate_guard() -> None:
    products = load_catalogue(FIXTURES / "paint.csv", "EUR")
    assert search(products, "pinsel", limit=2) == CatalogueIndex(products).search("pinsel", 2)
    with pytest.raises(ValueError, match="duplicate SKU"):
        CatalogueIndex([products[0], products[0]])


def test_ten_thousand_products_are_searchable() -> None:
    # Correctness at size; the timing is measured separately and not asserted (CI machines vary).
    colours = ["Weiß", "Kobaltblau", "Karminrot", "Salbei", "Ocker", "Petrol", "Sand", "Mint"]
    products = [
        Product(f"SKU-{i:05d}", f"Farbe {colours[i % 8]} {i}", Money(100 + i, "EUR"), VAT19)
        for i in range(10_000)
    ]
    index = CatalogueIndex(products)
    assert skus(index.search("sku-04711")) == ["SKU-04711"]
    assert skus(index.search("salbei 4707")) == ["SKU-04707"]  # 4707 % 8 == 3
    assert len(index.search("farbe", limit=10)) == 10
