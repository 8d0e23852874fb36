"""Feeds: real monitoring and deploy systems in, each a pure ``to_records(payload)`` plus one publish path."""
