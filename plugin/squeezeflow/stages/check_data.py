"""check-data: the data contracts (Great Expectations) of every data file, before any stage uses it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from squeezeflow import artifacts, contracts, data, modelio
from squeezeflow.config import Params
from squeezeflow.evaluate import classification
from squeezeflow.stages import REPORTS_DIR, SOURCE_DIR


def check_data(params: Params, source_dir: Path = SOURCE_DIR, reports_dir: Path = REPORTS_DIR) -> dict[str, Any]:
    """Validate data.eval, data.calibration and data.train against the source model; write reports/data.json.

    Raises:
        DataError: a failed expectation (exit 2), after writing reports/data.json with every check.
    """
    from squeezeflow.errors import DataError

    artifacts.read_manifest(source_dir)
    sess = modelio.session(artifacts.model_path(source_dir))
    specs = sess.get_inputs()
    eval_arrays = data.load(params.data.eval, "eval")
    runnable = all(s.name in eval_arrays for s in specs)  # if not, the first contract says which array is missing
    if runnable:
        probe = {s.name: eval_arrays[s.name][:2] for s in specs}
        classes = int(classification.check_logits(modelio.run(sess, probe), len(next(iter(probe.values()))), str(artifacts.model_path(source_dir))).shape[1])
    else:
        classes = 0
    files = {role: path for role, path in (("eval", params.data.eval), ("calibration", params.data.calibration), ("train", params.data.train)) if path is not None}
    reports_dir.mkdir(parents=True, exist_ok=True)
    out = reports_dir / "data.json"
    try:
        result = contracts.validate(files, specs, classes)
    except DataError as e:
        out.write_text(json.dumps({"error": str(e), "results": getattr(e, "results", [])}, indent=2, sort_keys=True) + "\n")
        raise
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"check-data: {len(result['results'])} expectations met on {', '.join(files)}")
    return result
