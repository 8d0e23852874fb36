"""Event time that one record cannot move: the partition clock's admission rules, one table, and
what they are for, in the backtest: a single sample stamped far ahead (or a flood of invented
service names) changes no decision, and a real outage of the exporters is still recovered from."""

from __future__ import annotations

import pytest

from backout.contracts import Decision, Metric, Watermark, encode
from backout.errors import FutureSample, LateSample
from detectors.config import BackoutConfig
from detectors.watermark import EventClock, PartitionClock
from streams.backtest import replay
from streams.simulate import scenario

T = 1_767_225_600.0
DAY = 86_400.0


def clock_at(ts: float | None, services: tuple[str, ...] = ("a", "b")) -> PartitionClock:
    clock = PartitionClock(0, interval_s=5.0)
    for service in services:
        clock.establish(service)
    if ts is not None:
        clock.observe(ts)
    return clock


# (partition time, established services, samples before: (service, metric, ts) refused or accepted,
#  the sample (service, metric, ts, new stream, Kafka timestamp), what happens)
CASES = [
    ("a new partition takes its first sample as it comes (the backtest)",
     None, ("a", "b"), [], ("a", "m", T + 10 * DAY, True, None), None),
    ("a new partition refuses a first sample far ahead of its Kafka timestamp",
     None, ("a", "b"), [], ("a", "m", T + 601, True, T), FutureSample),
    ("... but not one behind it (a replay of old data, not stamped)",
     None, ("a", "b"), [], ("a", "m", T - 300 * DAY, True, T), None),
    ("within the skew", T, ("a", "b"), [], ("a", "m", T + 599, False, None), None),
    ("past the skew", T, ("a", "b"), [], ("a", "m", T + 601, False, None), FutureSample),
    ("past the skew, whatever its Kafka timestamp says", T, ("a", "b"), [], ("a", "m", T + DAY, False, T + DAY),
     FutureSample),
    ("a new stream far behind", T, ("a", "b"), [], ("c", "m", T - 3601, True, None), LateSample),
    ("a new stream just within the lateness", T, ("a", "b"), [], ("c", "m", T - 3599, True, None), None),
    ("a known stream far behind (its own order is the monitor's business)",
     T, ("a", "b"), [], ("a", "m", T - DAY, False, None), None),
    ("a jump that another service's sample, just before, agrees with",
     T, ("a", "b"), [("b", "m", T + DAY)], ("a", "m", T + DAY + 5, False, None), None),
    ("a jump the same service claims again, among others",
     T, ("a", "b"), [("a", "n", T + DAY)], ("a", "m", T + DAY, False, None), FutureSample),
    ("a jump the same service claims again, alone on its partition",
     T, ("a",), [("a", "n", T + DAY)], ("a", "m", T + DAY, False, None), None),
    ("the same record twice is no agreement",
     T, ("a",), [("a", "m", T + DAY)], ("a", "m", T + DAY, False, None), FutureSample),
    ("claims that do not agree", T, ("a", "b"), [("b", "m", T + DAY)], ("a", "m", T + 2 * DAY, False, None),
     FutureSample),
    ("an accepted sample in between ends the claim",
     T, ("a", "b"), [("b", "m", T + DAY), ("a", "m", T + 1)], ("c", "m", T + DAY, False, None), FutureSample),
]


@pytest.mark.parametrize("what, now, services, before, sample, refused", CASES, ids=[c[0] for c in CASES])
def test_admission(what, now, services, before, sample, refused):
    clock = clock_at(now, services)
    for service, metric, ts in before:
        try:
            clock.admit(ts, service, metric, new_stream=False)
            clock.observe(ts)
        except FutureSample:
            pass
    service, metric, ts, new, reference = sample
    if refused is None:
        clock.admit(ts, service, metric, new_stream=new, reference_ts=reference)
    else:
        with pytest.raises(refused, match=f"{service}/{metric}"):
            clock.admit(ts, service, metric, new_stream=new, reference_ts=reference)


def test_an_idle_mark_of_a_partition_that_never_had_a_sample_does_not_set_the_time():
    events = EventClock()
    assert events.advance(Watermark(ts=100.0, partition=0, partitions=2, services=3)) is None
    assert events.advance(Watermark(ts=9_999.0, partition=1, partitions=2, idle=True)) == 100.0
    assert events.advance(Watermark(ts=100.0, partition=0, partitions=2, services=3, idle=True)) is None
    assert events.now == 100.0  # not the guess of the empty partition's worker


# -- in the backtest ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shop():
    records, labels = scenario(3, kinds=["bad_error", "shared_incident", "good"], hours=3.0)
    return records, labels


def backtest(lines: list[bytes], config: BackoutConfig | None = None) -> tuple[list[str], list[str]]:
    bad: list[str] = []
    out = replay(lines, config or BackoutConfig(), lambda number, reason: bad.append(reason))
    return [encode(d).decode() for d in out if isinstance(d, Decision)], bad


def with_inserted(records, raw: bytes, at: float = 0.5) -> list[bytes]:
    lines = [encode(r) for r in records]
    i = int(len(lines) * at)
    return lines[:i] + [raw] + lines[i:]


def sample(service: str, ts: float, metric: str = "latency_p95", value: float = 0.2) -> bytes:
    return encode(Metric(ts=ts, service=service, metric=metric, value=value))


@pytest.mark.parametrize("service", ["checkout", "brand-new-service"])
def test_a_single_sample_a_day_ahead_changes_no_decision(shop, service):
    records, _ = shop
    clean, _ = backtest([encode(r) for r in records])
    assert any('"action":"rollback"' in d for d in clean)
    early = records[len(records) // 3].ts  # before the shared incident and two deploys
    decided, bad = backtest(with_inserted(records, sample(service, early + DAY), at=1 / 3))
    assert decided == clean
    assert any(reason.startswith(f"sample of {service}/latency_p95") and "ahead" in reason for reason in bad)
    # without the rule the same record moves event time, and decisions change
    unguarded, _ = backtest(with_inserted(records, sample(service, early + DAY), at=1 / 3),
                            BackoutConfig(max_future_skew_s=1e9))
    assert unguarded != clean


def test_a_sample_in_the_year_3000_is_refused_by_the_contract_and_changes_no_decision(shop):
    records, _ = shop
    raw = b'{"type":"metric","ts":32503680000.0,"service":"checkout","metric":"latency_p95","value":0.2}'
    clean, _ = backtest([encode(r) for r in records])
    decided, bad = backtest(with_inserted(records, raw))
    assert decided == clean
    assert any("field 'ts'" in reason and "not milliseconds" in reason for reason in bad)


def test_a_far_past_sample_of_a_new_stream_is_refused_and_changes_no_decision(shop):
    records, _ = shop
    clean, _ = backtest([encode(r) for r in records])
    decided, bad = backtest(with_inserted(records, sample("ghost", records[len(records) // 2].ts - DAY)))
    assert decided == clean
    assert any(reason.startswith("first sample of ghost/latency_p95") and "behind" in reason for reason in bad)


def test_a_flood_of_invented_service_names_changes_no_decision(shop):
    """They are refused nowhere (each is a valid sample), but a name with one sample is no service
    that could shift: it must not dilute "did most services shift?" (a shared incident)."""
    records, _ = shop
    clean, _ = backtest([encode(r) for r in records])
    lines, every = [], len(records) // 2000
    for i, record in enumerate(records):
        lines.append(encode(record))
        if i % every == 0:
            lines.append(sample(f"junk-{i}", record.ts, "error_rate", 0.5))
    decided, bad = backtest(lines)
    assert decided == clean and len(lines) - len(records) >= 2000


def test_an_outage_of_every_exporter_costs_one_round_and_the_bad_deploy_is_still_caught(shop):
    records, labels = shop
    bad_deploy = [d for d in labels["deploys"] if d["label"] == "bad"][-1]
    gap = (bad_deploy["ts"] - 2400, bad_deploy["ts"] - 1200)  # 20 minutes without a sample, then the deploy
    kept = [r for r in records if r.type != "metric" or not gap[0] <= r.ts < gap[1]]
    decided, refused = backtest([encode(r) for r in kept])
    ahead = [r.split(" at ts ")[0] for r in refused if "ahead" in r]  # one round of the first service to speak
    assert ahead and len({name.split("/")[0] for name in ahead}) == 1 and len(ahead) == len(set(ahead)) <= 4
    assert any(f'"deploy_id":"{bad_deploy["deploy_id"]}"' in d and '"action":"rollback"' in d for d in decided)
