"""Matrix HTML (formatted_body) → Telegram's HTML parse mode; pure, no I/O.

Telegram accepts only b/strong, i/em, u/ins, s/strike/del, tg-spoiler (and span
class="tg-spoiler"), a href, code, pre (with code class="language-x"), blockquote; every other
`<`, `>` and `&` must be an entity, and only &lt; &gt; &amp; &quot; are known by name
(https://core.telegram.org/bots/api#html-style). Entities may nest, except that nothing goes
inside pre/code, links do not nest and blockquotes do not nest. So the input is parsed and
re-emitted from scratch: text is always re-escaped, unknown tags are dropped (their text
kept), script/style/mx-reply are dropped with their content, block elements become newlines.
"""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser
from urllib.parse import urlsplit

INLINE = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "tg-spoiler"}
DROP_CONTENT = {"script", "style", "mx-reply", "head", "title", "template", "noscript"}
HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
LINK_SCHEMES = {"http", "https", "tg", "mailto"}
_SPACE = re.compile(r"[ \t\r\n\f]+")
_LANG = re.compile(r"^language-([\w+#.-]{1,32})$")


def escape_text(text: str) -> str:
    """Plain text for parse_mode HTML: only &, < and > need escaping."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attr(value: str) -> str:
    return escape_text(value).replace('"', "&quot;")


class _Converter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        # (html tag, Telegram tag emitted for it or None): closes exactly what was opened.
        self.stack: list[tuple[str, str | None]] = []
        self.skip: list[str] = []
        self.lists: list[list[int]] = []  # per open ul/ol: [counter] (-1 for bullets)
        self.pending = 0  # newlines wanted before the next visible text
        self.trailing_nl = 0  # newlines at the end of the visible text so far
        self.has_text = False
        self.ends_space = False

    # -- state helpers
    def _inside(self, *tags: str) -> bool:
        return any(emitted in tags for _, emitted in self.stack)

    def _want(self, newlines: int) -> None:
        self.pending = max(self.pending, newlines)

    def _flush_newlines(self) -> None:
        if self.has_text and self.pending > self.trailing_nl:
            self.out.append("\n" * (self.pending - self.trailing_nl))
            self.trailing_nl = self.pending
        self.pending = 0

    def _text(self, text: str, *, verbatim: bool = False) -> None:
        if not verbatim:
            text = _SPACE.sub(" ", text)
            if self.pending or self.trailing_nl or self.ends_space or not self.has_text:
                text = text.lstrip(" ")
        if not text:
            return
        self._flush_newlines()
        self.out.append(escape_text(text))
        self.has_text = True
        self.ends_space = text.endswith(" ")
        stripped = text.rstrip("\n")
        nl = len(text) - len(stripped)
        self.trailing_nl = nl if stripped else self.trailing_nl + nl

    def _open(self, tag: str, emitted: str | None, opening: str | None = None) -> None:
        if emitted is not None:
            self._flush_newlines()
            self.out.append(opening or f"<{emitted}>")
        self.stack.append((tag, emitted))

    # -- HTMLParser callbacks
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skip:
            if tag == self.skip[-1]:
                self.skip.append(tag)
            return
        if tag in DROP_CONTENT:
            self.skip.append(tag)
            return
        a = dict(attrs)
        verbatim = self._inside("pre", "code")
        if tag == "br":
            self._flush_newlines()
            self._text("\n", verbatim=True)
        elif tag == "img":
            alt = a.get("alt") or a.get("title")
            if alt:
                self._text(alt)
        elif tag == "hr":
            self._want(1)
            self._text("———")
            self._want(1)
        elif tag in INLINE:
            self._open(tag, None if verbatim else tag)
        elif tag == "span":
            spoiler = "data-mx-spoiler" in a or a.get("class") == "tg-spoiler"
            self._open(tag, "tg-spoiler" if spoiler and not verbatim else None)
        elif tag == "a":
            href = (a.get("href") or "").strip()
            ok = urlsplit(href).scheme.lower() in LINK_SCHEMES and not self._inside("a")
            ok = ok and not verbatim
            self._open(tag, "a" if ok else None, f'<a href="{_escape_attr(href)}">')
        elif tag == "code":
            lang = _LANG.match(a.get("class") or "")
            if self._inside("code"):
                self._open(tag, None)
            elif self._inside("pre") and lang:
                self._open(tag, "code", f'<code class="language-{lang.group(1)}">')
            else:
                self._open(tag, "code")
        elif tag == "pre":
            self._want(1)
            self._open(tag, None if verbatim else "pre")
        elif tag == "blockquote":
            self._want(1)
            self._open(tag, None if verbatim or self._inside("blockquote") else "blockquote")
        elif tag in HEADINGS:
            self._want(2)
            self._open(tag, None if verbatim else "b")
        elif tag in ("ul", "ol"):
            self._want(1)
            self.lists.append([0 if tag == "ol" else -1])
            self._open(tag, None)
        elif tag == "li":
            self._want(1)
            self._open(tag, None)
            self._list_marker(a.get("value"))
        elif tag in ("p", "div", "table", "tr", "dl", "dt", "dd", "details", "summary"):
            self._want(1)
            self._open(tag, None)
        else:
            self._open(tag, None)  # unknown: dropped, its text kept

    def _list_marker(self, value: str | None) -> None:
        if not self.lists:
            self._text("• ")
            return
        counter = self.lists[-1]
        if counter[0] < 0:
            self._text("• ")
            return
        counter[0] = int(value) if value and value.isdigit() else counter[0] + 1
        self._text(f"{counter[0]}. ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in ("br", "img", "hr"):
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.skip:
            if tag == self.skip[-1]:
                self.skip.pop()
            return
        if not any(t == tag for t, _ in self.stack):
            return  # a stray end tag
        while self.stack:
            t, emitted = self.stack.pop()
            if emitted is not None:
                self.out.append(f"</{emitted}>")
            self._after_block(t)
            if t == tag:
                break

    def _after_block(self, tag: str) -> None:
        if tag in ("ul", "ol") and self.lists:
            self.lists.pop()
        if tag == "p" or tag in HEADINGS:
            self._want(2)
        elif tag in ("div", "li", "ul", "ol", "pre", "blockquote", "tr", "table", "dd", "dt"):
            self._want(1)
        elif tag == "td" or tag == "th":
            self._text(" ")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        self._text(data, verbatim=self._inside("pre"))

    def result(self) -> str:
        while self.stack:
            _, emitted = self.stack.pop()
            if emitted is not None:
                self.out.append(f"</{emitted}>")
        text = "".join(self.out)
        return re.sub(r" +\n", "\n", text).strip()


def plain_text(telegram_html: str) -> str:
    """The words of Telegram HTML without any formatting (for parse_mode none)."""
    return unescape(re.sub(r"<[^>]*>", "", telegram_html))


def to_telegram_html(matrix_html: str) -> str:
    """Telegram HTML for a Matrix formatted_body (never raises; worst case: plain text)."""
    parser = _Converter()
    parser.feed(matrix_html)
    parser.close()
    return parser.result()


# -- splitting: Telegram counts the text after entity parsing (4096 for messages, 1024 for
# captions). We count UTF-16 code units, which is never less than Telegram's count.
_UNIT = re.compile(r"<[^>]*>|&(?:#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);|[\s\S]")
_TAG_NAME = re.compile(r"</?([a-zA-Z][\w-]*)")


def _width(unit: str) -> int:
    char = unescape(unit) if unit.startswith("&") else unit
    return len(char.encode("utf-16-le")) // 2


def visible_length(telegram_html: str) -> int:
    """The length Telegram sees (after entity parsing), in UTF-16 code units."""
    return sum(_width(u) for u in _UNIT.findall(telegram_html) if not u.startswith("<"))


def _cut_points(units: list[str], limit: int) -> set[int]:
    """Indexes of text units to break at (the unit itself is dropped: a space or newline)."""
    text_idx = [i for i, u in enumerate(units) if not u.startswith("<")]
    cuts: set[int] = set()
    start, total = 0, len(text_idx)
    while start < total:
        used, end = 0, start
        while end < total and used + _width(units[text_idx[end]]) <= limit:
            used += _width(units[text_idx[end]])
            end += 1
        end = max(end, start + 1)  # a limit below one character still makes progress
        if end >= total:
            break
        cut = None
        for wanted in ("\n", " "):
            for k in range(end, start + (end - start) // 2, -1):
                if units[text_idx[k]] == wanted:
                    cut = k
                    break
            if cut is not None:
                break
        if cut is None:  # one long word: break hard (never between surrogates: units are chars)
            cuts.add(-text_idx[end])  # negative: break before this unit, keep it
            start = end
        else:
            cuts.add(text_idx[cut])
            start = cut + 1
    return cuts


def split_html(telegram_html: str, limit: int) -> list[str]:
    """Split Telegram HTML into parts of at most `limit` visible characters each, closing
    open tags at the end of a part and re-opening them at the start of the next."""
    if visible_length(telegram_html) <= limit:
        return [telegram_html] if telegram_html.strip() else []
    units = _UNIT.findall(telegram_html)
    cuts = _cut_points(units, limit)
    parts: list[str] = []
    current: list[str] = []
    open_tags: list[tuple[str, str]] = []  # (name, opening tag text)

    def close_part() -> None:
        closing = "".join(f"</{name}>" for name, _ in reversed(open_tags))
        parts.append("".join(current) + closing)
        current.clear()
        current.extend(opening for _, opening in open_tags)

    for i, unit in enumerate(units):
        if -i in cuts and i:
            close_part()
        elif i in cuts:
            close_part()
            continue
        if unit.startswith("<"):
            name_match = _TAG_NAME.match(unit)
            name = name_match.group(1).lower() if name_match else ""
            if unit.startswith("</"):
                for n in range(len(open_tags) - 1, -1, -1):
                    if open_tags[n][0] == name:
                        del open_tags[n]
                        break
            elif not unit.endswith("/>"):
                open_tags.append((name, unit))
        current.append(unit)
    close_part()
    return [p for p in parts if visible_length(p) > 0]
