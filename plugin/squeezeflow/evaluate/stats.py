"""95% intervals for the gate: speedup ratios over measurement rounds, paired accuracy drops."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

LEVEL = 0.95
BOOTSTRAP = 2000


def mean_interval(values: np.ndarray, log: bool = False) -> tuple[float, float, float]:
    """(estimate, low, high): Student-t 95% interval of the mean; with `log`, of the geometric mean.

    Each value is one round of interleaved measurements, so rounds are independent samples of
    the machine's state; fewer than 2 rounds give a zero-width interval.
    """
    import numpy as np
    from scipy import special  # scipy.stats costs a second of import in every evaluate process

    x = np.log(values) if log else np.asarray(values, dtype=float)
    mean = float(x.mean())
    half = float(special.stdtrit(len(x) - 1, 0.5 + LEVEL / 2) * x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0
    lo, hi = mean - half, mean + half
    return (float(np.exp(mean)), float(np.exp(lo)), float(np.exp(hi))) if log else (mean, lo, hi)


def paired_drop(base_correct: np.ndarray, cand_correct: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Accuracy drop (baseline minus candidate) on paired predictions, with a 95% paired-bootstrap
    interval and the exact McNemar p-value (two-sided binomial test on the discordant pairs)."""
    import numpy as np
    from scipy import special

    diff = base_correct.astype(np.int8) - cand_correct.astype(np.int8)
    _, lo, hi = bootstrap_mean(diff, seed)
    worse, better = int((diff > 0).sum()), int((diff < 0).sum())
    # Bin(n, 1/2) is symmetric
    p = min(1.0, 2 * float(special.bdtr(min(worse, better), worse + better, 0.5))) if worse + better else 1.0
    return {
        "accuracy_drop": float(diff.mean()),
        "accuracy_drop_ci_low": float(lo),
        "accuracy_drop_ci_high": float(hi),
        "mcnemar_p": p,
        "discordant_worse": worse,
        "discordant_better": better,
    }


def bootstrap_mean(values: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of per-sample values with its 95% bootstrap interval (samples resampled with
    replacement).
    """
    import numpy as np

    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    # resamples drawn 8 MB at a time: memory does not grow with the eval set
    chunk = max(1, min(BOOTSTRAP, (8 << 20) // (16 * len(values))))
    boot = np.concatenate(
        [
            values[rng.integers(0, len(values), size=(min(chunk, BOOTSTRAP - i), len(values)))].mean(axis=1)
            for i in range(0, BOOTSTRAP, chunk)
        ]
    )
    lo, hi = np.percentile(boot, [50 * (1 - LEVEL), 100 - 50 * (1 - LEVEL)])
    return float(values.mean()), float(lo), float(hi)


def paired_mean_difference(cand: np.ndarray, base: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """(mean of cand - base, low, high): a paired-bootstrap 95% interval of a per-sample metric's change."""
    import numpy as np

    return bootstrap_mean(np.asarray(cand, dtype=float) - np.asarray(base, dtype=float), seed)
