"""Noise-aware verdicts: intervals on speedup, latency and accuracy drop; inconclusive budgets."""

import math

import numpy as np
import pytest

from squeezeflow.config import Budgets
from squeezeflow.evaluate.budgets import decide
from squeezeflow.evaluate.stats import mean_interval, paired_drop

BASE = {"accuracy": 0.98, "latency_p50_ms": 1.0, "latency_p95_ms": 1.2, "speedup": 1.0, "size_mb": 1.0}


def _row(speedup, low, high, drop=0.0, drop_low=-0.002, drop_high=0.002):
    return {
        "accuracy": 0.98 - drop,
        "accuracy_drop": drop,
        "accuracy_drop_ci_low": drop_low,
        "accuracy_drop_ci_high": drop_high,
        "latency_p50_ms": 1 / speedup,
        "latency_p95_ms": 1.2 / speedup,
        "latency_p95_ms_ci_low": 1.1 / speedup,
        "latency_p95_ms_ci_high": 1.3 / speedup,
        "speedup": speedup,
        "speedup_ci_low": low,
        "speedup_ci_high": high,
        "size_mb": 0.3,
        "compression_ratio": 3.3,
        "class_accuracy_drop_max": 0.01,
    }


def test_mean_interval_matches_the_t_formula():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    mean, lo, hi = mean_interval(values)
    half = 3.182446305284263 * np.std(values, ddof=1) / 2  # t(0.975, 3) * s / sqrt(4)
    assert (mean, lo, hi) == pytest.approx((2.5, 2.5 - half, 2.5 + half))
    g, glo, ghi = mean_interval(np.array([2.0, 2.0, 2.0]), log=True)
    assert g == pytest.approx(2.0) and glo == pytest.approx(2.0) and ghi == pytest.approx(2.0)


def test_paired_drop_and_exact_mcnemar():
    base = np.array([1] * 90 + [1] * 8 + [0] * 2, bool)  # 8 samples only the baseline gets right, 2 only the candidate
    cand = np.array([1] * 90 + [0] * 8 + [1] * 2, bool)
    out = paired_drop(base, cand)
    assert out["accuracy_drop"] == pytest.approx(0.06)
    assert out["discordant_worse"] == 8 and out["discordant_better"] == 2
    # exact two-sided binomial: P(X <= 2) + P(X >= 8) for X ~ Bin(10, 1/2) = 2 * 56 / 1024
    assert out["mcnemar_p"] == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert out["accuracy_drop_ci_low"] < 0.06 < out["accuracy_drop_ci_high"]
    assert paired_drop(base, base)["mcnemar_p"] == 1.0


@pytest.mark.parametrize("low,high,status", [(1.25, 1.35, "pass"), (1.05, 1.15, "fail"), (1.15, 1.25, "inconclusive")])
def test_speedup_budget_is_judged_on_the_interval(low, high, status):
    verdict = decide(BASE, {"c": _row(math.sqrt(low * high), low, high)}, Budgets(min_speedup=1.2), "latency_p95_ms")
    cand = verdict["candidates"]["c"]
    assert cand["status"] == status and cand["passed"] == (status == "pass")
    assert verdict["verdict"] == ("pass" if status == "pass" else "fail")
    if status == "inconclusive":
        (v,) = cand["inconclusive"]
        assert v["budget"] == "min_speedup" and v["interval"] == [low, high]


def test_inconclusive_can_be_a_warning():
    verdict = decide(
        BASE, {"c": _row(1.2, 1.15, 1.25)}, Budgets(min_speedup=1.2, inconclusive="warn"), "latency_p95_ms"
    )
    assert verdict["verdict"] == "pass" and verdict["candidates"]["c"]["status"] == "pass-warning"


def test_accuracy_drop_uses_its_conservative_bound_and_class_budget():
    rows = {
        "sure": _row(1.5, 1.4, 1.6, drop=0.001, drop_low=-0.001, drop_high=0.004),
        "unsure": _row(1.5, 1.4, 1.6, drop=0.004, drop_low=0.0, drop_high=0.012),
    }
    verdict = decide(BASE, rows, Budgets(max_accuracy_drop=0.01, max_class_accuracy_drop=0.05), "latency_p95_ms")
    assert verdict["candidates"]["sure"]["status"] == "pass"
    assert verdict["candidates"]["unsure"]["status"] == "inconclusive"
    strict = decide(BASE, rows, Budgets(max_class_accuracy_drop=0.005), "latency_p95_ms")
    assert {v["budget"] for v in strict["candidates"]["sure"]["violations"]} == {"max_class_accuracy_drop"}


def test_failed_recipes_are_rows_that_are_never_selected():
    from squeezeflow.report import markdown

    crashed = {"failed": True, "failed_step": "prune", "failure": "step 'prune' needs a PyTorch model"}
    verdict = decide(BASE, {"crashed": crashed, "ok": _row(1.5, 1.4, 1.6)}, Budgets(min_speedup=1.2), "latency_p95_ms")
    assert (
        verdict["selected"] == "ok"
        and verdict["candidates"]["crashed"]["status"] == "failed"
        and not verdict["candidates"]["crashed"]["passed"]
    )
    assert markdown.failed_lines(verdict) == ["crashed: failed at step prune: step 'prune' needs a PyTorch model"]
    assert "- crashed: failed at step prune" in markdown.markdown(verdict) and "failed" in markdown.text_table(verdict)
    alone = decide(BASE, {"crashed": crashed}, Budgets(min_speedup=1.2), "latency_p95_ms")
    assert alone["verdict"] == "fail" and alone["selected"] is None


def test_selection_ranks_by_the_interleaved_speedup_and_breaks_ties_by_size():
    rows = {
        "fast-big": {**_row(1.50, 1.40, 1.60), "size_mb": 0.5},
        "fast-small": {**_row(1.45, 1.38, 1.52), "size_mb": 0.2},
        "slow": {**_row(1.20, 1.15, 1.25), "size_mb": 0.1},
    }
    verdict = decide(BASE, rows, Budgets(min_speedup=1.1), "speedup", tie_break="size_mb")
    assert verdict["selected"] == "fast-small"  # its interval overlaps the best one's; the smaller file wins the tie
    assert verdict["selection_rule"] == "speedup tied within the 95% intervals of fast-big, fast-small; size_mb chose"
    rows["fast-small"].update(speedup=1.25, speedup_ci_low=1.22, speedup_ci_high=1.28)  # clearly slower now: no tie
    verdict = decide(BASE, rows, Budgets(min_speedup=1.1), "speedup", tie_break="size_mb")
    assert verdict["selected"] == "fast-big" and verdict["selection_rule"] == "best speedup"
    # no interval on size: plain ranking
    assert decide(BASE, rows, Budgets(min_speedup=1.1), "size_mb", tie_break="speedup")["selected"] == "slow"


def test_the_table_shows_every_judged_metric_and_latencies_measured_together():
    """A generic-task verdict on mean_rel_error shows that column (it showed mean_abs_error only), and a candidate's
    p50 sits beside FP32's from the same interleaved rounds, not the baseline stage's other run."""
    from squeezeflow.report import markdown

    metrics = {"max_abs_error": 0.1, "mean_abs_error": 0.0001, "mean_rel_error": 0.7448, "speedup": 1.37}
    verdict = {
        "task": "generic",
        "budgets": {"max_output_error": 0.01, "min_speedup": 1.0},
        "baseline": {"latency_p50_ms": 30.9},
        "selected": None,
        "candidates": {
            "int8": {
                "metrics": {**metrics, "latency_p50_ms": 47.6, "baseline_latency_p50_ms": 65.2},
                "violations": [{"metric": "mean_rel_error"}],
                "passed": False,
            }
        },
    }
    assert "mean_rel_error" in markdown.columns(verdict)
    head, candidate = ["candidate", *markdown.columns(verdict)], markdown.rows(verdict)[1]
    assert candidate[head.index("mean_rel_error")] == "0.7448 ✗"
    assert candidate[head.index("latency_p50_ms")] == "47.6 (FP32 65.2 alongside)"
