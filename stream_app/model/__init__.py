"""The churn model: its features, the online model and its calibration, evaluation metrics,
the checkpoints the scorers read (pinned to event-time days) and the single learner.
"""
