"""Backtest: replay a history through the real pipeline code and judge its scores against what happened.

``stream-app backtest FILE`` reads contract JSON Lines (optionally gzip) with a ``topic``
field per line (``stream-app simulate`` writes them), and feeds them, in event-time order and
at full speed, through the same code the worker runs: ``Ingestor`` (decode, validate, event-time
ordering, apply to Redis) -> ``Scorer`` (per event: aggregates, scorecard, churn model, alert
rules, label snapshots) -> ``Learner`` (completes event-time days: resolves due labels, learns,
checkpoints the model each scored day is pinned to). Only the edges differ: records come from
the file instead of Kafka (keyed to the partitions ``stream-app replay`` would choose), the
learner runs inline (as in a single-process deployment), and outputs are collected in memory
instead of published. Redis is real, under a private key prefix that is deleted afterwards.

Judged against the history itself (no ground-truth file needed): a score is *positive* if the
customer cancelled within the label horizon (``LABEL_HORIZON_DAYS``, 30) after it. Evaluation
points are the last published score (``cs.scores``) of each customer on each event-time day;
points of customers already cancelled, and points whose horizon runs past the end of the
history (outcome unknown), are left out. Reported:

* ROC AUC and top-decile lift of the churn probability, and of the health score alone;
* the same AUC with the labels shuffled (a control: must be ~0.5);
* calibration of the served probability and of the model's raw probability: log loss,
  Brier score, a reliability table by decile, expected calibration error;
* ``churn_risk`` alert precision (cancelled within the horizon after the alert), recall
  (cancellations with an alert in the lookback before) and median lead time;
* alert volume per 1,000 customers per week (per kind), over the customers' active weeks;
* the AUC per week of event time;
* a comparison on weekly observation dates (``comparison``): the served probability against
  trivial baselines (health score alone, tenure alone) and, when supplied, an external score
  such as a batch reference model, pooled and per-date AUC over all dates and over the test
  period (the last third of the dates), with customer-clustered bootstrap 95 % intervals.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import math
import pickle
import signal
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka.partitioner import murmur2
from rich import box
from rich.table import Table

from schemas import Alert, DeadLetter, ScoreSnapshot, SubscriptionEvent
from stream_app.core import Record
from stream_app.model.evaluation import (
    DAY_MS,
    alert_metrics,
    brier,
    clustered_bootstrap,
    expected_calibration_error,
    log_loss,
    per_date_auc,
    reliability_table,
    roc_auc,
    threshold_table,
    top_decile_lift,
)
from stream_app.pipeline.clients import redis_client
from stream_app.pipeline.decoding import decode
from stream_app.pipeline.ingest import Ingestor
from stream_app.settings import Settings
from stream_app.state.store import StateStore
from stream_app.tools.embedded import EmbeddedRedis, redis_reachable
from stream_app.tools.replay import route

WEEK_MS = 7 * DAY_MS


# --- reading the history ------------------------------------------------------------------
def _open_lines(path: str | Path) -> Iterator[bytes]:
    p = Path(path)
    raw = gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb")  # noqa: SIM115
    with raw as fh:
        for line in io.BufferedReader(fh):  # type: ignore[arg-type]
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line


def _ts_ms(value: Any) -> int | None:
    """Event time of a raw ``ts`` for ordering only (validation is the ingestor's job)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if dt.tzinfo is None:
            return None
        return int(dt.timestamp() * 1000)
    return None


@dataclass
class History:
    """What the file says happened: its span, its customers, their cancellations."""

    path: str
    customers_limit: int | None = None
    lines: int = 0
    routable: int = 0
    unroutable: int = 0
    in_order: bool = True
    start_ms: int | None = None
    end_ms: int | None = None
    first_seen: dict[str, int] = field(default_factory=dict)
    #: customer -> [(event time, subscription status)], for cancellations and reactivations
    billing: dict[str, list[tuple[int, str]]] = field(default_factory=dict)

    @property
    def customers(self) -> int:
        return len(self.first_seen)

    def cancellations(self) -> dict[str, int]:
        """Customer -> event time of its first cancellation."""
        out: dict[str, int] = {}
        for cid, events in self.billing.items():
            cancels = [t for t, s in events if s == "cancelled"]
            if cancels:
                out[cid] = min(cancels)
        return out

    def is_cancelled_at(self, cid: str, ts_ms: int) -> bool:
        """Whether the customer's latest subscription status at ``ts_ms`` is ``cancelled``."""
        last = None
        for t, s in self.billing.get(cid, ()):
            if t <= ts_ms:
                last = s
        return last == "cancelled"

    def cancelled_within(self, cid: str, ts_ms: int, horizon_ms: int) -> bool:
        return any(s == "cancelled" and ts_ms < t <= ts_ms + horizon_ms for t, s in self.billing.get(cid, ()))

    def tenure_start(self, cid: str) -> int | None:
        """The customer's first ``started`` subscription event, else its first event of any kind.

        Derived from ``billing`` (which the scan already fills) rather than a new field, so
        runs saved before it existed are judged the same way.
        """
        started = [t for t, s in self.billing.get(cid, ()) if s == "started"]
        return min(started) if started else self.first_seen.get(cid)

    def active_weeks(self) -> float:
        """Sum over customers of the weeks from first event to cancellation (or the end)."""
        if self.end_ms is None:
            return 0.0
        cancels = self.cancellations()
        total = 0
        for cid, first in self.first_seen.items():
            total += max(0, min(cancels.get(cid, self.end_ms), self.end_ms) - first)
        return total / WEEK_MS


def scan_history(path: str | Path, settings: Settings, customers_limit: int | None = None) -> History:
    """First pass: span, customers (the first ``customers_limit`` to appear), cancellations,
    and whether the lines are already in event-time order."""
    h = History(path=str(path), customers_limit=customers_limit)
    last = -(2**62)
    for line in _open_lines(path):
        h.lines += 1
        routed = route(line, settings)
        if isinstance(routed, str):
            h.unroutable += 1
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            obj = {}
        cid = obj.get("customer_id") if isinstance(obj, dict) else None
        if not isinstance(cid, str):
            h.routable += 1
            continue
        if cid not in h.first_seen:
            if customers_limit is not None and len(h.first_seen) >= customers_limit:
                continue
            h.first_seen[cid] = 2**62
        h.routable += 1
        ts = _ts_ms(obj.get("ts"))
        if ts is None:
            continue
        if ts < last:
            h.in_order = False
        last = max(last, ts)
        h.first_seen[cid] = min(h.first_seen[cid], ts)
        h.start_ms = ts if h.start_ms is None else min(h.start_ms, ts)
        h.end_ms = ts if h.end_ms is None else max(h.end_ms, ts)
        topic = routed[0]
        if settings.input_topics.get(topic) == "subscriptions":
            event = decode(line, "subscriptions", settings.max_message_bytes)
            if isinstance(event, SubscriptionEvent):
                h.billing.setdefault(cid, []).append((event.ts_ms, event.status))
    for events in h.billing.values():
        events.sort()
    h.first_seen = {c: t for c, t in h.first_seen.items() if t < 2**62}
    return h


def _partition(key: bytes | None, partitions: int) -> int:
    """The partition ``stream-app replay`` (aiokafka's default partitioner) would choose."""
    if key is None:
        return 0
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def ordered_records(path: str | Path, history: History, settings: Settings) -> Iterator[tuple[int, Record]]:
    """(event time, record) in event-time order, with per-partition offsets. Lines already in
    order stream; otherwise they are sorted in memory (stable; an unreadable ``ts`` keeps its
    place after the line before it)."""
    def lines() -> Iterator[tuple[int, tuple[str, bytes | None, bytes]]]:
        last = history.start_ms or 0
        for line in _open_lines(path):
            routed = route(line, settings)
            if isinstance(routed, str):
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                obj = {}
            cid = obj.get("customer_id") if isinstance(obj, dict) else None
            if history.customers_limit is not None and isinstance(cid, str) and cid not in history.first_seen:
                continue
            ts = _ts_ms(obj.get("ts")) if isinstance(obj, dict) else None
            last = ts if ts is not None else last
            yield last, routed

    source: Iterator[tuple[int, tuple[str, bytes | None, bytes]]] = lines()
    if not history.in_order:
        source = iter(sorted(lines(), key=lambda t: t[0]))
    offsets: dict[tuple[str, int], int] = {}
    for ts, (topic, key, value) in source:
        p = _partition(key, settings.topic_partitions)
        off = offsets.get((topic, p), -1) + 1
        offsets[(topic, p)] = off
        # the log ends at this record: every partition is caught up, so the event-time
        # watermark is the newest event time fed (exact, since the feed is in order)
        yield ts, Record(topic, p, off, value, off + 1)


# --- running the pipeline -------------------------------------------------------------------
class CollectingOutputs:
    """The pipeline's outputs, kept in memory (compactly) instead of published."""

    def __init__(self) -> None:
        #: (customer, event time ms, health score, served probability, raw probability)
        self.score_log: list[tuple[str, int, float, float, float]] = []
        self.alert_log: list[dict[str, Any]] = []
        self.dead = 0
        self.examples_learnt = 0

    async def dead_letters(self, letters: list[DeadLetter]) -> None:
        self.dead += len(letters)

    async def alerts(self, alerts: list[Alert]) -> None:
        for a in alerts:
            self.alert_log.append({"customer_id": a.customer_id, "kind": a.kind, "ts": int(a.ts.timestamp() * 1000),
                                "churn_probability": a.churn_probability, "severity": a.severity})

    async def scores(self, scores: list[ScoreSnapshot]) -> None:
        for s in scores:
            raw = s.churn_probability_raw if s.churn_probability_raw is not None else s.churn_probability
            self.score_log.append((s.customer_id, int(s.ts.timestamp() * 1000), s.health_score, s.churn_probability, raw))

    async def examples(self, examples: list[dict[str, Any]]) -> None:
        self.examples_learnt += len(examples)  # the learner publishes what it learnt


@dataclass
class RunResult:
    """Everything a report is computed from (savable, to judge a run again without re-running it)."""

    history: History
    outputs: CollectingOutputs
    model_summary: dict[str, Any]
    events: int
    seconds: float
    settings: Settings

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))

    @staticmethod
    def load(path: str | Path) -> "RunResult":
        run = pickle.loads(Path(path).read_bytes())  # noqa: S301 - a file this command wrote
        if not isinstance(run, RunResult):
            raise TypeError(f"{path}: not a saved backtest run")
        return run


async def run_pipeline(path: str | Path, settings: Settings, redis: Any, history: History,
                       on_progress: Callable[[int], None] | None = None) -> RunResult:
    """Feed the history through Ingestor -> Scorer -> Learner on ``redis`` under ``settings.key_prefix``."""
    outputs = CollectingOutputs()
    clock = [0.0]
    # the wall clock of a live run is the newest event time (it only relaxes the future-ts
    # rule); the learner runs inline, completing event-time days as the watermark passes them
    ingestor = Ingestor(StateStore(redis, settings), settings, outputs, clock=lambda: clock[0], inline_learner=True)
    batch: list[Record] = []
    fed = 0
    started = time.monotonic()
    for ts, record in ordered_records(path, history, settings):
        batch.append(record)
        clock[0] = max(clock[0], ts / 1000)
        if len(batch) >= settings.batch_max:
            await ingestor.handle(batch)
            fed += len(batch)
            batch = []
            if on_progress:
                on_progress(fed)
    if batch:
        await ingestor.handle(batch)
        fed += len(batch)
    # the end of the log: release what still waits for the learner's checkpoints
    while ingestor.held() and await ingestor.pump():
        pass
    if on_progress:
        on_progress(fed)
    learner = ingestor.learner
    model = learner.model if learner is not None and learner.model is not None else ingestor.model.model
    return RunResult(history, outputs, model.summary(), fed, time.monotonic() - started, settings)


async def _delete_prefix(redis: Any, prefix: str) -> int:
    deleted = 0
    batch: list[Any] = []
    async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += await redis.unlink(*batch)
            batch = []
    if batch:
        deleted += await redis.unlink(*batch)
    return deleted


def backtest_settings(base: Settings, calibration: bool | None = None) -> Settings:
    """The run's settings: a private key prefix, optional calibration override."""
    update: dict[str, Any] = {"key_prefix": f"{base.key_prefix}backtest:{uuid.uuid4().hex[:10]}:"}
    if calibration is not None:
        update["model_calibration"] = calibration
    return base.model_copy(update=update)


async def run_backtest(path: str | Path, settings: Settings, redis: Any, *, customers_limit: int | None = None,
                       on_progress: Callable[[int], None] | None = None,
                       on_scanned: Callable[[History], None] | None = None) -> RunResult:
    """Scan, run and clean up (the private key prefix is deleted, also on failure)."""
    history = scan_history(path, settings, customers_limit)
    if on_scanned:
        on_scanned(history)
    try:
        return await run_pipeline(path, settings, redis, history, on_progress)
    finally:
        await _delete_prefix(redis, settings.key_prefix)


# --- judging the scores -----------------------------------------------------------------------
@dataclass
class Points:
    """Evaluation points: one per customer per event-time day with a known outcome."""

    customer: list[str]
    ts: np.ndarray
    health: np.ndarray
    served: np.ndarray
    raw: np.ndarray
    label: np.ndarray


def evaluation_points(scores: list[tuple[str, int, float, float, float]], history: History,
                      horizon_days: int) -> Points:
    """The last score per customer per day; leaves out cancelled customers and unknown outcomes."""
    last: dict[tuple[str, int], tuple[str, int, float, float, float]] = {}
    for s in scores:
        key = (s[0], s[1] // DAY_MS)
        if key not in last or s[1] >= last[key][1]:
            last[key] = s
    horizon = horizon_days * DAY_MS
    end = history.end_ms if history.end_ms is not None else 0
    rows = [s for s in last.values()
            if s[1] + horizon <= end and not history.is_cancelled_at(s[0], s[1])]
    rows.sort(key=lambda s: (s[1], s[0]))
    return Points(
        customer=[r[0] for r in rows],
        ts=np.array([r[1] for r in rows], dtype=np.int64),
        health=np.array([r[2] for r in rows], dtype=float),
        served=np.array([r[3] for r in rows], dtype=float),
        raw=np.array([r[4] for r in rows], dtype=float),
        label=np.array([history.cancelled_within(r[0], r[1], horizon) for r in rows], dtype=bool),
    )


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), nd)


def _calibration(p: np.ndarray, y: np.ndarray, thresholds: tuple[float, ...]) -> dict[str, Any]:
    rows = reliability_table(p, y)
    return {"log_loss": _r(log_loss(p, y)), "brier": _r(brier(p, y), 5), "mean_p": _r(float(p.mean()) if len(p) else None),
            "ece": _r(expected_calibration_error(rows), 5), "reliability": rows,
            "thresholds": threshold_table(p, y, thresholds)}


def _weekly_auc(pts: Points) -> list[dict[str, Any]]:
    if not len(pts.ts):
        return []
    out = []
    weeks = (pts.ts - pts.ts.min()) // WEEK_MS
    start = int(pts.ts.min())
    for w in np.unique(weeks):
        m = weeks == w
        y = pts.label[m]
        out.append({
            "week_start": datetime.fromtimestamp((start + int(w) * WEEK_MS) / 1000, tz=timezone.utc).date().isoformat(),
            "points": int(m.sum()), "positives": int(y.sum()),
            "churn_probability_auc": _r(roc_auc(pts.served[m], y)),
            "health_auc": _r(roc_auc(-pts.health[m], y)),
        })
    return out


# --- comparing with baselines on weekly observation dates -------------------------------------
#: the scores of the comparison, as rendered (higher = riskier for every one)
SCORE_NAMES: dict[str, str] = {"served": "served churn probability", "health": "health score alone",
                               "tenure": "tenure alone"}


@dataclass(frozen=True)
class Observation:
    """One customer on one observation date: is it cancelled within the horizon after it?"""

    customer: str
    date_ms: int
    label: bool
    tenure_days: float


def observation_dates(history: History, horizon_days: int) -> list[int]:
    """Weekly dates (UTC midnights) from a week after the history's first day up to the last
    date whose horizon ends inside the history (later outcomes are unknown)."""
    if history.start_ms is None or history.end_ms is None:
        return []
    first = history.start_ms // DAY_MS * DAY_MS + WEEK_MS
    last = history.end_ms - horizon_days * DAY_MS
    return list(range(first, last + 1, WEEK_MS)) if last >= first else []


def first_test_index(dates: list[int]) -> int:
    """Index of the first test date: the last third of the dates are the test period (at
    least one date on each side when there are two or more), the rest train a batch model.

    >>> [first_test_index(list(range(n))) for n in (0, 1, 2, 3, 12, 13)]
    [0, 1, 1, 2, 8, 9]
    """
    n = len(dates)
    return min(max(1, math.ceil(2 * n / 3)), n - 1) if n >= 2 else n


def first_scores(score_log: list[tuple[str, int, float, float, float]]) -> dict[str, int]:
    """Customer -> event time of its first published score."""
    out: dict[str, int] = {}
    for cid, ts, *_ in score_log:
        if ts < out.get(cid, 2**62):
            out[cid] = ts
    return out


def observation_rows(history: History, horizon_days: int,
                     scored_since: Mapping[str, int] | None = None) -> Iterator[Observation]:
    """The observation population, date by date: customers seen by the date and not cancelled
    at it (and, with ``scored_since``, with a published score at or before it). Shared by the
    comparison and the batch reference so that both judge exactly the same rows."""
    horizon = horizon_days * DAY_MS
    for t in observation_dates(history, horizon_days):
        for cid, first in history.first_seen.items():
            if first > t or history.is_cancelled_at(cid, t):
                continue
            if scored_since is not None and scored_since.get(cid, 2**62) > t:
                continue
            start = history.tenure_start(cid)
            tenure = max(0.0, (t - (first if start is None else start)) / DAY_MS)
            yield Observation(cid, t, history.cancelled_within(cid, t, horizon), tenure)


@dataclass
class ObservationTable:
    """The comparison's rows as arrays: each observation with its customer's latest score."""

    customer: np.ndarray
    date: np.ndarray
    label: np.ndarray
    tenure: np.ndarray
    health: np.ndarray
    served: np.ndarray
    test_from: int | None

    def score(self, name: str) -> np.ndarray:
        """A score by name, oriented so that higher = riskier."""
        return {"served": self.served, "health": -self.health, "tenure": -self.tenure}[name]


def observation_table(run: RunResult) -> ObservationTable:
    """Each observation with the customer's latest published score at or before the date."""
    by_customer: dict[str, list[tuple[int, float, float]]] = {}
    for cid, ts, health, served, _raw in run.outputs.score_log:
        by_customer.setdefault(cid, []).append((ts, health, served))
    series = {}
    for cid, rows in by_customer.items():
        rows.sort(key=lambda r: r[0])  # stable: of equal times, the last published wins
        series[cid] = (np.array([r[0] for r in rows], dtype=np.int64), rows)
    obs = list(observation_rows(run.history, run.settings.label_horizon_days, first_scores(run.outputs.score_log)))
    health, served = [], []
    for o in obs:
        ts, rows = series[o.customer]
        latest = rows[int(np.searchsorted(ts, o.date_ms, side="right")) - 1]
        health.append(latest[1])
        served.append(latest[2])
    dates = observation_dates(run.history, run.settings.label_horizon_days)
    k = first_test_index(dates)
    return ObservationTable(
        customer=np.array([o.customer for o in obs], dtype=object),
        date=np.array([o.date_ms for o in obs], dtype=np.int64),
        label=np.array([o.label for o in obs], dtype=bool),
        tenure=np.array([o.tenure_days for o in obs], dtype=float),
        health=np.array(health, dtype=float),
        served=np.array(served, dtype=float),
        test_from=dates[k] if k < len(dates) else None,
    )


def _with_interval(stat: Callable[[np.ndarray], float | None], clusters: np.ndarray, n_boot: int,
                   seed: int) -> dict[str, Any]:
    """A statistic on all rows, and its customer-clustered bootstrap 95 % interval."""
    value = stat(np.arange(len(clusters)))
    ci = clustered_bootstrap(stat, clusters, n_boot=n_boot, seed=seed) if value is not None else None
    return {"value": _r(value), "ci": None if ci is None else [_r(ci[0]), _r(ci[1])]}


def _ranking(score: np.ndarray, y: np.ndarray, dates: np.ndarray, customers: np.ndarray, n_boot: int,
             seed: int) -> dict[str, Any]:
    """Pooled and per-date AUC (with intervals) and top-decile lift of one score on some rows."""
    return {
        "auc": _with_interval(lambda i: roc_auc(score[i], y[i]), customers, n_boot, seed),
        "per_date_auc": _with_interval(lambda i: per_date_auc(score[i], y[i], dates[i]), customers, n_boot, seed),
        "top_decile_lift": _r(top_decile_lift(score, y), 2),
    }


def _rows_summary(tab: ObservationTable, mask: np.ndarray) -> dict[str, Any]:
    return {"n": int(mask.sum()), "positives": int(tab.label[mask].sum()), "dates": int(len(np.unique(tab.date[mask]))),
            "customers": int(len(np.unique(tab.customer[mask])))}


def comparison(run: RunResult, extra: Mapping[str, Mapping[tuple[str, int], float]] | None = None,
               n_boot: int = 200, seed: int = 0) -> dict[str, Any]:
    """The served probability against baselines on the same weekly observations.

    Per score (``SCORE_NAMES``): ROC AUC pooled over all dates and over the test dates,
    per-date AUC over both, top-decile lift on the test dates; every AUC with a customer-
    clustered bootstrap interval (``n_boot`` resamples; 0: none). Every score is judged on
    the same resamples (same ``seed``), so the intervals are comparable.

    ``extra``: name -> {(customer, date ms): score} from outside (a batch reference model
    predicting the test period). An extra score is judged on the test rows where it has a
    value, and the built-in scores are judged again on exactly those rows, like for like.
    """
    tab = observation_table(run)
    test = tab.date >= tab.test_from if tab.test_from is not None else np.zeros(len(tab.date), dtype=bool)
    out: dict[str, Any] = {
        "rule": "weekly dates from a week after the start to a horizon before the end; per date each customer "
                "seen, not cancelled and already scored, with its latest score; positive: cancelled within "
                f"{run.settings.label_horizon_days} days after the date; test: the last third of the dates",
        "all": _rows_summary(tab, np.ones(len(tab.date), dtype=bool)),
        "test": _rows_summary(tab, test),
        "first_date": _iso(int(tab.date.min())) if len(tab.date) else None,
        "test_from": _iso(tab.test_from),
        "n_boot": n_boot, "interval": 0.95, "seed": seed,
        "scores": {},
        "extra": {},
    }
    ct = tab.customer[test]
    for name, label in SCORE_NAMES.items():
        sc = tab.score(name)
        everything = _ranking(sc, tab.label, tab.date, tab.customer, n_boot, seed)
        on_test = _ranking(sc[test], tab.label[test], tab.date[test], ct, n_boot, seed)
        out["scores"][name] = {"label": label, "auc_test": on_test["auc"], "per_date_auc_test": on_test["per_date_auc"],
                               "auc_all": everything["auc"], "per_date_auc_all": everything["per_date_auc"],
                               "top_decile_lift_test": on_test["top_decile_lift"]}
    for ename, values in (extra or {}).items():
        got = np.array([values.get((c, int(d))) for c, d in zip(tab.customer, tab.date)], dtype=object)
        mask = test & np.array([v is not None for v in got], dtype=bool)
        ex_score = np.array([float(v) for v in got[mask]], dtype=float)
        y, d, c = tab.label[mask], tab.date[mask], tab.customer[mask]
        scores = {ename: ex_score, **{n: tab.score(n)[mask] for n in SCORE_NAMES}}
        judged: dict[str, Any] = {}
        for n, sc in scores.items():
            r = _ranking(sc, y, d, c, n_boot, seed)
            judged[n] = {"label": SCORE_NAMES.get(n, n), "auc_test": r["auc"], "per_date_auc_test": r["per_date_auc"],
                         "top_decile_lift_test": r["top_decile_lift"]}
        out["extra"][ename] = {**_rows_summary(tab, mask), "missing_test_rows": int(test.sum() - mask.sum()),
                               "scores": judged}
    return out


def report(run: RunResult, lookback_days: float | None = None, shuffle_seed: int = 0, n_boot: int = 200,
           extra: Mapping[str, Mapping[tuple[str, int], float]] | None = None) -> dict[str, Any]:
    """Every figure of the backtest, JSON-serialisable (``n_boot``, ``extra``: see ``comparison``)."""
    s = run.settings
    h = run.history
    horizon = s.label_horizon_days
    lookback = horizon if lookback_days is None else lookback_days
    pts = evaluation_points(run.outputs.score_log, h, horizon)
    y = pts.label
    shuffled = np.random.default_rng(shuffle_seed).permutation(y)
    cancels = h.cancellations()
    weeks = h.active_weeks()
    kinds = sorted({a["kind"] for a in run.outputs.alert_log})
    per_kind = {k: sum(1 for a in run.outputs.alert_log if a["kind"] == k) for k in kinds}
    volume = {k: _r(n / weeks * 1000, 2) if weeks else None for k, n in per_kind.items()}
    volume["all"] = _r(len(run.outputs.alert_log) / weeks * 1000, 2) if weeks else None
    calibrated_served = bool(s.model_calibration)
    thresholds = tuple(sorted({0.05, 0.1, 0.15, float(s.risk_alert_threshold), 0.5}))
    return {
        "input": {
            "file": h.path, "lines": h.lines, "events_fed": run.events, "unroutable": h.unroutable,
            "dead_lettered": run.outputs.dead, "customers": h.customers, "in_event_time_order": h.in_order,
            "start": _iso(h.start_ms), "end": _iso(h.end_ms),
            "days": _r((h.end_ms - h.start_ms) / DAY_MS, 1) if h.start_ms is not None and h.end_ms is not None else None,
            "cancellations": len(cancels),
        },
        "run": {"seconds": _r(run.seconds, 1), "events_per_s": _r(run.events / run.seconds, 0) if run.seconds else None,
                "served_probability": "calibrated" if calibrated_served else "raw",
                "label_horizon_days": horizon, "batch_max": s.batch_max,
                "scores_published": len(run.outputs.score_log), "examples_learnt": run.outputs.examples_learnt},
        "model": {k: run.model_summary.get(k) for k in ("serving", "labels_seen", "positives", "prequential", "calibration")},
        "points": {"n": int(len(y)), "positives": int(y.sum()), "base_rate": _r(float(y.mean()) if len(y) else None, 5),
                   "rule": f"last score per customer per day; positive: cancelled within {horizon} days after it; "
                           f"left out: already cancelled, or less than {horizon} days before the end"},
        "churn_probability": {"roc_auc": _r(roc_auc(pts.served, y)), "top_decile_lift": _r(top_decile_lift(pts.served, y), 2)},
        "health_score": {"roc_auc": _r(roc_auc(-pts.health, y)), "top_decile_lift": _r(top_decile_lift(-pts.health, y), 2)},
        "control_shuffled_labels": {"churn_probability_auc": _r(roc_auc(pts.served, shuffled)),
                                    "health_auc": _r(roc_auc(-pts.health, shuffled))},
        "calibration": {"served": _calibration(pts.served, y, thresholds), "raw": _calibration(pts.raw, y, thresholds)},
        "alerts": {
            "by_kind": per_kind,
            "churn_risk": alert_metrics(run.outputs.alert_log, cancels, "churn_risk", horizon, lookback, end_ms=h.end_ms),
            "recall_lookback_days": lookback,
            "per_1000_customers_per_week": volume,
            "active_customer_weeks": _r(weeks, 1),
        },
        "auc_over_time": _weekly_auc(pts),
        "comparison": comparison(run, extra, n_boot=n_boot),
    }


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()


# --- presenting -------------------------------------------------------------------------------
def render(rep: dict[str, Any], console: Any) -> None:
    """The report as readable rich tables."""
    i, r, p = rep["input"], rep["run"], rep["points"]
    console.print(f"[bold]backtest[/bold] {i['file']}: {i['events_fed']:,} events, {i['customers']:,} customers, "
                  f"{i['days']} days ({i['start'][:10] if i['start'] else '?'} .. {i['end'][:10] if i['end'] else '?'}), "
                  f"{i['cancellations']} cancellations, {i['dead_lettered']} dead-lettered")
    console.print(f"ran in {r['seconds']} s ({r['events_per_s']:,.0f} events/s); served probability: "
                  f"{r['served_probability']}; model at the end: {rep['model'].get('serving')} "
                  f"({rep['model'].get('labels_seen')} labels, {rep['model'].get('positives')} positives)")
    console.print(f"evaluation points: {p['n']:,} ({p['positives']:,} positive, base rate {p['base_rate']}); {p['rule']}")

    def f(v: Any, fmt: str = "{:.3f}") -> str:
        return "-" if v is None else fmt.format(v)

    t = Table(title="ranking", show_lines=False)
    for col in ("score", "ROC AUC", "top-decile lift", "AUC, shuffled labels"):
        t.add_column(col, justify="right" if col != "score" else "left")
    c = rep["control_shuffled_labels"]
    t.add_row("churn probability", f(rep["churn_probability"]["roc_auc"]), f(rep["churn_probability"]["top_decile_lift"], "{:.2f}x"),
              f(c["churn_probability_auc"]))
    t.add_row("health score alone", f(rep["health_score"]["roc_auc"]), f(rep["health_score"]["top_decile_lift"], "{:.2f}x"),
              f(c["health_auc"]))
    console.print(t)

    cal = rep["calibration"]
    served = "calibrated (served)" if r["served_probability"] == "calibrated" else "served (raw)"
    t = Table(title="calibration: before (raw model output) / after (" + served + ")")
    for col in ("", "log loss", "Brier", "mean p", "ECE"):
        t.add_column(col, justify="right" if col else "left")
    t.add_row("raw", f(cal["raw"]["log_loss"], "{:.4f}"), f(cal["raw"]["brier"], "{:.5f}"), f(cal["raw"]["mean_p"], "{:.4f}"),
              f(cal["raw"]["ece"], "{:.4f}"))
    t.add_row(served, f(cal["served"]["log_loss"], "{:.4f}"), f(cal["served"]["brier"], "{:.5f}"),
              f(cal["served"]["mean_p"], "{:.4f}"), f(cal["served"]["ece"], "{:.4f}"))
    t.add_row("observed rate", "", "", f(p["base_rate"], "{:.4f}"), "")
    console.print(t)

    t = Table(title="reliability by decile (mean predicted -> observed churn within the horizon)")
    for col in ("decile", "n", "raw: mean p", "observed", served + ": mean p", "observed "):
        t.add_column(col, justify="right")
    for a, b in zip(cal["raw"]["reliability"], cal["served"]["reliability"]):
        t.add_row(str(a["bin"]), f"{a['n']:,}", f"{a['mean_p']:.4f}", f"{a['observed']:.4f}",
                  f"{b['mean_p']:.4f}", f"{b['observed']:.4f}")
    console.print(t)

    t = Table(title="the probability as a flag, per evaluation point: share flagged, precision, recall")
    for col in ("p >=", "raw: flagged", "precision", "recall", served + ": flagged", "precision ", "recall "):
        t.add_column(col, justify="right")
    for a, b in zip(cal["raw"].get("thresholds", []), cal["served"].get("thresholds", [])):
        t.add_row(f"{a['threshold']:g}", f(a["flagged_share"], "{:.2%}"), f(a["precision"], "{:.1%}"), f(a["recall"], "{:.1%}"),
                  f(b["flagged_share"], "{:.2%}"), f(b["precision"], "{:.1%}"), f(b["recall"], "{:.1%}"))
    console.print(t)

    al = rep["alerts"]
    cr = al["churn_risk"]
    t = Table(title="alerts")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("churn_risk alerts (customers)", f"{cr['alerts']:,} ({cr['customers_alerted']:,})")
    t.add_row(f"churn_risk precision (cancelled within {r['label_horizon_days']} d; {cr['alerts_judged']:,} judged)",
              f(cr["precision_within_horizon"], "{:.1%}"))
    t.add_row(f"churn_risk recall (cancellations alerted in the {al['recall_lookback_days']:g} d before)",
              f"{f(cr['recall_share'], '{:.1%}')} ({cr['cancellations_with_alert_before']} of {cr['cancellations']})")
    t.add_row("median lead time, first alert -> cancellation", f(cr["median_lead_days"], "{:.1f} days"))
    for k, v in al["per_1000_customers_per_week"].items():
        t.add_row(f"alerts per 1,000 customers per week: {k}", f(v, "{:.1f}"))
    console.print(t)
    if rep.get("comparison"):
        render_comparison(rep["comparison"], console)


def _auc_cell(v: Mapping[str, Any] | None, sep: str = " ") -> str:
    """``0.812 [0.77, 0.85]``: a value and its interval (two decimals: a few hundred
    resamples do not pin the bounds any closer)."""
    if not v or v.get("value") is None:
        return "-"
    ci = v.get("ci")
    return f"{v['value']:.3f}" + (f"{sep}[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def comparison_table(comp: Mapping[str, Any], title: str, width: int = 160) -> Any:
    """A rich table of one comparison: a row per score, the test period first (what a batch
    model can be judged on), then all dates; extra scores' tables have the test columns only.
    Narrower than 130 columns, each interval goes under its value instead of beside it."""
    wide = width >= 130
    sep = " " if wide else "\n"
    scores: Mapping[str, Any] = comp["scores"]
    has_all = any("auc_all" in v for v in scores.values())
    t = (Table(title=title) if wide
         else Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True))
    cols = ["score", "AUC test", "per-date AUC test"] + (["AUC all", "per-date AUC all"] if has_all else [])
    for col in [*cols, "top-decile lift test"]:
        if col == "score":
            t.add_column(col, min_width=11, ratio=1)
        else:  # figures never wrap: the names do (in narrow mode, at a chosen place)
            t.add_column(col if wide else col.replace(" AUC", "\nAUC").replace(" lift", "\nlift"),
                         justify="right", no_wrap=True)
    for v in scores.values():
        cells = [v["label"], _auc_cell(v["auc_test"], sep), _auc_cell(v["per_date_auc_test"], sep)]
        if has_all:
            cells += [_auc_cell(v.get("auc_all"), sep), _auc_cell(v.get("per_date_auc_all"), sep)]
        lift = v.get("top_decile_lift_test")
        t.add_row(*cells, "-" if lift is None else f"{lift:.2f}x")
    return t


def render_comparison(comp: Mapping[str, Any], console: Any) -> None:
    """The comparison's tables: built-in scores on all observations, then each extra score
    against the built-in ones on exactly its rows."""
    a, te = comp["all"], comp["test"]
    boot = f"customer-clustered bootstrap 95 % intervals, {comp['n_boot']} resamples" if comp["n_boot"] else "no intervals"
    console.print(f"comparison on weekly observations: {a['n']:,} ({a['positives']:,} positive) on {a['dates']} dates "
                  f"from {(comp['first_date'] or '?')[:10]}; test from {(comp['test_from'] or '?')[:10]}: "
                  f"{te['n']:,} ({te['positives']:,} positive) on {te['dates']} dates; {boot}")
    width = console.width
    console.print(comparison_table(comp, "comparison: served probability against baselines", width))
    for name, ex in comp.get("extra", {}).items():
        console.print(comparison_table(ex, f"comparison with {name}, like for like on its {ex['n']:,} test rows "
                                           f"({ex['positives']:,} positive, {ex['missing_test_rows']:,} test rows "
                                           "without a value)", width))


def plot(rep: dict[str, Any], out: str | Path) -> None:
    """PNG: the reliability curve (raw and served) and the weekly AUC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 5))
    cal = rep["calibration"]
    top = 0.0
    for name, style in (("raw", "o--"), ("served", "s-")):
        rows = cal[name]["reliability"]
        xs, ys = [r["mean_p"] for r in rows], [r["observed"] for r in rows]
        top = max(top, *xs, *ys) if rows else top
        label = "raw model output" if name == "raw" else f"served ({rep['run']['served_probability']})"
        a1.plot(xs, ys, style, label=f"{label}, ECE {cal[name]['ece']}")
    top = min(1.0, top * 1.05) if top else 1.0
    a1.plot([0, top], [0, top], color="grey", linewidth=1, label="perfect calibration")
    a1.set_xlim(0, top)
    a1.set_ylim(0, top)
    a1.set_xlabel("mean predicted churn probability (decile)")
    a1.set_ylabel(f"observed churn within {rep['run']['label_horizon_days']} days")
    a1.set_title("reliability")
    a1.legend(loc="upper left", fontsize=8)
    weeks = rep["auc_over_time"]
    xs = [w["week_start"] for w in weeks]
    a2.plot(xs, [w["churn_probability_auc"] for w in weeks], "o-", label="churn probability")
    a2.plot(xs, [w["health_auc"] for w in weeks], "s--", label="health score alone")
    a2.axhline(0.5, color="grey", linewidth=1)
    a2.set_ylim(0.3, 1.0)
    a2.set_ylabel("ROC AUC (points of that week)")
    a2.set_title("AUC over time (event time)")
    a2.tick_params(axis="x", rotation=60, labelsize=7)
    a2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def run_sync(path: str | Path, settings: Settings, *, customers_limit: int | None = None,
             on_progress: Callable[[int], None] | None = None,
             on_scanned: Callable[[History], None] | None = None) -> RunResult:
    """Run against the configured Redis (``REDIS_URL``; else the local server, else an embedded one)."""
    embedded = None
    url = settings.redis_url or "redis://127.0.0.1:6379/0"
    if not settings.redis_url and not redis_reachable(url):
        embedded = EmbeddedRedis().start()
        url = embedded.url
    settings = settings.model_copy(update={"redis_url": url})

    async def go() -> RunResult:
        client = redis_client(settings)
        try:
            return await run_backtest(path, settings, client, customers_limit=customers_limit,
                                      on_progress=on_progress, on_scanned=on_scanned)
        finally:
            await client.aclose()

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # asyncio.run cancels the run; its ``finally`` deletes the keys

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        return asyncio.run(go())
    finally:
        signal.signal(signal.SIGTERM, previous)
        if embedded is not None:
            embedded.stop()
