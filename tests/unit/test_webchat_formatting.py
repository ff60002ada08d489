"""An adviser's Matrix formatting for the web chat widget (hub.bridges.webchat.formatting) and
the widget's view of a message (message_json): every allowed tag survives, nothing else does,
and text stays text."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from hub.bridges.webchat.channel import message_json
from hub.bridges.webchat.formatting import (
    MAX_DEPTH,
    TAGS,
    Node,
    formatted,
    plain_text,
    safe_href,
)
from hub.db.models import Message
from hub.i18n import _


def tags_of(nodes: list[Node]) -> set[str]:
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, dict):
            found.add(node["t"])
            found |= tags_of(node.get("c", []))
    return found


def attrs_of(nodes: list[Node]) -> set[str]:
    """Every key of every element: only t, c, href and start may appear."""
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, dict):
            found |= set(node)
            found |= attrs_of(node.get("c", []))
    return found


def tree(html: str) -> list[Node]:
    nodes = formatted(html)
    assert nodes is not None, html
    assert tags_of(nodes) <= TAGS
    assert attrs_of(nodes) <= {"t", "c", "href", "start"}
    return nodes


# --- what an adviser formats in Element ---------------------------------------------------


@pytest.mark.parametrize("tag", ["b", "strong", "i", "em", "s", "del", "code"])
def test_each_inline_tag_is_kept(tag: str) -> None:
    assert tree(f"vor <{tag}>mitte</{tag}> nach") == ["vor ", {"t": tag, "c": ["mitte"]}, " nach"]


def test_the_issue_example() -> None:
    html = (
        "<strong>Bestellung 4711</strong> <em>heute</em> "
        '<a href="https://shop.example/x">Link</a><script>alert(1)</script>'
    )
    assert tree(html) == [
        {"t": "strong", "c": ["Bestellung 4711"]},
        " ",
        {"t": "em", "c": ["heute"]},
        " ",
        {"t": "a", "href": "https://shop.example/x", "c": ["Link"]},
    ]


def test_paragraphs_line_breaks_and_quotes() -> None:
    html = "<p>Hallo,<br>zweite Zeile</p>\n<blockquote>\n<p>Zitat</p>\n</blockquote>\n"
    assert tree(html) == [
        {"t": "p", "c": ["Hallo,", {"t": "br"}, "zweite Zeile"]},
        " ",
        {"t": "blockquote", "c": [" ", {"t": "p", "c": ["Zitat"]}, " "]},
    ]


def test_element_lists_lose_the_newlines_between_items() -> None:
    html = '<ul>\n<li>Eiche</li>\n<li>Buche</li>\n</ul>\n<ol start="3">\n<li>drei</li>\n</ol>\n'
    assert tree(html) == [
        {"t": "ul", "c": [{"t": "li", "c": ["Eiche"]}, {"t": "li", "c": ["Buche"]}]},
        " ",
        {"t": "ol", "start": 3, "c": [{"t": "li", "c": ["drei"]}]},
    ]


def test_a_code_block_keeps_its_lines_and_markup_as_text() -> None:
    html = '<pre><code class="language-html">&lt;b&gt;x&lt;/b&gt;\n  <i>y</i>\n</code></pre>\n'
    assert tree(html) == [{"t": "pre", "c": [{"t": "code", "c": ["<b>x</b>\n  y\n"]}]}]


def test_other_clients_tags_become_their_nearest_allowed_ones() -> None:
    assert tree("<h2>Angebot</h2><strike>alt</strike><div>neu</div>") == [
        {"t": "p", "c": [{"t": "strong", "c": ["Angebot"]}]},
        {"t": "s", "c": ["alt"]},
        {"t": "p", "c": ["neu"]},
    ]
    # Colours, spoilers, underline, tables: their text without the tag.
    assert tree(
        '<font color="red">rot</font> <span data-mx-spoiler>geheim</span> <u>unter</u>'
    ) == ["rot geheim unter"]


def test_mentions_become_names_and_custom_emoji_their_alt_text() -> None:
    html = (
        '<a href="https://matrix.to/#/@anna:shop.example">Anna</a> hilft '
        '<img data-mx-emoticon src="mxc://shop.example/x" alt=":party:" height="32">'
    )
    assert tree(html) == ["Anna hilft :party:"]


def test_links_keep_http_https_and_mailto() -> None:
    assert tree('<a href="mailto:info@shop.example">Mail</a>') == [
        {"t": "a", "href": "mailto:info@shop.example", "c": ["Mail"]}
    ]
    assert tree('<a href="HTTP://shop.example/?a=1&amp;b=2">x</a>') == [
        {"t": "a", "href": "HTTP://shop.example/?a=1&b=2", "c": ["x"]}
    ]


def test_the_reply_fallback_is_dropped() -> None:
    html = "<mx-reply><blockquote><a href='https://matrix.to/#/!r/$e'>In reply to</a>"
    html += "frage</blockquote></mx-reply>Antwort"
    assert tree(html) == ["Antwort"]


# --- what must not reach the widget -----------------------------------------------------


@pytest.mark.parametrize(
    "html",
    [
        "<script>alert(1)</script>ok",
        "<style>*{display:none}</style>ok",
        "<iframe src='https://evil.example'>x</iframe>ok",
        "<object data='x.swf'><embed src='x.swf'>x</object>ok",
        "<svg><script>alert(1)</script><a href='https://e.example'>x</a></svg>ok",
        "<math><mi>x</mi></math>ok",
        "<template><img src=x onerror=alert(1)></template>ok",
        "<noscript><img src=x onerror=alert(1)></noscript>ok",
        "<SCRIPT SRC=https://evil.example/x.js></SCRIPT>ok",
    ],
)
def test_code_and_embedded_documents_go_with_their_content(html: str) -> None:
    nodes = tree(html)
    assert plain_text(nodes).endswith("ok")
    assert "alert" not in json.dumps(nodes)
    assert "evil" not in json.dumps(nodes)


def test_an_unclosed_script_takes_the_rest_with_it() -> None:
    assert tree("<b>Preis</b><script>alert(1)") == [{"t": "b", "c": ["Preis"]}]


@pytest.mark.parametrize(
    "html",
    [
        '<b onclick="alert(1)" style="color:red" class="x" id="y">fett</b>',
        '<p onmouseover="alert(1)">fett</p>',
        '<a href="https://shop.example" onclick="alert(1)" target="_self" rel="opener">fett</a>',
        '<img src="x" onerror="alert(1)">fett',
        '<ol start="2" onfocus="alert(1)" type="a"><li>fett</li></ol>',
    ],
)
def test_no_attribute_but_href_and_start(html: str) -> None:
    nodes = tree(html)
    assert "alert" not in json.dumps(nodes)
    assert plain_text(nodes) == "fett"


@pytest.mark.parametrize(
    "href",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " javascript:alert(1)",
        "java\tscript:alert(1)",
        "java\nscript:alert(1)",
        "&#106;avascript:alert(1)",
        "javascript&colon;alert(1)",
        "\x01javascript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "vbscript:msgbox(1)",
        "file:///etc/passwd",
        "ftp://shop.example/x",
        "//evil.example/x",
        "/relative",
        "https:evil.example",
        "https:\\\\evil.example",
        "https://",
        "http://[::1",
        "mailto:",
    ],
)
def test_links_we_would_not_open_keep_only_their_text(href: str) -> None:
    nodes = tree(f'<a href="{href}">klick</a>')
    assert nodes == ["klick"]


def test_safe_href() -> None:
    assert safe_href("https://shop.example/größe?x=1#a") == "https://shop.example/größe?x=1#a"
    assert safe_href(None) is None
    assert safe_href("https://shop.example/\u0085") is None  # a C1 control


def test_nested_tricks() -> None:
    # A link inside a link: the inner one is text (browsers would split them).
    assert tree('<a href="https://a.example">a<a href="https://b.example">b</a></a>') == [
        {"t": "a", "href": "https://a.example", "c": ["ab"]}
    ]
    # A tag split around another: what is left is text, shown as typed.
    assert tree("<scr<script>ipt>alert(1)</script>ok") == ["ipt>alert(1)ok"]
    # Markup inside inline code is text; an entity-encoded tag is text.
    assert tree("<code><b>x</b>&lt;script&gt;</code>") == [{"t": "code", "c": ["x<script>"]}]
    # Deep nesting stops at MAX_DEPTH elements; the text is all there.
    deep = "<blockquote>" * 50 + "tief" + "</blockquote>" * 50
    nodes = tree(deep)
    depth, node = 0, nodes[0]
    while isinstance(node, dict):
        depth += 1
        node = node["c"][0]
    assert depth == MAX_DEPTH and node == "tief"


def test_unclosed_and_stray_tags() -> None:
    assert tree("<b>fett <i>kursiv") == [{"t": "b", "c": ["fett ", {"t": "i", "c": ["kursiv"]}]}]
    assert tree("</b>text</i></p>") == ["text"]
    assert tree("<b>a<i>b</b>c</i>") == [{"t": "b", "c": ["a", {"t": "i", "c": ["b"]}]}, "c"]
    assert tree("<li>allein</li>") == [{"t": "p", "c": ["allein"]}]
    assert tree("<b/>x") == [{"t": "b", "c": ["x"]}]  # <b/> opens a <b> in HTML


def test_unicode_is_text_and_controls_go() -> None:
    html = "<b>Grüße 🎨 ＜script＞ שלום \u202eabc</b>\x00\x07"
    assert tree(html) == [{"t": "b", "c": ["Grüße 🎨 ＜script＞ שלום \u202eabc"]}]


def test_plain_text_with_brackets_stays_literal() -> None:
    assert tree("5 &lt; 7 &amp;&amp; 7 &gt; 5 &lt;b&gt;") == ["5 < 7 && 7 > 5 <b>"]
    # A bare & and < that is not a tag, as some clients write them.
    assert tree("Tom & Jerry < 3") == ["Tom & Jerry < 3"]


@pytest.mark.parametrize("html", [None, "", "   ", "<script>x</script>", "<p></p><br>", "<b> </b>"])
def test_nothing_to_show_is_none(html: str | None) -> None:
    assert formatted(html) is None


# --- the widget's view of a message -------------------------------------------------------


def message(**fields: Any) -> Message:
    values: dict[str, Any] = {
        "id": 7,
        "conversation_id": 1,
        "channel": "webchat",
        "direction": "out",
        "kind": "text",
        "text": "**Bestellung 4711** _heute_",
        "html": "<strong>Bestellung 4711</strong> <em>heute</em>",
        "media": None,
        "data": None,
        "remote_id": None,
        "sender_name": "Anna",
        "status": "sent",
        "created_at": datetime(2025, 3, 1, 10, 0, tzinfo=UTC),
    }
    return Message(**(values | fields))


def test_an_advisers_formatting_goes_to_the_widget() -> None:
    shown = message_json(message(), "https://hub.example")
    assert shown["formatted"] == [
        {"t": "strong", "c": ["Bestellung 4711"]},
        " ",
        {"t": "em", "c": ["heute"]},
    ]
    assert shown["text"] == "**Bestellung 4711** _heute_"  # older widgets show the body
    assert (shown["edited"], shown["deleted"], shown["reaction"]) == (False, False, None)


def test_a_customers_markup_is_never_formatted() -> None:
    typed = "<img src=x onerror=alert(1)>"
    shown = message_json(
        message(direction="in", text=typed, html=typed, remote_id="web:c1"), "https://hub"
    )
    assert (shown["text"], shown["formatted"]) == (typed, None)


def test_plain_adviser_text_has_no_formatting() -> None:
    shown = message_json(message(text="Hallo\nZeile 2", html=None), "https://hub")
    assert (shown["text"], shown["formatted"]) == ("Hallo\nZeile 2", None)


def test_edited_deleted_and_reacted_messages() -> None:
    edited = message_json(message(data={"edited": "$e2"}), "https://hub")
    assert edited["edited"] is True
    gone = message_json(message(status="deleted", data={"edited": "$e2"}), "https://hub")
    assert (gone["text"], gone["formatted"], gone["deleted"], gone["edited"]) == (
        _("Message deleted"),
        None,
        True,
        False,
    )
    liked = message_json(
        message(direction="in", html=None, data={"reaction": "👍"}, remote_id="web:c"), "x"
    )
    assert liked["reaction"] == "👍"
    # The shop's messages carry no reaction of the shop.
    assert message_json(message(data={"reaction": "👍"}), "x")["reaction"] is None
