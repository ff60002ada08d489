"""Matrix HTML → Telegram HTML, and splitting long texts, checked against the HTML rules of
https://core.telegram.org/bots/api#html-style (the stand-in's checker implements them)."""

from __future__ import annotations

import pytest

from hub.bridges.telegram.markup import (
    escape_text,
    plain_text,
    split_html,
    to_telegram_html,
    visible_length,
)
from tests.standins.telegram import check_html


def convert(html: str) -> str:
    out = to_telegram_html(html)
    assert check_html(out) is None, out  # Telegram would parse it
    return out


def test_plain_text_is_escaped() -> None:
    assert escape_text('a < b & c > "d"') == 'a &lt; b &amp; c &gt; "d"'


def test_supported_tags_survive() -> None:
    assert convert("<b>bold</b> <strong>s</strong> <i>i</i> <em>e</em> <u>u</u>") == (
        "<b>bold</b> <strong>s</strong> <i>i</i> <em>e</em> <u>u</u>"
    )
    assert convert("<s>s</s><del>d</del><strike>k</strike><ins>n</ins>") == (
        "<s>s</s><del>d</del><strike>k</strike><ins>n</ins>"
    )
    assert convert("<code>x &lt; 1</code>") == "<code>x &lt; 1</code>"


def test_adviser_text_with_html_lookalikes() -> None:
    # Element sends the body's < and & escaped in formatted_body.
    assert convert("<b>bold</b> &amp; &lt;script&gt;") == "<b>bold</b> &amp; &lt;script&gt;"


def test_script_and_style_vanish_with_their_content() -> None:
    assert convert("<b>bold</b> & <script>alert('x')</script> end") == "<b>bold</b> &amp; end"
    assert convert("<style>b{}</style>ok") == "ok"


def test_reply_fallback_is_dropped() -> None:
    html = "<mx-reply><blockquote><a href='https://matrix.to/#/x'>In reply</a></blockquote>"
    assert convert(html + "</mx-reply>Answer") == "Answer"


def test_unknown_tags_are_dropped_text_kept() -> None:
    assert convert('<font color="red">rot</font> <span>plain</span> <sup>2</sup>') == "rot plain 2"


def test_links_only_with_safe_schemes_and_quoted_href() -> None:
    assert convert('<a href="https://shop.example/?a=1&amp;b=2">Shop</a>') == (
        '<a href="https://shop.example/?a=1&amp;b=2">Shop</a>'
    )
    assert convert('<a href="javascript:alert(1)">click</a>') == "click"
    assert convert("<a href='https://x.example/\"q'>q</a>") == (
        '<a href="https://x.example/&quot;q">q</a>'
    )


def test_nesting_rules_are_enforced() -> None:
    # Nothing inside code/pre; links and blockquotes do not nest.
    assert convert("<code><b>x</b></code>") == "<code>x</code>"
    assert convert('<a href="https://a.example"><a href="https://b.example">x</a></a>') == (
        '<a href="https://a.example">x</a>'
    )
    assert convert("<blockquote>a<blockquote>b</blockquote></blockquote>") == (
        "<blockquote>a\nb</blockquote>"
    )


def test_misnested_input_still_gives_valid_output() -> None:
    assert convert("<b><i>x</b> y</i>") == "<b><i>x</i></b> y"
    assert convert("<b>never closed") == "<b>never closed</b>"


def test_code_block_keeps_language_and_whitespace() -> None:
    html = '<pre><code class="language-python">if a &lt; b:\n    pass\n</code></pre>'
    assert convert(html) == (
        '<pre><code class="language-python">if a &lt; b:\n    pass\n</code></pre>'
    )


def test_spoiler() -> None:
    assert convert("<span data-mx-spoiler>secret</span>") == "<tg-spoiler>secret</tg-spoiler>"


def test_blocks_become_newlines() -> None:
    html = "<p>Hello <i>wörld</i></p><p>second</p><ul><li>a</li><li>b</li></ul><ol><li>x</li></ol>"
    assert convert(html) == "Hello <i>wörld</i>\n\nsecond\n\n• a\n• b\n1. x"
    assert convert("line1<br>line2<br/>line3") == "line1\nline2\nline3"
    assert convert("<h1>Title</h1>text") == "<b>Title</b>\n\ntext"


def test_umlauts_emoji_rtl_pass_unchanged() -> None:
    assert convert("Grüße 🎨 مرحبا שלום") == "Grüße 🎨 مرحبا שלום"


def test_plain_text_of_converted() -> None:
    assert plain_text("<b>a &amp; b</b> &lt;c&gt;") == "a & b <c>"


def test_visible_length_counts_entities_once_and_utf16() -> None:
    assert visible_length("<b>a&amp;b</b>") == 3
    assert visible_length("😀") == 2


def test_short_text_is_one_part() -> None:
    assert split_html("<b>hi</b>", 4096) == ["<b>hi</b>"]
    assert split_html("", 4096) == []


def test_long_text_splits_at_spaces_and_keeps_tags_balanced() -> None:
    html = "<b>" + "word " * 2000 + "</b>"
    parts = split_html(html, 4096)
    assert len(parts) == 3
    for part in parts:
        assert check_html(part) is None
        assert part.startswith("<b>") and part.endswith("</b>")
        assert visible_length(part) <= 4096
        assert "wor</b>" not in part  # words are not cut
    assert "".join(plain_text(p) + " " for p in parts).split() == ["word"] * 2000


def test_split_prefers_newlines() -> None:
    html = "a" * 3000 + "\n" + "b" * 3000
    assert split_html(html, 4096) == ["a" * 3000, "b" * 3000]


def test_hard_split_without_spaces_never_cuts_an_entity() -> None:
    html = "&amp;" * 5000
    parts = split_html(html, 4096)
    assert [visible_length(p) for p in parts] == [4096, 904]
    assert all(check_html(p) is None for p in parts)


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_emoji_is_never_split(limit: int) -> None:
    parts = split_html("😀😀😀", limit)
    assert "".join(parts) == "😀😀😀"
    assert all(p == "😀" * len(p) for p in parts)
