"""Who may see the dashboard: password checks (argon2), logins kept in the database, CSRF
tokens and the limit on failed logins. No aiohttp here (hub.http.dashboard does the HTTP);
every time is a `now` handed in (time.monotonic() for the limiter, the hub's clock for the
sessions), so the tests can move the clock.

- Passwords: argon2 hashes from the config (`hub dashboard hash-password` makes them). An
  unknown username is verified against a hash made with the same parameters, so a login
  costs the same work whether the name exists or not and the answer time tells nothing.
  Verifying takes ~50 ms of CPU and 64 MiB (argon2-cffi's defaults): it runs in a thread,
  at most two at a time.
- Sessions: a random token (256 bits) in a cookie, the login kept server-side in the table
  dashboard_sessions (hub.db.dashboard), so any hub process behind the proxy knows a login
  another one made, and a logout on one ends it on all. The row's id is the token's
  SHA-256, never the token: a copy of the table (a backup) signs nobody in. A session ends
  after `session_minutes` without a request, give or take the minute its last use may not
  have been written (TOUCH_EVERY). They survive a restart.
- CSRF: every POST form carries a token. Logged in: the session's own token. The login form
  (no session yet): double submit, the same random value in a cookie and in the form; a page
  of another site can neither read the cookie nor set it (SameSite=Strict, HttpOnly).
- Failed logins: `max_failed_logins` per client address and per username within 15 minutes,
  then logins are refused (429) until the oldest failure is older than that. Memory is
  bounded: a flood of made-up usernames drops the oldest counters, never grows without end.
  Counted in each process's memory (LoginLimiter), not shared: with N hub processes behind
  the proxy, an address gets at most N times the limit, still a small fixed number of
  guesses against argon2 hashes per 15 minutes, without a database write per attempt.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from hub.db import dashboard as stored

if TYPE_CHECKING:
    from hub.db.database import Database

FAILURE_WINDOW = 15 * 60.0  # seconds: the window of max_failed_logins
MAX_SESSIONS = 1000  # logins kept at once; the least recently used goes first beyond
MAX_SESSIONS_PER_USER = 20  # an admin's logins (browsers, devices) kept at once, the same way
TOUCH_EVERY = timedelta(minutes=1)  # a session's last use is written at most this often
TOKEN_CHARS = 43  # new_token(): 32 random bytes, URL-safe base64
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


def session_key(token: str) -> str:
    """What the database keeps of a session's token: its SHA-256 (hex). The token has 256
    random bits: no salt or slow hash is needed for nobody to find it from this."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class Session:
    id: str  # the token in the cookie (the database has its session_key only)
    username: str
    csrf: str  # the token of every form this login posts
    last_seen: datetime  # the last use written (at most TOUCH_EVERY behind the last request)


class Sessions:
    """The dashboard's logins in the database (hub.db.dashboard), whichever hub process made
    them; expired after `minutes` without a request."""

    def __init__(
        self,
        db: Database,
        minutes: int,
        *,
        max_sessions: int = MAX_SESSIONS,
        max_per_user: int = MAX_SESSIONS_PER_USER,
    ) -> None:
        self.db = db
        self.lifetime = timedelta(minutes=minutes)
        self.max_sessions = max_sessions
        self.max_per_user = max_per_user

    async def create(self, username: str, now: datetime) -> Session:
        """A new login with a new token (never one the browser had before: no fixation).
        The expired logins go meanwhile, and the least recently used beyond the caps."""
        session = Session(new_token(), username, new_token(), now)
        await self.db.write(
            stored.create_session,
            session_key(session.id),
            username,
            session.csrf,
            now,
            cutoff=now - self.lifetime,
            max_per_user=self.max_per_user,
            max_total=self.max_sessions,
        )
        return session

    async def get(self, token: str | None, now: datetime) -> Session | None:
        """The live session of this token, its inactivity clock restarted; None when there
        is none or it expired (then it is gone)."""
        if not token or len(token) != TOKEN_CHARS:
            return None  # not one of ours: no need to ask the database
        key = session_key(token)
        found = await self.db.read(stored.session, key)
        if found is None:
            return None
        username, csrf, last_seen = found
        if now - last_seen > self.lifetime:
            await self.db.write(stored.drop_session, key, cutoff=now - self.lifetime)
            return None
        if now - last_seen >= TOUCH_EVERY:
            # Not on every request: a page view would be a database write (hub.db.dashboard).
            await self.db.write(stored.touch_session, key, now)
            last_seen = now
        return Session(token, username, csrf, last_seen)

    async def drop(self, token: str) -> None:
        await self.db.write(stored.drop_session, session_key(token))

    async def purge(self, now: datetime) -> int:
        """Delete the expired logins (a login does it too); how many."""
        return await self.db.write(stored.purge_sessions, now - self.lifetime)

    async def count(self) -> int:
        return await self.db.read(stored.count_sessions)


@dataclass
class _Failures:
    times: deque[float] = field(default_factory=deque)


class LoginLimiter:
    """Failed logins per client address and per username in a sliding window, in this
    process's memory. Several hub processes each count their own: an attacker spreading
    guesses over them gets at most the number of processes times `max_failed` per window,
    still a handful of argon2 verifications, and a failed login costs no database write."""

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
