"""Rate limits of the widget's anonymous API (hub.bridges.webchat.api). Pure: the clock is
passed in (monotonic seconds), nothing is read or written but this memory.

Every new visitor may open a conversation, and a conversation costs the shop a ghost, a room
and an invitation for every adviser; so sessions, messages and uploads are limited per client
address and per visitor, and new conversations for the whole shop (`channels.webchat.limits`,
per minute). A request over a limit is refused (429 with Retry-After) before anything is
stored, and counted.

`SlidingWindow` counts events per key in a window that slides with time: in no interval of
`window` seconds are more than `limit` events of one key allowed. It keeps counts per slot
(`window / slots` seconds) rather than every event's time, so a key costs a few numbers
whatever its limit; an event counts until its whole slot has left the window (a refusal may
last up to one slot longer than an exact log would make it, never shorter). Keys are kept in
the order they were last used: those whose slots have all expired are dropped as new events
come in, and at `max_keys` the least recently used key is evicted (its count forgotten, which
only ever lets that key through sooner), so a flood of distinct addresses cannot grow it
without bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network, ip_address
from typing import Protocol

WINDOW = 60.0  # seconds: the config's limits are per minute
SLOTS = 12  # per window: a slot of 5 s for a minute
MAX_KEYS = 20_000  # per limit
LOG_INTERVAL = 60.0  # at most one log line per limit and interval


class SlidingWindow:
    """At most `limit` events per key in any `window` seconds."""

    def __init__(
        self,
        limit: int,
        window: float = WINDOW,
        *,
        slots: int = SLOTS,
        max_keys: int = MAX_KEYS,
    ) -> None:
        if limit < 1 or window <= 0 or slots < 1 or max_keys < 1:
            raise ValueError("limit, window, slots and max_keys must be positive")
        self.limit = limit
        self.window = window
        self.slot = window / slots
        self.max_keys = max_keys
        self.evicted = 0  # active keys forgotten to stay within max_keys
        # key -> [slot number, count, slot number, count, ...], oldest slot first; the dict in
        # the order the keys were last counted (least recently first).
        self._keys: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def _expired(self, slot: int, now: float) -> bool:
        """True once every event of this slot is more than `window` seconds old."""
        return (slot + 1) * self.slot + self.window <= now

    def _live(self, key: str, now: float) -> list[int] | None:
        counts = self._keys.get(key)
        if counts is None:
            return None
        drop = 0
        while drop < len(counts) and self._expired(counts[drop], now):
            drop += 2
        if drop:
            del counts[:drop]
        return counts

    def retry_after(self, key: str, now: float) -> float:
        """0.0 when one more event of `key` is allowed now; otherwise the seconds until it
        will be (if nothing else is counted meanwhile)."""
        counts = self._live(key, now)
        if not counts:
            return 0.0
        total = sum(counts[1::2])
        if total < self.limit:
            return 0.0
        need = total - self.limit + 1  # events that must leave the window first
        for i in range(0, len(counts), 2):
            need -= counts[i + 1]
            if need <= 0:
                return max((counts[i] + 1) * self.slot + self.window - now, 0.0)
        raise AssertionError("unreachable: the counts add up to total")

    def take(self, key: str, now: float) -> None:
        """Count one event of `key` (whether or not it was allowed: see `retry_after`)."""
        counts = self._live(key, now)
        if counts is None:
            self._sweep(now)
            if len(self._keys) >= self.max_keys:
                del self._keys[next(iter(self._keys))]
                self.evicted += 1
            counts = []
        else:
            del self._keys[key]  # re-inserted below: the most recently used
        self._keys[key] = counts
        slot = math.floor(now / self.slot)
        if counts and counts[-2] == slot:
            counts[-1] += 1
        else:
            counts += [slot, 1]

    def hit(self, key: str, now: float) -> float:
        """Count one event of `key` if it is allowed now: 0.0; otherwise count nothing and
        return the seconds to wait."""
        wait = self.retry_after(key, now)
        if not wait:
            self.take(key, now)
        return wait

    def _sweep(self, now: float, most: int = 4) -> None:
        """Drop up to `most` of the least recently used keys that count nothing any more."""
        for _ in range(most):
            if not self._keys:
                return
            key = next(iter(self._keys))
            counts = self._keys[key]
            if counts and not self._expired(counts[-2], now):
                return  # the oldest key is live: every newer one is too
            del self._keys[key]


def take_all(checks: Sequence[tuple[SlidingWindow, str]], now: float) -> float:
    """One event counted under every (window, key) if all allow it (0.0); otherwise nothing
    counted and the seconds until all would."""
    wait = max((limit.retry_after(key, now) for limit, key in checks), default=0.0)
    if not wait:
        for limit, key in checks:
            limit.take(key, now)
    return wait


def address_key(address: str) -> str:
    """The key an address is counted under: an IPv6 address by its /64 (a single host is
    routinely given a whole /64, so counting each address apart would count nothing);
    anything else as it is."""
    try:
        ip = ip_address(address.strip("[]"))
    except ValueError:
        return address[:64]
    if isinstance(ip, IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class LogThrottle:
    """At most one log line per key (a limit's name) and `interval`: a flood of refusals is
    one line a minute, with the number held back since the previous line."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def due(self, key: str, now: float) -> int | None:
        """None: stay quiet (held back and counted); otherwise log now, and this many were
        held back since the last line."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)


class LimitsConfig(Protocol):
    """`channels.webchat.limits` (hub.config.channels.WebchatLimits), per minute."""

    @property
    def sessions_per_address(self) -> int: ...
    @property
    def messages_per_visitor(self) -> int: ...
    @property
    def messages_per_address(self) -> int: ...
    @property
    def uploads_per_visitor(self) -> int: ...
    @property
    def new_conversations(self) -> int: ...


@dataclass(frozen=True)
class Refused:
    """A request over a limit: which one, and the whole seconds to wait (Retry-After)."""

    limit: str
    retry_after: int


def _seconds(wait: float) -> int:
    return max(1, math.ceil(wait - 1e-9))


class WidgetLimits:
    """The widget API's limits, checked before anything is stored. Each check counts the
    request under every limit it falls under when all of them allow it, and otherwise counts
    a refusal of the limit that refused (`refused`, by limit name) and nothing else.

    - a new visitor's session: per client address (`sessions_per_address`);
    - a known visitor's session again (page loads, a name set): per visitor, at the same
      number (it writes too, and needs no new address to repeat);
    - a message (text or a tapped button): per visitor and per address;
    - an upload: `uploads_per_visitor` per visitor, and per address as a message;
    - a visitor's first message, which opens a conversation: `new_conversations` for the shop;
    - a read receipt over the websocket (a write too): per visitor, as many as messages.
    """

    def __init__(
        self,
        sessions_per_address: int = 10,
        messages_per_visitor: int = 30,
        messages_per_address: int = 120,
        uploads_per_visitor: int = 10,
        new_conversations: int = 30,
        *,
        window: float = WINDOW,
        max_keys: int = MAX_KEYS,
    ) -> None:
        def limit(n: int) -> SlidingWindow:
            return SlidingWindow(n, window, max_keys=max_keys)

        self.windows: dict[str, SlidingWindow] = {
            "sessions_per_address": limit(sessions_per_address),
            "sessions_per_visitor": limit(sessions_per_address),
            "messages_per_visitor": limit(messages_per_visitor),
            "messages_per_address": limit(messages_per_address),
            "uploads_per_visitor": limit(uploads_per_visitor),
            "new_conversations": limit(new_conversations),
            "reads_per_visitor": limit(messages_per_visitor),
        }
        self.refused: dict[str, int] = dict.fromkeys(self.windows, 0)
        self.log = LogThrottle()

    @classmethod
    def from_config(cls, config: LimitsConfig) -> WidgetLimits:
        return cls(
            config.sessions_per_address,
            config.messages_per_visitor,
            config.messages_per_address,
            config.uploads_per_visitor,
            config.new_conversations,
        )

    def _check(self, checks: list[tuple[str, str]], now: float) -> Refused | None:
        if not take_all([(self.windows[name], key) for name, key in checks], now):
            return None
        # The limit that keeps the request waiting longest is the one to name.
        name, wait = max(
            ((name, self.windows[name].retry_after(key, now)) for name, key in checks),
            key=lambda found: found[1],
        )
        self.refused[name] += 1
        return Refused(name, _seconds(wait))

    def new_session(self, address: str, now: float) -> Refused | None:
        return self._check([("sessions_per_address", address_key(address))], now)

    def known_session(self, visitor_id: str, now: float) -> Refused | None:
        return self._check([("sessions_per_visitor", visitor_id)], now)

    def message(self, address: str, visitor_id: str, now: float) -> Refused | None:
        return self._check(
            [
                ("messages_per_visitor", visitor_id),
                ("messages_per_address", address_key(address)),
            ],
            now,
        )

    def upload(self, address: str, visitor_id: str, now: float) -> Refused | None:
        return self._check(
            [
                ("uploads_per_visitor", visitor_id),
                ("messages_per_address", address_key(address)),
            ],
            now,
        )

    def new_conversation(self, now: float) -> Refused | None:
        return self._check([("new_conversations", "shop")], now)

    def read(self, visitor_id: str, now: float) -> Refused | None:
        return self._check([("reads_per_visitor", visitor_id)], now)
