"""The streaming calibrator: ORT's own ranges, one batch of activations in memory at a time."""

import contextlib
import io

import numpy as np
import pytest
from onnxruntime.quantization import CalibrationMethod
from onnxruntime.quantization.calibrate import create_calibrator, load_tensors_data

from squeezeflow import data
from squeezeflow.quantization import calibration


def _ort_ranges(model, inputs, method, workdir, num_bins=2048, percentile=99.999):
    """What ONNX Runtime's own calibrator computes, every sample kept until the end (its way)."""
    calibrator = create_calibrator(
        model,
        augmented_model_path=str(workdir / f"ort-{method}.onnx"),
        calibrate_method=getattr(CalibrationMethod, calibration.METHODS[method]),
        extra_options={"num_bins": num_bins, "percentile": percentile},
    )
    with contextlib.redirect_stdout(io.StringIO()):
        calibrator.collect_data(calibration.reader(inputs, 1))
        return {k: tuple(float(np.ravel(x)[0]) for x in v.range_value) for k, v in calibrator.compute_data().items()}


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_streamed_ranges_equal_onnxruntime_calibrators(method, digits_onnx, digits_dir, tmp_path):
    inputs = {"input": np.load(digits_dir / "calibration.npz")["input"][:96]}
    # several samples per batch, ragged last batch
    ours = calibration.ranges(digits_onnx, lambda n: data.batches(inputs, n), 96, method, tmp_path, batch_bytes=4096)
    streamed = {k: tuple(float(np.ravel(x)[0]) for x in v.range_value) for k, v in load_tensors_data(ours).items()}
    expected = _ort_ranges(digits_onnx, inputs, method, tmp_path)
    assert streamed.keys() == expected.keys() and len(streamed) > 5
    for name, (low, high) in expected.items():
        assert streamed[name] == pytest.approx((low, high), rel=1e-6, abs=1e-7), name
    if method != "minmax":  # the histogram methods clip somewhere, or the test would not tell them from minmax
        mins = _ort_ranges(digits_onnx, inputs, "minmax", tmp_path)
        assert any(streamed[n][1] < mins[n][1] * 0.999 for n in streamed)


def _quantization_mse(values, low, high):
    scale = (high - low) / 255
    q = np.clip(np.round((values - low) / scale), 0, 255) * scale + low
    return float(np.mean((values - q) ** 2))


def test_mse_clips_a_long_tail_and_keeps_a_uniform_distribution_whole():
    rng = np.random.default_rng(0)
    uniform = rng.uniform(-1, 1, 100_000).astype(np.float32)
    laplace = rng.laplace(0, 1, 100_000).astype(np.float32)
    for values, clipped in ((uniform, False), (laplace, True)):
        t = np.float32(np.abs(values).max())
        counts, edges = np.histogram(values, 2048, range=(-t, t))
        low, high = (
            float(x) for x in calibration._mse_range(counts, edges.astype(np.float32), values.min(), values.max())
        )
        assert low < 0 < high
        assert (max(-low, high) < 0.95 * float(t)) is clipped  # the largest magnitude is cut
        # measured on the samples themselves, not on the histogram it searched
        assert _quantization_mse(values, low, high) <= _quantization_mse(
            values, float(values.min()), float(values.max())
        ) * (0.9 if clipped else 1.01)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_a_subset_of_rows_is_read_without_the_rest_of_the_file(save, tmp_path):
    from squeezeflow.errors import DataError

    rng = np.random.default_rng(0)
    arrays = {"input": rng.normal(size=(300, 3, 8, 8)).astype(np.float32), "labels": rng.integers(0, 10, 300)}
    path = tmp_path / "cal.npz"
    save(path, **arrays)
    rows = calibration.pick(300, 40, seed=3)
    picked = data.load(path, "calibration", rows=rows)
    assert data.samples_in(path, "calibration") == 300
    for name, full in arrays.items():
        np.testing.assert_array_equal(picked[name], full[rows])
    # the same subset as before
    np.testing.assert_array_equal(picked["input"], calibration.subset(arrays, 40, seed=3)["input"])
    assert data.head(path, "calibration", 1000)["labels"].shape == (300,)
    streamed = list(data.stream(path, "calibration", rows, 16))
    assert [len(b["input"]) for b in streamed] == [16, 16, 8] and all(set(b) == {"input"} for b in streamed)
    np.testing.assert_array_equal(np.concatenate([b["input"] for b in streamed]), arrays["input"][rows])
    truncated = tmp_path / "short.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="not a readable .npz|not an .npz"):
        data.load(truncated, "calibration", rows=rows)


def test_arrays_numpy_must_read_whole_still_stream(tmp_path):
    """A Fortran-order array cannot be read row by row from the file: it is loaded, then batched."""
    rng = np.random.default_rng(1)
    inputs = np.asfortranarray(rng.normal(size=(50, 6)).astype(np.float32))
    path = tmp_path / "f.npz"
    np.savez(path, input=inputs, labels=np.arange(50))
    rows = calibration.pick(50, 20, seed=0)
    batches = list(data.stream(path, "calibration", rows, 8))
    assert [len(b["input"]) for b in batches] == [8, 8, 4]
    np.testing.assert_array_equal(np.concatenate([b["input"] for b in batches]), inputs[rows])
    np.testing.assert_array_equal(data.load(path, "calibration", rows=rows)["labels"], np.arange(50)[rows])


def test_arrays_of_different_lengths_are_refused_when_rows_are_asked(tmp_path):
    from squeezeflow.errors import DataError

    path = tmp_path / "ragged.npz"
    np.savez(path, input=np.zeros((100, 1, 8, 8), np.float32), labels=np.zeros(50, np.int64))
    with pytest.raises(DataError, match="different numbers of samples"):
        data.head(path, "calibration", 80)
