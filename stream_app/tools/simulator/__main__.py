"""``python -m stream_app.tools.simulator --customers 2000 --days 180 --out ev.jsonl.gz``."""

from stream_app.tools.simulator.files import main

raise SystemExit(main())
