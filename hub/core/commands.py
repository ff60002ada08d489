"""Adviser commands: declarative specs, a registry and a pure parser.

Advisers type commands into a customer room (``!cart add SKU 2``). This module turns such a
message body into a typed result and nothing else: no I/O, no globals, it never calls a handler.
The dispatcher decides who may run commands and what to do with each result; a
``NotACommand`` is ordinary text that goes to the customer, so we only claim a message as a
command when it clearly is one. Usage lines are generated from the specs so help text and error
messages can never drift from what the parser accepts.
"""

from __future__ import annotations

import difflib
import html
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from types import MappingProxyType
from typing import Generic, TypeAlias, TypeVar

from hub.core.command_args import (
    ArgSpec,
    BadValue,
    ChoiceArg,
    IntArg,
    RestArg,
    UrlArg,
    WordArg,
)
from hub.i18n import _

DEFAULT_PREFIX = "!"
__all__ = [
    "ArgumentError",
    "ChoiceArg",
    "CommandRegistry",
    "CommandSpec",
    "IntArg",
    "NotACommand",
    "ParsedCommand",
    "QuoteError",
    "RestArg",
    "UnknownCommand",
    "UrlArg",
    "WordArg",
    "parse",
    "tokenize",
]

H = TypeVar("H")
T = TypeVar("T")
ArgValue: TypeAlias = str | int | None

# Opening quote -> closing quote. Phones "smarten" quotes as they are typed, so an adviser on
# iOS sends “…” when they pressed "; accepting those avoids a baffling error.
_QUOTES: Mapping[str, str] = MappingProxyType({'"': '"', "'": "'", "“": "”", "‘": "’", "„": "“"})


class QuoteError(ValueError):
    """A quoted value is not closed properly; the message is meant for the adviser."""


# --- command specs and registry ---------------------------------------------------------------


def _command_words(name: str) -> tuple[str, ...]:
    """Normalise a command name or alias to case-folded words, rejecting unusable ones."""
    words = tuple(unicodedata.normalize("NFC", name).casefold().split())
    # Names start with a letter or digit so that "!!!" or "! hi" stay ordinary text.
    if not words or any(not w[0].isalnum() for w in words):
        raise ValueError(f"command name must be words starting with a letter/digit: {name!r}")
    return words


@dataclass(frozen=True)
class CommandSpec(Generic[H]):
    """One command. ``name`` may have several words ("cart add"); ``handler`` is opaque here.
    ``help`` is an English msgid (mark it with hub.i18n.N_): it is shown in the shop's
    language."""

    name: str
    handler: H
    _: KW_ONLY
    args: tuple[ArgSpec, ...] = ()
    aliases: tuple[str, ...] = ()
    help: str = ""

    def __post_init__(self) -> None:
        # Frozen, so normalise through object.__setattr__: lists become tuples (hashable) and
        # names are stored the way they are matched and displayed.
        object.__setattr__(self, "name", " ".join(_command_words(self.name)))
        aliases = tuple(" ".join(_command_words(a)) for a in self.aliases)
        object.__setattr__(self, "aliases", aliases)
        object.__setattr__(self, "args", tuple(self.args))
        if "\n" in self.help:
            raise ValueError(f"help of {self.name!r} must be one line")
        if len(set(aliases) | {self.name}) != len(aliases) + 1:
            raise ValueError(f"command {self.name!r} repeats a name among its aliases")
        self._check_args()

    def _check_args(self) -> None:
        names = [a.name for a in self.args]
        if len(set(names)) != len(names):
            raise ValueError(f"command {self.name!r} has duplicate argument names")
        for i, arg in enumerate(self.args):
            if isinstance(arg, RestArg) and i != len(self.args) - 1:
                raise ValueError(f"command {self.name!r}: a rest argument must come last")
            # A required argument after an optional one would make positions ambiguous.
            if i and self.args[i - 1].optional and not arg.optional:
                raise ValueError(f"command {self.name!r}: required {arg.name!r} after optional")

    def usage(self, prefix: str = DEFAULT_PREFIX) -> str:
        """The generated usage line, e.g. ``!cart add SKU [QTY]``."""
        return " ".join([prefix + self.name, *(a.usage_token() for a in self.args)])


class CommandRegistry(Generic[H]):
    """The commands known to one hub. Domains register their specs at start-up."""

    def __init__(self) -> None:
        self._by_words: dict[tuple[str, ...], CommandSpec[H]] = {}
        self._depth = 0  # most words in any name, bounds the prefix search

    def register(self, spec: CommandSpec[H]) -> CommandSpec[H]:
        """Add a spec; a name or alias already taken raises ValueError (no silent override)."""
        keys = [tuple(n.split()) for n in (spec.name, *spec.aliases)]
        for key in keys:
            if key in self._by_words:
                owner = self._by_words[key].name
                raise ValueError(f"command {' '.join(key)!r} is already registered ({owner!r})")
        for key in keys:
            self._by_words[key] = spec
            self._depth = max(self._depth, len(key))
        return spec

    def commands(self) -> list[CommandSpec[H]]:
        """Every registered spec once, sorted by name."""
        unique = {id(s): s for s in self._by_words.values()}
        return sorted(unique.values(), key=lambda s: s.name)

    def get(self, name: str) -> CommandSpec[H] | None:
        """Exact lookup by name or alias, case-insensitive."""
        return self._by_words.get(tuple(unicodedata.normalize("NFC", name).casefold().split()))

    def match(self, words: Sequence[str]) -> tuple[CommandSpec[H], int] | None:
        """The spec whose name or alias is the longest prefix of ``words``, and how many words
        that name used; None if none matches."""
        folded = tuple(w.casefold() for w in words[: self._depth])
        for n in range(len(folded), 0, -1):
            spec = self._by_words.get(folded[:n])
            if spec is not None:
                return spec, n
        return None

    def suggest(self, words: Sequence[str]) -> tuple[str, str | None]:
        """For unknown ``words``: (what the adviser probably meant to type, closest known name
        or alias). Each candidate is compared with as many typed words as it has itself."""
        folded = [w.casefold() for w in words]
        best: tuple[float, int, str, str] | None = None
        for key in sorted(self._by_words):
            typed = " ".join(folded[: len(key)])
            ratio = difflib.SequenceMatcher(None, typed, " ".join(key)).ratio()
            # On equal similarity the longer name wins: it explains more of what was typed.
            score = (ratio, len(key), typed, " ".join(key))
            if ratio >= 0.6 and (best is None or score[:2] > best[:2]):
                best = score
        if best is None:
            return (folded[0] if folded else ""), None
        return best[2], best[3]

    def help_text(self, prefix: str = DEFAULT_PREFIX) -> str:
        """Plain-text command list for an m.notice body: one line per command."""
        lines = [_("Commands:")]
        for spec in self.commands():
            lines.append(f"{spec.usage(prefix)}{_help_suffix(spec, prefix)}")
        return "\n".join(lines)

    def help_html(self, prefix: str = DEFAULT_PREFIX) -> str:
        """The same list as HTML for ``formatted_body``; every piece of text is escaped."""
        items = "".join(
            f"<li><code>{html.escape(spec.usage(prefix))}</code>"
            f"{html.escape(_help_suffix(spec, prefix))}</li>"
            for spec in self.commands()
        )
        heading = html.escape(_("Commands:"))
        return f"<p>{heading}</p><ul>{items}</ul>"


def _help_suffix(spec: CommandSpec[H], prefix: str) -> str:
    suffix = " — " + _(spec.help) if spec.help else ""
    if spec.aliases:
        aliases = ", ".join(prefix + a for a in spec.aliases)
        suffix += " " + _("(alias: {aliases})").format(aliases=aliases)
    return suffix


# --- parse results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class NotACommand:
    """The body is ordinary text (for a customer), not addressed to the bot."""


@dataclass(frozen=True)
class UnknownCommand:
    """Prefix and a name were given, but no such command exists."""

    name: str
    suggestion: str | None
    prefix: str = DEFAULT_PREFIX

    @property
    def message(self) -> str:
        command = self.prefix + self.name
        if self.suggestion:
            return _("Unknown command {command} — did you mean {suggestion}?").format(
                command=command, suggestion=self.prefix + self.suggestion
            )
        return _("Unknown command {command}").format(command=command)


@dataclass(frozen=True)
class ArgumentError(Generic[H]):
    """The command is known but its arguments are not acceptable."""

    spec: CommandSpec[H]
    argument: str | None  # the argument's name, None for problems not tied to one argument
    reason: str  # e.g. "QTY must be a whole number ≥ 1"
    usage: str  # e.g. "!cart add SKU [QTY]"

    @property
    def message(self) -> str:
        """What to show the adviser: the reason and the usage line."""
        return _("{reason} — usage: {usage}").format(reason=self.reason, usage=self.usage)


@dataclass(frozen=True)
class ParsedCommand(Generic[H]):
    """A command ready for its handler, with arguments converted to their types."""

    spec: CommandSpec[H]
    args: Mapping[str, ArgValue] = field(default_factory=dict)

    def value(self, name: str, kind: type[T]) -> T:
        """``args[name]`` checked to be ``kind``, so handlers get typed values without casts."""
        found = self.args[name]
        if not isinstance(found, kind):
            raise TypeError(f"argument {name!r} is {found!r}, not {kind.__name__}")
        return found

    def optional_value(self, name: str, kind: type[T]) -> T | None:
        """Like ``value`` but None is allowed (an optional argument without default)."""
        return None if self.args[name] is None else self.value(name, kind)


ParseResult: TypeAlias = NotACommand | UnknownCommand | ArgumentError[H] | ParsedCommand[H]


# --- tokenising and parsing -------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    text: str  # the value, quotes removed
    end: int  # offset just past the raw token in the line
    quoted: bool


def _skip_space(line: str, pos: int) -> int:
    # str.isspace covers Unicode spaces (NBSP from phone keyboards, ideographic space, ...).
    while pos < len(line) and line[pos].isspace():
        pos += 1
    return pos


def _word_end(line: str, pos: int) -> int:
    while pos < len(line) and not line[pos].isspace():
        pos += 1
    return pos


def _next_token(line: str, pos: int) -> _Token | None:
    """The token starting at or after ``pos``, or None at the end of the line.

    Quotes only count at the start of a token, so "O'Brien" or 12" stay plain words. There
    are no backslash escapes: use the other kind of quote to include one.
    """
    pos = _skip_space(line, pos)
    if pos >= len(line):
        return None
    closer = _QUOTES.get(line[pos])
    if closer is None:
        end = _word_end(line, pos)
        return _Token(line[pos:end], end, quoted=False)
    close = line.find(closer, pos + 1)
    if close == -1:
        raise QuoteError(
            _("the opening {quote} has no closing {closer}").format(quote=line[pos], closer=closer)
        )
    if close + 1 < len(line) and not line[close + 1].isspace():
        raise QuoteError(
            _("a closing quote {closer} must be followed by a space").format(closer=closer)
        )
    return _Token(line[pos + 1 : close], close + 1, quoted=True)


def tokenize(line: str) -> list[str]:
    """Split one line into words, honouring "double", 'single' and typographic quotes.

    Raises QuoteError (a ValueError) with adviser-readable text on an unclosed quote.
    """
    words: list[str] = []
    pos = 0
    while (token := _next_token(line, pos)) is not None:
        words.append(token.text)
        pos = token.end
    return words


def _rest_value(line_rest: str, more_lines: str) -> str:
    """Text for a RestArg: the rest of the first line plus any further lines."""
    first = line_rest.strip()
    if not more_lines.strip():
        # A single quoted phrase ("on its way") is unquoted like any other argument.
        try:
            token = _next_token(first, 0)
        except QuoteError:
            token = None  # apostrophes in free text are fine, keep it verbatim
        if token is not None and token.quoted and token.end == len(first):
            return token.text
        return first
    tail = more_lines.strip("\n").rstrip()
    return f"{first}\n{tail}" if first else tail


def _bind(
    spec: CommandSpec[H], line: str, pos: int, more_lines: str, prefix: str
) -> ArgumentError[H] | ParsedCommand[H]:
    """Fill the spec's arguments from ``line[pos:]`` (and ``more_lines`` for a RestArg)."""

    def error(arg: ArgSpec | None, reason: str) -> ArgumentError[H]:
        return ArgumentError(spec, arg.name if arg else None, reason, spec.usage(prefix))

    values: dict[str, ArgValue] = {}
    for arg in spec.args:
        value: ArgValue
        try:
            if isinstance(arg, RestArg):
                value = _rest_value(line[pos:], more_lines) or None
                pos = len(line)
            else:
                token = _next_token(line, pos)
                value = None if token is None else arg.convert(token.text)
                pos = pos if token is None else token.end
        except QuoteError as exc:
            return error(arg, f"{arg.label}: {exc}")
        except BadValue as exc:
            return error(arg, str(exc))
        if value is None:
            if not arg.optional:
                return error(arg, _("{arg} is missing").format(arg=arg.label))
            value = arg.default
        values[arg.name] = value
    try:
        extra = _next_token(line, pos)
    except QuoteError as exc:
        return error(None, str(exc))
    if extra is not None:
        return error(
            None, _("too many arguments: “{word}” was not expected").format(word=extra.text)
        )
    return ParsedCommand(spec, values)


def parse(body: str, prefix: str, registry: CommandRegistry[H]) -> ParseResult[H]:
    """Classify a message body: not a command, unknown command, bad arguments, or parsed.

    Only the first line names the command and its arguments; further lines are ignored unless
    the command ends with a RestArg, which takes them (e.g. a multi-line note to the customer).
    """
    if not prefix or any(ch.isspace() for ch in prefix):
        raise ValueError(f"command prefix must be non-empty without spaces: {prefix!r}")
    # NFC so an umlaut typed as u + combining diaeresis equals the precomposed one.
    text = unicodedata.normalize("NFC", body).replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text.startswith(prefix):
        return NotACommand()
    line, _sep, more_lines = text[len(prefix) :].partition("\n")
    # "!", "! hi", "!!!" or "!?" are things people write to customers, not commands.
    if not line or not line[0].isalnum():
        return NotACommand()
    # Command words never contain quotes, so plain whitespace splitting finds them; a quote
    # error in the arguments must not stop us from knowing which command was meant.
    words: list[str] = []
    ends: list[int] = []
    pos = 0
    while (pos := _skip_space(line, pos)) < len(line):
        ends.append(_word_end(line, pos))
        words.append(line[pos : ends[-1]])
        pos = ends[-1]
    found = registry.match(words)
    if found is None:
        name, suggestion = registry.suggest(words)
        return UnknownCommand(name, suggestion, prefix)
    spec, used = found
    return _bind(spec, line, ends[used - 1], more_lines, prefix)
