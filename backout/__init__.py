"""Backout: catch a bad deploy from its metrics, roll it back, verify recovery."""

__version__ = "0.1.0"
