"""Unit tests for the pure command parser and registry (hub.core.commands)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hub.core.commands import (
    ArgumentError,
    ChoiceArg,
    CommandRegistry,
    CommandSpec,
    IntArg,
    NotACommand,
    ParsedCommand,
    QuoteError,
    RestArg,
    UnknownCommand,
    UrlArg,
    WordArg,
    parse,
    tokenize,
)

STATUS = ChoiceArg("status", choices=("shipped", "delivered", "cancelled"))


def make_registry() -> CommandRegistry[str]:
    """A registry shaped like the real one; handlers are plain strings since none is called."""
    reg: CommandRegistry[str] = CommandRegistry()
    reg.register(CommandSpec("help", "h_help", help="list the commands"))
    reg.register(CommandSpec("cart", "h_cart", help="show the cart"))
    reg.register(
        CommandSpec(
            "cart add",
            "h_cart_add",
            args=(WordArg("sku"), IntArg("qty", min_value=1, optional=True, default=1)),
            aliases=("ca",),
            help="add an item",
        )
    )
    reg.register(CommandSpec("cart clear", "h_cart_clear", help="empty the cart"))
    reg.register(
        CommandSpec(
            "order",
            "h_order",
            args=(IntArg("order_id"), STATUS, RestArg("text", optional=True)),
            help="update an order",
        )
    )
    reg.register(
        CommandSpec("catalog", "h_catalog", args=(RestArg("query", optional=True),), aliases=("p",))
    )
    reg.register(CommandSpec("track", "h_track", args=(IntArg("order_id"), UrlArg("url"))))
    reg.register(CommandSpec("note", "h_note", args=(RestArg("text"),)))
    reg.register(CommandSpec("stock", "h_stock", args=(IntArg("n", min_value=0, max_value=99),)))
    reg.register(CommandSpec("limit", "h_limit", args=(IntArg("n", max_value=10),)))
    reg.register(CommandSpec("adjust", "h_adjust", args=(IntArg("delta"),)))
    return reg


REG = make_registry()


def ok(body: str, prefix: str = "!") -> ParsedCommand[str]:
    result = parse(body, prefix, REG)
    assert isinstance(result, ParsedCommand), result
    return result


def arg_error(body: str, prefix: str = "!") -> ArgumentError[str]:
    result = parse(body, prefix, REG)
    assert isinstance(result, ArgumentError), result
    return result


# --- tokenize ---------------------------------------------------------------------------------


def test_tokenize_splits_on_any_unicode_whitespace() -> None:
    assert tokenize("a  b\tc\u00a0d\u3000e ") == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('"blue shirt" 2', ["blue shirt", "2"]),
        ("'blue shirt' 2", ["blue shirt", "2"]),
        ("“blue shirt” 2", ["blue shirt", "2"]),  # iOS smart quotes
        ("„blaues Hemd“ 2", ["blaues Hemd", "2"]),  # German quotes
        ('"it\'s fine"', ["it's fine"]),  # the other quote kind inside
        ("O'Brien 12\"", ["O'Brien", '12"']),  # quotes inside a word are literal
        ('"" x', ["", "x"]),
    ],
)
def test_tokenize_quotes(line: str, expected: list[str]) -> None:
    assert tokenize(line) == expected


def test_tokenize_keeps_unicode_intact() -> None:
    family = "👩\u200d👩\u200d👧"  # one emoji joined by ZWJ must not be split
    assert tokenize(f"Müsli {family} שלום 'مرحبا بك'") == ["Müsli", family, "שלום", "مرحبا بك"]


def test_tokenize_unclosed_quote_is_a_clear_error() -> None:
    with pytest.raises(QuoteError, match='opening " has no closing "'):
        tokenize('add "blue shirt 2')


def test_tokenize_closing_quote_glued_to_text_is_an_error() -> None:
    with pytest.raises(QuoteError, match="followed by a space"):
        tokenize('"blue"shirt')


# --- not a command ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    ["hello", "", "   ", "!", "  !  ", "! hi", "!\thi", "!!!", "!? really", "hi !help", "!\nhelp"],
)
def test_not_a_command(body: str) -> None:
    assert parse(body, "!", REG) == NotACommand()


def test_whitespace_and_trailing_newline_are_tolerated() -> None:
    assert ok("  \t!cart add X 2  \n").args == {"sku": "X", "qty": 2}
    assert ok("!cart add X 2\r\n").args == {"sku": "X", "qty": 2}


def test_only_first_line_is_the_command_without_rest_arg() -> None:
    result = ok("!cart add X 2\nthanks, see you\n3 4")
    assert result.spec.name == "cart add"
    assert result.args == {"sku": "X", "qty": 2}


# --- prefixes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/", "!!", "hub:"])
def test_custom_prefix(prefix: str) -> None:
    assert ok(f"{prefix}cart add X", prefix).args == {"sku": "X", "qty": 1}
    assert parse(f"{prefix} cart", prefix, REG) == NotACommand()
    assert parse(f"{prefix}", prefix, REG) == NotACommand()


@pytest.mark.parametrize("prefix", ["/", "hub:"])
def test_default_prefix_is_plain_text_under_a_custom_prefix(prefix: str) -> None:
    assert parse("!cart add X", prefix, REG) == NotACommand()


def test_multi_char_prefix_needs_the_whole_prefix() -> None:
    assert parse("!cart", "!!", REG) == NotACommand()
    assert parse("!!!cart", "!!", REG) == NotACommand()


def test_custom_prefix_appears_in_errors() -> None:
    err = arg_error("/cart add", "/")
    assert err.usage == "/cart add SKU [QTY]"
    unknown = parse("/hepl", "/", REG)
    assert isinstance(unknown, UnknownCommand)
    assert unknown.message == "Unknown command /hepl — did you mean /help?"


@pytest.mark.parametrize("prefix", ["", " ", "! "])
def test_invalid_prefix_is_rejected(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        parse("!help", prefix, REG)


# --- lookup -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ("!cart", "cart"),
        ("!cart add X", "cart add"),
        ("!cart   add X", "cart add"),
        ("!cart clear", "cart clear"),
        ("!CART ADD X", "cart add"),
        ("!Cart Clear", "cart clear"),
        ("!ca X", "cart add"),
        ("!CA X", "cart add"),
        ("!p", "catalog"),
        ("!P red shoes", "catalog"),
    ],
)
def test_longest_name_alias_and_case_insensitive_match(body: str, name: str) -> None:
    assert ok(body).spec.name == name


def test_argument_values_keep_their_case() -> None:
    assert ok("!CART ADD Sku-Ab").args["sku"] == "Sku-Ab"


def test_words_after_a_shorter_name_are_its_arguments() -> None:
    # "cart" takes no arguments, so "addx" is not silently read as "cart add".
    err = arg_error("!cart addx")
    assert err.spec.name == "cart"
    assert err.message == "too many arguments: “addx” was not expected — usage: !cart"


def test_unknown_command_suggests_closest_name() -> None:
    assert parse("!hepl", "!", REG) == UnknownCommand("hepl", "help", "!")
    assert parse("!ordr 42", "!", REG) == UnknownCommand("ordr", "order", "!")
    assert parse("!xyzzy now", "!", REG) == UnknownCommand("xyzzy", None, "!")


def test_unknown_subcommand_suggests_the_subcommand() -> None:
    reg: CommandRegistry[str] = CommandRegistry()
    reg.register(CommandSpec("cart add", "a", args=(WordArg("sku"),)))
    reg.register(CommandSpec("cart clear", "c"))
    assert parse("!cart ad X", "!", reg) == UnknownCommand("cart ad", "cart add", "!")
    assert parse("!cart", "!", reg) == UnknownCommand("cart", "cart add", "!")


def test_unknown_command_prefers_the_longer_name_on_a_tie() -> None:
    # "car" ~ "cart" and "car ad" ~ "cart add" are equally close; the longer explains more.
    assert parse("!car ad", "!", REG) == UnknownCommand("car ad", "cart add", "!")


def test_unknown_command_message() -> None:
    assert UnknownCommand("xyzzy", None, "!").message == "Unknown command !xyzzy"


# --- word -------------------------------------------------------------------------------------


def test_word_argument() -> None:
    assert ok('!cart add "Blue Shirt L"').args == {"sku": "Blue Shirt L", "qty": 1}
    assert ok("!cart add Müsli-🍫 3").args == {"sku": "Müsli-🍫", "qty": 3}


def test_word_argument_is_nfc_normalised() -> None:
    decomposed = "Mu\u0308sli"
    assert ok(f"!cart add {decomposed}").args["sku"] == "Müsli"


def test_missing_word_argument() -> None:
    err = arg_error("!cart add")
    assert err.argument == "sku"
    assert err.message == "SKU is missing — usage: !cart add SKU [QTY]"


def test_empty_quoted_word_is_refused() -> None:
    assert arg_error('!cart add "" 2').reason == "SKU must not be empty"


def test_unbalanced_quote_names_the_argument() -> None:
    err = arg_error('!cart add "blue shirt 2')
    assert err.argument == "sku"
    assert err.message == 'SKU: the opening " has no closing " — usage: !cart add SKU [QTY]'


# --- integer ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "value"), [("1", 1), ("2", 2), ("+3", 3), ("0042", 42), ("٣", 3), ("99999", 99999)]
)
def test_int_argument_good(token: str, value: int) -> None:
    result = ok(f"!cart add X {token}")
    assert result.args["qty"] == value
    assert type(result.args["qty"]) is int


def test_int_argument_optional_default() -> None:
    assert ok("!cart add X").args["qty"] == 1


@pytest.mark.parametrize("token", ["0", "-1", "two", "2.5", "1_000", "1e3", "½", "+", "'2 3'"])
def test_int_argument_bad(token: str) -> None:
    err = arg_error(f"!cart add X {token}")
    assert err.argument == "qty"
    assert err.message == "QTY must be a whole number ≥ 1 — usage: !cart add SKU [QTY]"


def test_int_argument_absurdly_long_is_an_error_not_a_crash() -> None:
    assert arg_error("!cart add X " + "9" * 5000).argument == "qty"


def test_int_bounds_messages() -> None:
    assert ok("!stock 0").args["n"] == 0
    assert ok("!stock 99").args["n"] == 99
    assert arg_error("!stock 100").reason == "N must be a whole number between 0 and 99"
    assert arg_error("!stock -1").reason == "N must be a whole number between 0 and 99"
    assert ok("!limit -5").args["n"] == -5
    assert arg_error("!limit 11").reason == "N must be a whole number ≤ 10"
    assert ok("!adjust -7").args["delta"] == -7
    assert arg_error("!adjust x").reason == "DELTA must be a whole number"


# --- choice -----------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["shipped", "SHIPPED", "Shipped"])
def test_choice_is_case_insensitive_and_canonical(token: str) -> None:
    assert ok(f"!order 42 {token}").args == {"order_id": 42, "status": "shipped", "text": None}


def test_choice_bad_value_lists_choices_and_suggests() -> None:
    err = arg_error("!order 42 shipd")
    assert err.argument == "status"
    assert err.reason == (
        "STATUS must be one of shipped, delivered, cancelled (did you mean shipped?)"
    )
    assert err.usage == "!order ORDER_ID shipped|delivered|cancelled [TEXT...]"
    assert arg_error("!order 42 lost").reason == (
        "STATUS must be one of shipped, delivered, cancelled"
    )


def test_choice_missing() -> None:
    assert arg_error("!order 42").reason == "STATUS is missing"


# --- url --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://track.example/1",
        "http://track.example:8080/a?b=c#d",
        "HTTPS://Track.Example/ä",
        "https://[::1]/x",
    ],
)
def test_url_argument_good(url: str) -> None:
    assert ok(f"!track 42 {url}").args == {"order_id": 42, "url": url}


@pytest.mark.parametrize(
    "url",
    [
        "track.example/1",
        "ftp://track.example/1",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "https://",
        "https:///path",
        "http://[::1",
        "https://track.example:99999/",
        "'https://track.example/a b'",
    ],
)
def test_url_argument_bad(url: str) -> None:
    err = arg_error(f"!track 42 {url}")
    assert err.argument == "url"
    assert err.message == (
        "URL must be a web address starting with http:// or https:// — usage: !track ORDER_ID URL"
    )


# --- rest of line -----------------------------------------------------------------------------


def test_rest_argument_is_verbatim() -> None:
    # Apostrophes and stray quotes in free text must not be a quoting error.
    result = ok('!order 42 shipped it\'s on   "its" way 🚚')
    assert result.args["text"] == 'it\'s on   "its" way 🚚'


def test_rest_argument_takes_following_lines() -> None:
    body = "!order 42 shipped Hello Jana,\n  your parcel left today.\n\nThanks!\n"
    assert ok(body).args["text"] == "Hello Jana,\n  your parcel left today.\n\nThanks!"


def test_rest_argument_may_start_on_next_line() -> None:
    assert ok("!note\nשלום, ההזמנה נשלחה").args["text"] == "שלום, ההזמנה נשלחה"


def test_rest_argument_with_unclosed_quote_is_kept_verbatim() -> None:
    assert ok('!note "sale ends friday').args["text"] == '"sale ends friday'


def test_rest_argument_single_quoted_phrase_is_unquoted() -> None:
    assert ok('!note "on its way"').args["text"] == "on its way"
    assert ok('!note "on" its "way"').args["text"] == '"on" its "way"'


def test_rest_argument_optional_and_required() -> None:
    assert ok("!catalog").args == {"query": None}
    assert ok("!p red  shoes").args == {"query": "red  shoes"}
    err = arg_error("!note   ")
    assert err.argument == "text"
    assert err.message == "TEXT is missing — usage: !note TEXT..."


# --- too many arguments -----------------------------------------------------------------------


def test_too_many_arguments() -> None:
    err = arg_error('!cart add X 2 "gift wrap"')
    assert err.argument is None
    assert err.message == (
        "too many arguments: “gift wrap” was not expected — usage: !cart add SKU [QTY]"
    )


def test_unbalanced_quote_in_extra_arguments_is_reported() -> None:
    assert arg_error('!cart add X 2 "oops').reason == 'the opening " has no closing "'


# --- usage and help ---------------------------------------------------------------------------


def registered(name: str) -> CommandSpec[str]:
    spec = REG.get(name)
    assert spec is not None
    return spec


def test_usage_is_generated_from_the_spec() -> None:
    assert registered("cart add").usage() == "!cart add SKU [QTY]"
    assert registered("order").usage("/") == (
        "/order ORDER_ID shipped|delivered|cancelled [TEXT...]"
    )
    assert registered("cart").usage("!!") == "!!cart"
    spec = CommandSpec(
        "pay",
        None,
        args=(
            WordArg("sku", metavar="ITEM"),
            ChoiceArg("how", choices=("card", "cash"), optional=True),
            RestArg("note", optional=True),
        ),
    )
    assert spec.usage() == "!pay ITEM [card|cash] [NOTE...]"


def test_help_text_lists_sorted_commands_with_usage_help_and_aliases() -> None:
    reg: CommandRegistry[str] = CommandRegistry()
    reg.register(CommandSpec("order", "o", args=(IntArg("order_id"), STATUS), help="update"))
    reg.register(CommandSpec("catalog", "c", aliases=("p",), help="browse the catalogue"))
    reg.register(CommandSpec("cart add", "a", args=(WordArg("sku"),), help="add an item"))
    reg.register(CommandSpec("cart", "b"))
    assert reg.help_text("!") == (
        "Commands:\n"
        "!cart\n"
        "!cart add SKU — add an item\n"
        "!catalog — browse the catalogue (alias: !p)\n"
        "!order ORDER_ID shipped|delivered|cancelled — update"
    )


def test_help_html_is_escaped() -> None:
    reg: CommandRegistry[str] = CommandRegistry()
    reg.register(CommandSpec("b", "b", args=(WordArg("x", metavar="<X>"),), help="a & <b>"))
    reg.register(CommandSpec("a", "a"))
    assert reg.help_html("!") == (
        "<p>Commands:</p><ul>"
        "<li><code>!a</code></li>"
        "<li><code>!b &lt;X&gt;</code> — a &amp; &lt;b&gt;</li>"
        "</ul>"
    )


def test_commands_are_unique_and_sorted() -> None:
    names = [s.name for s in REG.commands()]
    assert names == sorted(names)
    assert names.count("catalog") == 1  # its alias must not list it twice
    assert "p" not in names


def test_get_by_name_or_alias() -> None:
    catalog = REG.get("catalog")
    assert catalog is not None
    assert REG.get("P") is catalog
    assert REG.get("Cart  ADD") is REG.get("ca")
    assert REG.get("nope") is None


# --- registration and spec validation ---------------------------------------------------------


def test_spec_name_and_aliases_are_normalised() -> None:
    spec = CommandSpec("Cart  Add", None, aliases=["CA"])  # type: ignore[arg-type]
    assert spec.name == "cart add"
    assert spec.aliases == ("ca",)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (CommandSpec("cart", 1), CommandSpec("Cart", 2)),
        (CommandSpec("catalog", 1, aliases=("p",)), CommandSpec("p", 2)),
        (CommandSpec("pay", 1), CommandSpec("catalog", 2, aliases=("pay",))),
        (CommandSpec("cart add", 1), CommandSpec("cart  add", 2)),
    ],
)
def test_duplicate_registration_raises(first: CommandSpec[int], second: CommandSpec[int]) -> None:
    reg: CommandRegistry[int] = CommandRegistry()
    reg.register(first)
    with pytest.raises(ValueError, match="already registered"):
        reg.register(second)
    assert reg.commands() == [first]


def test_failed_registration_leaves_no_partial_alias() -> None:
    reg: CommandRegistry[int] = CommandRegistry()
    reg.register(CommandSpec("cart", 1))
    with pytest.raises(ValueError):
        reg.register(CommandSpec("catalog", 2, aliases=("p", "cart")))
    assert reg.get("catalog") is None
    assert reg.get("p") is None


@pytest.mark.parametrize("name", ["", "   ", "!help", "cart !add", '"cart"'])
def test_bad_command_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="command name"):
        CommandSpec(name, None)


@pytest.mark.parametrize(
    "make",
    [
        lambda: CommandSpec("x", None, aliases=("x",)),
        lambda: CommandSpec("x", None, help="two\nlines"),
        lambda: CommandSpec("x", None, args=(WordArg("a"), WordArg("a"))),
        lambda: CommandSpec("x", None, args=(RestArg("a"), WordArg("b"))),
        lambda: CommandSpec("x", None, args=(WordArg("a", optional=True), WordArg("b"))),
        lambda: WordArg("sku", default="X"),
        lambda: WordArg("two words"),
        lambda: IntArg("n", min_value=5, max_value=1),
        lambda: ChoiceArg("c", choices=()),
        lambda: ChoiceArg("c", choices=("a", "A")),
        lambda: ChoiceArg("c", choices=("two words",)),
    ],
)
def test_invalid_specs_are_rejected(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        make()


def test_parsed_command_typed_accessors() -> None:
    result = ok("!order 42 shipped")
    assert result.value("order_id", int) == 42
    assert result.value("status", str) == "shipped"
    assert result.optional_value("text", str) is None
    with pytest.raises(TypeError):
        result.value("order_id", str)
    with pytest.raises(TypeError):
        result.value("text", str)


def test_handler_is_carried_untouched() -> None:
    def handler() -> None:
        raise AssertionError("the parser must never call a handler")

    reg: CommandRegistry[object] = CommandRegistry()
    reg.register(CommandSpec("ping", handler))
    result = parse("!ping", "!", reg)
    assert isinstance(result, ParsedCommand)
    assert result.spec.handler is handler
