"""The pure core: statistics, sustained-shift detectors, deploy correlation, policy.

No Kafka, no network, no clock, no logging: events in, events out, in event time.
"""
