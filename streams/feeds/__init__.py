"""Feeds: what real monitoring and deploy systems send, turned into metric and deploy records."""
