"""Calendar periods in event time: UTC months and quarters, numbered and labelled.

A month is numbered by months since 1970-01 and a quarter by quarters since 1970Q1, so
periods compare and step as integers; labels (``2026-03``, ``2026Q1``) sort the same way
as the numbers within a kind, which the Redis side relies on.

>>> p = period_of("month", 1_772_442_000_000)     # 2026-03-02T09:00Z
>>> p.label, p.next().label, p.prev().label, p.days
('2026-03', '2026-04', '2026-02', 31)
>>> q = period_of("quarter", 1_772_442_000_000)
>>> q.label, [month(m).label for m in q.month_indices], q.months
('2026Q1', ['2026-01', '2026-02', '2026-03'], 3)
>>> parse_label("2026Q1") == q, parse_label("2026-03") == p
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import lru_cache
from typing import Literal

from stream_app.core import DAY_MS

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

PeriodKind = Literal["month", "quarter"]
KINDS: tuple[PeriodKind, ...] = ("month", "quarter")


@lru_cache(maxsize=4096)
def month_start_day(m: int) -> int:
    """UTC day number (days since 1970-01-01) of the first day of month index ``m``."""
    # clamped to the calendar: the contract accepts any past ts as a late event (year 1 too)
    m = min(max(m, (1 - 1970) * 12), (9999 - 1970) * 12 + 11)
    return date(1970 + m // 12, m % 12 + 1, 1).toordinal() - _EPOCH_ORDINAL


def month_of_day(day: int) -> int:
    """Month index of a UTC day number.

    >>> month_of_day(0), month_of_day(31), month_of_day(-1)
    (0, 1, -1)
    """
    ordinal = min(max(day + _EPOCH_ORDINAL, 1), date.max.toordinal())  # any ts, even year 1
    d = date.fromordinal(ordinal)
    return (d.year - 1970) * 12 + d.month - 1


def month_of(ts_ms: int) -> int:
    """Month index of an epoch-ms event time."""
    return month_of_day(ts_ms // DAY_MS)


@dataclass(frozen=True, order=True)
class Period:
    """One calendar period: ``kind`` month or quarter, ``index`` counted from 1970."""

    kind: PeriodKind
    index: int

    @property
    def month_indices(self) -> range:
        """The month indices this period covers (one for a month, three for a quarter)."""
        if self.kind == "month":
            return range(self.index, self.index + 1)
        return range(3 * self.index, 3 * self.index + 3)

    @property
    def months(self) -> int:
        return len(self.month_indices)

    @property
    def start_day(self) -> int:
        return month_start_day(self.month_indices[0])

    @property
    def end_day(self) -> int:
        """First day after the period (exclusive)."""
        return month_start_day(self.month_indices[-1] + 1)

    @property
    def days(self) -> int:
        return self.end_day - self.start_day

    @property
    def start_ms(self) -> int:
        return self.start_day * DAY_MS

    @property
    def end_ms(self) -> int:
        return self.end_day * DAY_MS

    @property
    def label(self) -> str:
        if self.kind == "month":
            return f"{1970 + self.index // 12:04d}-{self.index % 12 + 1:02d}"
        return f"{1970 + self.index // 4:04d}Q{self.index % 4 + 1}"

    def next(self, n: int = 1) -> Period:
        return Period(self.kind, self.index + n)

    def prev(self, n: int = 1) -> Period:
        return Period(self.kind, self.index - n)

    def contains_month(self, m: int) -> bool:
        return m in self.month_indices

    def start(self) -> datetime:
        return datetime.fromtimestamp(self.start_ms / 1000, tz=timezone.utc)

    def __str__(self) -> str:
        return self.label


def month(index: int) -> Period:
    return Period("month", index)


def quarter_of_month(m: int) -> Period:
    """The quarter that contains month index ``m``."""
    return Period("quarter", m // 3)


def period_of(kind: PeriodKind, ts_ms: int) -> Period:
    """The period of ``kind`` that contains event time ``ts_ms``."""
    m = month_of(ts_ms)
    return month(m) if kind == "month" else quarter_of_month(m)


def parse_label(label: str) -> Period:
    """``2026-03`` -> the month, ``2026Q1`` -> the quarter.

    >>> parse_label("2026-13")
    Traceback (most recent call last):
    ...
    ValueError: not a period label (YYYY-MM or YYYYQn): '2026-13'
    """
    try:
        if "Q" in label:
            y, q = label.split("Q")
            if len(y) == 4 and 1 <= int(q) <= 4:
                return Period("quarter", (int(y) - 1970) * 4 + int(q) - 1)
        else:
            y, m = label.split("-")
            if len(y) == 4 and 1 <= int(m) <= 12:
                return Period("month", (int(y) - 1970) * 12 + int(m) - 1)
    except ValueError:
        pass
    raise ValueError(f"not a period label (YYYY-MM or YYYYQn): {label!r}")


def of_kind(kind: PeriodKind, month_index: int) -> Period:
    """The period of ``kind`` containing month index ``month_index``."""
    return month(month_index) if kind == "month" else quarter_of_month(month_index)
