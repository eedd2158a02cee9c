"""The benchmarks run (smoke mode) so they never rot; their figures are not asserted as timings."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def _smoke(bench: str, tmp_path) -> dict:
    """Run bench/BENCH.py --smoke; its JSON report."""
    out = tmp_path / f"{bench}.json"
    proc = subprocess.run([sys.executable, ROOT / f"bench/{bench}.py", "--smoke", "--out", out], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_quantization_bench_smoke(tmp_path):
    report = _smoke("quantization", tmp_path)
    variants = report["models"]["digits-cnn"]["variants"]
    assert set(variants) == {"fp32", "ort-dynamic-default", "ort-static-default", "squeezeflow-static", "squeezeflow-dynamic", "squeezeflow-auto"}
    assert all(v["size_ratio"] > 3 for k, v in variants.items() if k != "fp32")
    assert report["models"]["digits-cnn"]["auto"]["chosen"] in {"fp32"} | {f"{m}-{g}" for m in ("static", "dynamic") for g in ("per-channel", "per-tensor")}
    hard = report["hard_cases"]
    assert not hard["ptq-static-per-tensor"]["meets_budget"]  # the constructed case really breaks per-tensor INT8
    assert hard["fallback"]["kept_float"]


def test_pruning_bench_smoke(tmp_path):
    rows = _smoke("pruning", tmp_path)["models"]["digits-cnn"]
    assert set(rows) == {"fp32", "structured-50", "unstructured-80", "cluster-16", "prune-cluster-int8"}
    assert rows["structured-50"]["params"] < 0.5 * rows["fp32"]["params"]
    assert rows["unstructured-80"]["sparsity"] >= 0.79
    assert rows["cluster-16"]["file_ratio"] > 3


def test_distillation_bench_smoke(tmp_path):
    rows = _smoke("distillation", tmp_path)["models"]["digits-cnn"]
    assert {"fp32", "teacher-digits-mlp", "teacher-digits-cnn-shallow", "hard-labels-only", "kd-cnn", "kd-all", "kd-cnn-int8"} <= set(rows)
    assert rows["kd-all"]["teachers"] == ["digits-cnn/1", "digits-mlp/1", "digits-cnn-shallow/1"]
    assert all(rows[k]["param_ratio"] <= 0.25 for k in rows if k.startswith(("kd", "hard")))
    assert rows["hard-labels-only"]["hard_labels_only"] and not rows["kd-cnn"]["hard_labels_only"]
    assert rows["kd-cnn-int8"]["size_ratio"] > 8


def test_gate_stability_bench_smoke(tmp_path):
    result = _smoke("gate_stability", tmp_path)["models"]["digits-cnn"]
    below, above = result["sides"]["below"], result["sides"]["above"]
    assert below["min_speedup"] < result["measured_speedup"] < above["min_speedup"]
    assert below["expected"] == "pass" and above["expected"] == "fail" and len(below["verdicts"]) == 2
    assert result["flips"] == below["flips"] + above["flips"]
