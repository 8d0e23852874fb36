"""The keyed-state runtime of the hot path: a consumer of one topic whose per-key state lives on a
compacted changelog, and the one produce-with-retry helper (:class:`~streams.runtime.sender.Sender`)."""
