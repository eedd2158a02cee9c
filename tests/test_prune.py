"""Pruning, fine-tuning and clustering: what each does to the weights, the graph and the file."""

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from squeezeflow.onnx import modelfile, rewrites, sessions
from squeezeflow.steps import StepContext
from squeezeflow.steps.cluster import ClusterConfig, cluster
from squeezeflow.steps.finetune import FinetuneConfig, finetune
from squeezeflow.steps.prune import PruneConfig, prune, schedule, sparsity
from squeezeflow.torch import convert, train


@pytest.fixture
def ctx(tmp_path, digits_dir):
    return StepContext(workdir=tmp_path, train=digits_dir / "train.npz", calibration=digits_dir / "calibration.npz")


def _eval(digits_dir, n=None):
    ev = np.load(digits_dir / "eval.npz")
    return ev["input"][:n], ev["labels"][:n]


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_reaches_the_sparsity_and_finetune_keeps_it(digits_cnn, ctx, scope):
    model = prune(copy.deepcopy(digits_cnn), PruneConfig(amount=0.8, scope=scope), ctx).model
    assert sparsity(model) == pytest.approx(0.8, abs=0.005)
    if scope == "layer":
        for p in train.weights(model).values():
            assert float((p == 0).float().mean()) == pytest.approx(0.8, abs=0.01)
    tuned = finetune(model, FinetuneConfig(epochs=1, lr=1e-3, patience=0), ctx)
    assert sparsity(tuned.model) == pytest.approx(0.8, abs=0.005)
    assert tuned.stats["val_accuracy_after"] >= 0.9


def test_gradual_schedule_and_result(digits_cnn, ctx):
    values = [schedule(t, 100, 0.1, 0.8) for t in range(0, 101)]
    assert values[0] == pytest.approx(0.1) and values[80] == pytest.approx(0.8) and values[100] == pytest.approx(0.8)
    assert all(a <= b for a, b in zip(values, values[1:]))  # monotone
    assert values[20] - values[0] > values[80] - values[60]  # prunes fast first, slowly at the end (cubic)
    result = prune(copy.deepcopy(digits_cnn), PruneConfig(amount=0.7, schedule="gradual", epochs=1, frequency=5), ctx)
    assert result.stats["sparsity"] == pytest.approx(0.7, abs=0.005)
    x, y = _eval(ctx.train.parent)
    assert train.accuracy(result.model, x, y) >= 0.85


@pytest.mark.parametrize("importance", ["magnitude", "bn_scale", "taylor"])
def test_structured_removes_channels_and_exports_faithfully(digits_cnn, ctx, importance, tmp_path):
    result = prune(copy.deepcopy(digits_cnn), PruneConfig(method="structured", amount=0.5, importance=importance), ctx)
    assert result.stats["params_after"] < 0.75 * result.stats["params_before"]
    assert result.model[-1].out_features == 10  # the classifier keeps its outputs
    x, _ = _eval(ctx.train.parent, 64)
    path = tmp_path / "pruned.onnx"
    convert.export_onnx(result.model, {"input": x}, path)  # checks ORT against torch
    assert path.stat().st_size < 0.8 * sum(p.numel() for p in digits_cnn.parameters()) * 4


class _Residual(torch.nn.Module):
    """ResNet-style: a residual add, a concatenation, global average pooling, a linear head."""

    def __init__(self, pool: bool = True):
        super().__init__()
        self.pool = pool
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU())
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(16, 16, 3, padding=1),
            torch.nn.BatchNorm2d(16),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 16, 3, padding=1),
            torch.nn.BatchNorm2d(16),
        )
        self.branch = torch.nn.Conv2d(16, 8, 1)
        self.head = torch.nn.Linear(24 if pool else 24 * 64, 10)

    def forward(self, x):
        h = self.stem(x)
        h = torch.relu(h + self.body(h))  # residual add: both sides must keep the same channels
        h = torch.cat([h, self.branch(h)], dim=1)  # concatenation
        h = h.mean(dim=(2, 3)) if self.pool else h.flatten(1)
        return self.head(h)


def test_torch_pruning_keeps_a_residual_network_consistent(ctx, tmp_path):
    x, _ = _eval(ctx.train.parent, 32)
    pruned = prune(_Residual().eval(), PruneConfig(method="structured", amount=0.5), ctx).model
    assert pruned.stem[0].out_channels == pruned.body[3].out_channels < 16  # residual partners pruned together
    assert pruned.head.in_features == pruned.stem[0].out_channels + pruned.branch.out_channels
    path = tmp_path / "resnet.onnx"
    convert.export_onnx(pruned, {"input": x}, path)
    with torch.no_grad():
        expected = pruned(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(sessions.run(sessions.session(path), {"input": x}), expected, rtol=1e-4, atol=1e-4)


def test_a_model_the_pruner_breaks_is_refused(ctx):
    from squeezeflow.errors import ModelError

    with pytest.raises(ModelError, match="structured pruning left the model inconsistent"):
        prune(_Residual(pool=False).eval(), PruneConfig(method="structured", amount=0.5), ctx)


def test_structured_on_an_exported_graph_prunes_it(digits_cnn, ctx):
    x, _ = _eval(ctx.train.parent, 4)
    exported = torch.export.export(copy.deepcopy(digits_cnn), (torch.from_numpy(x),)).module()
    result = prune(exported, PruneConfig(method="structured", amount=0.5), ctx)
    assert result.stats["params_after"] < 0.6 * result.stats["params_before"]


def test_cluster_palettizes_and_shrinks_the_file(digits_cnn, digits_onnx, ctx):
    result = cluster(copy.deepcopy(digits_cnn), ClusterConfig(clusters=16), ctx)
    model = onnx.load(str(result.model))
    indices = [i for i in model.graph.initializer if i.name.endswith("_indices")]
    assert len(indices) == result.stats["layers_palettized"] == result.stats["layers_clustered"] == 3 and all(
        i.data_type == onnx.TensorProto.UINT8 for i in indices
    )
    for i in indices:
        assert numpy_helper.to_array(i).max() < 16
    assert "Gather" in modelfile.op_counts(result.model)
    assert result.model.stat().st_size * 3.5 <= digits_onnx.stat().st_size
    x, y = _eval(ctx.train.parent)
    fp32 = sessions.run(sessions.session(digits_onnx), {"input": x})
    clustered = sessions.run(sessions.session(result.model), {"input": x})
    assert (fp32.argmax(1) == clustered.argmax(1)).mean() >= 0.97


def test_cluster_after_pruning_keeps_zeros_and_centroid_tuning_keeps_k(digits_cnn, ctx):
    pruned = prune(copy.deepcopy(digits_cnn), PruneConfig(amount=0.8), ctx).model
    result = cluster(pruned, ClusterConfig(clusters=8, epochs=1), ctx)
    assert (
        result.stats["centroid_epochs"] == 1
        and result.stats["layers_palettized"] == result.stats["layers_clustered"] == 3
    )
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(result.model)).graph.initializer}
    zeros = total = 0
    for name, codebook in inits.items():
        if name.endswith("_codebook"):
            assert len(codebook) <= 8 and 0.0 in codebook.tolist()  # pruned zeros stay an exact zero
            indices = inits[name.replace("_codebook", "_indices")]
            zeros += int((indices == codebook.tolist().index(0.0)).sum())
            total += indices.size
    assert zeros / total > 0.75  # global 80% sparsity survives clustering (small layers excluded)


def test_palettize_is_exact(digits_onnx, tmp_path):
    quantized = tmp_path / "q.onnx"
    model = onnx.load(str(digits_onnx))
    for init in model.graph.initializer:  # give every weight only 4 distinct values
        arr = numpy_helper.to_array(init)
        if arr.size >= 1024:
            init.CopyFrom(numpy_helper.from_array((np.sign(arr) * 0.5).astype(np.float32), init.name))
    onnx.save(model, str(quantized))
    out = tmp_path / "p.onnx"
    assert rewrites.palettize(quantized, out, max_values=256) >= 3
    x = {"input": np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)}
    np.testing.assert_array_equal(sessions.run(sessions.session(out), x), sessions.run(sessions.session(quantized), x))


@pytest.fixture
def pt2_and_pickle(local_registry, digits_cnn, digits_dir, tmp_path, monkeypatch):
    """The same trained CNN registered in MLflow's default pt2 format and as a pickle, each loaded back as pull does."""
    from squeezeflow import registry

    example = np.load(digits_dir / "eval.npz")["input"][:4]
    loaded = {}
    for fmt in ("pt2", "pickle"):
        registry.register_torch(digits_cnn, f"cnn-{fmt}", example, alias="champion", serialization_format=fmt)
        folder = registry.download(registry.resolve(f"models:/cnn-{fmt}@champion"), tmp_path / fmt)
        monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true" if fmt == "pickle" else "")
        loaded[fmt] = convert.load_torch(folder)
    return loaded


def _same_weights(a, b):
    pa, pb = [p.detach() for p in a.parameters()], [p.detach() for p in b.parameters()]
    assert [p.shape for p in pa] == [p.shape for p in pb]
    return max(float((x - y).abs().max()) for x, y in zip(pa, pb))


def test_pt2_source_has_its_layers_back(pt2_and_pickle, digits_dir):
    pt2, pickled = pt2_and_pickle["pt2"], pt2_and_pickle["pickle"]
    kinds = lambda m: [
        type(c).__name__
        for c in m.modules()
        if isinstance(c, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.modules.batchnorm._BatchNorm))
    ]  # noqa: E731
    assert kinds(pt2) == [k.replace("BatchNorm2d", "BatchNorm") for k in kinds(pickled)]
    x, _ = _eval(digits_dir, 32)
    with torch.no_grad():
        assert torch.equal(pt2(torch.from_numpy(x)), pickled(torch.from_numpy(x)))
        assert pt2(torch.from_numpy(x[:1])).shape == (1, 10)  # any batch size, the export's guards are gone


def test_pt2_and_pickle_prune_alike(pt2_and_pickle, ctx, digits_dir, tmp_path):
    config = PruneConfig(method="structured", amount=0.5)
    pruned = {fmt: prune(copy.deepcopy(m), config, ctx) for fmt, m in pt2_and_pickle.items()}
    assert (
        pruned["pt2"].stats["params_after"]
        == pruned["pickle"].stats["params_after"]
        < 0.6 * pruned["pickle"].stats["params_before"]
    )
    assert _same_weights(pruned["pt2"].model, pruned["pickle"].model) == 0.0
    tuned = {
        fmt: finetune(r.model, FinetuneConfig(epochs=1, lr=1e-3, patience=0), ctx).model for fmt, r in pruned.items()
    }
    # BatchNorm trains in both (batch statistics, running averages)
    assert _same_weights(tuned["pt2"], tuned["pickle"]) < 1e-5
    x, _ = _eval(digits_dir, 64)
    convert.export_onnx(tuned["pt2"], {"input": x}, tmp_path / "pt2.onnx")  # ORT checked against torch


def test_pt2_and_pickle_cluster_alike(pt2_and_pickle, ctx, tmp_path, digits_dir):
    sizes, outputs = {}, {}
    x, _ = _eval(digits_dir, 64)
    for fmt, model in pt2_and_pickle.items():
        work = tmp_path / f"cluster-{fmt}"
        work.mkdir()
        result = cluster(
            copy.deepcopy(model),
            ClusterConfig(clusters=16, min_size=256),
            StepContext(workdir=work, train=ctx.train, calibration=ctx.calibration),
        )
        assert "note" not in result.stats  # every clustered layer is palettized: BatchNorm was folded first
        sizes[fmt] = result.model.stat().st_size
        outputs[fmt] = sessions.run(sessions.session(result.model), {"input": x})
    convert.export_onnx(pt2_and_pickle["pickle"], {"input": x}, tmp_path / "fp32.onnx")
    fp32 = (tmp_path / "fp32.onnx").stat().st_size
    # what the pickled path reached; the pt2 one got 2.8x before
    assert fp32 / sizes["pt2"] >= 3.5 and fp32 / sizes["pickle"] >= 3.5
    # the same weights; node names and graph metadata differ
    assert sizes["pt2"] == pytest.approx(sizes["pickle"], rel=0.05)
    assert float(np.abs(outputs["pt2"] - outputs["pickle"]).max()) < 1e-4


def test_cluster_needs_no_labels_without_centroid_finetuning(digits_cnn, digits_dir, tmp_path):
    """Embedding and generic models have no class labels: clustering alone must not ask for them."""
    np.savez(tmp_path / "unlabelled.npz", input=np.load(digits_dir / "train.npz")["input"][:64])
    work = tmp_path / "work"
    work.mkdir()
    result = cluster(
        copy.deepcopy(digits_cnn),
        ClusterConfig(clusters=16),
        StepContext(workdir=work, train=tmp_path / "unlabelled.npz"),
    )
    assert result.stats["layers_palettized"] >= 3


def test_structured_prunes_a_model_of_conv1d_layers_and_names_what_it_cannot(tmp_path):
    """Six plain nn.Conv1d layers (an audio model's stack) were refused as if their weights were computed in the
    graph; a model with no prunable layer is refused naming the layers it has."""
    from squeezeflow.errors import ModelError

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4, 32)).astype(np.float32)
    np.savez(tmp_path / "train.npz", input=x, labels=rng.integers(0, 3, 64))
    ctx = StepContext(workdir=tmp_path, train=tmp_path / "train.npz")
    layers = [torch.nn.Conv1d(4 if i == 0 else 16, 16, 3, padding=1) for i in range(6)]
    stack = [m for conv in layers for m in (conv, torch.nn.ReLU())]
    model = torch.nn.Sequential(*stack, torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(), torch.nn.Linear(16, 3))
    result = prune(model.eval(), PruneConfig(method="structured", amount=0.5), ctx)
    assert result.stats["params_after"] < 0.6 * result.stats["params_before"]
    assert result.model(torch.from_numpy(x[:2])).shape == (2, 3)
    norm = torch.nn.Sequential(torch.nn.LayerNorm(32)).eval()
    with pytest.raises(ModelError, match="has none \\(its layers with weights: LayerNorm\\)"):
        prune(norm, PruneConfig(method="structured", amount=0.5), ctx)
