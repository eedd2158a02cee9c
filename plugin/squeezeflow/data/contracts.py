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
from squeezeflow.data import _NP_DTYPES
from squeezeflow.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

MAX_SHIFT = 0.5  # calibration feature mean, in eval standard deviations
SHIFT_MOSTLY = 0.95  # share of features that must stay within MAX_SHIFT
FEATURE_ROLES = ("eval", "calibration")  # the files whose per-feature statistics are compared


def summarize(role: str, path: Path, specs: list[Any], batch_bytes: int = 2 << 20) -> dict[str, Any]:
    """What the contracts need of one file, in one streamed pass (memory: one batch, whatever the sample count).

    Returns:
        first: its first sample's arrays (names, dtypes, shapes); samples: the sample count;
        nonfinite: input name -> NaN/inf count per sample (float inputs); labels: the `labels`
        array or None; features (eval and calibration files): input name -> (count, mean, sum of
        squared deviations, max |x|) per feature, merged batch by batch (Chan et al.), float64.
    """
    import numpy as np

    first, samples = data.head(path, role, 1), data.samples_in(path, role)
    present = [s.name for s in specs if s.name in first]
    nonfinite: dict[str, list[np.ndarray]] = {n: [] for n in present if first[n].dtype.kind == "f"}
    features: dict[str, tuple] = {}
    for batch in data.stream(path, role, range(samples), data.batch_for(first, batch_bytes)):
        for n in present:
            flat = batch[n].reshape(len(batch[n]), -1)
            if n in nonfinite:
                nonfinite[n].append((~np.isfinite(flat)).sum(axis=1))
            if role in FEATURE_ROLES:  # the calibration-vs-eval shift is all they are for
                features[n] = _merge(features.get(n), flat.astype(np.float64))
    return {
        "first": first,
        "samples": samples,
        "nonfinite": {n: np.concatenate(v) for n, v in nonfinite.items()},
        "labels": data.labels(path, role),
        "features": features,
    }


def _merge(acc: tuple | None, x: np.ndarray) -> tuple:
    """Running (count, mean, M2, max |x|) per column, with batch `x` folded in (Chan, Golub and LeVeque's pairwise
    update).
    """
    import numpy as np

    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf samples: the non-finite contract names them
        n, mean = len(x), x.mean(axis=0)
        m2, peak = ((x - mean) ** 2).sum(axis=0), float(np.abs(x).max())
        if acc is None:
            return n, mean, m2, peak
        n0, mean0, m20, peak0 = acc
        delta, total = mean - mean0, n0 + n
        return total, mean0 + delta * n / total, m20 + m2 + delta**2 * n0 * n / total, max(peak0, peak)


def tables(
    role: str, summary: dict[str, Any], specs: list[Any], classes: int, eval_summary: dict[str, Any] | None
) -> dict[str, pd.DataFrame]:
    """The tables GX validates for one file (`summary` from `summarize`; `specs`: the model's ONNX inputs)."""
    import numpy as np
    import pandas as pd

    first = summary["first"]
    inputs = []
    for spec in specs:
        arr = first.get(spec.name)
        want = list(spec.shape)
        inputs.append(
            {
                "array": spec.name,
                "present": arr is not None,
                "dtype_ok": arr is not None and str(arr.dtype) == _NP_DTYPES.get(spec.type, str(arr.dtype)),
                "shape_ok": arr is not None
                and arr.ndim == len(want)
                and all(not isinstance(w, int) or w == g for w, g in zip(want[1:], arr.shape[1:])),
            }
        )
    out = {"arrays": pd.DataFrame(inputs)}
    samples = {f"nonfinite__{n}": counts for n, counts in summary["nonfinite"].items()}
    if summary["labels"] is not None and classes > 0:  # class labels (classification); other tasks' labels are targets
        samples["label"] = summary["labels"].astype(np.int64)
    if samples:
        out["samples"] = pd.DataFrame(samples)
    if role == "calibration" and eval_summary is not None:
        shifts = []
        for n, (_, mean, _, _) in summary["features"].items():
            if n in eval_summary["features"] and first[n].shape[1:] == eval_summary["first"][n].shape[1:]:
                count, ev_mean, ev_m2, ev_peak = eval_summary["features"][n]
                scale = np.sqrt(ev_m2 / count) + 1e-3 * (ev_peak + 1e-12)
                shifts.append(np.abs(mean - ev_mean) / scale)
        if shifts:
            out["features"] = pd.DataFrame({"shift": np.concatenate(shifts)})
    return out


def expectations(
    role: str, frames: dict[str, pd.DataFrame], classes: int, all_classes: bool = False
) -> list[tuple[str, Any]]:
    """(table, expectation) pairs for one file; every class in eval only with `all_classes`."""
    import great_expectations as gx

    e = gx.expectations
    checks = [
        ("arrays", e.ExpectColumnValuesToBeInSet(column=c, value_set=[True]))
        for c in ("present", "dtype_ok", "shape_ok")
    ]
    if "samples" in frames:
        cols = list(frames["samples"].columns)
        checks += [
            ("samples", e.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=0))
            for c in cols
            if c.startswith("nonfinite__")
        ]
        if "label" in cols:
            checks.append(
                ("samples", e.ExpectColumnValuesToBeBetween(column="label", min_value=0, max_value=classes - 1))
            )
            if role == "eval" and all_classes:
                checks.append(
                    (
                        "samples",
                        e.ExpectColumnDistinctValuesToContainSet(column="label", value_set=list(range(classes))),
                    )
                )
    if "features" in frames:
        checks.append(
            ("features", e.ExpectColumnValuesToBeBetween(column="shift", max_value=MAX_SHIFT, mostly=SHIFT_MOSTLY))
        )
    return checks


def validate(
    files: dict[str, Path], specs: list[Any], classes: int, strict: bool = False, all_classes: bool = False
) -> dict[str, Any]:
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
    summaries = {role: summarize(role, path, specs) for role, path in files.items()}  # streamed: no file is held whole
    results = []
    for role, path in files.items():
        frames = tables(role, summaries[role], specs, classes, summaries.get("eval"))
        for i, (table, expectation) in enumerate(expectations(role, frames, classes, all_classes)):
            name = f"{role}-{table}-{i}"
            batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
            suite = ctx.suites.add(gx.ExpectationSuite(name=name))
            suite.add_expectation(expectation)
            run = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
            frame = frames[table]
            index = ["array"] if table == "arrays" else []
            outcome = run.run(
                batch_parameters={"dataframe": frame},
                result_format={
                    "result_format": "COMPLETE",
                    **({"unexpected_index_column_names": index} if index else {}),
                },
            ).results[0]
            entry = _entry(role, path, table, expectation, outcome)
            entry["severity"] = "warning" if table == "features" and not strict else "error"
            results.append(entry)
    failed = [r for r in results if not r["success"] and r["severity"] == "error"]
    if failed:
        first = failed[0]
        error = DataError(
            f"{first['path']}: data contract failed: {first['expectation']} on {first['what']} "
            f"({first['detail']}). "
            f"Fix the {first['file']} data{' or the model' if first['table'] == 'arrays' else ''}; "
            "reports/data.json lists every check."
        )
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
        what, detail = (
            f"array {column.split('__', 1)[1]!r}",
            (f"{res.get('unexpected_count') or 0} samples with NaN or inf"),
        )
    elif type(expectation).__name__ == "ExpectColumnDistinctValuesToContainSet":
        missing = res.get("partial_missing_list") or []
        what, detail = "array 'labels'", f"classes {sorted(missing)} missing" if missing else "every class present"
    elif column == "label":
        what, detail = (
            "array 'labels'",
            (f"{res.get('unexpected_count') or 0} labels outside 0..{int(expectation.max_value)}")
            + (f", e.g. {res['partial_unexpected_list'][0]}" if res.get("partial_unexpected_list") else ""),
        )
    else:
        what, detail = (
            "the calibration inputs",
            (
                f"{res.get('unexpected_percent') or 0:.1f}% of features shifted "
                f"more than {MAX_SHIFT} eval standard deviations from the eval set"
            ),
        )
    return {
        "file": role,
        "path": str(path),
        "table": table,
        "expectation": type(expectation).__name__,
        "column": column,
        "what": what,
        "success": bool(outcome.success),
        "detail": detail,
    }
