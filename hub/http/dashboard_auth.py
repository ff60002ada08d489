"""Who may see the dashboard: password checks (argon2), logins held in memory, CSRF tokens
and the limit on failed logins. No aiohttp here (hub.http.dashboard does the HTTP); every
time is a `now` from time.monotonic() handed in, so the tests can move the clock.

- Passwords: argon2 hashes from the config (`hub dashboard hash-password` makes them). An
  unknown username is verified against a hash made with the same parameters, so a login
  costs the same work whether the name exists or not and the answer time tells nothing.
  Verifying takes ~50 ms of CPU and 64 MiB (argon2-cffi's defaults): it runs in a thread,
  at most two at a time.
- Sessions: a random id (256 bits) in a cookie, the login held server-side in this process's
  memory. One hub process serves the dashboard, so that is enough; a restart logs everyone
  out. A session ends after `session_minutes` without a request.
- CSRF: every POST form carries a token. Logged in: the session's own token. The login form
  (no session yet): double submit, the same random value in a cookie and in the form; a page
  of another site can neither read the cookie nor set it (SameSite=Strict, HttpOnly).
- Failed logins: `max_failed_logins` per client address and per username within 15 minutes,
  then logins are refused (429) until the oldest failure is older than that. Memory is
  bounded: a flood of made-up usernames drops the oldest counters, never grows without end.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

FAILURE_WINDOW = 15 * 60.0  # seconds: the window of max_failed_logins
MAX_SESSIONS = 1000  # logins held at once; the least recently used goes first beyond
MAX_COUNTERS = 10_000  # addresses and usernames with failures remembered at once
MAX_PASSWORD_CHARS = 1024  # longer is not a password anyone types; refused before hashing


def hash_password(password: str) -> str:
    """The argon2id hash to put in `dashboard.admins[].password_hash`."""
    return argon2.PasswordHasher().hash(password)


def same_token(given: str, expected: str) -> bool:
    """Constant-time comparison of a token from a request with the expected one."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


def new_token() -> str:
    return secrets.token_urlsafe(32)


class Passwords:
    """Checks a username and password against the configured admins."""

    def __init__(self, admins: dict[str, str], *, concurrency: int = 2) -> None:
        self._hashes = dict(admins)
        self._hasher = argon2.PasswordHasher()
        self._dummy: str | None = None
        # Each verify holds the hash's memory cost (64 MiB by default): a burst of logins
        # must not take the hub's memory with it.
        self.slots = asyncio.Semaphore(concurrency)

    def _dummy_hash(self) -> str:
        """A hash of a random password with the parameters of a configured one: verifying
        an unknown user's password against it costs what a known user's costs."""
        if self._dummy is None:
            hasher = self._hasher
            for known in self._hashes.values():
                try:
                    hasher = argon2.PasswordHasher.from_parameters(argon2.extract_parameters(known))
                    break
                except InvalidHashError:
                    continue
            self._dummy = hasher.hash(secrets.token_urlsafe(16))
        return self._dummy

    def verify_now(self, username: str, password: str) -> bool:
        """Blocking: one argon2 verification whatever the username."""
        too_long = len(password) > MAX_PASSWORD_CHARS
        if too_long:
            password = password[:MAX_PASSWORD_CHARS]  # still verified: same time as any other
        dummy = self._dummy_hash()  # made on the first attempt, whoever it names
        known = self._hashes.get(username)
        try:
            ok: bool = self._hasher.verify(known or dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        return ok and known is not None and not too_long

    async def verify(self, username: str, password: str) -> bool:
        """One argon2 verification in a thread (the event loop keeps serving meanwhile)."""
        async with self.slots:
            return await asyncio.to_thread(self.verify_now, username, password)


@dataclass
class Session:
    id: str
    username: str
    csrf: str  # the token of every form this login posts
    last_seen: float


class Sessions:
    """Logins of this process, by session id; expired after `minutes` without a request."""

    def __init__(self, minutes: int, *, max_sessions: int = MAX_SESSIONS) -> None:
        self.lifetime = minutes * 60.0
        self.max_sessions = max_sessions
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_id)

    def create(self, username: str, now: float) -> Session:
        """A new login with a new id (never one the browser had before: no fixation)."""
        self._expire(now)
        session = Session(new_token(), username, new_token(), now)
        self._by_id[session.id] = session
        while len(self._by_id) > self.max_sessions:
            self._by_id.popitem(last=False)
        return session

    def get(self, session_id: str | None, now: float) -> Session | None:
        """The live session of this id, its inactivity clock restarted; None when there is
        none or it expired (then it is gone)."""
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if now - session.last_seen > self.lifetime:
            del self._by_id[session_id]
            return None
        session.last_seen = now
        self._by_id.move_to_end(session_id)
        return session

    def drop(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)

    def _expire(self, now: float) -> None:
        # Least recently used first: stop at the first one still alive.
        while self._by_id:
            oldest = next(iter(self._by_id.values()))
            if now - oldest.last_seen <= self.lifetime:
                break
            del self._by_id[oldest.id]


@dataclass
class _Failures:
    times: deque[float] = field(default_factory=deque)


class LoginLimiter:
    """Failed logins per client address and per username in a sliding window."""

    def __init__(
        self,
        max_failed: int,
        *,
        window: float = FAILURE_WINDOW,
        max_counters: int = MAX_COUNTERS,
    ) -> None:
        self.max_failed = max_failed
        self.window = window
        self.max_counters = max_counters
        self._counters: OrderedDict[str, _Failures] = OrderedDict()

    def retry_after(self, address: str, username: str, now: float) -> float | None:
        """Seconds until a login from this address for this username may be tried again;
        None when it may be tried now."""
        waits = [
            wait
            for key in self._keys(address, username)
            if (wait := self._wait(key, now)) is not None
        ]
        return max(waits) if waits else None

    def failed(self, address: str, username: str, now: float) -> None:
        for key in self._keys(address, username):
            counter = self._counters.pop(key, None) or _Failures()
            self._prune(counter, now)
            counter.times.append(now)
            self._counters[key] = counter  # most recent last
        while len(self._counters) > self.max_counters:
            self._counters.popitem(last=False)

    def succeeded(self, address: str, username: str, at: float) -> None:
        """Take back the failure counted `at` for an attempt that turned out right (attempts
        are counted before their password is checked, so parallel ones cannot all pass)."""
        for key in self._keys(address, username):
            counter = self._counters.get(key)
            if counter is not None and at in counter.times:
                counter.times.remove(at)

    @staticmethod
    def _keys(address: str, username: str) -> tuple[str, str]:
        # Usernames are case-folded and cut: "Anna" and "anna " are one target.
        return f"a:{address}", f"u:{username.strip().casefold()[:128]}"

    def _prune(self, counter: _Failures, now: float) -> None:
        while counter.times and now - counter.times[0] >= self.window:
            counter.times.popleft()

    def _wait(self, key: str, now: float) -> float | None:
        counter = self._counters.get(key)
        if counter is None:
            return None
        self._prune(counter, now)
        if len(counter.times) < self.max_failed:
            return None
        # Free again when enough of the oldest failures have left the window.
        return counter.times[-self.max_failed] + self.window - now
