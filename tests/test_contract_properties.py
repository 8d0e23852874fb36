"""Property tests of the contracts: every valid record round-trips through the one encoding, and
every record broken in one way is refused with a message that names the broken field."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from backout import contracts as c
from backout.errors import ContractError
from tests.strategies import broken, dead_letters, records

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(records())
def test_a_valid_record_round_trips(record):
    raw = c.encode(record)
    assert c.decode(raw) == record
    assert c.decode(raw.decode()) == record


@SETTINGS
@given(dead_letters)
def test_a_dead_letter_of_anything_is_a_valid_record_within_the_size_limit(letter):
    raw = c.encode(letter)
    assert len(raw) <= c.MAX_RECORD_BYTES
    assert c.decode(raw) == letter


@SETTINGS
@given(broken())
def test_a_record_broken_in_one_way_is_refused_naming_the_field(case):
    raw, field = case
    with pytest.raises(ContractError) as info:
        c.decode(raw)
    message = str(info.value)
    if field is not None:
        assert f"field '{field}'" in message or f"field '{field}." in message, message
    assert len(message) <= c.MAX_TEXT_CHARS  # it fits a dead letter's reason
