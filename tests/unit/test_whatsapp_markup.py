"""Matrix HTML (as Element and other clients send it) → WhatsApp markup."""

from __future__ import annotations

import pytest

from hub.bridges.whatsapp.markup import (
    MAX_TEXT_CHARS,
    html_to_whatsapp,
    outbound_text,
    split_text,
)


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<strong>bold</strong> and <em>italic</em>", "*bold* and _italic_"),
        ("<b>b</b> <i>i</i> <del>gone</del> <s>s</s>", "*b* _i_ ~gone~ ~s~"),
        ("use <code>!cart add</code> now", "use ```!cart add``` now"),
        ("<strong>bold </strong>text", "*bold* text"),  # markers must hug the text
        ("<strong><em>both</em></strong>", "*_both_*"),
        ("a &amp; b &lt;3", "a & b <3"),
        ("line one<br>line two<br/>three", "line one\nline two\nthree"),
        ("<p>first</p><p>second</p>", "first\n\nsecond"),
        ("<h3>Offer</h3><p>today</p>", "*Offer*\n\ntoday"),
        ("Grüße 👋🏽 مرحبا", "Grüße 👋🏽 مرحبا"),
    ],
)
def test_inline_formatting(html: str, expected: str) -> None:
    assert html_to_whatsapp(html) == expected


def test_links_show_their_target() -> None:
    assert html_to_whatsapp('see <a href="https://shop.example/p/1">the paint</a>') == (
        "see the paint (https://shop.example/p/1)"
    )
    assert html_to_whatsapp('<a href="https://shop.example">https://shop.example</a>') == (
        "https://shop.example"
    )
    assert html_to_whatsapp('<a href="mailto:a@shop.example">write us</a>') == (
        "write us (a@shop.example)"
    )
    # Mentions (matrix.to links) keep only the name.
    assert html_to_whatsapp('<a href="https://matrix.to/#/@anna:shop.example">Anna</a>: hi') == (
        "Anna: hi"
    )


def test_lists() -> None:
    html = "<p>Options:</p><ul>\n<li>Red</li>\n<li><strong>Blue</strong></li>\n</ul>"
    assert html_to_whatsapp(html) == "Options:\n\n• Red\n• *Blue*"
    assert html_to_whatsapp('<ol start="3"><li>three</li><li>four</li></ol>') == (
        "3. three\n4. four"
    )
    nested = "<ul><li>Paint<ul><li>Red</li><li>Blue</li></ul></li><li>Brush</li></ul>"
    assert html_to_whatsapp(nested) == "• Paint\n  • Red\n  • Blue\n• Brush"


def test_code_block_and_quote() -> None:
    html = "<pre><code>line 1\nline 2\n</code></pre><blockquote><p>quoted</p></blockquote>"
    assert html_to_whatsapp(html) == "```line 1\nline 2```\n\n> quoted"


def test_reply_fallback_is_dropped() -> None:
    html = "<mx-reply><blockquote>old</blockquote></mx-reply>the answer"
    assert html_to_whatsapp(html) == "the answer"


def test_outbound_text_prefers_html_and_falls_back_to_body() -> None:
    assert outbound_text("**bold**", "<strong>bold</strong>") == "*bold*"
    assert outbound_text("plain *stars*", None) == "plain *stars*"
    assert outbound_text("body", "<mx-reply>x</mx-reply>") == "body"


def test_split_text_keeps_everything_in_order() -> None:
    words = [f"Wort{n}ü🎨" for n in range(1500)]
    text = " ".join(words)
    parts = split_text(text)
    assert len(parts) >= 2
    assert all(len(p) <= MAX_TEXT_CHARS for p in parts)
    assert " ".join(parts).split(" ") == words


def test_split_text_prefers_paragraphs_and_cuts_hard_when_it_must() -> None:
    text = "a" * 3000 + "\n\n" + "b" * 3000
    assert split_text(text) == ["a" * 3000, "b" * 3000]
    solid = "x" * 9000
    parts = split_text(solid)
    assert [len(p) for p in parts] == [4096, 4096, 808]
    assert split_text("short") == ["short"]
