"""Stages that read data stream it: check-data's summaries and evaluate's outputs equal the whole-file computation."""

from types import SimpleNamespace

import numpy as np
import pytest

from squeezeflow import data
from squeezeflow.data import contracts
from squeezeflow.onnx import sessions


def test_contract_summary_streamed_equals_whole_file(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.normal(3.0, 2.0, (203, 4, 5)) * rng.uniform(0.1, 10, (1, 4, 5))).astype(np.float32)
    x[17, 1, 2], x[150, 0, 0], x[150, 3, 4] = np.nan, np.inf, -np.inf
    ids = rng.integers(0, 50, (203, 7)).astype(np.int64)
    labels = rng.integers(0, 10, 203)
    path = tmp_path / "data.npz"
    np.savez(path, x=x, ids=ids, labels=labels)
    specs = [
        SimpleNamespace(name="x", shape=["batch", 4, 5], type="tensor(float)"),
        SimpleNamespace(name="ids", shape=["batch", 7], type="tensor(int64)"),
    ]
    # 16 samples a batch: 13 batches, the last ragged
    summary = contracts.summarize("eval", path, specs, batch_bytes=16 * 80)
    assert summary["samples"] == 203 and np.array_equal(summary["labels"], labels)
    expected = (~np.isfinite(x.reshape(203, -1))).sum(axis=1)
    # int inputs cannot be NaN
    assert (
        np.array_equal(summary["nonfinite"]["x"], expected) and expected[150] == 2 and "ids" not in summary["nonfinite"]
    )
    count, mean, m2, peak = summary["features"]["ids"]
    flat = ids.reshape(203, -1).astype(np.float64)
    assert count == 203 and peak == np.abs(flat).max()
    np.testing.assert_allclose(mean, flat.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(np.sqrt(m2 / count), flat.std(axis=0), rtol=1e-10)
    clean = np.nan_to_num(x, posinf=0, neginf=0)  # and on finite floats, the float path
    np.savez(path, x=clean, ids=ids, labels=labels)
    count, mean, m2, _ = contracts.summarize("eval", path, specs, batch_bytes=16 * 80)["features"]["x"]
    flat = clean.reshape(203, -1).astype(np.float64)
    np.testing.assert_allclose(mean, flat.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(np.sqrt(m2 / count), flat.std(axis=0), rtol=1e-8)


def test_evaluate_outputs_streamed_equal_whole_file(digits_onnx, digits_dir):
    path = digits_dir / "eval.npz"
    sess = sessions.session(digits_onnx)
    whole = sessions.run_outputs(sess, data.load(path, "eval"), 256)
    size = data.batch_for(data.head(path, "eval", 1), budget=7 * 256)  # 7 samples of 8x8 float32 a batch
    assert size == 7
    streamed = sessions.run_batches(sess, data.stream(path, "eval", range(data.samples_in(path, "eval")), size))
    assert streamed.keys() == whole.keys()
    for name in whole:
        assert streamed[name].shape == whole[name].shape
        np.testing.assert_allclose(streamed[name], whole[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("budget,most,expected", [(32 << 20, 256, 256), (1, 256, 1), (10 * 256, 4, 4)])
def test_batch_for_bounds(budget, most, expected):
    assert (
        data.batch_for({"input": np.zeros((3, 1, 8, 8), np.float32), "labels": np.zeros(3)}, budget, most) == expected
    )


def test_bootstrap_in_chunks_matches_the_normal_interval():
    from squeezeflow.evaluate import stats

    # 2000 resamples of 50,000 would be 800 MB at once; drawn 10 at a time here
    values = np.random.default_rng(1).exponential(1.0, 50_000)
    mean, lo, hi = stats.bootstrap_mean(values, seed=0)
    half = 1.96 * values.std() / np.sqrt(len(values))
    assert mean == pytest.approx(values.mean())
    assert lo == pytest.approx(mean - half, abs=0.15 * half) and hi == pytest.approx(mean + half, abs=0.15 * half)
