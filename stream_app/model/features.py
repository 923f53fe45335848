"""The churn model's input: what a customer does, how broadly, how recently, and its health.

Pure code, computed at scoring time from the aggregates and the customer's raw hash only, so
a frozen snapshot holds nothing from the future.

* **Behaviour, per action** (the action vocabulary is open): for each action the customer's
  state tracks by name (its top-N slots), the activity *level* over the longest window, a
  rate per day normalised by ``min(tenure, 90)`` days (``act90:<action>``), and a long-memory
  rate, the action's all-time count per day of tenure (``actlt:<action>``). Features are keyed
  by the action's name, never by its slot, so a slot that changes owner does not scramble
  the model; an action the customer's state does not track is *missing* (river leaves a
  missing key out of the dot product), not zero.
* **Behaviour, overall**: total activity rate over 30 and 90 days, active-day shares, distinct
  users and features, days since the last activity, tenure.
* **Commercial, support and satisfaction** signals, and the health score itself.

The model transforms every value with :func:`slog` and standardises it online (see
``model.py``): counts and rates are heavy-tailed, and churners are often the customers whose
level is low all along, which a ratio to their own past cannot show.

>>> from stream_app.scoring.aggregates import compute_aggregates
>>> from stream_app.core import RawCustomerState
>>> raw = RawCustomerState("acme", main={"lts": str(40 * DAY_MS), "fs": "0", "n": "9", "na": "2",
...     "a0": "login", "n0": "8", "a1": "export", "n1": "1"}, days={"0": "0,0,4,1", "39": "0,0,4,0"})
>>> agg = compute_aggregates(raw, 40 * DAY_MS, [7, 30, 90])
>>> x = behaviour_features(agg, raw.main)
>>> x["act90:login"], x["act90:export"], x["actlt:login"], x["activity_rate_90d"]
(0.2, 0.025, 0.2, 0.225)
>>> "act90:other" in x            # no pooled events: the pool is not a feature
False
"""

from __future__ import annotations

import math

from stream_app.core import DAY_MS
from stream_app.scoring.aggregates import CustomerAggregates
from stream_app.state import layout

#: Prefixes of the per-action features (``<prefix><action name>``).
ACTION_LEVEL = "act90:"
ACTION_LIFETIME = "actlt:"

#: Features every customer has (or has as missing), in the order label snapshots store them.
#: The first 15 are the scorecard signals the model read before behaviour features existed;
#: new features are appended, so a snapshot written by older code still decodes.
BASE_FEATURES: tuple[str, ...] = (
    "health_score",
    "activity_vs_baseline",
    "active_days_share_30d",
    "days_since_last_activity",
    "features_30d",
    "active_users_30d",
    "nps_mean_90d",
    "csat_90d",
    "open_ticket_load",
    "reopened_30d",
    "ticket_load_30d",
    "sentiment_30d",
    "mrr_change_pct_90d",
    "downgrades_90d",
    "tenure_days",
    "activity_rate_30d",
    "activity_rate_90d",
    "active_days_share_90d",
    "active_users_90d",
    "features_90d",
    "mrr",
    "upgrades_90d",
)

#: The scorecard's population term ranks customers by this feature (``model.ActivityLevels``).
LEVEL_FEATURE = "activity_rate_90d"

#: The scorecard signals the model reads as they are (see ``scoring.signals_from``).
_SIGNALS: tuple[str, ...] = BASE_FEATURES[1:15]
_SIGNAL_SET = frozenset(_SIGNALS)
#: the action slots' name and count fields, formatted once
_SLOT_FIELDS = [(layout.slot_name_field(i), layout.slot_count_field(i)) for i in range(64)]


def slog(v: float) -> float:
    """``sign(v) * log1p(|v|)``: compresses heavy tails, keeps zero and the sign.

    >>> slog(0.0), round(slog(9.0), 4), round(slog(-9.0), 4)
    (0.0, 2.3026, -2.3026)
    """
    return math.copysign(math.log1p(abs(v)), v)


def level_days(tenure_days: float | None, window: int) -> float:
    """The days a rate over a ``window``-day window is normalised by: the window, or the
    customer's tenure when it is younger (at least one day).

    >>> level_days(400.0, 90), level_days(10.5, 90), level_days(None, 30), level_days(0.2, 30)
    (90.0, 10.5, 30.0, 1.0)
    """
    if tenure_days is None:
        return float(window)
    return min(float(window), max(1.0, tenure_days))


def behaviour_features(agg: CustomerAggregates, main: dict[str, str]) -> dict[str, float]:
    """Activity levels overall and per tracked action (keys above; unknown values left out)."""
    x: dict[str, float] = {}
    tenure = agg.tenure_days
    w30, w90 = agg.windows.get("30d"), agg.windows.get("90d")
    d30, d90 = level_days(tenure, 30), level_days(tenure, 90)
    if w30 is not None:
        x["activity_rate_30d"] = w30.activity_events / d30
    if w90 is not None:
        x["activity_rate_90d"] = w90.activity_events / d90
        x["active_days_share_90d"] = min(1.0, w90.active_days / d90)
        x["active_users_90d"] = float(w90.active_users)
        x["features_90d"] = float(w90.features_used)
        x["upgrades_90d"] = float(w90.upgrades)
    if agg.mrr is not None:
        x["mrr"] = float(agg.mrr)
    # per action: every tracked slot (a tracked action with no recent events is a real zero)
    counts = w90.actions if w90 is not None else {}
    lifetime_days = max(1.0, tenure) if tenure is not None else None
    n = int(main.get(layout.ACTION_SLOTS, "0"))
    fields = _SLOT_FIELDS if n <= len(_SLOT_FIELDS) else [(layout.slot_name_field(i), layout.slot_count_field(i))
                                                          for i in range(n)]
    for i in range(n):
        name_field, count_field = fields[i]
        name = main.get(name_field)
        if not name:
            continue
        x[ACTION_LEVEL + name] = counts.get(name, 0) / d90
        if lifetime_days is not None:
            x[ACTION_LIFETIME + name] = int(main.get(count_field, "0")) / lifetime_days
    return x


def features_from(signals: dict[str, float | None], health_score: float,
                  behaviour: dict[str, float] | None = None) -> dict[str, float]:
    """Model input: the known scorecard signals, the health score and the behaviour features
    (river treats a missing key as 'no information').

    >>> features_from({"tenure_days": 12.0, "nps_mean_90d": None}, 55.5)
    {'tenure_days': 12.0, 'health_score': 55.5}
    """
    x = {k: float(v) for k, v in signals.items()
         if k in _SIGNAL_SET and v is not None and not math.isnan(float(v))}
    x["health_score"] = float(health_score)
    if behaviour:
        x.update(behaviour)
    return x


def encode_features(x: dict[str, float]) -> str:
    """Compact text for a pending label snapshot in Redis: the base features in a fixed order
    ('' = missing), then ``|`` and one ``name=level/lifetime`` entry per tracked action,
    joined by ``\\x1f`` (an action name may hold commas, '|', '/' or '=': the values follow
    the last '='; a name holding ``\\x1f`` is left out rather than misread). Three
    significant digits: the inputs are noisy aggregates.

    >>> t = encode_features({"health_score": 55.54, "tenure_days": 12.0, "act90:login": 0.25, "actlt:login": 1.0})
    >>> t
    '55.5,,,,,,,,,,,,,,12,,,,,,,|login=0.25/1'
    >>> decode_features(t)
    {'health_score': 55.5, 'tenure_days': 12.0, 'act90:login': 0.25, 'actlt:login': 1.0}
    >>> decode_features('55.5,,,,,,,,,,,,,,12')    # a snapshot written before behaviour features
    {'health_score': 55.5, 'tenure_days': 12.0}
    """
    base = ",".join("" if (v := x.get(f)) is None else f"{v:.3g}" for f in BASE_FEATURES)
    entries = []
    for k, level in x.items():
        if k.startswith(ACTION_LEVEL) and "\x1f" not in k:
            name = k[len(ACTION_LEVEL):]
            lifetime = x.get(ACTION_LIFETIME + name)
            entries.append(f"{name}={level:.3g}/{'' if lifetime is None else f'{lifetime:.3g}'}")
    return f"{base}|{chr(0x1f).join(entries)}" if entries else base


def decode_features(text: str) -> dict[str, float]:
    base, _, actions = text.partition("|")
    x = {f: float(v) for f, v in zip(BASE_FEATURES, base.split(",")) if v != ""}
    if actions:
        for entry in actions.split("\x1f"):
            name, sep, values = entry.rpartition("=")
            if not sep:
                continue
            level, _, lifetime = values.partition("/")
            x[ACTION_LEVEL + name] = float(level)
            if lifetime:
                x[ACTION_LIFETIME + name] = float(lifetime)
    return x


