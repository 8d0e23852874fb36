"""The Prometheus bridge's pure part: the config, which times are due, answers as records."""

from __future__ import annotations

from pathlib import Path

import pytest

from backout.errors import ConfigError, ContractError
from streams.feeds.prometheus import Query, due, load_config, to_records

EXAMPLE = Path(__file__).parent.parent / "examples" / "prometheus-bridge.yaml"


def vector(*series: tuple[dict, str], at: float = 990.0) -> dict:
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": m, "value": [at, v]} for m, v in series]}}


Q = Query(metric="error_rate", query="sum by (service) (...)")


@pytest.mark.parametrize("query, answer, counts, records, refused, skipped", [
    (Q, vector(({"service": "checkout"}, "0.01"), ({"service": "cart"}, "0.5")),
     vector(({"service": "checkout"}, "1200"), ({"service": "cart"}, "2")),
     [("checkout", 0.01, 1200.0), ("cart", 0.5, 2.0)], [], {}),
    (Q, vector(({"service": "checkout"}, "0.01")), None, [("checkout", 0.01, None)], [], {}),
    (Query(metric="health", query="avg by (job) (up)", service="{job}"),
     vector(({"job": "checkout"}, "1"), ({"job": "cart"}, "0.5")), None,
     [("checkout", 1.0, None), ("cart", 0.5, None)], [], {}),
    (Query(metric="health", query="x", service="{namespace}-{app}"),
     vector(({"namespace": "shop", "app": "cart"}, "1"), ({"app": "cart"}, "1")), None,
     [("shop-cart", 1.0, None)], ["field 'labels.namespace': got nothing"], {}),
    (Query(metric="requests", query="scalar(x)", service="checkout"),
     {"status": "success", "data": {"resultType": "scalar", "result": [990.0, "42"]}}, None,
     [("checkout", 42.0, None)], [], {}),
    (Q, vector(({"service": "checkout"}, "NaN"), ({"service": "cart"}, "+Inf")), None,
     [], ["field 'value': got inf"], {"NaN value": 1}),
    (Q, vector(({"service": "checkout", "instance": "a"}, "0.1"), ({"service": "checkout", "instance": "b"}, "0.2")),
     None, [("checkout", 0.1, None)], ["expected one series per service"], {}),
    (Q, vector(({"service": "../etc"}, "0.1")), None, [], ["field 'service': got '../etc'"], {}),
    (Q, vector(({"service": "checkout"}, "0.1")), vector(({"service": "checkout"}, "-3")),
     [("checkout", 0.1, None)], [], {}),  # a negative count (a counter reset in increase()) is no count
], ids=["with-counts", "no-count-query", "job-template", "two-label-template", "scalar-fixed-service",
        "nan-skipped-inf-refused", "two-series-one-service", "hostile-label", "negative-count"])
def test_answers_to_records(query, answer, counts, records, refused, skipped):
    parsed = to_records(query, answer, 990.0, counts)
    assert [(r.service, r.value, r.count) for r in parsed.records] == records
    assert all(r.ts == 990.0 and r.metric == query.metric for r in parsed.records)
    assert len(parsed.refusals) == len(refused)
    for refusal, reason in zip(parsed.refusals, refused, strict=True):
        assert reason in refusal.reason
    assert dict(parsed.skipped) == skipped


@pytest.mark.parametrize("answer, message", [
    ({"status": "error", "errorType": "bad_data", "error": "parse error at char 4"}, "bad_data: parse error"),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "expected a vector or a scalar"),
])
def test_answers_that_are_not_an_instant_vector(answer, message):
    with pytest.raises(ContractError, match=message):
        to_records(Q, answer, 990.0)


@pytest.mark.parametrize("last, interval, now, catch_up, expected", [
    (None, 15, 1000.0, 300, [990.0]),
    (990.0, 15, 1000.0, 300, []),  # published already: never twice
    (975.0, 15, 1000.0, 300, [990.0]),
    (930.0, 15, 1000.0, 300, [945.0, 960.0, 975.0, 990.0]),  # back after an outage: the missed times, in order
    (100.0, 15, 1000.0, 30, [975.0, 990.0]),
    (980.0, 15, 1000.0, 300, [990.0]),  # an odd last time (the interval changed) lands on the grid
    (990.0, 15, 1005.0, 300, [1005.0]),
])
def test_due_times(last, interval, now, catch_up, expected):
    assert due(last, interval, now, catch_up) == expected


def test_the_example_config_loads():
    config = load_config(EXAMPLE)
    assert [q.metric for q in config.queries] == ["error_rate", "latency_p95", "requests", "health"]
    assert config.interval_of(config.queries[3]) == 30 and config.interval_of(config.queries[0]) == 15


@pytest.mark.parametrize("text, message", [
    ("queries: []", "queries: List should have at least 1 item"),
    ("queries: [{metric: error_rate, query: x, every: 5}]", "queries.0.every: Extra inputs are not permitted"),
    ("queries: [{metric: error rate, query: x}]", "not a valid metric"),
    ("queries: [{metric: e, query: x, service: '{a.b}'}]", "expected {label} fields"),
    ("interval_s: 0\nqueries: [{metric: e, query: x}]", "interval_s: Input should be greater than 0"),
    ("queries: [", "not YAML"),
])
def test_bad_configs_name_the_key(tmp_path, text, message):
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_changed_query_has_a_new_key():
    assert Q.key != Query(metric="error_rate", query="sum by (service) (other)").key
    assert Q.key == Query(metric="error_rate", query="sum by (service) (...)").key

