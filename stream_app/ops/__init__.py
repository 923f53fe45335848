"""Operations inside the worker: Prometheus metrics, ``/health``, the watchdog, the HTTP token.
"""
