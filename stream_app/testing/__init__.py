"""Test-only machinery (fault injection), built only when a ``FAULT_*`` setting is set.
"""
