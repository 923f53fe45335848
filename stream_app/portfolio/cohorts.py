"""Cohort retention from the monthly sums (pure).

A customer's cohort is the month of its first ``started`` event. In each month's sums the
group ``c<cohort>`` holds ``su`` (sign-ups of that cohort in that month: the cohort's size
in its own month) and ``a1`` (the cohort's customers active at the month's end). The share
still active ``k`` months after signing up is ``a1`` of month ``cohort + k`` over the size;
the current month's cell is as of now (``partial``).

>>> monthly = {
...     600: {"c2020-01": {"su": 4, "a1": 4}},
...     601: {"c2020-01": {"a1": 3}},
...     602: {"c2020-01": {"a1": 2}, "c2020-03": {"su": 2, "a1": 2}},
... }
>>> rows = cohort_table(monthly, current_month=602)
>>> [(r.cohort, r.size, r.retention) for r in rows]
[('2020-01', 4, [0.75, 0.5]), ('2020-03', 2, [])]
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, Field

from stream_app.portfolio.contributions import COHORT_MONTHS, cohort_label


class CohortRow(BaseModel):
    """One sign-up month: its size and the share still active after 1..N months."""

    cohort: str
    size: int
    retention: list[float | None] = Field(default_factory=list, description="index 0 = after 1 month")
    active: list[int] = Field(default_factory=list)
    last_partial: bool = Field(False, description="the last cell is the current (unfinished) month")


def cohort_table(
    monthly: Mapping[int, Mapping[str, Mapping[str, int]]], current_month: int, months: int = COHORT_MONTHS
) -> list[CohortRow]:
    """Rows for the cohorts of the last ``months`` months up to ``current_month``.

    ``monthly``: month index -> group -> field -> sum (``kpis.split_groups`` of each month).
    """
    rows = []
    for s in range(current_month - months, current_month + 1):
        group = f"c{cohort_label(s)}"
        size = int(monthly.get(s, {}).get(group, {}).get("su", 0))
        if not size:
            continue
        active = [int(monthly.get(s + k, {}).get(group, {}).get("a1", 0)) for k in range(1, months + 1)
                  if s + k <= current_month]
        rows.append(CohortRow(
            cohort=cohort_label(s), size=size, active=active,
            retention=[round(a / size, 4) for a in active], last_partial=bool(active),
        ))
    return rows
