"""Tasks beyond classification: each task's metrics against hand-computed values, and small
embedding and two-output models through pull, compress, evaluate and the gate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import register_onnx, write_params
from squeezeflow.errors import ConfigError, ModelError
from squeezeflow.evaluate import tasks


def test_regression_metrics_by_hand():
    base, cand = np.array([[1.0], [2], [3], [4]]), np.array([[1.5], [2], [3], [5]])
    labels = np.array([1.0, 2, 3, 5])
    m, _ = tasks.score("regression", {"y": base}, {"y": cand}, labels)
    assert m["mae_baseline"] == pytest.approx(0.25) and m["mae"] == pytest.approx(0.125)
    assert m["mae_increase"] == pytest.approx(-0.125)
    assert m["rmse"] == pytest.approx(0.25) and m["rmse_increase"] == pytest.approx(0.25 - 0.5)
    assert m["mae_increase_ci_low"] <= -0.125 <= m["mae_increase_ci_high"]
    unlabelled, _ = tasks.score("regression", {"y": base}, {"y": cand}, None)  # against the FP32 outputs
    assert unlabelled["mae_baseline"] == 0 and unlabelled["mae"] == pytest.approx((0.5 + 1) / 4)


def test_embedding_metrics_by_hand():
    base = np.array([[1.0, 0], [0, 1], [1, 1]])
    cand = np.array([[1.0, 0], [0, 2], [1, -1]])
    m, _ = tasks.score("embedding", {"e": base}, {"e": cand}, None)
    assert m["cosine"] == pytest.approx(2 / 3) and m["cosine_min"] == pytest.approx(0)
    # nearest other sample: FP32 a->c, b->c, c->a (tie, first); candidate a->c, b->a, c->a
    assert m["retrieval_agreement"] == pytest.approx(2 / 3)


def test_generic_metrics_by_hand():
    base, cand = np.array([[1.0, -2], [3, 4]]), np.array([[1.5, -2], [3, 3]])
    m, _ = tasks.score("generic", {"y": base}, {"y": cand}, None)
    assert m["max_abs_error"] == pytest.approx(1.0) and m["mean_abs_error"] == pytest.approx(0.375)
    assert m["max_rel_error"] == pytest.approx(1 / 4) and m["mean_rel_error"] == pytest.approx(0.375 / 2.5)


def test_several_outputs_get_a_row_each_and_budgets_see_the_worst():
    base = {"scores": np.ones((4, 3)), "boxes": np.full((4, 2), 10.0)}
    cand = {"scores": np.ones((4, 3)) * 1.1, "boxes": np.full((4, 2), 10.0)}
    m, _ = tasks.score("generic", base, cand, None)
    assert m["output.scores.mean_rel_error"] == pytest.approx(0.1) and m["output.boxes.mean_rel_error"] == 0
    assert m["mean_rel_error"] == pytest.approx(0.1)  # the worst output


def test_classification_keeps_its_metrics():
    base = np.array([[2.0, 1], [0, 1], [1, 0], [0, 3]])
    cand = np.array([[2.0, 1], [1, 0], [1, 0], [0, 3]])
    m, plots = tasks.score("classification", {"logits": base}, {"logits": cand}, np.array([0, 1, 0, 1]))
    assert m["accuracy"] == 0.75 and m["accuracy_drop"] == 0.25 and m["agreement"] == 0.75
    assert plots["class_accuracy"]["baseline"] == {"0": 1.0, "1": 1.0}


@pytest.mark.parametrize(
    "task,outputs,message",
    [
        ("embedding", {"e": np.ones((4, 2, 2))}, "needs [4, dimensions]"),
        ("generic", {"y": np.ones((1, 3))}, "needs the sample axis first"),
        ("classification", {"y": np.ones((4, 3, 1))}, "task classification needs [4, classes]"),
    ],
)
def test_outputs_the_task_cannot_score(task, outputs, message):
    with pytest.raises(ModelError, match=message.replace("[", r"\[")):
        tasks.check_outputs(outputs, 4, task, "m.onnx")


def test_a_budget_of_another_task_is_a_config_error(tmp_path, digits_dir):
    from squeezeflow.config import load_params

    path = write_params(tmp_path, digits_dir, budgets={"min_cosine": 0.99})
    with pytest.raises(ConfigError, match="budgets.min_cosine judges task embedding, but data.task is classification"):
        load_params(path)


def _two_layer(path, outputs: dict[str, int]):
    """Digits input -> hidden layer -> one linear head per output (name -> width)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(scale=0.2, size=(64, 64)).astype(np.float32), "w0")]
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w0"], ["h0"]),
        helper.make_node("Relu", ["h0"], ["h"]),
    ]
    outs = []
    for name, width in outputs.items():
        inits.append(numpy_helper.from_array(rng.normal(scale=0.2, size=(64, width)).astype(np.float32), f"w_{name}"))
        nodes.append(helper.make_node("MatMul", ["h", f"w_{name}"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])], outs, inits
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize(
    "task,heads,budgets,keys",
    [
        (
            "embedding",
            {"embedding": 16},
            {"min_cosine": 0.95, "min_retrieval_agreement": 0.5, "max_size_mb": 1.0},
            ["cosine", "retrieval_agreement"],
        ),
        (
            "generic",
            {"scores": 10, "boxes": 4},
            {"max_output_error": 0.05, "max_size_mb": 1.0},
            ["output.scores.mean_rel_error", "output.boxes.mean_rel_error"],
        ),
    ],
)
def test_small_models_of_other_tasks_run_end_to_end(local_registry, digits_dir, tmp_path, task, heads, budgets, keys):
    from helpers import run_until_gate
    from squeezeflow.config import load_params
    from squeezeflow.report import markdown
    from squeezeflow.stages.gate import gate

    register_onnx(_two_layer(tmp_path / "m.onnx", heads), "digits-cnn", alias="champion")
    path = write_params(
        tmp_path,
        digits_dir,
        data__task=task,
        budgets=budgets,
        selection={"objective": "size_mb"},
        recipes={
            "int8-dynamic": [{"quantize": {"mode": "dynamic", "per_channel": True}}],
            "int8-static": [{"quantize": {"mode": "static"}}],
        },
    )
    run_until_gate(path)
    metrics = json.loads((tmp_path / "metrics" / "int8-dynamic.json").read_text())
    assert all(k in metrics for k in keys) and "accuracy" not in metrics
    verdict = gate(load_params(path), params_file=path)
    assert verdict["verdict"] == "pass" and verdict["task"] == task
    assert (
        markdown.columns(verdict)[0] == tasks.PRIMARY[task][0]
        and tasks.PRIMARY[task][0] in (tmp_path / "reports" / "gate.md").read_text()
    )
