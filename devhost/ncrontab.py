"""NCRONTAB schedules as the Functions timer trigger reads them, in UTC.

Six fields ``{second} {minute} {hour} {day} {month} {day-of-week}`` or five (no seconds, fires at second 0).
Each field takes ``*``, numbers, ranges ``a-b``, steps ``*/n`` and ``a-b/n``, and lists ``a,b``; months and
days of week also take three-letter names; day of week is 0-6 with Sunday 0 (7 is accepted as Sunday).
As in NCrontab, a day must match both the day-of-month and the day-of-week fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["CrontabError", "Schedule", "parse_schedule"]

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
_SEARCH_DAYS = 366 * 5


class CrontabError(ValueError):
    """The expression is not a valid NCRONTAB schedule."""


def _value(token: str, low: int, names: list[str] | None, expression: str) -> int:
    upper = token.upper()
    if names and upper in names:
        return names.index(upper) + low
    if not token.isdigit():
        raise CrontabError(f"{expression!r}: {token!r} is not a number")
    return int(token)


def _field(text: str, low: int, high: int, expression: str, names: list[str] | None = None) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise CrontabError(f"{expression!r}: bad step in {part!r}")
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start, end = _value(first, low, names, expression), _value(last, low, names, expression)
        else:
            start = _value(body, low, names, expression)
            end = high if step else start
        if not (low <= start <= high and low <= end <= high and start <= end):
            raise CrontabError(f"{expression!r}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step or 1))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    """A parsed NCRONTAB expression; ``next_after`` gives occurrences in UTC."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment`` (an aware datetime), in UTC."""
        start = moment.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        day = start.replace(hour=0, minute=0, second=0)
        for _ in range(_SEARCH_DAYS):
            weekday = (day.weekday() + 1) % 7
            if day.month in self.months and day.day in self.days and weekday in self.weekdays:
                found = self._first_time_on(day, start)
                if found is not None:
                    return found
            day += timedelta(days=1)
        raise CrontabError(f"{self.expression!r} has no occurrence in the next {_SEARCH_DAYS} days")

    def _first_time_on(self, day: datetime, start: datetime) -> datetime | None:
        for hour in sorted(self.hours):
            for minute in sorted(self.minutes):
                for second in sorted(self.seconds):
                    candidate = day.replace(hour=hour, minute=minute, second=second)
                    if candidate >= start:
                        return candidate
        return None

    def shortest_interval_s(self, now: datetime) -> float:
        """Smallest gap between the next few occurrences (used for the ``useMonitor`` default)."""
        first = self.next_after(now)
        second = self.next_after(first)
        third = self.next_after(second)
        return min((second - first).total_seconds(), (third - second).total_seconds())


def parse_schedule(expression: str) -> Schedule:
    """Parse a five- or six-field NCRONTAB expression. Raises ``CrontabError`` naming the bad part."""
    fields = expression.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise CrontabError(f"{expression!r}: expected six fields (seconds first) or five, got {len(fields)}")
    weekdays = _field(fields[5], 0, 7, expression, _DAYS)
    return Schedule(
        expression=expression,
        seconds=_field(fields[0], 0, 59, expression),
        minutes=_field(fields[1], 0, 59, expression),
        hours=_field(fields[2], 0, 23, expression),
        days=_field(fields[3], 1, 31, expression),
        months=_field(fields[4], 1, 12, expression, _MONTHS),
        weekdays=frozenset(7 % 7 if d == 7 else d for d in weekdays),
    )
