"""Matrix message formatting (org.matrix.custom.html) → WhatsApp's own markup. Pure.

WhatsApp renders *bold*, _italic_, ~strike~, ```monospace```, "> " quotes and plain "1." /
"•" lists, but no HTML and no hidden link targets: a link is written as "text (url)" so the
customer sees where it goes. Markers only work hugging the text, so surrounding whitespace
is moved outside them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

MAX_TEXT_CHARS = 4096  # a WhatsApp text message body

_VOID = frozenset({"br", "hr", "img", "input", "meta", "link", "wbr"})
_BLOCK = frozenset(
    {"p", "div", "ul", "ol", "li", "pre", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6"}
    | {"table", "tr", "hr", "details", "summary"}
)
_WRAP = {
    "b": "*",
    "strong": "*",
    "i": "_",
    "em": "_",
    "s": "~",
    "del": "~",
    "strike": "~",
}
_SKIP = frozenset({"mx-reply", "script", "style", "head"})


@dataclass
class _Node:
    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[_Node | str] = field(default_factory=list)


class _TreeBuilder(HTMLParser):
    """A forgiving tree: unclosed tags end with their parent, stray end tags are ignored."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Node("root")
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = _Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(_Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def _wrap(marker: str, inner: str) -> str:
    """`*x*` with the whitespace moved outside; nothing for empty content."""
    stripped = inner.strip()
    if not stripped:
        return inner
    lead = inner[: len(inner) - len(inner.lstrip())]
    trail = inner[len(inner.rstrip()) :]
    return f"{lead}{marker}{stripped}{marker}{trail}"


def _text_of(node: _Node) -> str:
    return "".join(c if isinstance(c, str) else _text_of(c) for c in node.children)


class _Renderer:
    def __init__(self) -> None:
        self.list_depth = 0

    def children(self, node: _Node, in_pre: bool = False) -> str:
        out: list[str] = []
        for child in node.children:
            if isinstance(child, str):
                out.append(child if in_pre else re.sub(r"[ \t\r\n]+", " ", child))
            else:
                out.append(self.node(child))
        return "".join(out)

    def node(self, node: _Node) -> str:
        tag = node.tag
        if tag in _SKIP:
            return ""
        if tag == "br":
            return "\n"
        if tag == "hr":
            return "\n———\n"
        if tag == "img":
            return node.attrs.get("alt", "")
        if tag in _WRAP:
            return _wrap(_WRAP[tag], self.children(node))
        if tag == "code":
            return _wrap("```", _text_of(node))
        if tag == "pre":
            return "\n```" + _text_of(node).strip("\n") + "```\n"
        if tag == "a":
            return self.link(node)
        if tag in ("ul", "ol"):
            return self.list(node)
        if tag == "blockquote":
            inner = _tidy(self.children(node))
            return "\n" + "\n".join(f"> {line}" for line in inner.split("\n")) + "\n"
        if re.fullmatch(r"h[1-6]", tag):
            return "\n" + _wrap("*", self.children(node)) + "\n"
        inner = self.children(node)
        return f"\n{inner}\n" if tag in _BLOCK else inner

    def link(self, node: _Node) -> str:
        href = node.attrs.get("href", "").strip()
        text = self.children(node)
        if not href:
            return text
        if href.startswith("mailto:"):
            href = href[len("mailto:") :]
        if href.startswith("https://matrix.to/"):
            return text  # a mention or room link: the name means something, the URL does not
        shown = text.strip()
        if not shown or shown == href or shown.rstrip("/") == href.rstrip("/"):
            return href
        return f"{text} ({href})"

    def list(self, node: _Node) -> str:
        ordered = node.tag == "ol"
        try:
            number = int(node.attrs.get("start", "1"))
        except ValueError:
            number = 1
        indent = "  " * self.list_depth
        self.list_depth += 1
        lines: list[str] = []
        for child in node.children:
            if isinstance(child, str) or child.tag != "li":
                continue  # whitespace between items
            item = _tidy(self.children(child))
            bullet = f"{number}." if ordered else "•"
            first, *rest = item.split("\n") if item else [""]
            lines.append(f"{indent}{bullet} {first}")
            pad = indent + "  "
            lines += [line if line.startswith(pad) else pad + line for line in rest]
            number += 1
        self.list_depth -= 1
        return "\n" + "\n".join(lines) + "\n"


def _tidy(text: str) -> str:
    """Trim spaces at line ends and collapse runs of blank lines to one."""
    lines = [line.rstrip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n")


def html_to_whatsapp(html_text: str) -> str:
    """Matrix formatted_body → WhatsApp text with WhatsApp markup."""
    builder = _TreeBuilder()
    builder.feed(html_text)
    builder.close()
    return _tidy(_Renderer().children(builder.root)).strip()


def outbound_text(text: str | None, html_text: str | None) -> str:
    """The text to send: the HTML converted when there is HTML, else the plain body."""
    if html_text:
        converted = html_to_whatsapp(html_text)
        if converted:
            return converted
    return text or ""


def split_text(text: str, limit: int = MAX_TEXT_CHARS) -> list[str]:
    """Split a long text into WhatsApp-sized parts, at paragraph, line or word boundaries
    where possible (never inside a surrogate pair: Python strings are code points)."""
    parts: list[str] = []
    while len(text) > limit:
        window = text[:limit]
        cut = -1
        for sep in ("\n\n", "\n", " "):
            cut = window.rfind(sep, limit // 2)
            if cut > 0:
                break
        if cut <= 0:
            cut = limit
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip("\n ")
    if text or not parts:
        parts.append(text)
    return parts
