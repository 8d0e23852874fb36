"""TCPDBench scoring (van den Burg & Williams, 2020), re-implemented to the paper's definitions.

* F1 with margin M = 5: index 0 is added to every annotator's set and to the
  predictions. Precision = |TP(union of annotators, X)| / |X|; recall = mean
  over annotators of |TP(T_k, X)| / |T_k|; a true point is matched to the
  nearest unused prediction within M, so no prediction counts twice.
* Cover: each set of change points partitions [0, n-1]; the cover of an
  annotator's partition S by the predicted one S' is
  ``sum over A in S of |A| * max_{A' in S'} Jaccard(A, A') / n``, averaged over annotators.
* Predictions are cleaned as TCPDBench does: unique indices in [1, n-2].

The doctests are the examples of TCPDBench's ``analysis/scripts/metrics.py``:

>>> sorted(true_positives({1, 10, 20, 23}, {1, 3, 5, 8, 20}))
[1, 10, 20]
>>> f_measure({1: [10, 20], 2: [11, 20], 3: [10], 4: [0, 5]}, [10, 20])
1.0
>>> f_measure({1: [], 2: [10], 3: [50]}, [10])
0.9090909090909091
>>> f_measure({1: [], 2: [10], 3: [50]}, [])
0.8
>>> covering({1: [10, 20], 2: [10], 3: [0, 5]}, [10, 20], 45)
0.7962962962962963
>>> covering({1: [], 2: [10], 3: [40]}, [10], 45)
0.7954144620811286
>>> covering({1: [], 2: [10], 3: [40]}, [], 45)
0.8189300411522634
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

# the shared data sit beside the checkout (../shared); a worktree elsewhere names them in BACKOUT_TCPD_DIR
DATA = Path(os.environ.get("BACKOUT_TCPD_DIR")
            or Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "tcpd")
EXCLUDED = {"quality_control_1", "quality_control_2", "quality_control_3", "quality_control_4",
            "quality_control_5", "uk_coal_employ"}


def true_positives(truth: Iterable[int], predicted: Iterable[int], margin: int = 5) -> set[int]:
    """True points matched, each to the nearest still-unused prediction within ``margin``."""
    free = set(predicted)
    hits = set()
    for tau in truth:
        near = sorted((abs(tau - x), x) for x in free if abs(tau - x) <= margin)
        if near:
            hits.add(tau)
            free.remove(near[0][1])
    return hits


def f_measure(annotations: Mapping, predictions: Iterable[int], margin: int = 5) -> float:
    sets = [set(v) | {0} for v in annotations.values()]
    x = set(predictions) | {0}
    union = set().union(*sets)
    precision = len(true_positives(union, x, margin)) / len(x)
    recall = sum(len(true_positives(t, x, margin)) / len(t) for t in sets) / len(sets)
    if precision + recall == 0:
        return 0.0
    return precision * recall / (0.5 * recall + 0.5 * precision)


def partition(locations: Iterable[int], n_obs: int) -> list[set[int]]:
    cps = sorted(set(locations))
    parts, current, j = [], set(), 0
    for i in range(n_obs):
        while j < len(cps) and cps[j] < i:
            j += 1
        if j < len(cps) and cps[j] == i:
            if current:
                parts.append(current)
            current = set()
            j += 1
        current.add(i)
    parts.append(current)
    return parts


def _cover(pred: list[set[int]], truth: list[set[int]]) -> float:
    total = sum(map(len, pred))
    return sum(len(a) * max(len(a & b) / len(a | b) for b in pred) for a in truth) / total


def covering(annotations: Mapping, predictions: Iterable[int], n_obs: int) -> float:
    pred = partition(predictions, n_obs)
    covers = [_cover(pred, partition(v, n_obs)) for v in annotations.values()]
    return sum(covers) / len(covers)


def clean(predictions: Iterable[int], n_obs: int) -> list[int]:
    return sorted({int(p) for p in predictions if 1 <= p <= n_obs - 2})


def load() -> tuple[dict[str, list[float]], dict[str, dict]]:
    """The univariate series that count (``EXCLUDED`` left out) and all annotations."""
    series = {}
    for path in sorted((DATA / "datasets").glob("*.json")):
        name = path.stem
        if name in EXCLUDED:
            continue
        doc = json.loads(path.read_text())
        series[name] = [float(v) for v in doc["series"][0]["raw"]]
    return series, json.loads((DATA / "annotations.json").read_text())


def published(names: Iterable[str]) -> dict[str, dict[str, float]]:
    """Published default-setting averages per method over ``names`` (null counts 0, as in the paper)."""
    names = list(names)
    out: dict[str, dict[str, float]] = {}
    for metric in ("f1", "cover"):
        scores = json.loads((DATA / "published" / f"default_{metric}_scores.json").read_text())
        methods = sorted({m for n in names for m in scores[n]})
        for m in methods:
            out.setdefault(m, {})[metric] = sum(scores[n].get(m) or 0.0 for n in names) / len(names)
    return out
