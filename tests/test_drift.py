"""Drift statistics on hand-made series with known answers: a known slope, a known step, memory growing at a
known rate, and bursty noise with none of them, where the false-alarm rate must stay near α."""

from __future__ import annotations

import numpy as np
import pymannkendall
import pytest

from controller import drift

HOURS_30 = list(np.arange(30) * 20 / 3600)  # 30 segments of 20 s


def _ar1(seed: int, n: int, phi: float, sd: float) -> np.ndarray:
    """AR(1) noise: the bursty kind a shared box makes, where one slow second follows another."""
    rng = np.random.default_rng(seed)
    noise = np.zeros(n)
    for i in range(1, n):
        noise[i] = phi * noise[i - 1] + rng.normal(0, sd)
    return noise


def test_a_known_slope_is_measured_per_hour_and_in_percent() -> None:
    """24 h of 60 s segments losing 2 % of 100 per hour, noise sd 1: Sen's slope −2.0 ± 0.05 per hour."""
    hours = np.arange(1440) / 60
    found = drift.trend(list(100 - 2 * hours + _ar1(1, 1440, 0.3, 1.0)), list(hours))
    assert found["verdict"] == "decreasing" and found["p_value"] is not None and found["p_value"] < 1e-6
    assert found["slope_per_h"] == pytest.approx(-2.0, abs=0.05)
    assert found["pct_per_h"] == pytest.approx(-2.0, abs=0.1)


def test_a_condition_taking_turns_gets_its_slope_per_real_hour() -> None:
    """Two conditions in turns of 10 segments of 60 s: one's values sit at hours 0–0.15, 0.33–0.48, …; a
    slope of −3 per hour over those times is −3 per hour, not −3 per 10 segments."""
    hours = [(turn * 20 + k) / 60 for turn in range(6) for k in range(10)]
    found = drift.trend([100 - 3 * h for h in hours], hours)
    assert found["slope_per_h"] == pytest.approx(-3.0) and found["verdict"] == "decreasing"


def test_too_few_segments_say_so() -> None:
    assert drift.trend([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])["verdict"] == "too_short"


def test_bursty_noise_without_drift_rarely_trends() -> None:
    """200 trend-free series of 30 segments, φ = 0.5: pre-whitened Mann-Kendall calls at most 5 % trending at
    α = 1 % (the Hamed-Rao correction called 9 %, which is why it is not used)."""
    series = [100 + _ar1(seed, 30, 0.5, 2.0) for seed in range(200)]
    trending = sum(drift.trend(list(s), HOURS_30)["verdict"] != "no trend" for s in series)
    hamed_rao = sum(pymannkendall.hamed_rao_modification_test(s, alpha=0.01).p < 0.01 for s in series)
    assert trending <= 10 < hamed_rao


def test_a_slow_fall_in_bursty_noise_is_found() -> None:
    """−1 per 3 segments from 100 over 30 segments (−10 % in all), φ = 0.5, sd 2: found in at least 60 of 100
    series (measured 79; plain pre-whitening, its autocorrelation taken with the trend in, 11)."""
    fall = 100 - np.arange(30) / 3
    found = sum(
        drift.trend(list(fall + _ar1(s, 30, 0.5, 2.0)), HOURS_30)["verdict"] == "decreasing" for s in range(100)
    )
    assert found >= 60, found


def test_a_step_is_found_at_its_segment_with_both_levels() -> None:
    """−10 % at segment 12 of 30 in noise of 2 %: found at 12 ± 1, the levels within 2 of 100 and 90."""
    values = np.r_[np.full(12, 100.0), np.full(18, 90.0)] + _ar1(1, 30, 0.3, 2.0)
    [step] = drift.change_points(list(values))
    assert abs(step["segment"] - 12) <= 1 and step["p_value"] < drift.ALPHA
    assert step["before"] == pytest.approx(100, abs=2) and step["after"] == pytest.approx(90, abs=2)
    assert step["pct"] is not None and step["pct"] == pytest.approx(-10, abs=2.5)


def test_steps_are_found_in_bursty_noise_and_noise_alone_rarely_steps() -> None:
    """A 5 σ step at segment 10 of 24 is found (±1) in at least 80 of 100 series with φ = 0.5 (measured: 96);
    the same noise without a step shows a change in at most 10 of 100 (measured: 7 of these 100, 24 of 400;
    36 % for a fixed-split Welch test after a change-point search, which ignores both the search and the
    autocorrelation)."""
    step = np.r_[np.full(10, 100.0), np.full(14, 95.0)]
    found = sum(
        any(abs(c["segment"] - 10) <= 1 for c in drift.change_points(list(step + _ar1(s, 24, 0.5, 1.0))))
        for s in range(100)
    )
    false = sum(bool(drift.change_points(list(100 + _ar1(s, 24, 0.5, 1.0)))) for s in range(100, 200))
    assert found >= 80 and false <= 10, (found, false)


def test_a_capped_rate_that_steps_down_is_one_change() -> None:
    """A tbf-capped rate is nearly constant: 0.478 for 8 segments, then 0.287 for 8."""
    values = [0.478] * 8 + [0.287] * 8
    [step] = drift.change_points(values)
    assert step["segment"] == 8 and step["pct"] == pytest.approx(-40.0, abs=0.1)
    assert drift.change_points([0.478] * 16) == []


def test_a_rate_stepped_down_and_back_up_is_two_changes() -> None:
    """The lab soak's shape: a shaper at 1,000 Mbit/s carries the offered 0.5 Gbit/s for 10 segments, then
    stepped down to 300 Mbit/s 0.288 for 5, then reset to 0.5 for 5. Both steps are found where they are."""
    rng = np.random.default_rng(3)
    values = np.r_[np.full(10, 0.5), np.full(5, 0.288), np.full(5, 0.5)] + rng.normal(0, 0.0005, 20)
    down, up = drift.change_points(list(values))
    assert (down["segment"], up["segment"]) == (10, 15)
    assert down["pct"] == pytest.approx(-42.4, abs=0.5) and up["pct"] == pytest.approx(73.6, abs=1)


def test_memory_growth_per_hour_and_end_against_first_hour() -> None:
    """RSS 100 MB growing 30 MB/h over 4 h of 60 s segments: slope 30 MB/h; the first hour's median (minutes
    0–59) 114.75, the last hour's (180–239) 204.75."""
    minutes = np.arange(240)
    grown = drift.growth(list(100 + 0.5 * minutes), list(minutes / 60))
    assert grown["slope_per_h"] == pytest.approx(30.0)
    assert grown["first_hour"] == pytest.approx(114.75) and grown["end"] == pytest.approx(204.75)
    assert grown["ratio"] == pytest.approx(204.75 / 114.75)
