"""Everything around the worker: the ``stream-app`` command line, the demo, embedded services,
replay, rebuild, the simulator and the backtest.
"""
