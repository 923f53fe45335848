"""The backtest: the history file (``history``), the run through the real pipeline (``run``),
the judgement (``report``) and its presentation (``render``).
"""
