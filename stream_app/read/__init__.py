"""The read side shared by the dashboard, the CLI and operations: customer and risk queries,
the portfolio tiles, reading a topic.
"""
