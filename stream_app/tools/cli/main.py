"""``stream-app``: the command line. Each group of commands lives in its own module:

* ``run``: worker, demo, dashboard, replay, rebuild
* ``inspect``: customer, top, alerts, model
* ``data``: schemas, simulate
* ``portfolio``: kpis, cohorts, segments
* ``backtest``: backtest
* ``deliver``: deliver (and ``deliver test SINK``)
* ``partitions``: partitions check, partitions migrate
"""

from __future__ import annotations

import click

from stream_app.tools.cli import backtest, data, deliver, inspect, partitions, portfolio, run


@click.group()
def main() -> None:
    """churn-stream: real-time customer health on Kafka, Faust and Redis."""


for command in (run.worker, run.replay, run.rebuild, inspect.customer, inspect.top, inspect.alerts, inspect.model,
                data.schemas, data.simulate, run.demo, run.dashboard, portfolio.kpis, portfolio.cohorts,
                portfolio.segments, backtest.backtest, deliver.deliver, partitions.partitions):
    main.add_command(command)


if __name__ == "__main__":
    main()
