"""External evaluation history from fightchurn's ``crm6`` simulator, as contract JSON Lines.

Runs the ChurnSim simulator from Carl Gold's *Fighting Churn With Data* (PyPI package
``fightchurn``) with its CRM model **crm6** (25 event types, several users per account,
monthly / 6-monthly / annual plans, add-ons, upsell / downsell, MRR) against a PRIVATE,
throw-away PostgreSQL cluster, and exports the result to the event contract
(``/work/shared/event-contract.md``) in the format ``stream-app backtest FILE`` reads, byte
for byte like ``stream-app simulate`` writes it: one JSON object per line, the contract event
plus a ``topic`` field holding the logical topic name (``"activity"`` / ``"subscriptions"``,
as the simulator writes; the replay router also accepts the prefixed ``cs.activity``),
``ts`` as ISO-8601 UTC with milliseconds (``2020-01-03T05:12:33.000+00:00``), lines in
event-time order, gzip (mtime 0, no file name: byte-identical for identical input) if the
name ends with ``.gz``.

Usage::

    python -m venv /tmp/fightchurn-venv && /tmp/fightchurn-venv/bin/pip install fightchurn
    FIGHTCHURN_PYTHON=/tmp/fightchurn-venv/bin/python \\
        python bench/churnsim.py --customers 2000 --start 2020-01-01 --end 2020-10-01 \\
        --seed 7 --out /tmp/crm6.jsonl.gz --truth /tmp/crm6_truth.jsonl
    stream-app backtest /tmp/crm6.jsonl.gz --json

``fightchurn`` pins old versions of matplotlib, packaging, pyparsing, pandas ... so keep it in
its own virtualenv and point ``--python`` (or ``FIGHTCHURN_PYTHON``) at that interpreter; this
script itself needs this project (it writes with the simulator's own writer) and PostgreSQL's binaries.

The PostgreSQL cluster
    ``initdb`` into a temp dir (binaries from ``/usr/lib/postgresql/<newest>/bin`` or
    ``--pg-bin``), started with ``pg_ctl`` on a free 127.0.0.1 port with its unix socket in the
    temp dir, stopped and removed at the end, also on an error, Ctrl-C or SIGTERM. Any other
    server (e.g. the system one on :5432) is never touched: fightchurn connects through
    ``CHURN_DB`` / ``CHURN_DB_USER`` / ``CHURN_DB_PASS`` / ``CHURN_DB_HOST`` (host only, no
    port: the port comes from libpq's ``PGPORT``), and the database, role and password used
    exist only in the private cluster; the script checks the server it reaches is its own
    before the simulation starts. PostgreSQL refuses to run as root, so when this script
    runs as root the server binaries run as ``--pg-user`` (default ``postgres``, Debian's
    server account) through ``runuser``; the simulator itself runs as the invoking user.

The simulation
    ``python -m fightchurn.churnsim.churnsim --config-name crm6 init_customers=N
    start_date=... end_date=... random_seed=SEED n_parallel=1 force=true`` (the model is
    always named explicitly). fightchurn seeds ``random`` and ``numpy.random`` with the seed;
    its customer-id counter and temp files live in the private ``TMPDIR``, so the same seed
    gives the same database and the same output file. It adds ``growth_rate`` (4 %/month for
    crm6) new customers each month after the initial ``N``. Churn is decided at each customer
    month end: with probability ``acausal_churn`` (0.02 in crm6: random churn that no behaviour
    predicts) or from a sigmoid of the customer's utility (its event counts, MRR, age,
    discount); a monthly customer churns at its renewal, a 6-monthly / annual one at renewal or
    mid-term after 2 / 3 unhappy months. ``--set KEY=VALUE`` passes other crm6 parameters
    through (e.g. ``--set acausal_churn=0`` for utility-driven churn only).
    crm6 customers produce ~1,000 events per month each, so at full size ``--max-events`` is
    what bounds the file (only a sample of the customers is exported).

The export
    * every ``event`` row with ``start <= event_time < end`` -> ``activity``:
      ``action`` = event type name, ``feature`` = the CRM module it belongs to (search,
      opportunity, contact, lead, list, meeting; derived from the name), ``user_id`` =
      ``crm6-<account>-u<user>`` (fightchurn numbers users 0.. inside each account),
      ``value`` (extra field, ignored by the contract) for the valued events
      (``win_opportunity`` / ``lose_opportunity``), ``customer_id`` = ``crm6-<account>``,
      ``event_id`` = ``crm6-<account>-a<n>`` (n-th event of the account in time order).
      fightchurn's event times are naive second-resolution timestamps; they are taken as UTC.
    * ``subscription`` rows (one per product - plan or add-on - per billing period) are
      grouped by account and period start; the period's MRR is the sum over its rows. The
      first period -> ``started``; each later one -> ``renewed`` (same MRR), ``upgraded``
      (higher) or ``downgraded`` (lower); a gap between periods (fightchurn makes none) ->
      ``cancelled`` + ``reactivated``. An account whose last period ends before ``end`` is a
      churn (fightchurn's definition: the customer has no subscription after that date) ->
      ``cancelled`` (mrr 0) at 00:00 UTC of the customer's month-end check on or after that
      end date (the day fightchurn decided the churn and stopped its events; it is the end
      date itself except when a billing period restarted on a clipped day like Feb 29, which
      would otherwise show as a 1-3 day gap). Period starts and ends are dates, written as
      00:00:00.000 UTC. Subscription events at or after ``end`` are left out (a churn on or
      after ``end`` is outside the window and not exported).
    * ``--max-events`` keeps the file at most that many lines by dropping WHOLE customers, in
      an order shuffled with the seed (so it stays deterministic).

``--truth`` writes one JSON line per exported customer in the schema ``stream-app simulate
--truth`` writes (``customer_id``, ``start_ts``, ``cancelled_ts``, ``plan``, ``final_mrr``,
``latent_health_daily``, ``shocks``, ``reactivated_ts``); fightchurn has no latent health or
shocks, so those lists are empty. ``stream-app backtest`` does not need it (it takes the
cancellations from the history itself).
"""

from __future__ import annotations

import argparse
import calendar
import csv
import hashlib
import heapq
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from stream_app.tools.simulator import SimEvent, write_jsonl
from stream_app.tools.simulator.files import open_text_out

MODEL = "crm6"  # the fightchurn model exported; never the entry point's default
PREFIX = "crm6"  # customer ids are "crm6-<account id>"

#: action -> CRM module (``feature`` in the contract), for adoption breadth
_FEATURE_OF = {
    "search": "search", "create_search": "search", "edit_search": "search", "delete_search": "search",
    "win_opportunity": "opportunity", "advance_stage": "opportunity", "add_competitor": "opportunity",
    "disqualify_opportunity": "opportunity", "lose_opportunity": "opportunity", "quote": "opportunity",
    "create_opportunity": "opportunity",
    "add_contact": "contact", "edit_contact": "contact",
    "add_lead": "lead", "unsub_lead": "lead", "edit_lead": "lead", "email_lead": "lead", "call_lead": "lead",
    "create_list": "list", "delete_list": "list", "email_list": "list",
    "meeting": "meeting", "schedule_meeting": "meeting", "edit_meeting": "meeting", "cancel_meeting": "meeting",
}


def _log(msg: str) -> None:
    print(f"[churnsim] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------- private PostgreSQL
def _pg_bin(explicit: str | None) -> Path:
    if explicit:
        p = Path(explicit)
        if not (p / "initdb").exists():
            raise SystemExit(f"--pg-bin {p}: no initdb there")
        return p
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.parent.name.split(".")])
    if not found:
        raise SystemExit("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin "
                         "(apt-get install postgresql, or pass --pg-bin)")
    return found[-1].parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """A throw-away PostgreSQL cluster in a temp dir, on a free loopback port (context manager).

    ``env()`` is the environment for clients (libpq's PG* variables and fightchurn's CHURN_DB*);
    on exit the server is stopped (fast) and the temp dir removed, whatever happened.
    """

    DB = "churnsim"
    USER = "churnsim"

    def __init__(self, bin_dir: Path, run_as: str | None, keep: bool = False) -> None:
        self.bin = bin_dir
        self.run_as = run_as  # None: run the server binaries as ourselves
        self.keep = keep
        self.password = secrets.token_hex(16)
        self.root = Path(tempfile.mkdtemp(prefix="churnsim-"))
        self.data = self.root / "pg" / "data"
        self.sock = self.root / "pg" / "sock"
        self.logfile = self.root / "pg" / "server.log"
        self.port = 0
        self.started = False

    # -- helpers
    def _server_cmd(self, *args: str) -> list[str]:
        prefix = ["runuser", "-u", self.run_as, "--"] if self.run_as else []
        return [*prefix, *args]

    def _run(self, cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:6])} ... failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({
            "PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGDATABASE": self.DB, "PGUSER": self.USER,
            "PGPASSWORD": self.password, "PGSSLMODE": "disable", "PGCONNECT_TIMEOUT": "10",
            "CHURN_DB": self.DB, "CHURN_DB_USER": self.USER, "CHURN_DB_PASS": self.password,
            "CHURN_DB_HOST": "127.0.0.1",
        })
        return env

    def psql_cmd(self, *args: str) -> list[str]:
        return [str(self.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *args]

    # -- lifecycle
    def __enter__(self) -> PrivatePostgres:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _start(self) -> None:
        self.sock.mkdir(parents=True)
        self.data.parent.chmod(0o700)
        pwfile = self.root / "pg" / "pw"
        pwfile.write_text(secrets.token_hex(16) + "\n")  # the bootstrap superuser's; never used
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            self.root.chmod(0o711)  # let the server account reach its own dir below
            for p in (self.data.parent, self.sock, pwfile):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        # trust on the private unix socket only (for the set-up below); passwords over TCP
        self._run(self._server_cmd(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                                   "--pwfile", str(pwfile), "--auth-local=trust", "--auth-host=scram-sha-256",
                                   "-E", "UTF8", "--locale=C", "--no-sync"))
        pwfile.unlink()
        opts = (f"-c listen_addresses=127.0.0.1 -c unix_socket_directories={self.sock} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c work_mem=256MB "
                "-c max_connections=20 -c shared_buffers=256MB")
        for attempt in range(5):
            self.port = _free_port()
            res = subprocess.run(
                self._server_cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile),
                                 "-o", f"-p {self.port} {opts}", "-w", "-t", "60", "start"),
                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                start_new_session=True)  # a Ctrl-C at the terminal is ours to handle, not the server's
            if res.returncode == 0:
                self.started = True
                break
            _log(f"pg_ctl start on port {self.port} failed (attempt {attempt + 1}): {res.stderr.strip()}")
        else:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise RuntimeError(f"could not start the private PostgreSQL cluster:\n{log[-2000:]}")
        self._run(self._server_cmd(*self.psql_cmd(
            "-h", str(self.sock), "-p", str(self.port), "-U", "postgres", "-d", "postgres",
            "-c", f"CREATE ROLE {self.USER} LOGIN SUPERUSER PASSWORD '{self.password}'",
            "-c", f"CREATE DATABASE {self.DB} OWNER {self.USER}")),
                  env={k: v for k, v in os.environ.items() if not k.startswith("PG")})
        # the server fightchurn's connection settings reach must be this one
        got = self._run(self.psql_cmd("-A", "-t", "-c", "SHOW data_directory"), env=self.env()).stdout.strip()
        if Path(got).resolve() != self.data.resolve():
            raise RuntimeError(f"connected to the wrong server (data_directory {got!r})")

    def close(self) -> None:
        if self.started:
            res = subprocess.run(self._server_cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                                                  "-w", "-t", "60", "stop"),
                                 stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if res.returncode != 0:
                _log(f"pg_ctl stop: {res.stderr.strip()}")
            self.started = False
        if self.keep:
            _log(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------- simulation
def run_fightchurn(pg: PrivatePostgres, python: str, customers: int, start: date, end: date, seed: int,
                   overrides: list[str] | None = None) -> float:
    """Run fightchurn's own entry point with the crm6 model against ``pg``; returns seconds.

    ``overrides``: extra hydra ``key=value`` overrides of crm6's parameters (``--set``)."""
    run_dir = pg.root / "run"
    tmp_dir = run_dir / "tmp"
    out_dir = run_dir / "out"
    tmp_dir.mkdir(parents=True)
    out_dir.mkdir()
    env = pg.env()
    env.update({"CHURN_OUT_DIR": str(out_dir), "TMPDIR": str(tmp_dir), "PYTHONHASHSEED": "0",
                "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    cmd = [python, "-m", "fightchurn.churnsim.churnsim", "--config-name", MODEL,
           f"model={MODEL}", f"init_customers={customers}", f"start_date='{start.isoformat()}'",
           f"end_date='{end.isoformat()}'", f"random_seed={seed}", "n_parallel=1", "force=true",
           "dev=false", "live_sim=false", f"hydra.run.dir={run_dir}", *(overrides or [])]
    _log("running: " + " ".join(cmd))
    log_path = pg.root / "fightchurn.log"
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=run_dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            rc = proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    secs = time.perf_counter() - t0
    if rc != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"fightchurn exited {rc}:\n{tail}")
    return secs


def _copy_out(pg: PrivatePostgres, query: str) -> Iterator[list[str]]:
    """Stream the rows of ``query`` from the private cluster as CSV fields (psql COPY TO STDOUT)."""
    sql_file = pg.root / f"q{secrets.token_hex(4)}.sql"
    sql_file.write_text(f"COPY ({query}) TO STDOUT WITH (FORMAT csv);\n")
    proc = subprocess.Popen(pg.psql_cmd("-f", str(sql_file)), env=pg.env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1 << 20)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        yield from csv.reader(proc.stdout)
    finally:
        proc.stdout.close()
        err = proc.stderr.read()
        proc.stderr.close()
        if proc.wait() != 0:
            raise RuntimeError(f"psql failed: {err}")


# --------------------------------------------------------------------- export
def _ts(d: str) -> str:
    """A PostgreSQL date or timestamp (UTC by convention) -> the contract's ISO form with ms.

    >>> _ts("2020-01-03 05:12:33"), _ts("2020-01-03"), _ts("2020-01-03 05:12:33.25")
    ('2020-01-03T05:12:33.000+00:00', '2020-01-03T00:00:00.000+00:00', '2020-01-03T05:12:33.250+00:00')
    """
    if len(d) == 10:
        return f"{d}T00:00:00.000+00:00"
    if len(d) == 19:
        return f"{d[:10]}T{d[11:19]}.000+00:00"
    return datetime.fromisoformat(d).isoformat(timespec="milliseconds") + "+00:00"


@dataclass
class Account:
    """One fightchurn account's billing history, turned into contract subscription events."""

    account_id: int
    #: (start date, end date, mrr, plan) per billing period, in order
    periods: list[tuple[str, str, float, str]] = field(default_factory=list)
    sub_events: list[dict[str, Any]] = field(default_factory=list)
    activity: int = 0

    @property
    def cid(self) -> str:
        return f"{PREFIX}-{self.account_id}"


def _mrr(x: float) -> float:
    return float(round(x, 2))


def _add_months(d: date, k: int) -> date:
    """``d`` plus ``k`` calendar months, the day clipped to the month (like dateutil's relativedelta).

    >>> _add_months(date(2020, 1, 31), 1), _add_months(date(2020, 1, 31), 13)
    (datetime.date(2020, 2, 29), datetime.date(2021, 2, 28))
    """
    y, m = divmod(d.month - 1 + k, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def month_end_on_or_after(first: date, d: date) -> date:
    """The customer's first month-end check (``first`` + k months, k >= 0) on or after ``d``.

    fightchurn decides renewals and churn at these checks; a period's end date can fall a few
    days before one when the billing period restarted on a clipped day (e.g. Feb 29 + 6 months
    = Aug 29, while the checks of a customer who started on Jan 31 fall on Aug 31).

    >>> month_end_on_or_after(date(2020, 1, 31), date(2020, 8, 29))
    datetime.date(2020, 8, 31)
    >>> month_end_on_or_after(date(2020, 1, 5), date(2020, 3, 5))
    datetime.date(2020, 3, 5)
    """
    k = max(0, (d.year - first.year) * 12 + d.month - first.month - 1)
    while _add_months(first, k) < d:
        k += 1
    return _add_months(first, k)


def derive_subscriptions(acct: Account, end: str) -> None:
    """Fill ``acct.sub_events`` from its periods (see the module docstring); ``end`` is ISO.

    A period that starts at the month-end check following the previous period's end continues
    it (renewed / upgraded / downgraded); a later start is a gap (cancelled, then reactivated;
    fightchurn makes none). After the last period the customer churned at the check on or
    after its end, if that is before ``end``.
    """
    out: list[dict[str, Any]] = []

    def emit(ts: str, status: str, mrr: float, plan: str) -> None:
        if ts < end:
            out.append({"event_id": f"{acct.cid}-s{len(out) + 1}", "customer_id": acct.cid, "ts": ts,
                        "status": status, "mrr": _mrr(mrr), "plan": plan})

    if not acct.periods:
        acct.sub_events = out
        return
    first = date.fromisoformat(acct.periods[0][0])
    prev: tuple[str, str, float, str] | None = None
    for period in acct.periods:
        start, _, mrr, plan = period
        if prev is None:
            emit(_ts(start), "started", mrr, plan)
        else:
            churn_day = month_end_on_or_after(first, date.fromisoformat(prev[1])).isoformat()
            if start > churn_day:
                emit(_ts(churn_day), "cancelled", 0.0, prev[3])
                emit(_ts(start), "reactivated", mrr, plan)
            else:
                status = "renewed" if _mrr(mrr) == _mrr(prev[2]) else ("upgraded" if mrr > prev[2] else "downgraded")
                emit(_ts(start), status, mrr, plan)
        prev = period
    assert prev is not None
    churn_day = month_end_on_or_after(first, date.fromisoformat(prev[1])).isoformat()
    if _ts(churn_day) < end:
        emit(_ts(churn_day), "cancelled", 0.0, prev[3])
    acct.sub_events = out


def load_accounts(pg: PrivatePostgres, start: date, end: date, plan_names: set[str],
                  aggregate: bool = False) -> dict[int, Account]:
    """Accounts with their billing periods, subscription events and activity line counts in
    [start, end) (``aggregate``: one line per account, day and action)."""
    accts: dict[int, Account] = {}
    rows: dict[int, dict[str, list[tuple[str, float, str]]]] = {}
    for acc_s, product, s, e, mrr in _copy_out(pg, f"SELECT account_id, product, start_date, end_date, mrr "
                                                f"FROM {MODEL}.subscription ORDER BY account_id, start_date, product"):
        rows.setdefault(int(acc_s), {}).setdefault(s, []).append((e, float(mrr), product))
    end_iso = _ts(end.isoformat())
    for acc, by_start in rows.items():
        a = Account(acc)
        for s in sorted(by_start):
            items = by_start[s]
            plans = [p for _, _, p in items if p in plan_names] or [items[0][2]]
            a.periods.append((s, max(e for e, _, _ in items), sum(m for _, m, _ in items), plans[0]))
        derive_subscriptions(a, end_iso)
        accts[acc] = a
    counted = "count(DISTINCT (date_trunc('day', event_time), event_type_id))" if aggregate else "count(*)"
    for acc_s, n in _copy_out(pg, f"SELECT account_id, {counted} FROM {MODEL}.event WHERE event_time >= "
                                  f"'{start.isoformat()}' AND event_time < '{end.isoformat()}' GROUP BY 1"):
        accts.setdefault(int(acc_s), Account(int(acc_s))).activity = int(n)
    return accts


def sample_accounts(accts: dict[int, Account], max_events: int, seed: int) -> list[int]:
    """Whole accounts, in an order shuffled by ``seed``, while the total stays <= ``max_events``."""
    ids = sorted(accts)
    total = sum(a.activity + len(a.sub_events) for a in accts.values())
    if total <= max_events:
        return ids
    rng = random.Random(f"churnsim-sample-{seed}")
    rng.shuffle(ids)
    keep: list[int] = []
    n = 0
    for i in ids:
        k = accts[i].activity + len(accts[i].sub_events)
        if n + k <= max_events:
            keep.append(i)
            n += k
    return sorted(keep)


def activity_lines(pg: PrivatePostgres, start: date, end: date, keep: set[int] | None,
                   types: dict[str, str]) -> Iterator[tuple[tuple[str, int, int, int], dict[str, Any]]]:
    """(sort key, contract event) per activity row in [start, end), in (ts, account, n) order."""
    q = (f"SELECT account_id, event_time, event_type_id, user_id, event_value, "
         f"row_number() OVER (PARTITION BY account_id ORDER BY event_time, event_type_id, user_id, event_value) "
         f"FROM {MODEL}.event WHERE event_time >= '{start.isoformat()}' AND event_time < '{end.isoformat()}' "
         f"ORDER BY event_time, account_id, 6")
    for acc_s, t, type_id, user, value, n_s in _copy_out(pg, q):
        acc = int(acc_s)
        if keep is not None and acc not in keep:
            continue
        action = types[type_id]
        n = int(n_s)
        ts = _ts(t)
        ev: dict[str, Any] = {"event_id": f"{PREFIX}-{acc}-a{n}", "customer_id": f"{PREFIX}-{acc}", "ts": ts,
                              "action": action}
        if user != "":
            ev["user_id"] = f"{PREFIX}-{acc}-u{user}"
        feature = _FEATURE_OF.get(action)
        if feature:
            ev["feature"] = feature
        if value != "":
            ev["value"] = float(value)
        yield (ts, 1, acc, n), ev


def daily_activity_lines(pg: PrivatePostgres, start: date, end: date, keep: set[int] | None,
                         types: dict[str, str]) -> Iterator[tuple[tuple[str, int, int, int], dict[str, Any]]]:
    """One contract event per account, UTC day and action, its ``count`` the day's occurrences
    (the contract's pre-aggregated form, as a producer that batches per day would send it),
    at the day's first occurrence; in (ts, account, action) order. ``user_id`` is left out:
    one line stands for many users."""
    q = (f"SELECT account_id, min(event_time), event_type_id, count(*), "
         f"to_char(date_trunc('day', event_time), 'YYYYMMDD') "
         f"FROM {MODEL}.event WHERE event_time >= '{start.isoformat()}' AND event_time < '{end.isoformat()}' "
         f"GROUP BY account_id, date_trunc('day', event_time), event_type_id ORDER BY 2, 1, 3")
    for acc_s, t, type_id, n_s, day in _copy_out(pg, q):
        acc = int(acc_s)
        if keep is not None and acc not in keep:
            continue
        action = types[type_id]
        ts = _ts(t)
        ev: dict[str, Any] = {"event_id": f"{PREFIX}-{acc}-d{day}-{type_id}", "customer_id": f"{PREFIX}-{acc}",
                              "ts": ts, "action": action, "count": int(n_s)}
        feature = _FEATURE_OF.get(action)
        if feature:
            ev["feature"] = feature
        yield (ts, 1, acc, int(type_id)), ev


def write_history(path: Path, streams: Iterable[Iterator[tuple[tuple[str, int, int, int], dict[str, Any]]]],
                  topic_of: dict[int, str], actions: Counter[str] | None = None) -> Counter[str]:
    """Merge the sorted streams by key and write them with the simulator's own writer (the
    format ``stream-app backtest`` reads, byte for byte); per-topic line counts (and
    per-action counts into ``actions``)."""
    counts: Counter[str] = Counter()

    def rows() -> Iterator[SimEvent]:
        for key, ev in heapq.merge(*streams, key=lambda kv: kv[0]):
            topic = topic_of[key[1]]
            counts[topic] += 1
            if actions is not None and "action" in ev:
                actions[ev["action"]] += 1
            yield SimEvent(topic, int(datetime.fromisoformat(ev["ts"]).timestamp() * 1000), ev)

    write_jsonl(path, rows())
    return counts


def _months(start: date, end: date) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    y, m = start.year, start.month
    while date(y, m, 1) < end:
        a = max(date(y, m, 1), start)
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        out.append((_ts(a.isoformat()), _ts(min(date(y, m, 1), end).isoformat())))
    return out


def churn_by_month(accts: list[Account], start: date, end: date) -> list[tuple[str, int, int, float]]:
    """(month, customers active at its start, cancellations in it, rate) per calendar month."""
    rows = []
    first: dict[str, str] = {a.cid: a.sub_events[0]["ts"] for a in accts if a.sub_events}
    never = "9999"  # sorts after every ISO timestamp
    cancel: dict[str, str] = {a.cid: min((e["ts"] for e in a.sub_events if e["status"] == "cancelled"),
                                         default=never) for a in accts}
    for a_ts, b_ts in _months(start, end):
        active = [c for c, s in first.items() if s < a_ts and cancel[c] >= a_ts]
        n_cancel = sum(1 for c in active if cancel[c] < b_ts)
        rows.append((a_ts[:7], len(active), n_cancel, n_cancel / len(active) if active else 0.0))
    return rows


def write_truth(path: Path, accts: list[Account]) -> None:
    """Per customer, in ``stream-app simulate --truth``'s schema (no latent health / shocks)."""
    with open_text_out(path) as f:
        for a in accts:
            if not a.sub_events:
                continue
            cancels = [e for e in a.sub_events if e["status"] == "cancelled"]
            reacts = [e for e in a.sub_events if e["status"] == "reactivated"]
            before = [e for e in a.sub_events if e["status"] != "cancelled"
                      and (not cancels or e["ts"] <= cancels[0]["ts"])]
            row = {"customer_id": a.cid, "start_ts": a.sub_events[0]["ts"],
                   "cancelled_ts": cancels[0]["ts"] if cancels else None,
                   "plan": before[-1]["plan"], "final_mrr": before[-1]["mrr"],
                   "latent_health_daily": [], "shocks": [],
                   "reactivated_ts": reacts[0]["ts"] if reacts else None}
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
            f.write("\n")


# --------------------------------------------------------------------- main
def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=2000, help="fightchurn init_customers (default 2000)")
    ap.add_argument("--start", default="2020-01-01", help="simulation start date (default 2020-01-01)")
    ap.add_argument("--end", default="2020-10-01", help="simulation end date, exclusive (default 2020-10-01)")
    ap.add_argument("--seed", type=int, default=7, help="fightchurn random_seed and sampling seed (default 7)")
    ap.add_argument("--out", required=True, help="history file (.jsonl or .jsonl.gz)")
    ap.add_argument("--truth", default=None, help="optional ground truth per customer (.jsonl[.gz])")
    ap.add_argument("--max-events", type=int, default=5_000_000,
                    help="at most this many lines: whole customers are dropped, by seed (default 5,000,000)")
    ap.add_argument("--aggregate", choices=("none", "day"), default="none",
                    help="none: one line per fightchurn event; day: one line per account, day and action with "
                         "its count (the contract's pre-aggregated form; ~20x fewer lines, so every customer "
                         "fits a replay; no user_id)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra hydra override of a crm6 parameter, e.g. acausal_churn=0 (repeatable)")
    ap.add_argument("--python", default=os.environ.get("FIGHTCHURN_PYTHON", sys.executable),
                    help="interpreter with fightchurn installed (default $FIGHTCHURN_PYTHON or this one)")
    ap.add_argument("--pg-bin", default=None,
                    help="PostgreSQL server binaries (default the newest /usr/lib/postgresql/*/bin)")
    ap.add_argument("--pg-user", default="postgres", help="account that runs the server when invoked as root")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (cluster, logs) for debugging")
    a = ap.parse_args(argv)
    start, end = date.fromisoformat(a.start), date.fromisoformat(a.end)
    if end <= start:
        ap.error("--end must be after --start")
    for kv in a.set:
        key = kv.split("=", 1)[0].lstrip("+~")
        if "=" not in kv or key in ("model", "init_customers", "start_date", "end_date", "random_seed",
                                    "n_parallel", "force", "live_sim") or key.startswith("hydra"):
            ap.error(f"--set {kv!r}: want KEY=VALUE of a model parameter (not one this script sets)")
    chk = subprocess.run([a.python, "-c", "import fightchurn.churnsim.churnsim"], capture_output=True, text=True)
    if chk.returncode != 0:
        ap.error(f"{a.python} cannot import fightchurn ({chk.stderr.strip().splitlines()[-1:]}); e.g. "
                 "python -m venv /tmp/fightchurn-venv && /tmp/fightchurn-venv/bin/pip install fightchurn, "
                 "then --python /tmp/fightchurn-venv/bin/python")
    run_as = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(a.pg_user)
        except KeyError:
            ap.error(f"running as root: PostgreSQL needs an unprivileged account; no user {a.pg_user!r} "
                     "(create one, e.g. useradd --system pgrunner, and pass --pg-user)")
        run_as = a.pg_user
    signal.signal(signal.SIGTERM, _sigterm)
    out = Path(a.out)
    t_all = time.perf_counter()
    with PrivatePostgres(_pg_bin(a.pg_bin), run_as, keep=a.keep_tmp) as pg:
        _log(f"private cluster {pg.data} on 127.0.0.1:{pg.port}" + (f" (server as {run_as})" if run_as else ""))
        sim_s = run_fightchurn(pg, a.python, a.customers, start, end, a.seed, a.set)
        _log(f"simulation: {sim_s:.1f} s")
        t0 = time.perf_counter()
        plans_csv = pg.root / "run" / "out" / MODEL / f"{MODEL}_plans.csv"
        with open(plans_csv, encoding="utf-8-sig") as f:
            plan_names = {row[0] for row in list(csv.reader(f))[1:] if row}
        types = dict(_copy_out(pg, f"SELECT event_type_id, event_type_name FROM {MODEL}.event_type"))
        daily = a.aggregate == "day"
        accts = load_accounts(pg, start, end, plan_names, aggregate=daily)
        keep_ids = sample_accounts(accts, a.max_events, a.seed)
        kept = [accts[i] for i in keep_ids]
        keep = None if len(keep_ids) == len(accts) else set(keep_ids)
        subs = sorted((((e["ts"], 0, acc.account_id, k), e) for acc in kept for k, e in enumerate(acc.sub_events)),
                      key=lambda kv: kv[0])
        actions: Counter[str] = Counter()
        lines = (daily_activity_lines if daily else activity_lines)(pg, start, end, keep, types)
        counts = write_history(out, [iter(subs), lines],
                               {0: "subscriptions", 1: "activity"}, actions)
        export_s = time.perf_counter() - t0
    if a.truth:
        write_truth(Path(a.truth), kept)
    total_s = time.perf_counter() - t_all
    statuses = Counter(e["status"] for acc in kept for e in acc.sub_events)
    size = out.stat().st_size
    summary = {
        "model": MODEL, "seed": a.seed, "start": start.isoformat(), "end": end.isoformat(),
        "init_customers": a.customers, "overrides": a.set, "aggregate": a.aggregate,
        "customers_simulated": len(accts), "customers_exported": len(kept),
        "lines": sum(counts.values()), "events_per_topic": dict(sorted(counts.items())),
        "subscription_statuses": dict(sorted(statuses.items())), "cancellations": statuses["cancelled"],
        "event_types_in_db": len(types), "actions_exported": len(actions), "bytes": size, "sha256": _sha256(out),
        "seconds": {"simulation": round(sim_s, 1), "export": round(export_s, 1), "total": round(total_s, 1)},
    }
    print(json.dumps(summary, indent=2))
    print("month    active  cancelled  churn")
    for month, n_active, n_cancel, rate in churn_by_month(kept, start, end):
        print(f"{month}  {n_active:6d}  {n_cancel:9d}  {rate:6.2%}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
