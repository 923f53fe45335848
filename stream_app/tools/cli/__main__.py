"""``python -m stream_app.tools.cli``: the ``stream-app`` command."""

from stream_app.tools.cli.main import main

main()
