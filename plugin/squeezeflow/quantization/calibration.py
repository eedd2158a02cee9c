"""Calibration data and activation ranges, computed once and reused by every static quantization."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow import data
from squeezeflow.data.artifacts import side_file

if TYPE_CHECKING:
    import numpy as np

# name -> the CalibrationMethod quantize_static is told
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile", "mse": "MinMax"}


def pick(samples: int, count: int, seed: int) -> list[int]:
    """A seeded choice of `count` of `samples` indices, in file order."""
    import numpy as np

    return np.sort(np.random.default_rng(seed).permutation(samples)[:count]).tolist()


def subset(arrays: dict[str, np.ndarray], count: int, seed: int) -> dict[str, np.ndarray]:
    """A seeded subset of `count` samples (in file order) of every array, labels included."""
    rows = pick(len(next(iter(arrays.values()))), count, seed)
    return {k: v[rows] for k, v in arrays.items()}


def reader(inputs: dict[str, np.ndarray], batch: int) -> Any:
    """A fresh onnxruntime CalibrationDataReader over the input arrays (a copy starts over: GPTQ deep-copies its
    reader).
    """
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.start = 0

        def get_next(self):
            if self.start >= data.samples(inputs):
                return None
            self.start += batch
            return data.feed({k: v[self.start - batch : self.start] for k, v in data.inputs_of(inputs).items()})

    return Reader()


def ranges(
    model: Path,
    batches: Callable[[int], Iterator[dict[str, np.ndarray]]],
    samples: int,
    method: str,
    workdir: Path,
    num_bins: int = 2048,
    percentile: float = 99.999,
    batch_bytes: int = 64 << 20,
) -> Path:
    """Collect activation ranges of `model`, streaming, and save them as an ORT calibration cache.

    ONNX Runtime's calibrators keep every intermediate tensor of every sample until they compute
    (13 GB for 256 ImageNet images); here each batch's tensors are folded into per-tensor
    statistics and dropped, so memory is one batch of activations (about `batch_bytes`), whatever
    the sample count. `batches(n)` yields the `samples` inputs in batches of n, afresh on each
    call (e.g. `data.stream`, which reads them from the file as they are needed). minmax takes one pass; the histogram
    methods take two: exact min/max first,
    then histograms over those fixed ranges, which add up exactly to the histograms ORT builds from
    all samples at once, so entropy and percentile give ORT's own thresholds (tested). mse picks,
    per tensor, the clipping range whose 8-bit quantization has the least expected squared error
    over that histogram.

    Ranges do not depend on how weights are quantized, so a cache already in `workdir` for the
    same model file, method, histogram and samples is reused (auto builds per-channel and per-tensor variants).

    Returns:
        The cache file, to pass as `quantize_static(..., calibration_cache_path=...,
        calibrate_method=CalibrationMethod[METHODS[method]])`.
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import HistogramCollector, TensorsData, create_calibrator, save_tensors_data

    cache = workdir / f"ranges-{model.stem}-{method}-{num_bins}-{percentile}-{samples}.json"
    if cache.is_file():
        return cache
    # ORT's histogram calibrator selects the tensors (as quantize_static names them) and writes the
    # model with each of them as an output; its own collection is not used
    calibrator = create_calibrator(
        model,
        augmented_model_path=str(workdir / "augmented.onnx"),
        calibrate_method=CalibrationMethod.Percentile,
        use_external_data_format=side_file(model).is_file(),
    )
    sess, names = calibrator.infer_session, sorted(calibrator.tensors_to_calibrate)
    per_batch = _batch_size(sess, batches, names, batch_bytes)
    symmetric = method == "percentile"  # ORT's percentile calibrator histograms absolute values, entropy signed ones
    lo, hi, alo, ahi = _extremes(sess, batches, samples, names, per_batch, absolute=symmetric)
    if method == "minmax":
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, {n: (lo[n], hi[n]) for n in names}), cache)
        return cache
    edges = {n: (alo[n], ahi[n]) if symmetric else (-max(-lo[n], hi[n]), max(-lo[n], hi[n])) for n in names}
    hist = _histograms(sess, batches, samples, names, per_batch, edges, num_bins, symmetric)
    if method == "mse":
        save_tensors_data(
            TensorsData(CalibrationMethod.MinMax, {n: _mse_range(*hist[n], lo[n], hi[n]) for n in names}), cache
        )
        return cache
    collector = HistogramCollector(
        method=method,
        symmetric=symmetric,
        num_bins=num_bins,
        num_quantized_bins=128,
        percentile=percentile,
        scenario="same",
    )
    for n in names:  # the histograms ORT's collector would have built from every sample at once
        counts, bin_edges = hist[n]
        collector.histogram_dict[n] = (
            (counts, bin_edges, lo[n], hi[n]) if symmetric else (counts, bin_edges, lo[n], hi[n], edges[n][1])
        )
    with contextlib.redirect_stdout(io.StringIO()):  # ORT prints its progress to stdout
        found = collector.compute_collection_result()
    save_tensors_data(TensorsData(getattr(CalibrationMethod, METHODS[method]), found), cache)
    return cache


def _outputs(sess: Any, feeds: Iterator[dict[str, np.ndarray]], names: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """The calibrated tensors of each batch, flattened (one batch in memory at a time)."""
    for feed in feeds:
        yield {n: v.reshape(-1) for n, v in zip(names, sess.run(names, data.feed(feed)))}


def _batch_size(sess: Any, batches: Callable[[int], Iterator[dict]], names: list[str], batch_bytes: int) -> int:
    """Samples per batch so that one batch of calibrated tensors takes about `batch_bytes`."""
    fixed = data.as_stored(sess.get_inputs())[0].shape[0]
    if isinstance(fixed, int):  # a model exported with a fixed batch takes only that
        return fixed
    first = next(_outputs(sess, batches(1), names))
    return max(1, min(64, batch_bytes // max(1, sum(v.nbytes for v in first.values()))))


def _extremes(
    sess: Any, batches: Callable[[int], Iterator[dict]], samples: int, names: list[str], per_batch: int, absolute: bool
) -> tuple[dict, dict, dict, dict]:
    """Per tensor: min, max, and (when `absolute`) min and max of absolute values, over all samples."""
    import numpy as np

    lo, hi, alo, ahi = {}, {}, {}, {}
    for outs in progress(_outputs(sess, batches(per_batch), names), samples, per_batch, "calibration ranges"):
        for n, v in outs.items():
            if not v.size:
                v = np.zeros(1, v.dtype)
            pairs = [(lo, np.nanmin(v), min), (hi, np.nanmax(v), max)]
            if absolute:
                a = np.abs(v)
                pairs += [(alo, np.nanmin(a), min), (ahi, np.nanmax(a), max)]
            for store, value, pick in pairs:
                store[n] = value if n not in store else pick(store[n], value)
    return lo, hi, alo, ahi


def _histograms(
    sess: Any,
    batches: Callable[[int], Iterator[dict]],
    samples: int,
    names: list[str],
    per_batch: int,
    edges: dict,
    num_bins: int,
    absolute: bool,
) -> dict:
    """Per tensor: (counts, bin edges) of `num_bins` bins over the fixed range `edges[name]`, summed over batches."""
    import numpy as np

    hist: dict[str, list] = {}
    for outs in progress(_outputs(sess, batches(per_batch), names), samples, per_batch, "calibration histograms"):
        for n, v in outs.items():
            counts, bin_edges = np.histogram(np.abs(v) if absolute else v, num_bins, range=edges[n])
            if n in hist:
                hist[n][0] += counts
            else:
                hist[n] = [counts, bin_edges.astype(v.dtype)]
    return {n: tuple(h) for n, h in hist.items()}


def _mse_range(
    counts: np.ndarray, bin_edges: np.ndarray, lo: np.ndarray, hi: np.ndarray, levels: int = 256, steps: int = 200
) -> tuple:
    """The clipping range [max(lo, -t), min(hi, t)], t from the largest magnitude down to 1/1000 of it,
    whose `levels`-level quantization has the least expected squared error over the histogram:
    rounding error step^2/12 inside, the distance to the bound outside."""
    import numpy as np

    centers = ((bin_edges[:-1] + bin_edges[1:]) / 2).astype(np.float64)
    weights = counts.astype(np.float64)
    low0, high0 = min(float(lo), 0.0), max(float(hi), 0.0)
    best, best_err = (lo, hi), np.inf
    for t in np.geomspace(max(-low0, high0), max(-low0, high0) * 1e-3, steps):
        low, high = max(low0, -t), min(high0, t)
        if high <= low:
            break
        clipped = np.clip(centers, low, high)
        err = float(
            np.sum(
                weights
                * (
                    (centers - clipped) ** 2
                    + np.where(centers == clipped, ((high - low) / (levels - 1)) ** 2 / 12, 0.0)
                )
            )
        )
        if err < best_err:
            best, best_err = (np.array(low, lo.dtype), np.array(high, hi.dtype)), err
    return best


def progress(items: Iterator, samples: int, per_batch: int, what: str) -> Iterator:
    """A progress bar on stderr over the batches (quiet when stderr is not a terminal)."""

    from tqdm import tqdm

    return tqdm(
        items, total=-(-samples // per_batch), desc=what, unit="batch", leave=False, disable=not sys.stderr.isatty()
    )
