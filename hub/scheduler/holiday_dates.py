"""A country's (or region's) public holidays as plain dates and names, computed by the
`holidays` package in a child process.

Importing a country from `holidays` imports all ~280 of them: ≈12 MiB a process never gives
back, for a few dozen dates a year. The hub asks a child for the dates of the years around
now (`YEARS_BACK` before, `YEARS_AHEAD` after: a hub is restarted long before they run
out) and keeps a dict; the child exits and returns the memory. The same child checks the
country and region, so `hub check-config` and the hub's start refuse an unknown one alike.

Exit codes: 0 with {"YYYY-MM-DD": "name"} on stdout; 2 with the problem (unknown country or
region) on stderr; anything else is a failure.
"""

from __future__ import annotations

import json
import sys
from datetime import date

from hub.config.hours import PublicHolidays
from hub.core.child import run_child
from hub.errors import StartupError

YEARS_BACK, YEARS_AHEAD = 1, 5
REFUSED = 2
CHILD_TIMEOUT = 60


class UnknownHolidays(StartupError):
    """hours.holidays names a country or region the `holidays` package does not know."""


def holiday_dates(country: str, region: str, locale: str, years: range) -> dict[date, str]:
    """The public holidays of the years, named in the locale's language where the package
    has it (else the country's own). ValueError names an unknown country or region."""
    import holidays

    supported = holidays.list_supported_countries()
    if country not in supported:
        raise ValueError(f"country {country!r} is not known to the holidays package")
    if region and region not in supported[country]:
        known = ", ".join(supported[country]) or "none"
        raise ValueError(f"region {region!r} is not a region of {country} ({known})")
    languages = holidays.country_holidays(country).supported_languages
    language = locale.split("_")[0]
    pick = next(
        (
            code
            for code in (locale, language, *languages)
            if code in languages and code.split("_")[0] == language
        ),
        None,
    )
    calendar = holidays.country_holidays(country, subdiv=region or None, years=years, language=pick)
    return {day: str(name) for day, name in sorted(calendar.items())}


async def holiday_dates_in_child(
    country: str, region: str, locale: str, years: range
) -> dict[date, str]:
    """`holiday_dates` in a child process; StartupError for an unknown country or region
    (naming the config key) or a failed child."""
    request: dict[str, str | int] = {"country": country, "region": region, "locale": locale}
    request |= {"first": years.start, "last": years.stop - 1}
    child = await run_child(__name__, json.dumps(request).encode(), CHILD_TIMEOUT)
    if child.returncode == REFUSED:
        raise UnknownHolidays(f"hours.holidays: {child.last_line}")
    if child.returncode != 0:
        raise StartupError(
            f"public holidays could not be computed (exit {child.returncode}): "
            f"{child.last_line or 'no output'}"
        )
    return {date.fromisoformat(day): name for day, name in json.loads(child.out).items()}


def years_around(year: int) -> range:
    return range(year - YEARS_BACK, year + YEARS_AHEAD + 1)


async def public_holidays(config: PublicHolidays, locale: str, year: int) -> dict[date, str] | None:
    """The configured public holidays around `year`; None when none are configured."""
    if not config.country:
        return None
    return await holiday_dates_in_child(config.country, config.region, locale, years_around(year))


def main() -> int:
    request = json.loads(sys.stdin.read())
    try:
        dates = holiday_dates(
            request["country"],
            request["region"],
            request["locale"],
            range(request["first"], request["last"] + 1),
        )
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return REFUSED
    json.dump({day.isoformat(): name for day, name in dates.items()}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
