"""check-data: the data contracts (Great Expectations) of every data file, before any stage uses it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from squeezeflow import data
from squeezeflow.config import Params
from squeezeflow.data import artifacts, contracts
from squeezeflow.errors import DataError
from squeezeflow.evaluate import tasks
from squeezeflow.onnx import sessions
from squeezeflow.stages import REPORTS_DIR, SOURCE_DIR

PROBE_ROWS = 64  # eval samples read to find two finite ones to run the model on


def check_data(params: Params, source_dir: Path = SOURCE_DIR, reports_dir: Path = REPORTS_DIR) -> dict[str, Any]:
    """Validate data.eval, data.calibration and data.train against the source model; write reports/data.json.

    Raises:
        DataError: a failed expectation (exit 2), after writing reports/data.json with every check.
    """

    artifacts.read_manifest(source_dir)
    sess = sessions.session(artifacts.model_path(source_dir))
    specs = data.as_stored(sess.get_inputs())  # params.yaml's data.inputs: constants are not in the files
    eval_arrays = data.head(params.data.eval, "eval", PROBE_ROWS)
    runnable = all(s.name in eval_arrays for s in specs)  # if not, the first contract says which array is missing
    classes = 0
    if runnable:  # what evaluate refuses, refused here first: names, ranks, sizes, dtypes, extra arrays, label types
        data.check_inputs(eval_arrays, specs, params.data.eval, data.samples_in(params.data.eval, "eval"))
        if data.LABELS in eval_arrays and params.data.task == "classification":
            data.check_label_type(eval_arrays[data.LABELS], params.data.eval)
        if params.data.train is not None and params.data.task == "classification":
            train_labels = data.head(params.data.train, "train", 1).get(data.LABELS)
            if train_labels is not None:
                data.check_label_type(train_labels, params.data.train)
        finite = data.finite_rows(eval_arrays, 2, params.data.eval)
        probe = {s.name: finite[s.name] for s in specs}
        outputs = tasks.check_outputs(
            sessions.run_outputs(sess, probe),
            data.samples(probe),
            params.data.task,
            str(artifacts.model_path(source_dir)),
        )
        # 0: labels are not classes
        classes = int(next(iter(outputs.values())).shape[1]) if params.data.task == "classification" else 0
        if params.data.task == "classification" and params.data.classes is not None and params.data.classes != classes:
            raise DataError(
                f"params data.classes is {params.data.classes}, but the model "
                f"{artifacts.model_path(source_dir)} outputs {classes} classes. "
                "Fix data.classes (or leave it out: it defaults to the model's output width)."
            )
    files = {
        role: path
        for role, path in (
            ("eval", params.data.eval),
            ("calibration", params.data.calibration),
            ("train", params.data.train),
        )
        if path is not None
    }
    reports_dir.mkdir(parents=True, exist_ok=True)
    out = reports_dir / "data.json"
    try:
        result = contracts.validate(files, specs, classes, params.contracts.strict, params.contracts.all_classes)
    except DataError as e:
        out.write_text(
            json.dumps({"error": str(e), "results": getattr(e, "results", [])}, indent=2, sort_keys=True) + "\n"
        )
        raise
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    warnings = [r for r in result["results"] if not r["success"]]
    for w in warnings:
        print(
            f"warning: {w['path']}: {w['expectation']} on {w['what']} ({w['detail']}); set contracts.strict: "
            "true to make this an error.",
            file=sys.stderr,
        )
    met = len(result["results"]) - len(warnings)
    print(
        f"check-data: {met} expectations met on {', '.join(files)}"
        + (f", {len(warnings)} warning{'s' if len(warnings) > 1 else ''}" if warnings else "")
    )
    return result
