"""What a metrics file measured: the candidate and source artifacts, the evaluate params, and its own digest.

evaluate writes `measured` into metrics/NAME.json; the gate recomputes each field from what is on
disk now and refuses a file that measured something else (a stale file from an earlier run, a
candidate rebuilt since) or whose numbers changed after evaluate wrote them. The digest is a plain
sha256, not a signature: it catches stale and edited files, not someone who can rerun the pipeline.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow import data
from squeezeflow.errors import DataError

if TYPE_CHECKING:
    from squeezeflow.config import Params

KEY = "measured"
# target fields the gate reads and evaluate does not: changing them needs no new measurement
GATE_ONLY = {"budgets", "optional"}


def params_digest(params: Params) -> str:
    """sha256 of what evaluate reads besides the models: data.task, the eval file's bytes, target(s) (less their budgets
    and `optional`).
    """

    eval_file = Path(params.data.eval)
    seen = {
        "task": params.data.task,
        "eval": str(params.data.eval),
        "eval_sha256": data.digest(eval_file) if eval_file.is_file() else None,
        "target": params.target.model_dump(mode="json", exclude=GATE_ONLY),
        "targets": {k: t.model_dump(mode="json", exclude=GATE_ONLY) for k, t in params.targets.items()}
        if params.targets
        else None,
    }
    return _sha(seen)


def stamp(
    metrics: dict[str, Any], candidate_sha256: str | None, source_sha256: str, params_sha256: str
) -> dict[str, Any]:
    """`metrics` with its `measured` block (candidate_sha256 is None for a recipe compress could not apply)."""
    body = {k: v for k, v in metrics.items() if k != KEY}
    ident = {"candidate_sha256": candidate_sha256, "source_sha256": source_sha256, "params_digest": params_sha256}
    return {**body, KEY: {**ident, "digest": _sha({"metrics": body, **ident})}}


def verify(
    path: Path, row: dict[str, Any], candidate_sha256: str | None, source_sha256: str, params_sha256: str
) -> dict[str, Any]:
    """The row without its `measured` block, once it is shown to measure these artifacts with these params.

    Raises:
        DataError: no `measured` block, numbers edited since evaluate wrote them, or another
            candidate, source or params than today's.
    """
    seal = row.get(KEY)
    rerun = f"Run its evaluate stage again (`dvc repro`, or `squeezeflow evaluate {path.stem}`)."
    if not isinstance(seal, dict):
        raise DataError(f"{path}: no record of what it measured (written by an older squeezeflow, or by hand). {rerun}")
    body = {k: v for k, v in row.items() if k != KEY}
    ident = {k: seal.get(k) for k in ("candidate_sha256", "source_sha256", "params_digest")}
    if seal.get("digest") != _sha({"metrics": body, **ident}):
        raise DataError(f"{path}: its numbers changed after evaluate wrote them (digest mismatch). {rerun}")
    for key, now, what in (
        ("candidate_sha256", candidate_sha256, "candidate model"),
        ("source_sha256", source_sha256, "source model"),
        ("params_digest", params_sha256, "eval data, data.task or target"),
    ):
        if ident[key] != now:
            raise DataError(f"{path}: measured another {what} than the one there now (stale). {rerun}")
    return body


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
