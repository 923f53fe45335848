"""Portfolio KPIs, lifecycle stages and segments: the pure assessment of a scoring (``assess``),
the write side keeping per-period sums in Redis (``tracker``), the read side (``reports``).
"""
