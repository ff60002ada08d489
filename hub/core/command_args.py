"""The typed arguments of adviser commands: words, numbers, choices, URLs and the rest of
the line. Pure: each turns a token into a value or raises BadValue with the adviser's reason."""

from __future__ import annotations

import difflib
from dataclasses import KW_ONLY, dataclass
from typing import Generic, TypeAlias, TypeVar
from urllib.parse import urlsplit

from hub.i18n import _

T = TypeVar("T")


class BadValue(ValueError):
    """A token does not fit its argument; carries the human reason."""


# --- argument specs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Arg(Generic[T]):
    """Fields shared by every argument kind. ``name`` is the key in ``ParsedCommand.args``."""

    name: str
    _: KW_ONLY
    optional: bool = False
    default: T | None = None
    metavar: str | None = None  # shown in usage and errors; defaults to NAME

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"argument name must be an identifier: {self.name!r}")
        # A default on a required argument could never be used: almost certainly a mistake.
        if self.default is not None and not self.optional:
            raise ValueError(f"argument {self.name!r} has a default but is not optional")

    @property
    def label(self) -> str:
        return self.metavar or self.name.upper()

    def _token(self) -> str:
        return self.label

    def usage_token(self) -> str:
        """How this argument appears in a usage line: ``QTY``, ``[QTY]``, ``[TEXT...]``."""
        token = self._token()
        return f"[{token}]" if self.optional else token


@dataclass(frozen=True)
class WordArg(_Arg[str]):
    """One word (or one quoted phrase), e.g. a SKU."""

    def convert(self, token: str) -> str:
        if not token:
            raise BadValue(_("{arg} must not be empty").format(arg=self.label))
        return token


@dataclass(frozen=True, kw_only=True)
class IntArg(_Arg[int]):
    """A whole number with optional bounds, e.g. a quantity ≥ 1."""

    min_value: int | None = None
    max_value: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        low, high = self.min_value, self.max_value
        if low is not None and high is not None and low > high:
            raise ValueError(f"argument {self.name!r}: min_value > max_value")

    def _requirement(self) -> str:
        low, high, arg = self.min_value, self.max_value, self.label
        if low is not None and high is not None:
            text = _("{arg} must be a whole number between {low} and {high}")
        elif low is not None:
            text = _("{arg} must be a whole number ≥ {low}")
        elif high is not None:
            text = _("{arg} must be a whole number ≤ {high}")
        else:
            text = _("{arg} must be a whole number")
        return text.format(arg=arg, low=low, high=high)

    def convert(self, token: str) -> int:
        # Only sign + decimal digits: int() alone would also take "1_000" or " 3 ". Unicode
        # decimal digits (e.g. Arabic-Indic ٣) are accepted on purpose, int() maps them.
        digits = token[1:] if token[:1] in "+-" else token
        if not digits or not digits.isdecimal():
            raise BadValue(self._requirement())
        try:
            value = int(token)
        except ValueError:  # absurdly long numbers exceed int()'s digit limit
            raise BadValue(self._requirement()) from None
        too_low = self.min_value is not None and value < self.min_value
        too_high = self.max_value is not None and value > self.max_value
        if too_low or too_high:
            raise BadValue(self._requirement())
        return value


@dataclass(frozen=True, kw_only=True)
class ChoiceArg(_Arg[str]):
    """One of a fixed set of words, matched case-insensitively; yields the canonical spelling."""

    choices: tuple[str, ...]

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "choices", tuple(self.choices))  # a list would be unhashable
        folded = [c.casefold() for c in self.choices]
        if not folded or len(set(folded)) != len(folded):
            raise ValueError(f"argument {self.name!r}: choices must be non-empty and distinct")
        if any(not c or any(ch.isspace() for ch in c) for c in self.choices):
            raise ValueError(f"argument {self.name!r}: each choice must be a single word")

    def _token(self) -> str:
        return "|".join(self.choices)

    def convert(self, token: str) -> str:
        by_fold = {c.casefold(): c for c in self.choices}
        choice = by_fold.get(token.casefold())
        if choice is not None:
            return choice
        choices = ", ".join(self.choices)
        close = difflib.get_close_matches(token.casefold(), list(by_fold), n=1)
        if close:
            reason = _("{arg} must be one of {choices} (did you mean {suggestion}?)")
        else:
            reason = _("{arg} must be one of {choices}")
        suggestion = by_fold[close[0]] if close else ""
        raise BadValue(reason.format(arg=self.label, choices=choices, suggestion=suggestion))


@dataclass(frozen=True)
class UrlArg(_Arg[str]):
    """An absolute http(s) URL. Other schemes (javascript:, file:) would end up as links sent
    to customers, so they are refused here rather than trusted downstream."""

    def convert(self, token: str) -> str:
        reason = _("{arg} must be a web address starting with http:// or https://").format(
            arg=self.label
        )
        if any(ch.isspace() for ch in token):
            raise BadValue(reason)
        try:
            parts = urlsplit(token)
            parts.port  # noqa: B018 - raises ValueError for a malformed port
        except ValueError:
            raise BadValue(reason) from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise BadValue(reason)
        return token


@dataclass(frozen=True)
class RestArg(_Arg[str]):
    """Everything after the previous arguments, verbatim (quotes and apostrophes included), plus
    any further lines of the message. Must be the last argument."""

    def _token(self) -> str:
        return f"{self.label}..."


ArgSpec: TypeAlias = WordArg | IntArg | ChoiceArg | UrlArg | RestArg
