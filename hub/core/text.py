"""Text as it may be stored and sent on: valid Unicode, no NUL (pure)."""

from __future__ import annotations

import re

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(text: str) -> str:
    """Replace lone surrogates (invalid in UTF-8) with U+FFFD and drop NUL characters,
    which PostgreSQL refuses; everything else — emoji, RTL, combining marks — stays."""
    return _LONE_SURROGATE.sub("\ufffd", text).replace("\x00", "")
