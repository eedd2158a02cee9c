"""Quantization modes beyond plain INT8: entropy calibration, auto, int4, fp16, accuracy fallback."""

import copy

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from squeezeflow.onnx import modelfile, rewrites, sessions
from squeezeflow.steps import StepContext
from squeezeflow.steps.quantize import QuantizeConfig, quantize
from squeezeflow.torch import convert


def _ctx(tmp_path, digits_dir, name="w"):
    work = tmp_path / name
    work.mkdir()
    return StepContext(workdir=work, calibration=digits_dir / "calibration.npz")


def _scales(path):
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [
        float(inits[n.input[1]])
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and inits.get(n.input[1]) is not None and inits[n.input[1]].size == 1
    ]


def test_entropy_calibration_differs_from_minmax(digits_onnx, digits_dir, tmp_path):
    minmax = quantize(digits_onnx, QuantizeConfig(calibration="minmax"), _ctx(tmp_path, digits_dir, "a"))
    entropy = quantize(digits_onnx, QuantizeConfig(calibration="entropy"), _ctx(tmp_path, digits_dir, "b"))
    a, b = _scales(minmax.model), _scales(entropy.model)
    assert len(a) == len(b) > 0
    assert any(abs(x - y) > 1e-6 * max(x, y) for x, y in zip(a, b))  # ORT's default 128 bins would give equal scales
    assert entropy.stats["calibration"] == "entropy"


def test_int4_rewrites_gemm_and_packs_weights(digits_onnx, digits_dir, tmp_path):
    result = quantize(digits_onnx, QuantizeConfig(mode="int4", block_size=32), _ctx(tmp_path, digits_dir))
    ops = modelfile.op_counts(result.model)
    assert ops["MatMulNBits"] == 2 and "Gemm" not in ops
    assert result.stats == {
        "mode": "int4",
        "bits": 4,
        "block_size": 32,
        "algorithm": "rtn",
        "gemm_rewritten": 2,
        "quantized_ops": {"MatMulNBits": 2},
    }
    ev = np.load(digits_dir / "eval.npz")
    fp32 = sessions.run(sessions.session(digits_onnx), {"input": ev["input"]})
    int4 = sessions.run(sessions.session(result.model), {"input": ev["input"]})
    assert (fp32.argmax(1) == int4.argmax(1)).mean() >= 0.95


def _packed(path):
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [inits[n.input[1]] for n in model.graph.node if n.op_type == "MatMulNBits"]


@pytest.mark.parametrize("algorithm", ["hqq", "k_quant", "gptq"])
def test_int4_algorithms_choose_other_weights_and_keep_predictions(algorithm, digits_onnx, digits_dir, tmp_path):
    rtn = quantize(digits_onnx, QuantizeConfig(mode="int4", block_size=32), _ctx(tmp_path, digits_dir, "rtn"))
    result = quantize(
        digits_onnx,
        QuantizeConfig(mode="int4", block_size=32, int4_algorithm=algorithm, num_samples=64),
        _ctx(tmp_path, digits_dir),
    )
    assert result.stats["algorithm"] == algorithm and result.stats["quantized_ops"] == {"MatMulNBits": 2}
    ours, theirs = _packed(result.model), _packed(rtn.model)
    # not round-to-nearest under another name
    assert len(ours) == 2 and any(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(ours, theirs))
    ev = np.load(digits_dir / "eval.npz")
    fp32 = sessions.run(sessions.session(digits_onnx), {"input": ev["input"]})
    assert (
        sessions.run(sessions.session(result.model), {"input": ev["input"]}).argmax(1) == fp32.argmax(1)
    ).mean() >= 0.95


def test_int4_packs_embeddings(tmp_path):
    import torch

    from squeezeflow.errors import ConfigError
    from squeezeflow.torch import architectures

    torch.manual_seed(0)
    model = architectures.text_transformer(2000, 16, 3, dim=64, heads=4, layers=1, ff=128).eval()
    rng = np.random.default_rng(0)
    inputs = {
        "input_ids": rng.integers(0, 2000, (32, 16), dtype=np.int64),
        "attention_mask": np.ones((32, 16), dtype=np.int64),
    }
    fp32 = tmp_path / "text.onnx"
    convert.export_onnx(model, inputs, fp32)
    plain = quantize(fp32, QuantizeConfig(mode="int4"), StepContext(workdir=tmp_path))
    (tmp_path / "e").mkdir()
    packed = quantize(fp32, QuantizeConfig(mode="int4", int4_embeddings=True), StepContext(workdir=tmp_path / "e"))
    assert (
        packed.stats["quantized_ops"].get("GatherBlockQuantized") == 1
        and "GatherBlockQuantized" not in plain.stats["quantized_ops"]
    )
    assert packed.model.stat().st_size < 0.5 * plain.model.stat().st_size  # the 2000x64 table was most of the file
    base = sessions.run(sessions.session(fp32), inputs)
    diff = np.abs(sessions.run(sessions.session(packed.model), inputs) - base).max()
    assert diff < 0.1 * np.abs(base).max()
    with pytest.raises(ConfigError, match="int4_algorithm: rtn"):
        quantize(
            fp32,
            QuantizeConfig(mode="int4", int4_embeddings=True, int4_algorithm="hqq"),
            StepContext(workdir=tmp_path / "e"),
        )


def test_gemm_rewrite_is_exact(digits_onnx, digits_dir, tmp_path):
    out = tmp_path / "mm.onnx"
    model = onnx.load(str(digits_onnx))
    assert rewrites.rewrite_gemm(model) == 2
    modelfile.save_onnx(model, out)
    x = {"input": np.load(digits_dir / "eval.npz")["input"][:64]}
    np.testing.assert_allclose(
        sessions.run(sessions.session(out), x), sessions.run(sessions.session(digits_onnx), x), rtol=1e-5, atol=1e-5
    )


def test_fp16_runs_and_says_there_is_no_cpu_speedup(digits_onnx, digits_dir, tmp_path):
    result = quantize(digits_onnx, QuantizeConfig(mode="fp16"), _ctx(tmp_path, digits_dir))
    weights = [i for i in onnx.load(str(result.model)).graph.initializer if len(i.dims) >= 2]
    assert weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in weights)
    assert "no speedup on CPU" in result.stats["note"]
    x = {"input": np.load(digits_dir / "eval.npz")["input"][:64]}
    assert sessions.run(sessions.session(result.model), x).dtype == np.float32
    # the ONNX checker takes it too (the converter's input Casts came after their users: compress refused every fp16
    # model)
    modelfile.load_onnx(result.model)


def test_auto_never_keeps_a_variant_slower_than_fp32(digits_onnx, digits_dir, tmp_path):
    result = quantize(digits_onnx, QuantizeConfig(mode="auto"), _ctx(tmp_path, digits_dir))
    stats = result.stats
    assert stats["prior"] == "static"  # two convs, two linear layers: treated as convolutional
    variants = {
        "static-per-channel",
        "static-per-tensor",
        "static-weighted",
        "static-gptq-bias-correction",
        "dynamic-per-channel",
        "dynamic-per-tensor",
    }
    assert set(stats["changed_vs_fp32"]) == variants
    assert set(stats["p50_ms"]) == {"fp32"} | (variants - set(stats["rejected_for_accuracy"]))
    if stats["chosen"] == "fp32":
        assert result.model == digits_onnx and all(s <= 1 for s in stats["speedup_vs_fp32"].values())
    else:
        assert stats["speedup_vs_fp32"][stats["chosen"]] > 1
        assert stats["speedup_vs_fp32"][stats["chosen"]] == max(stats["speedup_vs_fp32"].values())


@pytest.fixture(scope="module")
def fragile_onnx(digits_cnn, digits_dir, tmp_path_factory):
    """The digits CNN with hidden unit 0 of the first linear layer scaled x1000 (and its outgoing
    weights /1000): the same function, but per-tensor INT8 of that layer wipes out the other units."""
    import torch

    model = copy.deepcopy(digits_cnn)
    first, last = model[-3], model[-1]
    with torch.no_grad():
        first.weight[0] *= 1000.0
        first.bias[0] *= 1000.0
        last.weight[:, 0] /= 1000.0
    path = tmp_path_factory.mktemp("fragile") / "model.onnx"
    convert.export_onnx(model, {"input": np.load(digits_dir / "eval.npz")["input"][:16]}, path)
    return path


def test_fallback_keeps_the_sensitive_layer_in_float(fragile_onnx, digits_dir, tmp_path):
    plain = quantize(
        fragile_onnx,
        QuantizeConfig(per_channel=False, fallback={"max_accuracy_drop": 1.0}),
        _ctx(tmp_path, digits_dir, "a"),
    )
    assert plain.stats["fallback"]["met"] and plain.stats["fallback"]["kept_float"] == []
    missed_by = plain.stats["fallback"]["drop_all_quantized"]
    assert missed_by > 0.02  # full per-tensor INT8 clearly misses a 1-point budget

    fixed = quantize(
        fragile_onnx,
        QuantizeConfig(per_channel=False, fallback={"max_accuracy_drop": 0.01}),
        _ctx(tmp_path, digits_dir, "b"),
    )
    fb = fixed.stats["fallback"]
    assert fb["met"] and fb["drop"] <= 0.01
    ranked = sorted(fb["sensitivity"], key=fb["sensitivity"].get, reverse=True)
    grown = [t for t in fb["tried"] if t["layers"] == ranked[: t["float_layers"]]]
    # first the most sensitive layers in float, one more at a time, until the budget is met ...
    assert [t["float_layers"] for t in grown] == list(range(1, len(grown) + 1))
    assert all(t["drop"] > 0.01 for t in grown[:-1]) and grown[-1]["drop"] <= 0.01
    # ... then each kept layer the budget does not need goes back to INT8: removing any one left breaks it
    assert set(fb["kept_float"]) <= set(grown[-1]["layers"])
    for name in fb["kept_float"][:-1]:
        without = [t for t in fb["tried"] if t["layers"] == [n for n in fb["kept_float"] if n != name]]
        assert not without or without[0]["drop"] > 0.01
    # the rescaled linear layer ranks first and is kept (a layer behind it may be kept too: ORT runs an
    # excluded layer in INT8 while what feeds it is dequantized)
    rescaled = rewrites.nodes_of(fragile_onnx, ("Gemm",))[0]
    assert ranked[0] == rescaled and rescaled in fb["kept_float"]
    kept = onnx.load(str(fixed.model))
    inits = {i.name for i in kept.graph.initializer}
    for node in kept.graph.node:
        if node.name in fb["kept_float"]:
            assert node.input[1] in inits  # a float weight initializer, not a DequantizeLinear output
        elif node.op_type in ("Conv", "Gemm"):
            assert node.input[1] not in inits  # the others still fed by DequantizeLinear
    assert len(fb["kept_float"]) < len(rewrites.nodes_of(fragile_onnx, ("Conv", "Gemm")))


def test_auto_never_chooses_a_variant_that_changes_predictions(fragile_onnx, digits_dir, tmp_path):
    result = quantize(fragile_onnx, QuantizeConfig(mode="auto", auto_tolerance=0.01), _ctx(tmp_path, digits_dir))
    stats = result.stats
    # per-tensor INT8 wrecks the rescaled layer: fast or not, it must be rejected
    assert {"static-per-tensor", "dynamic-per-tensor"} <= set(stats["rejected_for_accuracy"])
    assert all(stats["changed_vs_fp32"][k] > 0.01 for k in stats["rejected_for_accuracy"])
    assert stats["chosen"] not in stats["rejected_for_accuracy"]


def test_auto_judges_other_tasks_by_output_error(fragile_onnx, digits_dir, tmp_path):
    """For a task other than classification, a variant is judged by how far its outputs are from FP32's, not by their
    argmax.
    """
    from squeezeflow.evaluate import tasks

    ctx = StepContext(workdir=tmp_path, calibration=digits_dir / "calibration.npz", task="generic")
    stats = quantize(fragile_onnx, QuantizeConfig(mode="auto", auto_tolerance=0.02, num_samples=100_000), ctx).stats
    assert "mean absolute difference" in stats["faithfulness"]
    cal = {"input": np.load(digits_dir / "calibration.npz")["input"]}
    reference = sessions.run_outputs(sessions.session(fragile_onnx), cal)
    for name in ("static-per-tensor", "static-per-channel"):  # recomputed from the variant written to disk
        found = sorted(tmp_path.rglob(f"*{name}*.onnx")) or sorted(tmp_path.rglob(f"{name}/*.onnx"))
        assert found, f"{name} not found under {tmp_path}"
        error = tasks.score("generic", reference, sessions.run_outputs(sessions.session(found[0]), cal), None)[0][
            "mean_rel_error"
        ]
        assert stats["changed_vs_fp32"][name] == pytest.approx(error, abs=1e-5)  # the stats round to 5 places
    assert set(stats["rejected_for_accuracy"]) == {k for k, v in stats["changed_vs_fp32"].items() if v > 0.02}
    assert "static-per-tensor" in stats["rejected_for_accuracy"]  # the rescaled layer at one scale: far off


def test_fallback_needs_labels(digits_onnx, digits_dir, tmp_path):
    from squeezeflow.errors import ConfigError

    arrays = dict(np.load(digits_dir / "calibration.npz"))
    arrays.pop("labels")
    np.savez(tmp_path / "cal.npz", **arrays)
    ctx = StepContext(workdir=tmp_path, calibration=tmp_path / "cal.npz")
    with pytest.raises(ConfigError, match="needs a `labels` array"):
        quantize(digits_onnx, QuantizeConfig(fallback={"max_accuracy_drop": 0.0}), ctx)


def test_qat_exports_a_qdq_graph_that_keeps_accuracy(digits_cnn, digits_dir, tmp_path):
    from squeezeflow.evaluate.classification import accuracy
    from squeezeflow.steps.qat import QatConfig, qat

    result = qat(
        copy.deepcopy(digits_cnn), QatConfig(epochs=1), StepContext(workdir=tmp_path, train=digits_dir / "train.npz")
    )
    ops = modelfile.op_counts(result.model)
    assert ops["QuantizeLinear"] >= 4 and ops["DequantizeLinear"] >= 6
    assert result.stats["mode"] == "qat" and result.stats["train_samples"] == 1078
    ev = np.load(digits_dir / "eval.npz")
    assert accuracy(sessions.run(sessions.session(result.model), {"input": ev["input"]}), ev["labels"]) >= 0.9


def test_qat_distilled_from_fp32_keeps_its_predictions_where_labels_disagree(digits_cnn, digits_dir, tmp_path):
    """A case built to need distillation: 40% of the training labels are wrong. QAT on those labels
    drifts from the FP32 model; QAT distilled from the FP32 model's soft outputs, on the same
    images without any labels, keeps its predictions."""
    from squeezeflow.steps.qat import QatConfig, qat
    from squeezeflow.torch import train

    tr, ev = np.load(digits_dir / "train.npz"), np.load(digits_dir / "eval.npz")
    rng = np.random.default_rng(0)
    noisy = tr["labels"].copy()
    flip = rng.random(len(noisy)) < 0.4
    noisy[flip] = rng.integers(0, 10, int(flip.sum()))
    np.savez(tmp_path / "noisy.npz", input=tr["input"], labels=noisy)
    np.savez(tmp_path / "unlabelled.npz", input=tr["input"])
    fp32 = train.predict(digits_cnn, ev["input"]).argmax(1)
    agreement = {}
    for name, config, file in (
        ("labels", QatConfig(epochs=3, lr=1e-3), "noisy.npz"),
        ("distilled", QatConfig(epochs=3, lr=1e-3, distill_temperature=2.0), "unlabelled.npz"),
    ):
        (tmp_path / name).mkdir()
        result = qat(copy.deepcopy(digits_cnn), config, StepContext(workdir=tmp_path / name, train=tmp_path / file))
        agreement[name] = float(
            (sessions.run(sessions.session(result.model), {"input": ev["input"]}).argmax(1) == fp32).mean()
        )
    assert result.stats["targets"] == "fp32 soft outputs, T=2.0"
    assert agreement["distilled"] >= 0.98 and agreement["distilled"] > agreement["labels"] + 0.02


def test_qat_distilled_recovers_where_ptq_fails_on_an_unrepresentative_calibration_set(
    digits_cnn, digits_onnx, digits_dir, tmp_path
):
    """Calibration images 5x too dim (another camera's exposure): static PTQ's activation ranges are
    far too narrow and clip the eval data; QAT distilled from FP32 on the unlabelled training images
    learns the real ranges and keeps FP32's predictions."""
    from squeezeflow.evaluate.classification import agreement
    from squeezeflow.steps.qat import QatConfig, qat

    cal = dict(np.load(digits_dir / "calibration.npz"))
    cal["input"] = (cal["input"] * 0.2).astype(np.float32)
    np.savez(tmp_path / "dim.npz", **cal)
    np.savez(tmp_path / "unlabelled.npz", input=np.load(digits_dir / "train.npz")["input"])
    ev = {"input": np.load(digits_dir / "eval.npz")["input"]}
    reference = sessions.run(sessions.session(digits_onnx), ev)
    (tmp_path / "ptq").mkdir()
    ptq = quantize(
        digits_onnx,
        QuantizeConfig(mode="static"),
        StepContext(workdir=tmp_path / "ptq", calibration=tmp_path / "dim.npz"),
    )
    (tmp_path / "qat").mkdir()
    ctx = StepContext(workdir=tmp_path / "qat", calibration=tmp_path / "dim.npz", train=tmp_path / "unlabelled.npz")
    trained = qat(copy.deepcopy(digits_cnn), QatConfig(epochs=2, distill_temperature=2.0), ctx)
    ptq_agree = agreement(sessions.run(sessions.session(ptq.model), ev), reference)
    qat_agree = agreement(sessions.run(sessions.session(trained.model), ev), reference)
    assert ptq_agree < 0.95 and qat_agree >= 0.98 and qat_agree > ptq_agree + 0.05  # standalone: 0.84 against 1.00


def test_qat_distills_a_model_with_two_inputs(tmp_path):
    from squeezeflow.steps.qat import QatConfig, qat
    from squeezeflow.torch import architectures, train

    model = architectures.text_transformer(500, 16, 3, dim=64, heads=4, layers=1, ff=128).eval()
    rng = np.random.default_rng(0)
    lengths = rng.integers(4, 17, 256)
    inputs = {
        "input_ids": rng.integers(0, 500, (256, 16), dtype=np.int64),
        "attention_mask": (np.arange(16)[None, :] < lengths[:, None]).astype(np.int64),
    }
    np.savez(tmp_path / "text.npz", **inputs)
    fp32 = train.predict(model, inputs).argmax(1)
    result = qat(
        copy.deepcopy(model),
        QatConfig(epochs=1, distill_temperature=2.0),
        StepContext(workdir=tmp_path, train=tmp_path / "text.npz"),
    )
    assert result.stats["quantized_ops"]["QuantizeLinear"] >= 4
    assert (sessions.run(sessions.session(result.model), inputs).argmax(1) == fp32).mean() >= 0.9


def test_qat_needs_labelled_train_data(digits_cnn, tmp_path):
    from squeezeflow.errors import ConfigError
    from squeezeflow.steps.qat import QatConfig, qat

    with pytest.raises(ConfigError, match="set data.train"):
        qat(digits_cnn, QatConfig(), StepContext(workdir=tmp_path))


def test_report_names_the_float_layers_and_the_auto_choice():
    from squeezeflow.report import markdown

    manifest = {
        "steps": [
            {
                "kind": "quantize",
                "stats": {
                    "mode": "auto",
                    "chosen": "static-per-channel",
                    "speedup_vs_fp32": {"static-per-channel": 1.6},
                    "rejected_for_accuracy": ["static-per-tensor"],
                },
            },
            {
                "kind": "quantize",
                "stats": {"fallback": {"kept_float": ["node_linear"], "met": True, "max_accuracy_drop": 0.005}},
            },
            {
                "kind": "quantize",
                "stats": {"note": "fp16 gives no speedup on CPU execution providers; use it for GPU targets"},
            },
        ]
    }
    notes = markdown.step_notes(manifest)
    assert notes == [
        "quantize auto chose static-per-channel (1.6x FP32 when measured); rejected for accuracy: static-per-tensor",
        "quantize fallback kept 1 layer(s) in float: node_linear (budget 0.005 met on calibration data)",
        "quantize: fp16 gives no speedup on CPU execution providers; use it for GPU targets",
    ]
    verdict = {
        "verdict": "pass",
        "selected": "a",
        "objective": "latency_p95_ms",
        "budgets": {},
        "baseline": {},
        "candidates": {"a": {"passed": True, "violations": [], "metrics": {}, "notes": notes}},
    }
    md = markdown.markdown(verdict)
    assert "- a: quantize fallback kept 1 layer(s) in float: node_linear" in md


def test_dynamic_int8_is_scored_at_the_deployed_batch_size(digits_onnx, digits_dir, tmp_path):
    dynamic = quantize(digits_onnx, QuantizeConfig(mode="dynamic"), _ctx(tmp_path, digits_dir)).model
    arrays = {"input": np.load(digits_dir / "eval.npz")["input"]}
    fp32, int8 = sessions.session(digits_onnx), sessions.session(dynamic)
    assert sessions.scoring_batch(fp32, arrays, 1) == 256  # FP32 outputs do not depend on the batch: scored fast
    assert sessions.scoring_batch(int8, arrays, 1) == 1  # dynamic INT8 takes activation ranges per batch
    batched, alone = sessions.run(int8, arrays, 256), sessions.run(int8, arrays, 1)
    assert np.abs(batched - alone).max() > 1e-3 * np.abs(alone).max()  # why it matters
    assert sessions.scoring_batch(int8, arrays, 256) == 256


@pytest.mark.integration  # starts a process
def test_static_quantization_does_not_import_torch(digits_onnx, digits_dir, tmp_path):
    """ONNX-only compression stays free of torch's import (onnxruntime.tools would pull it in)."""
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from squeezeflow.steps import StepContext; from "
        "squeezeflow.steps.quantize import QuantizeConfig, quantize; "
        f"quantize(Path({str(digits_onnx)!r}), QuantizeConfig(), StepContext(workdir=Path({str(tmp_path)!r}), "
        f"calibration=Path({str(digits_dir / 'calibration.npz')!r}))); "
        "print('torch' in sys.modules)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_one_pass_ranking_finds_the_layer_the_exhaustive_ranking_finds(fragile_onnx, digits_dir, tmp_path):
    """Each layer quantized alone, whole model run per layer (the slow way), against one pass of layer errors."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from squeezeflow import data
    from squeezeflow.quantization import calibration, sensitivity
    from squeezeflow.steps.quantize.common import prepare

    prepared, _ = prepare(fragile_onnx, tmp_path)
    inputs = {"input": np.load(digits_dir / "calibration.npz")["input"][:64]}
    cache = calibration.ranges(prepared, lambda n: data.batches(inputs, n), 64, "minmax", tmp_path)
    common = dict(
        quant_format=QuantFormat.QDQ,
        per_channel=False,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        calibration_cache_path=str(cache),
    )
    reference = sessions.run(sessions.session(prepared), inputs)
    layers = rewrites.nodes_of(prepared, ("Conv", "Gemm"))
    exhaustive = {}
    for i, name in enumerate(layers):
        alone = tmp_path / f"only-{i}.onnx"
        quantize_static(str(prepared), str(alone), None, nodes_to_quantize=[name], **common)
        exhaustive[name] = float(np.mean((sessions.run(sessions.session(alone), inputs) - reference) ** 2))
    everything = tmp_path / "all.onnx"
    quantize_static(str(prepared), str(everything), None, **common)
    fast = sensitivity.layer_errors(prepared, everything, data.batches(inputs, 16), layers)
    assert set(fast) == set(layers) and all(v >= 0 for v in fast.values())
    assert max(fast, key=fast.get) == max(exhaustive, key=exhaustive.get) == layers[2]  # the rescaled Gemm
    assert sorted(fast.values())[-1] > 100 * sorted(fast.values())[-2]  # and by far


def test_int4_k_quant_leaves_odd_block_layers_float_instead_of_crashing(tmp_path):
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    # 784 = 24.5 blocks of 32
    weights = [
        numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), f"w{i}")
        for i, shape in enumerate([(784, 64), (64, 10)])
    ]
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w0"], ["h"], name="mm0"),
            helper.make_node("MatMul", ["h", "w1"], ["y"], name="mm1"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 784])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 10])],
        weights,
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    result = quantize(
        tmp_path / "m.onnx", QuantizeConfig(mode="int4", int4_algorithm="k_quant"), StepContext(workdir=tmp_path)
    )
    assert (
        result.stats["kept_float"] == ["mm0"]
        and result.stats["quantized_ops"] == {"MatMulNBits": 1}
        and "odd number" in result.stats["note"]
    )
    x = {"x": rng.normal(size=(8, 784)).astype(np.float32)}
    base = sessions.run(sessions.session(tmp_path / "m.onnx"), x)
    assert np.abs(sessions.run(sessions.session(result.model), x) - base).max() < 0.2 * np.abs(base).max()


def test_int4_gptq_without_calibration_names_the_fix(digits_onnx, tmp_path):
    from squeezeflow.errors import ConfigError

    with pytest.raises(ConfigError, match="set data.calibration.*int4_algorithm rtn, hqq or k_quant"):
        quantize(digits_onnx, QuantizeConfig(mode="int4", int4_algorithm="gptq"), StepContext(workdir=tmp_path))


def test_float_matmul_outputs_keep_the_linear_layers_outputs_float_and_fused(tmp_path):
    """matmul_outputs: float leaves no QuantizeLinear on a MatMul's or its bias Add's output (a model with
    Linear layers exported as MatMul + Add), ORT still runs the matmuls as integer kernels, and the
    output is closer to FP32 than with the default."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.normal(size=(16, 32)),
        "b1": rng.normal(size=32),
        "w2": rng.normal(size=(32, 8)) / 4,
        "b2": rng.normal(size=8) * 3,
    }
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="add1"),
        helper.make_node("Relu", ["hb"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["o"], name="mm2"),
        helper.make_node("Add", ["o", "b2"], ["output"], name="add2"),
    ]
    g = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 4, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 4, 8])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    path = tmp_path / "linear.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    # a sequence: ORT's pre-processing fuses a 2-D MatMul + Add into Gemm
    x = rng.normal(size=(256, 4, 16)).astype(np.float32)
    np.savez(tmp_path / "cal.npz", input=x[:128])
    reference = sessions.run(sessions.session(path), {"input": x[128:]})
    error, fused = {}, {}
    for outputs in ("int8", "float"):
        (tmp_path / outputs).mkdir()
        result = quantize(
            path,
            QuantizeConfig(mode="static", matmul_outputs=outputs),
            StepContext(workdir=tmp_path / outputs, calibration=tmp_path / "cal.npz", task="generic"),
        )
        model = onnx.load(str(result.model))
        producer = {o: n.op_type for n in model.graph.node for o in n.output}
        quantized_from = {producer.get(n.input[0]) for n in model.graph.node if n.op_type == "QuantizeLinear"}
        if outputs == "float":
            assert not quantized_from & {"MatMul", "Add"}, quantized_from
        else:
            assert {"MatMul", "Add"} <= quantized_from
        error[outputs] = float(
            np.abs(sessions.run(sessions.session(result.model), {"input": x[128:]}) - reference).mean()
        )
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(tmp_path / f"{outputs}-opt.onnx")
        ort.InferenceSession(str(result.model), opts, providers=["CPUExecutionProvider"])
        fused[outputs] = modelfile.op_counts(opts.optimized_model_filepath)
    assert (
        fused["float"].get("MatMulIntegerToFloat", 0)
        + fused["float"].get("QLinearMatMul", 0)
        + fused["float"].get("MatMulInteger", 0)
        == 2
    ), fused
    assert error["float"] < error["int8"], error
