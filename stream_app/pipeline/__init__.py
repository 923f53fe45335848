"""Kafka -> Faust -> Redis: the Faust app (assembly only), the runtime inside the worker, the
ingestor (decoding, event-time ordering), the scorer (rounds, ``score`` one customer,
``commit`` a drain) and the outputs.
"""
