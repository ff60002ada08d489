"""An adviser's Matrix formatting (org.matrix.custom.html) → the widget's formatted text. Pure.

The widget gets a tree of plain JSON, not HTML: a node is a string (text, shown with
textContent) or `{"t": tag, "c": [nodes]}` with a tag of the fixed allow-list `TAGS`, plus
`href` on "a" (http, https or mailto only) and `start` on "ol". web/static/widget.js builds
its DOM from that with createElement and checks the tags and links again, so the browser
never parses HTML from a message: no innerHTML, no parser differences between this sanitizer
and the browser (mutation XSS), and it works on shop pages that enforce Trusted Types, where
assigning HTML strings throws.

The input is parsed with the standard library's forgiving parser and rebuilt from scratch
(the way hub/bridges/telegram/markup.py does): attributes other than those two are dropped,
unknown tags are dropped with their text kept, script/style/mx-reply (and other containers of
code or embedded documents) are dropped with their content, Matrix pills become their names.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

# What the widget renders (the same list is in widget.js: RICH_TAGS).
TAGS = frozenset(
    {"b", "strong", "i", "em", "s", "del", "code", "pre", "a"}
    | {"ul", "ol", "li", "br", "p", "blockquote"}
)
# Tags of other clients and of Markdown that have a close equivalent in the list.
_RENAME = {
    "strike": "s",
    "div": "p",
    "details": "p",
    "summary": "p",
    "tr": "p",
    "caption": "p",
    "dt": "p",
    "dd": "p",
}
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})  # a paragraph in bold
# Dropped with everything inside: code, styles, embedded documents, the reply fallback.
_DROP_CONTENT = frozenset(
    {"script", "style", "mx-reply", "head", "title", "template", "noscript", "iframe"}
    | {"object", "embed", "svg", "math", "frame", "frameset", "noframes", "noembed"}
    | {"textarea", "select", "button", "audio", "video", "canvas", "applet"}
)
# Never have content or an end tag (the parser reports them as start tags only).
_VOID = frozenset(
    {"br", "hr", "img", "input", "meta", "link", "wbr", "area", "base", "col", "embed"}
    | {"param", "source", "track", "keygen"}
)
_LINK_SCHEMES = frozenset({"http", "https", "mailto"})
_PILL = "https://matrix.to/"
# Enough for a list in a quote in a list with bold code; deeper tags keep only their text.
MAX_DEPTH = 12
MAX_ELEMENTS = 2000  # a long message of many small tags stays a cheap DOM
MAX_OL_START = 1_000_000
_SPACE = re.compile(r"[ \t\r\n\f]+")
# C0 and C1 controls (except tab and newline), which have no business in a message; NUL.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

Node = str | dict[str, Any]


def safe_href(value: str | None) -> str | None:
    """A link target the widget may open: an absolute http(s) URL with a host, or mailto;
    None for anything else (javascript:, data:, vbscript:, relative, obfuscated).

    Browsers ignore tabs, newlines and leading controls in a URL ("java\\tscript:"), so a
    target with any whitespace or control character is refused instead of cleaned."""
    if not value:
        return None
    href = value.strip(" ")
    if not href or any(ord(ch) <= 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in href):
        return None
    if "\\" in href:
        return None  # browsers read "https:\\evil" as a URL, urlsplit does not
    try:
        parts = urlsplit(href)
    except ValueError:  # "http://[::1"
        return None
    scheme = parts.scheme.lower()
    if scheme not in _LINK_SCHEMES:
        return None
    if scheme == "mailto":
        return href if len(href) > len("mailto:") else None
    if not parts.netloc or not href[len(scheme) :].startswith("://"):
        return None
    return href


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root: dict[str, Any] = {"t": "root", "c": []}
        # Per open source tag: (tag, node its content goes into or None when not emitted,
        # dropping its content?). The emitted nodes are a path from the root.
        self.frames: list[tuple[str, dict[str, Any] | None, bool]] = []
        self.elements = 0

    # -- where we are
    def _dropping(self) -> bool:
        return any(drop for _, _, drop in self.frames)

    def _open_nodes(self) -> list[dict[str, Any]]:
        return [node for _, node, _ in self.frames if node is not None]

    def _target(self) -> dict[str, Any]:
        nodes = self._open_nodes()
        return nodes[-1] if nodes else self.root

    def _inside(self, *tags: str) -> bool:
        return any(node["t"] in tags for node in self._open_nodes())

    def _depth(self) -> int:
        return len(self._open_nodes())

    def _append(self, child: Node) -> None:
        children: list[Node] = self._target()["c"]
        if isinstance(child, str) and children and isinstance(children[-1], str):
            children[-1] += child  # one text node, not many
        else:
            children.append(child)

    def _element(self, tag: str, **attrs: Any) -> dict[str, Any] | None:
        """A new node of `tag` in the current one, or None when over the limits."""
        if self._depth() >= MAX_DEPTH or self.elements >= MAX_ELEMENTS:
            return None
        self.elements += 1
        node: dict[str, Any] = {"t": tag, **attrs}
        if tag != "br":
            node["c"] = []
        self._append(node)
        return node

    # -- the parser's events
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._dropping():
            if tag not in _VOID:
                self.frames.append((tag, None, True))
            return
        if tag in _DROP_CONTENT:
            if tag not in _VOID:
                self.frames.append((tag, None, True))
            return
        if tag in _VOID:
            self._void(tag, dict(attrs))
            return
        self.frames.append((tag, self._start(tag, dict(attrs)), False))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # "<b/>" is an opening tag in HTML; only void elements really close themselves.
        if tag in _VOID:
            if not self._dropping():
                self._void(tag, dict(attrs))
        else:
            self.handle_starttag(tag, attrs)

    def _void(self, tag: str, attrs: dict[str, str | None]) -> None:
        if tag in ("br", "hr"):
            if self._inside("pre"):
                self._append("\n")
            else:
                self._element("br")
        elif tag == "img":
            # Custom emoji and inline images (mxc://): their alt text (":party:").
            alt = _CONTROLS.sub("", attrs.get("alt") or "")
            if alt:
                self._append(alt)

    def _start(self, tag: str, attrs: dict[str, str | None]) -> dict[str, Any] | None:
        """The node this start tag's content goes into, or None to keep only the text."""
        tag = _RENAME.get(tag, tag)
        if self._inside("pre", "code"):
            # Code shows its text as typed; Element writes <pre><code>.
            if tag == "code" and self._target()["t"] == "pre" and not self._inside("code"):
                return self._element("code")
            return None
        if tag in _HEADINGS:
            paragraph = self._element("p")
            if paragraph is None:
                return None
            self.frames.append(("", paragraph, False))  # closed with the heading
            return self._element("strong")
        if tag not in TAGS:
            return None
        if tag == "a":
            href = safe_href(attrs.get("href"))
            if href is None or self._inside("a") or href.startswith(_PILL):
                return None  # a mention or room pill: the name, not the link
            return self._element("a", href=href)
        if tag == "ol":
            try:
                start = int(attrs.get("start") or "1")
            except ValueError:
                start = 1
            start = min(max(start, 0), MAX_OL_START)
            return self._element("ol", start=start) if start != 1 else self._element("ol")
        if tag == "li" and self._target()["t"] not in ("ul", "ol"):
            return self._element("p")  # an item outside a list: its own line
        return self._element(tag)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.frames) - 1, -1, -1):
            if self.frames[depth][0] == tag:
                del self.frames[depth:]
                # A heading's paragraph frame ("") goes with it.
                while self.frames and self.frames[-1][0] == "":
                    self.frames.pop()
                return
        # A stray end tag closes nothing (as browsers do, except </br> and </p>: harmless).

    def handle_data(self, data: str) -> None:
        if self._dropping():
            return
        data = _CONTROLS.sub("", data)
        if not self._inside("pre"):
            data = _SPACE.sub(" ", data)
            if data == " " and self._target()["t"] in ("ul", "ol"):
                return  # the newlines between list items
        if data:
            self._append(data)


def _prune(nodes: list[Node]) -> list[Node]:
    """Without empty inline elements (a link around nothing) and empty lists."""
    kept: list[Node] = []
    for node in nodes:
        if isinstance(node, dict) and "c" in node:
            node["c"] = _prune(node["c"])
            if not node["c"] and node["t"] not in ("p", "li"):
                continue
        kept.append(node)
    return kept


def _has_text(nodes: list[Node]) -> bool:
    return any(
        (n.strip() if isinstance(n, str) else n["t"] != "br" and _has_text(n.get("c", [])))
        for n in nodes
    )


def formatted(html: str | None) -> list[Node] | None:
    """The widget's tree of an adviser's formatted_body; None when there is nothing to
    show from it (no HTML, or nothing left after sanitizing): the widget shows `text`."""
    if not html:
        return None
    builder = _Builder()
    builder.feed(html)
    builder.close()
    nodes = _prune(builder.root["c"])
    # Leading and trailing spaces of the whole message (Element ends lists with "\n").
    if nodes and isinstance(nodes[0], str):
        nodes[0] = nodes[0].lstrip()
    if nodes and isinstance(nodes[-1], str):
        nodes[-1] = nodes[-1].rstrip()
    nodes = [n for n in nodes if n != ""]
    return nodes if _has_text(nodes) else None


def plain_text(nodes: list[Node]) -> str:
    """The text of a tree (tests, screen reader announcements)."""
    out: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif node["t"] == "br":
            out.append("\n")
        else:
            out.append(plain_text(node["c"]))
    return "".join(out)
