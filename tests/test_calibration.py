"""Thresholds from ARL0: Siegmund's formula solved, and checked by simulation."""

from __future__ import annotations

import math
import random

import pytest

from detectors.calibration import MIN_THRESHOLD, arl0_siegmund, delay_bound, threshold


@pytest.mark.parametrize("delta", [0.1, 0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("arl0", [1e3, 1e5])
def test_threshold_solves_siegmund(arl0, delta):
    h = threshold(arl0, delta)
    assert MIN_THRESHOLD <= h <= math.log(arl0)
    if h > MIN_THRESHOLD:
        assert arl0_siegmund(h, delta) == pytest.approx(arl0, rel=1e-6)


def test_threshold_grows_with_arl0():
    assert threshold(1e3, 1.0) < threshold(1e4, 1.0) < threshold(1e5, 1.0)


def test_simulated_gaussian_cusum_meets_its_arl0():
    """i.i.d. N(0,1), design delta=1, target ARL0=500: the mean run length matches within 25%."""
    rng = random.Random(5)
    delta, target = 1.0, 500.0
    h = threshold(target, delta)
    runs = []
    for _ in range(200):
        s, n = 0.0, 0
        while s < h:
            n += 1
            s = max(0.0, s + delta * (rng.gauss(0, 1) - delta / 2))
        runs.append(n)
    assert sum(runs) / len(runs) == pytest.approx(target, rel=0.25)


def test_delay_bound_is_information_or_spike_limited():
    assert delay_bound(1e5, 0.1) == pytest.approx(math.log(1e5) / 0.1)
    assert delay_bound(1e5, 100.0, spike_samples=2) == 3.0


@pytest.mark.parametrize("args, message", [((1.0, 1.0), "arl0 must be > 1"), ((1e5, 0.0), "delta must be > 0")])
def test_bad_arguments_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        threshold(*args)
