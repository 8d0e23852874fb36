"""Rollback consumers: approval gate, executors per deploy target, verification."""
