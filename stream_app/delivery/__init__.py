"""Delivering alerts where people work (``stream-app deliver``): webhooks, Slack and CRM sync.

One process (and consumer group) of its own reads ``cs.alerts`` (and ``cs.scores`` for CRM
sinks that ask for it) and sends each alert to the sinks of ``DELIVERY_FILE`` whose routing
rules match; an alert's offset is committed once every sink accepted it or it was parked on
``cs.alerts.undelivered``. Modules: ``config`` (the YAML), ``routing``, ``signing``, ``retry``,
``transport`` (one HTTP delivery with retries), ``slack`` and ``crm`` (payloads), ``sinks`` (a sink of
each type), ``offsets`` (commit discipline), ``metrics``, ``service`` (the consumer loop).
"""
