"""Quality metrics per task, candidate against the FP32 baseline, each with a 95% paired-bootstrap interval.

- classification: accuracy on `labels`, its drop, agreement with the baseline's predictions,
  per-class accuracy (first output, [samples, classes] logits).
- regression: MAE and RMSE against `labels` (or against the baseline's outputs when there are
  none), and their increase over the baseline's.
- embedding: cosine similarity of each sample's embedding to the baseline's, and top-1 retrieval
  agreement (each sample's nearest other sample is the same in both embedding spaces).
- generic: max and mean absolute difference to the baseline's outputs, and the same relative to
  the baseline's largest (max) or mean (mean) magnitude.

Models with several outputs get one set of `output.NAME.*` keys per output (regression,
embedding, generic); the top-level keys are the worst output's, which is what budgets judge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from squeezeflow.errors import DataError, ModelError
from squeezeflow.evaluate import classification, stats

if TYPE_CHECKING:
    import numpy as np

TASKS = ("classification", "regression", "embedding", "generic")
PRIMARY = {  # task -> (primary metric, its comparison to FP32): what tables, plots and `dvc metrics diff` lead with
    "classification": ("accuracy", "accuracy_drop"),
    "regression": ("mae", "mae_increase"),
    "embedding": ("cosine", "retrieval_agreement"),
    "generic": ("max_abs_error", "mean_abs_error"),
}
WORST = {  # per-output key -> whether larger is worse (how the top-level key is picked across outputs)
    "mae": True,
    "rmse": True,
    "mae_increase": True,
    "mae_increase_ci_low": True,
    "mae_increase_ci_high": True,
    "rmse_increase": True,
    "cosine": False,
    "cosine_min": False,
    "cosine_ci_low": False,
    "cosine_ci_high": False,
    "retrieval_agreement": False,
    "max_abs_error": True,
    "mean_abs_error": True,
    "max_rel_error": True,
    "mean_rel_error": True,
    "mean_abs_error_ci_low": True,
    "mean_abs_error_ci_high": True,
}


def check_outputs(outputs: dict[str, np.ndarray], samples: int, task: str, what: str) -> dict[str, np.ndarray]:
    """Every output must have the sample axis first; classification's first output must be logits.

    Raises:
        ModelError: an output the task cannot score.
    """

    if task == "classification":
        classification.check_logits(next(iter(outputs.values())), samples, what)
        return outputs
    for name, out in outputs.items():
        if out.ndim == 0 or out.shape[0] != samples:
            raise ModelError(
                f"{what}: output {name!r} has shape {list(out.shape)} for {samples} samples; task "
                f"{task} needs the sample axis first. "
                "Reshape the output in the model."
            )
        if task == "embedding" and (vectors(out).ndim != 2 or vectors(out).shape[1] < 2):
            raise ModelError(
                f"{what}: output {name!r} has shape {list(out.shape)}; task embedding needs "
                f"[{samples}, dimensions] vectors (unit axes between, as in [N, 1, 1, 96], are dropped)."
            )
    return outputs


def vectors(out: np.ndarray) -> np.ndarray:
    """An embedding output as [N, dimensions]: unit axes after the sample axis dropped ([N, 1, 1, 96] -> [N, 96])."""
    kept = [d for d in out.shape[1:] if d != 1]
    return out.reshape(out.shape[0], *kept) if out.ndim > 2 and len(kept) == 1 else out


def score(
    task: str, base: dict[str, np.ndarray], cand: dict[str, np.ndarray], labels: np.ndarray | None, seed: int = 0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, plot data) of a candidate's outputs against the baseline's, for `task`.

    Args:
        task: one of TASKS.
        base, cand: output name -> array, in the model's output order.
        labels: the eval file's `labels` (required for classification, optional for regression, unused otherwise).
        seed: the bootstrap's seed.

    Example:
        >>> score("generic", {"y": np.ones((4, 2))}, {"y": np.ones((4, 2))}, None)[0]["max_abs_error"]  # doctest: +SKIP
        0.0
    """
    if list(base) != list(cand) or any(base[k].shape != cand[k].shape for k in base):
        raise ModelError(
            f"the candidate's outputs {_shapes(cand)} differ from the source model's {_shapes(base)}; "
            "a candidate must keep the source's outputs."
        )
    if task == "classification":
        return _classification(next(iter(base.values())), next(iter(cand.values())), labels, seed)
    if task == "embedding":
        base, cand = {k: vectors(v) for k, v in base.items()}, {k: vectors(v) for k, v in cand.items()}
    per = {name: _ONE[task](base[name], cand[name], labels if len(base) == 1 else None, seed) for name in base}
    metrics: dict[str, Any] = {}
    if len(per) > 1:
        for name, m in per.items():
            metrics.update({f"output.{name}.{k}": v for k, v in m.items()})
    for key in next(iter(per.values())):
        values = [m[key] for m in per.values()]
        metrics[key] = max(values) if WORST.get(key, True) else min(values)
    return metrics, {}


def _shapes(outputs: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {list(v.shape)}" for k, v in outputs.items())


def _classification(
    base: np.ndarray, cand: np.ndarray, labels: np.ndarray | None, seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:

    if labels is None:
        raise DataError(
            "the eval file has no `labels` array; task classification needs one (the FP32 model's own "
            "predictions will do)."
        )
    correct_base, correct_cand = base.argmax(axis=1) == labels, cand.argmax(axis=1) == labels
    per_base, per_cand = (
        classification.per_class_accuracy(base, labels),
        classification.per_class_accuracy(cand, labels),
    )
    metrics = {
        "accuracy": float(correct_cand.mean()),
        **stats.paired_drop(correct_base, correct_cand, seed),
        "class_accuracy_drop_max": max(per_base[c] - per_cand[c] for c in per_base),
        "agreement": classification.agreement(cand, base),
    }
    return metrics, {"class_accuracy": {"baseline": per_base, "candidate": per_cand}}


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1).astype("float64")


def _regression(base: np.ndarray, cand: np.ndarray, labels: np.ndarray | None, seed: int) -> dict[str, float]:
    import numpy as np

    ref = base if labels is None else labels
    if ref.shape != base.shape and (ref.size != base.size or len(ref) != len(base)):
        raise DataError(
            f"`labels` have shape {list(ref.shape)}, the model's output {list(base.shape)}; regression "
            "labels must match the output."
        )
    ref = _flat(ref.reshape(base.shape))
    err_base, err_cand = np.abs(_flat(base) - ref).mean(axis=1), np.abs(_flat(cand) - ref).mean(axis=1)
    sq_base, sq_cand = ((_flat(base) - ref) ** 2).mean(axis=1), ((_flat(cand) - ref) ** 2).mean(axis=1)
    inc, lo, hi = stats.paired_mean_difference(err_cand, err_base, seed)
    return {
        "mae": float(err_cand.mean()),
        "mae_baseline": float(err_base.mean()),
        "mae_increase": inc,
        "mae_increase_ci_low": lo,
        "mae_increase_ci_high": hi,
        "rmse": float(np.sqrt(sq_cand.mean())),
        "rmse_increase": float(np.sqrt(sq_cand.mean()) - np.sqrt(sq_base.mean())),
    }


def _embedding(base: np.ndarray, cand: np.ndarray, labels: np.ndarray | None, seed: int) -> dict[str, float]:
    import numpy as np

    b, c = _flat(base), _flat(cand)
    nb, nc = np.linalg.norm(b, axis=1), np.linalg.norm(c, axis=1)
    cos = (b * c).sum(axis=1) / np.maximum(nb * nc, 1e-12)
    mean, lo, hi = stats.bootstrap_mean(cos, seed)
    return {
        "cosine": mean,
        "cosine_ci_low": lo,
        "cosine_ci_high": hi,
        "cosine_min": float(cos.min()),
        "retrieval_agreement": retrieval_agreement(b, c),
    }


def retrieval_agreement(base: np.ndarray, cand: np.ndarray) -> float:
    """Share of samples whose nearest other sample (cosine) is the same under both embeddings (1.0 for fewer than 3
    samples).
    """
    import numpy as np

    if len(base) < 3:
        return 1.0

    def nearest(x: np.ndarray) -> np.ndarray:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        sim = x @ x.T
        np.fill_diagonal(sim, -np.inf)
        return sim.argmax(axis=1)

    return float((nearest(base) == nearest(cand)).mean())


def _generic(base: np.ndarray, cand: np.ndarray, labels: np.ndarray | None, seed: int) -> dict[str, float]:
    import numpy as np

    diff = np.abs(_flat(cand) - _flat(base))
    per_sample = diff.mean(axis=1)
    mean, lo, hi = stats.bootstrap_mean(per_sample, seed)
    scale_max, scale_mean = float(np.abs(base).max()), float(np.abs(base).mean())
    return {
        "max_abs_error": float(diff.max()),
        "mean_abs_error": mean,
        "mean_abs_error_ci_low": lo,
        "mean_abs_error_ci_high": hi,
        "max_rel_error": float(diff.max()) / max(scale_max, 1e-12),
        "mean_rel_error": mean / max(scale_mean, 1e-12),
    }


_ONE = {"regression": _regression, "embedding": _embedding, "generic": _generic}
