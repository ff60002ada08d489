"""Config of the admin dashboard (`dashboard`) and of monitoring (`metrics`)."""

from __future__ import annotations

import re
from ipaddress import ip_network

from pydantic import Field, IPvAnyNetwork, field_validator

from hub.config.section import Section


class DashboardAdmin(Section):
    username: str = Field(pattern=r"^[A-Za-z0-9_.@\-]{1,64}$")
    # An argon2 hash made by `hub dashboard hash-password` (never the password itself).
    password_hash: str

    @field_validator("password_hash")
    @classmethod
    def _argon2(cls, v: str) -> str:
        if not re.match(r"^\$argon2(id|i|d)\$", v):
            raise ValueError("must be an argon2 hash: run `hub dashboard hash-password`")
        return v


class DashboardConfig(Section):
    # The shop's KPIs at /dashboard for the admins below; off when the list is empty.
    admins: list[DashboardAdmin] = Field(default_factory=list)
    # Minutes a login lasts without activity.
    session_minutes: int = Field(12 * 60, ge=5, le=60 * 24 * 30)
    # Cookies only over HTTPS (turn off only for a hub reached over plain http on loopback).
    secure_cookies: bool = True
    # Failed logins per address and per username within 15 minutes before logins are refused.
    max_failed_logins: int = Field(10, ge=1, le=1000)


class MetricsConfig(Section):
    # /metrics (Prometheus) answers only these addresses or networks (default: loopback).
    allowed: list[IPvAnyNetwork] = Field(
        default_factory=lambda: [ip_network("127.0.0.0/8"), ip_network("::1/128")]
    )
