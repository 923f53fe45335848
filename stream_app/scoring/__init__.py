"""Pure scoring: windowed aggregates of a customer's state, the health scorecard, the alert
rules and the change explanations. No I/O.
"""
