"""Data contracts: Great Expectations checks of the eval, calibration and train files before use.

Each file is summarised into small tables (one row per model input, one row per sample, one row
per feature) and validated with one expectation suite: the arrays the model takes are there with
its dtypes and shapes, no NaN or inf, labels inside the model's classes, every class present in
the eval set when asked (`contracts.all_classes`), and calibration inputs drawn like the eval
inputs (per-feature mean shift, in eval standard deviations; a warning unless `contracts.strict`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow import data
from squeezeflow.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

MAX_SHIFT = 0.5  # calibration feature mean, in eval standard deviations
SHIFT_MOSTLY = 0.95  # share of features that must stay within MAX_SHIFT


def tables(role: str, arrays: dict[str, np.ndarray], specs: list[Any], classes: int, eval_arrays: dict[str, np.ndarray] | None) -> dict[str, pd.DataFrame]:
    """The summaries GX validates for one file (`specs`: the model's ONNX inputs)."""
    import numpy as np
    import pandas as pd

    from squeezeflow.data import _NP_DTYPES

    inputs = []
    for spec in specs:
        arr = arrays.get(spec.name)
        want = list(spec.shape)
        inputs.append({"array": spec.name, "present": arr is not None,
                       "dtype_ok": arr is not None and str(arr.dtype) == _NP_DTYPES.get(spec.type, str(arr.dtype)),
                       "shape_ok": arr is not None and arr.ndim == len(want) and all(not isinstance(w, int) or w == g for w, g in zip(want[1:], arr.shape[1:]))})
    out = {"arrays": pd.DataFrame(inputs)}
    present = [s.name for s in specs if s.name in arrays]
    samples = {f"nonfinite__{n}": (~np.isfinite(arrays[n].reshape(len(arrays[n]), -1))).sum(axis=1) for n in present if arrays[n].dtype.kind == "f"}
    if data.LABELS in arrays and classes > 0:  # class labels (classification); other tasks' labels are targets
        samples["label"] = arrays[data.LABELS].astype(np.int64)
    if samples:
        out["samples"] = pd.DataFrame(samples)
    if role == "calibration" and eval_arrays is not None:
        shifts = []
        for n in present:
            if n in eval_arrays and arrays[n].shape[1:] == eval_arrays[n].shape[1:]:
                cal, ev = (a.reshape(len(a), -1).astype(np.float64) for a in (arrays[n], eval_arrays[n]))
                scale = ev.std(axis=0) + 1e-3 * (np.abs(ev).max() + 1e-12)
                shifts.append(np.abs(cal.mean(axis=0) - ev.mean(axis=0)) / scale)
        if shifts:
            out["features"] = pd.DataFrame({"shift": np.concatenate(shifts)})
    return out


def expectations(role: str, frames: dict[str, pd.DataFrame], classes: int, all_classes: bool = False) -> list[tuple[str, Any]]:
    """(table, expectation) pairs for one file; every class in eval only with `all_classes`."""
    import great_expectations as gx

    e = gx.expectations
    checks = [("arrays", e.ExpectColumnValuesToBeInSet(column=c, value_set=[True])) for c in ("present", "dtype_ok", "shape_ok")]
    if "samples" in frames:
        cols = list(frames["samples"].columns)
        checks += [("samples", e.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=0)) for c in cols if c.startswith("nonfinite__")]
        if "label" in cols:
            checks.append(("samples", e.ExpectColumnValuesToBeBetween(column="label", min_value=0, max_value=classes - 1)))
            if role == "eval" and all_classes:
                checks.append(("samples", e.ExpectColumnDistinctValuesToContainSet(column="label", value_set=list(range(classes)))))
    if "features" in frames:
        checks.append(("features", e.ExpectColumnValuesToBeBetween(column="shift", max_value=MAX_SHIFT, mostly=SHIFT_MOSTLY)))
    return checks


def validate(files: dict[str, Path], specs: list[Any], classes: int, strict: bool = False, all_classes: bool = False) -> dict[str, Any]:
    """Validate every data file; returns the results (for reports/data.json and the HTML report).

    The calibration-vs-eval distribution check is a warning (`severity: warning`, success false,
    the statistic in `detail`) unless `strict`; every other check is an error.

    Args:
        files: role (eval, calibration, train) -> npz path.
        specs: the model's ONNX inputs (`InferenceSession.get_inputs()`).
        classes: the model's number of classes.
        strict: a calibration distribution shift fails too.
        all_classes: the eval set must hold every class.

    Raises:
        DataError: the first failed error-severity expectation, naming the file, the expectation and the array.
    """
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
    source = ctx.data_sources.add_pandas("squeezeflow-data")
    loaded = {role: data.load(path, role) for role, path in files.items()}
    results = []
    for role, path in files.items():
        frames = tables(role, loaded[role], specs, classes, loaded.get("eval"))
        for i, (table, expectation) in enumerate(expectations(role, frames, classes, all_classes)):
            name = f"{role}-{table}-{i}"
            batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
            suite = ctx.suites.add(gx.ExpectationSuite(name=name))
            suite.add_expectation(expectation)
            run = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
            frame = frames[table]
            index = ["array"] if table == "arrays" else []
            outcome = run.run(batch_parameters={"dataframe": frame}, result_format={"result_format": "COMPLETE", **({"unexpected_index_column_names": index} if index else {})}).results[0]
            entry = _entry(role, path, table, expectation, outcome)
            entry["severity"] = "warning" if table == "features" and not strict else "error"
            results.append(entry)
    failed = [r for r in results if not r["success"] and r["severity"] == "error"]
    if failed:
        first = failed[0]
        error = DataError(f"{first['path']}: data contract failed: {first['expectation']} on {first['what']} ({first['detail']}). "
                          f"Fix the {first['file']} data{' or the model' if first['table'] == 'arrays' else ''}; reports/data.json lists every check.")
        error.results = results
        raise error
    return {"results": results}


def _entry(role: str, path: Path, table: str, expectation: Any, outcome: Any) -> dict[str, Any]:
    """One check's result, with a human sentence of what failed."""
    column = expectation.column
    res = outcome.result or {}
    if table == "arrays":
        bad = [row["array"] for row in res.get("unexpected_index_list") or []]
        check = column.replace("_ok", "")
        what = f"array {bad[0]!r}" if bad else "the arrays"
        detail = f"{check} matches the model input" if outcome.success else f"{check} does not match the model input"
    elif column.startswith("nonfinite__"):
        what, detail = f"array {column.split('__', 1)[1]!r}", f"{res.get('unexpected_count') or 0} samples with NaN or inf"
    elif type(expectation).__name__ == "ExpectColumnDistinctValuesToContainSet":
        missing = res.get("partial_missing_list") or []
        what, detail = "array 'labels'", f"classes {sorted(missing)} missing" if missing else "every class present"
    elif column == "label":
        what, detail = "array 'labels'", f"{res.get('unexpected_count') or 0} labels outside 0..{int(expectation.max_value)}" + (f", e.g. {res['partial_unexpected_list'][0]}" if res.get("partial_unexpected_list") else "")
    else:
        what, detail = "the calibration inputs", f"{res.get('unexpected_percent') or 0:.1f}% of features shifted more than {MAX_SHIFT} eval standard deviations from the eval set"
    return {"file": role, "path": str(path), "table": table, "expectation": type(expectation).__name__, "column": column, "what": what,
            "success": bool(outcome.success), "detail": detail}
