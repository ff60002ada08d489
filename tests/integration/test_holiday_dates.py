"""The public holidays computed in a child process (hub.scheduler.holiday_dates): the dates
the hub keeps, and the refusal of a country or region the `holidays` package does not know."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date

import pytest

from hub.config.hours import PublicHolidays
from hub.scheduler.holiday_dates import (
    UnknownHolidays,
    holiday_dates,
    holiday_dates_in_child,
    public_holidays,
    years_around,
)


async def test_the_child_gives_the_regions_holidays_in_the_shops_language() -> None:
    dates = await holiday_dates_in_child("DE", "NW", "de_DE", range(2026, 2028))
    assert dates[date(2026, 12, 25)] == "Erster Weihnachtstag"
    assert date(2026, 6, 4) in dates  # Fronleichnam: NW has it ...
    assert date(2027, 10, 3) in dates and date(2028, 1, 1) not in dates
    assert dates == holiday_dates("DE", "NW", "de_DE", range(2026, 2028))
    berlin = await holiday_dates_in_child("DE", "BE", "en_US", range(2026, 2027))
    assert date(2026, 6, 4) not in berlin  # ... Berlin does not
    assert berlin[date(2026, 12, 25)] == "Christmas Day"


def test_the_hub_never_imports_the_package_itself() -> None:
    # The point of the child: the ≈12 MiB of all countries stay out of the hub's process.
    probe = "import json, sys, hub.app, hub.__main__; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert [m for m in json.loads(out.stdout) if m.split(".")[0] == "holidays"] == []


@pytest.mark.parametrize(
    ("country", "region", "message"),
    [
        ("XY", "", "hours.holidays: country 'XY' is not known to the holidays package"),
        ("DE", "XX", "hours.holidays: region 'XX' is not a region of DE (BB, BE,"),
    ],
)
async def test_an_unknown_country_or_region_is_refused_naming_the_key(
    country: str, region: str, message: str
) -> None:
    with pytest.raises(UnknownHolidays) as refused:
        await holiday_dates_in_child(country, region, "de_DE", range(2026, 2027))
    assert str(refused.value).startswith(message)


async def test_no_country_no_child() -> None:
    assert await public_holidays(PublicHolidays(), "de_DE", 2026) is None
    dates = await public_holidays(PublicHolidays(country="AT"), "de_DE", 2026)
    assert dates is not None
    assert min(dates).year == 2025 and max(dates).year == 2031
    assert years_around(2026) == range(2025, 2032)
