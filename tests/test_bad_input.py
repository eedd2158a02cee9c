"""Bad input: one line naming the problem and the fix, exit code 2, nothing written."""

import json

import numpy as np
import pytest

from conftest import BIN, error_line, register_onnx, restore, sh, write_params
from squeezeflow import registry


@pytest.fixture
def pulled(local_registry, compressed_snapshot, tmp_path):
    """A registry with the digits model and a pulled + compressed pipeline folder in tmp_path (the cwd),
    restored from one session snapshot."""
    return restore(compressed_snapshot, tmp_path) / "params.yaml"


def _eval_file(tmp_path, digits_dir, **change):
    arrays = dict(np.load(digits_dir / "eval.npz"))
    for key, value in change.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    path = tmp_path / "bad_eval.npz"
    np.savez(path, **arrays)
    return path


CASES = [
    ("renamed input", lambda a: {"input": None, "pixels": a["input"]}, "has no array named 'input'"),
    (
        "wrong shape",
        lambda a: {"input": a["input"].reshape(len(a["input"]), 64)},
        "has shape [540, 64], the model expects",
    ),
    ("wrong dtype", lambda a: {"input": a["input"].astype(np.float64)}, "has dtype float64, the model expects float32"),
    ("labels out of range", lambda a: {"labels": a["labels"] + 5}, "is outside the model's 10 classes"),
    ("no labels", lambda a: {"labels": None}, "has no `labels` array"),
]


@pytest.mark.parametrize("case,change,message", CASES, ids=[c[0] for c in CASES])
@pytest.mark.integration  # starts a process
def test_eval_data_that_does_not_fit(pulled, digits_dir, tmp_path, case, change, message):
    bad = _eval_file(tmp_path, digits_dir, **change(dict(np.load(digits_dir / "eval.npz"))))
    path = write_params(tmp_path, digits_dir, data__eval=str(bad))
    proc = sh(BIN / "squeezeflow", "--params", path, "evaluate", "int8-static", check=False)
    assert proc.returncode == 2
    line = error_line(proc)
    assert str(bad) in line and message in line
    assert not (tmp_path / "metrics" / "int8-static.json").exists()


@pytest.mark.integration  # starts a process
def test_corrupt_onnx_candidate(pulled, tmp_path):
    model = tmp_path / "artifacts/candidates/int8-static/model.onnx"
    model.write_bytes(b"\x08\x07garbage" * 100)
    manifest = tmp_path / "artifacts/candidates/int8-static/manifest.json"
    m = json.loads(manifest.read_text())
    from squeezeflow.data import digest

    m["sha256"] = digest(model)  # a consistent manifest, so the ONNX parser is what objects
    manifest.write_text(json.dumps(m))
    proc = sh(BIN / "squeezeflow", "evaluate", "int8-static", check=False)
    assert proc.returncode == 2
    assert "not a valid ONNX model" in error_line(proc)


@pytest.mark.integration  # starts a process
def test_tampered_model_is_detected_by_its_digest(pulled, tmp_path):
    model = tmp_path / "artifacts/candidates/int8-static/model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    proc = sh(BIN / "squeezeflow", "evaluate", "int8-static", check=False)
    assert proc.returncode == 2 and "sha256 mismatch" in error_line(proc)


def test_model_with_nan_outputs_is_refused_at_pull(local_registry, digits_cnn, digits_dir, tmp_path):
    import copy

    import torch

    broken = copy.deepcopy(digits_cnn)
    with torch.no_grad():
        broken[-1].bias[3] = float("nan")
    registry.register_torch(broken, "digits-cnn", np.load(digits_dir / "eval.npz")["input"][:4], alias="champion")
    write_params(tmp_path, digits_dir)
    proc = sh(BIN / "squeezeflow", "pull", check=False)
    assert proc.returncode == 2
    assert "NaN or inf" in error_line(proc)
    assert not (tmp_path / "artifacts/source").exists()
    assert not any(p.name.endswith(".partial") for p in (tmp_path / "artifacts").iterdir())


@pytest.mark.integration  # starts a process
def test_unknown_recipe_on_the_command_line(pulled):
    proc = sh(BIN / "squeezeflow", "compress", "int9", check=False)
    assert proc.returncode == 2
    assert "Unknown recipe 'int9'. Recipes in params.yaml: int8-dynamic, int8-static." in proc.stderr


@pytest.mark.integration  # starts a process
def test_missing_data_file(pulled, digits_dir, tmp_path):
    path = write_params(tmp_path, digits_dir, data__eval=str(tmp_path / "nowhere.npz"))
    proc = sh(BIN / "squeezeflow", "--params", path, "evaluate", "baseline", check=False)
    assert proc.returncode == 2
    assert "nowhere.npz: eval data file not found" in error_line(proc)


def _file(tmp_path, digits_dir, role, change):
    arrays = dict(np.load(digits_dir / f"{role}.npz"))
    arrays.update(change(arrays))
    path = tmp_path / f"bad_{role}.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def _with_nan(a):
    x = a["input"].copy()
    x[3, 0, 2, 2] = np.nan
    return {"input": x}


CONTRACTS = [  # (case, data file role, change, expectation, what the message names)
    ("nan in eval", "eval", _with_nan, "ExpectColumnValuesToBeBetween on array 'input'", "1 samples with NaN or inf"),
    (
        "unknown label in train",
        "train",
        lambda a: {"labels": np.where(np.arange(len(a["labels"])) == 0, 12, a["labels"])},
        "ExpectColumnValuesToBeBetween on array 'labels'",
        "labels outside 0..9, e.g. 12",
    ),
    (
        "class missing from eval",
        "eval",
        lambda a: {"input": a["input"][a["labels"] != 3], "labels": a["labels"][a["labels"] != 3]},
        "ExpectColumnDistinctValuesToContainSet on array 'labels'",
        "classes [3] missing",
    ),
    (
        "calibration drawn elsewhere",
        "calibration",
        lambda a: {"input": a["input"] * 0.2 + 3.0},
        "ExpectColumnValuesToBeBetween on the calibration inputs",
        "shifted more than 0.5",
    ),
    (
        "wrong dtype in calibration",
        "calibration",
        lambda a: {"input": a["input"].astype(np.float64)},
        "ExpectColumnValuesToBeInSet on array 'input'",
        "dtype does not match",
    ),
    (
        "input missing from train",
        "train",
        lambda a: {"input": None, "pixels": a["input"]},
        "ExpectColumnValuesToBeInSet on array 'input'",
        "present does not match",
    ),
]


@pytest.mark.parametrize("case,role,change,expectation,detail", CONTRACTS, ids=[c[0] for c in CONTRACTS])
@pytest.mark.integration  # starts a process
def test_data_contracts_name_the_expectation_file_and_array(
    pulled, digits_dir, tmp_path, case, role, change, expectation, detail
):
    bad = _file(tmp_path, digits_dir, role, change)
    path = write_params(
        tmp_path, digits_dir, **{f"data__{role}": str(bad)}, contracts={"strict": True, "all_classes": True}
    )
    proc = sh(BIN / "squeezeflow", "--params", path, "check-data", check=False)
    assert proc.returncode == 2
    line = error_line(proc)
    assert line.startswith(f"squeezeflow: error: {bad}: data contract failed: {expectation}") and detail in line, line
    results = json.loads((tmp_path / "reports/data.json").read_text())["results"]
    assert any(not r["success"] for r in results) and any(r["success"] for r in results)


@pytest.mark.integration  # starts a process
def test_good_data_meets_every_contract(pulled, tmp_path):
    out = sh(BIN / "squeezeflow", "check-data").stdout
    results = json.loads((tmp_path / "reports/data.json").read_text())["results"]
    assert all(r["success"] for r in results) and f"{len(results)} expectations met on eval, calibration, train" in out
    assert {r["file"] for r in results} == {"eval", "calibration", "train"}


@pytest.mark.integration  # starts a process
def test_by_default_a_subset_of_classes_passes_and_a_calibration_shift_warns(pulled, digits_dir, tmp_path):
    arrays = dict(np.load(digits_dir / "eval.npz"))
    keep = arrays["labels"] != 3
    subset = tmp_path / "subset_eval.npz"
    np.savez(subset, input=arrays["input"][keep], labels=arrays["labels"][keep])
    shifted = _file(tmp_path, digits_dir, "calibration", lambda a: {"input": a["input"] * 0.2 + 3.0})
    path = write_params(tmp_path, digits_dir, data__eval=str(subset), data__calibration=str(shifted))
    proc = sh(BIN / "squeezeflow", "--params", path, "check-data")
    assert "1 warning" in proc.stdout and "shifted more than 0.5" in proc.stderr and "contracts.strict" in proc.stderr
    results = json.loads((tmp_path / "reports/data.json").read_text())["results"]
    assert [r["severity"] for r in results if not r["success"]] == ["warning"]
    assert not any(r["expectation"] == "ExpectColumnDistinctValuesToContainSet" for r in results)


@pytest.mark.integration  # starts a process
def test_data_classes_must_match_the_model(pulled, digits_dir, tmp_path):
    path = write_params(tmp_path, digits_dir, data__classes=1000)
    proc = sh(BIN / "squeezeflow", "--params", path, "check-data", check=False)
    assert proc.returncode == 2 and "data.classes is 1000, but the model" in error_line(proc)


def test_a_1000_class_model_evaluated_on_60_classes_passes_check_data(local_registry, digits_dir, tmp_path):
    """ImageNet-style: 1,000 outputs, an eval set whose labels cover 60 of them."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(64, 1000)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["output"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1000])],
        [w],
    )
    model = tmp_path / "wide.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    register_onnx(model, "digits-cnn", alias="champion")
    arrays = dict(np.load(digits_dir / "eval.npz"))
    labels = rng.choice(rng.choice(1000, size=60, replace=False), size=len(arrays["input"]))
    ev = tmp_path / "eval60.npz"
    np.savez(ev, input=arrays["input"], labels=labels.astype(np.int64))
    assert len(np.unique(labels)) == 60
    path = write_params(tmp_path, digits_dir, data__eval=str(ev), data__classes=1000)
    sh(BIN / "squeezeflow", "--params", path, "pull")
    out = sh(BIN / "squeezeflow", "--params", path, "check-data").stdout
    assert "expectations met" in out and "warning" not in out
    strict = write_params(tmp_path, digits_dir, data__eval=str(ev), contracts={"all_classes": True})
    proc = sh(BIN / "squeezeflow", "--params", strict, "check-data", check=False)
    assert proc.returncode == 2 and "classes [" in error_line(proc) and "missing" in error_line(proc)


def test_passing_data_checks_read_as_passing(local_registry, digits_onnx, digits_dir, tmp_path):
    """reports/data.json: a check that passed says what holds, not what would have failed."""
    import json

    from squeezeflow.config import load_params
    from squeezeflow.stages.check_data import check_data
    from squeezeflow.stages.pull import pull

    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    params = load_params(write_params(tmp_path, digits_dir))
    pull(params)
    check_data(params)
    results = json.loads((tmp_path / "reports/data.json").read_text())["results"]
    passed = [r["detail"] for r in results if r["success"] and r["table"] == "arrays"]
    assert passed and all("does not match" not in d for d in passed) and "shape matches the model input" in passed


ORDINARY_BAD_EVAL = [
    (
        "float16 inputs",
        lambda a: {"input": a["input"].astype(np.float16)},
        "has dtype float16, the model expects float32",
    ),
    (
        "float64 inputs",
        lambda a: {"input": a["input"].astype(np.float64)},
        "has dtype float64, the model expects float32",
    ),
    ("int8 inputs", lambda a: {"input": a["input"].astype(np.int8)}, "has dtype int8, the model expects float32"),
    (
        "9x9 for 8x8",
        lambda a: {"input": np.pad(a["input"], ((0, 0), (0, 0), (0, 1), (0, 1)))},
        "has shape [360, 1, 9, 9], the model expects",
    ),
    ("no channel axis", lambda a: {"input": a["input"][:, 0]}, "has shape [360, 8, 8], the model expects"),
    ("labels [N, 1]", lambda a: {"labels": a["labels"][:, None]}, "`labels` must be a 1-D integer array"),
    ("float labels", lambda a: {"labels": a["labels"].astype(np.float32)}, "`labels` must be a 1-D integer array"),
    ("an extra array", lambda a: {"extra": a["input"]}, "array 'extra' is not a model input"),
    ("all NaN", lambda a: {"input": np.full_like(a["input"], np.nan)}, "remove non-finite values from the data"),
]


@pytest.mark.parametrize("case,change,message", ORDINARY_BAD_EVAL, ids=[c[0] for c in ORDINARY_BAD_EVAL])
@pytest.mark.integration  # starts a process
def test_check_data_refuses_ordinary_bad_eval_data_first(pulled, digits_dir, tmp_path, case, change, message):
    """What evaluate refuses with exit 2, check-data refuses first, with one line, never as a squeezeflow bug (exit 4)
    or the model's fault.
    """
    bad = _file(tmp_path, digits_dir, "eval", change)
    samples = len(np.load(bad)["labels"])
    message = message.replace("360", str(samples))
    path = write_params(tmp_path, digits_dir, data__eval=str(bad))
    proc = sh(BIN / "squeezeflow", "--params", path, "check-data", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = error_line(proc)
    assert str(bad) in line and message in line and "retrain" not in line, line
