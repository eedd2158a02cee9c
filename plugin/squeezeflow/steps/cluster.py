"""k-means weight clustering, exported palettized: small integer indices plus a codebook per layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from squeezeflow.onnx import rewrites
from squeezeflow.steps import MAX_BATCH, MAX_EPOCHS, StepConfig, StepContext, StepResult, register_step
from squeezeflow.steps.finetune import training_data
from squeezeflow.torch import convert, rebuild, train

FIT_SAMPLES = 100_000  # k-means is fitted on a seeded sample of a layer's weights, then assigns all


class ClusterConfig(StepConfig):
    """Per-layer k-means weight clustering (k-means++ init); zeros stay exactly zero."""

    kind: ClassVar[str] = "cluster"
    input_format: ClassVar[str] = "torch"
    clusters: int = Field(
        16, ge=2, le=256, description="Distinct values per layer (a zero from pruning counts as one)."
    )
    epochs: int = Field(
        0, ge=0, le=MAX_EPOCHS, description="Fine-tuning epochs of the centroids with the assignments fixed (0: none)."
    )
    lr: float = Field(1e-4, gt=0, lt=1, description="Centroid fine-tuning learning rate.")
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description="Centroid fine-tuning batch size.")
    min_size: int = Field(1024, ge=1, le=1 << 40, description="Layers with fewer weights are left as they are.")

    def promise(self) -> str | None:
        return "size"


@register_step(ClusterConfig)
def cluster(model: Any, config: ClusterConfig, ctx: StepContext) -> StepResult:
    """Cluster, optionally fine-tune the centroids, export to ONNX and palettize the clustered weights."""
    import torch

    # the exporter would fold it anyway, scaling each channel and multiplying a clustered kernel's distinct values
    model = rebuild.fold_batchnorm(model)
    assignments = {}
    with torch.no_grad():
        for name, p in train.weights(model).items():
            if p.numel() >= config.min_size:
                assignments[name] = _kmeans(p, config.clusters, ctx.seed)
    # without centroid fine-tuning the inputs are only the export example
    x, y, _ = training_data(ctx, "cluster", labels_required=config.epochs > 0)
    if config.epochs:
        params = dict(model.named_parameters())

        def snap(_m: Any, _step: int, _total: int) -> None:  # centroid = mean of its members; zero stays zero
            for name, (index, zero) in assignments.items():
                p = params[name]
                sums = torch.zeros(int(index.max()) + 1).index_add_(0, index, p.flatten())
                means = sums / torch.bincount(index).clamp(min=1)
                if zero is not None:
                    means[zero] = 0.0
                p.copy_(means[index].view_as(p))

        train.fit(
            model,
            x,
            y,
            epochs=config.epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            seed=ctx.seed,
            desc="cluster finetune",
            after_step=snap,
        )
    exported = Path(ctx.workdir) / "clustered.onnx"
    convert.export_onnx(model, {k: v[:32] for k, v in x.items()}, exported)
    out = Path(ctx.workdir) / "palettized.onnx"
    count = rewrites.palettize(exported, out, max_values=config.clusters, min_size=config.min_size)
    stats = {
        "clusters": config.clusters,
        "layers_clustered": len(assignments),
        "layers_palettized": count,
        "weights_clustered": int(sum(len(a[0]) for a in assignments.values())),
        "centroid_epochs": config.epochs,
    }
    if count < len(assignments):
        stats["note"] = (
            f"{len(assignments) - count} clustered layer(s) stay dense in the file: the exporter "
            "folded a per-channel BatchNorm into them (one torch.fx could not fold before clustering)"
        )
    return StepResult(out, stats)


def _kmeans(p: Any, clusters: int, seed: int) -> tuple[Any, int | None]:
    """Replace p's values by their k-means centroids in place; returns (assignment, zero cluster)."""
    import numpy as np
    import torch
    from sklearn.cluster import KMeans

    w = p.detach().cpu().numpy().ravel()
    zeros = w == 0
    values = w[~zeros]
    k = max(1, min(clusters - int(zeros.any()), len(np.unique(values))))
    rng = np.random.default_rng(seed)
    sample = values if len(values) <= FIT_SAMPLES else rng.choice(values, FIT_SAMPLES, replace=False)
    km = KMeans(n_clusters=k, init="k-means++", n_init=1, random_state=seed).fit(sample.reshape(-1, 1))
    centroids = km.cluster_centers_.ravel().astype(np.float32)
    index = np.empty(len(w), dtype=np.int64)
    index[~zeros] = km.predict(values.reshape(-1, 1))
    zero = None
    if zeros.any():
        zero = k
        centroids = np.append(centroids, np.float32(0.0))
        index[zeros] = zero
    p.copy_(torch.from_numpy(centroids[index].reshape(p.shape)))
    return torch.from_numpy(index), zero
