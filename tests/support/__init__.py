"""Helpers shared by the tests (the harness, simulated logs, end-to-end fixtures, own services)."""
