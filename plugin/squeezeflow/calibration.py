"""Calibration data and activation ranges, computed once and reused by every static quantization."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def subset(arrays: dict[str, np.ndarray], count: int, seed: int) -> dict[str, np.ndarray]:
    """A seeded subset of `count` samples (in file order) of every array, labels included."""
    import numpy as np

    n = len(next(iter(arrays.values())))
    pick = np.sort(np.random.default_rng(seed).permutation(n)[:count])
    return {k: v[pick] for k, v in arrays.items()}


def reader(inputs: dict[str, np.ndarray], batch: int) -> Any:
    """A fresh onnxruntime CalibrationDataReader over the input arrays."""
    from onnxruntime.quantization import CalibrationDataReader

    from squeezeflow import data

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = data.batches(inputs, batch)

        def get_next(self):
            return next(self._it, None)

    return Reader()


def ranges(model: Path, inputs: dict[str, np.ndarray], method: str, workdir: Path, num_bins: int = 2048, percentile: float = 99.999) -> Path:
    """Collect activation ranges of `model` and save them as an ORT calibration cache.

    ORT's `quantize_static` gives the entropy calibrator 128 histogram bins, which makes it pick
    the MinMax ranges; computing ranges here lets entropy and percentile use `num_bins`.

    Ranges do not depend on how weights are quantized, so a cache already in `workdir` for the
    same method, histogram and samples is reused (auto builds per-channel and per-tensor variants).

    Returns:
        The cache file, to pass as `quantize_static(..., calibration_cache_path=...)`.
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    from squeezeflow.artifacts import side_file

    samples = len(next(iter(inputs.values())))
    cache = workdir / f"ranges-{method}-{num_bins}-{percentile}-{samples}.json"
    if cache.is_file():
        return cache
    calibrator = create_calibrator(
        model,
        augmented_model_path=str(workdir / f"augmented-{method}.onnx"),
        calibrate_method=getattr(CalibrationMethod, METHODS[method]),
        extra_options={"num_bins": num_bins, "percentile": percentile},
        use_external_data_format=side_file(model).is_file(),
    )
    with contextlib.redirect_stdout(io.StringIO()):  # ORT prints histogram progress to stdout
        # histogram collectors cannot take a ragged last batch
        calibrator.collect_data(reader(inputs, 32 if method == "minmax" else 1))
        save_tensors_data(calibrator.compute_data(), cache)
    return cache
