"""Lineage: what goes into ONNX metadata, registry tags, and the walk back to the source."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

PREFIX = "squeezeflow."


def onnx_props(manifest: dict[str, Any]) -> dict[str, str]:
    """metadata_props carried inside the compressed ONNX file itself."""
    return {
        f"{PREFIX}root": json.dumps(manifest["root"], sort_keys=True),
        f"{PREFIX}steps": json.dumps(manifest["steps"], sort_keys=True),
        f"{PREFIX}parent_digest": manifest["parent_digest"] or "",
        f"{PREFIX}recipe": json.dumps(manifest.get("recipe", {}), sort_keys=True),
    }


def git_commit(cwd: str | Path = ".") -> str:
    """HEAD of the enclosing git repository, or '' outside one."""
    import os

    from squeezeflow import env

    if os.environ.get(env.GITHUB_SHA):
        return os.environ[env.GITHUB_SHA]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def version_tags(manifest: dict[str, Any], verdict: dict[str, Any], data_digests: dict[str, str], dvc_lock_digest: str) -> dict[str, str]:
    """The `squeezeflow.*` tags of a promoted version (also set on its run)."""
    root = manifest["root"]
    selected = verdict["selected"]
    metrics = verdict["candidates"][selected]["metrics"]
    tags = {
        "source.name": root["name"],
        "source.version": root["version"],
        "source.model_id": root.get("model_id") or "",
        "source.run_id": root.get("run_id") or "",
        "source.uri": root["requested"],
        "recipe.name": manifest["recipe"]["name"],
        "recipe.digest": manifest["recipe"]["digest"],
        "recipe.steps": ",".join(s["kind"] for s in manifest["steps"]),
        "teachers": ",".join(teachers(manifest)),
        "artifact_sha256": manifest["sha256"],
        "parent_digest": manifest["parent_digest"] or "",
        "git_commit": git_commit(),
        "dvc_lock_digest": dvc_lock_digest,
        "gate.verdict": verdict["verdict"],
        **{f"data.{role}_sha256": d for role, d in sorted(data_digests.items())},
        **{f"metric.{k}": f"{metrics[k]:.6g}" for k in ("accuracy", "accuracy_drop", "latency_p95_ms", "speedup", "size_mb", "compression_ratio") if k in metrics},
    }
    return {PREFIX + k: str(v) for k, v in tags.items()}


def teachers(manifest: dict[str, Any]) -> list[str]:
    """NAME/VERSION of every distillation teacher in the manifest's steps, in order, once each."""
    seen: list[str] = []
    for step in manifest["steps"]:
        for t in step.get("stats", {}).get("teachers", []):
            if f"{t['name']}/{t['version']}" not in seen:
                seen.append(f"{t['name']}/{t['version']}")
    return seen


def walk(uri: str, max_depth: int = 20) -> list[dict[str, Any]]:
    """Follow `squeezeflow.source.*` tags from a version back to its root model.

    Returns:
        One entry per version, newest first: uri, recipe, steps, sha256, verdict, git commit.

    Example:
        >>> walk("models:/digits-cnn-edge@candidate")[-1]["uri"]  # doctest: +SKIP
        'models:/digits-cnn/1'
    """
    from squeezeflow import registry

    chain = []
    ref = registry.resolve(uri)
    while ref is not None and len(chain) < max_depth:
        tags = ref.tags

        def tag(key: str, tags: dict[str, str] = tags) -> str:
            return tags.get(PREFIX + key, "")

        chain.append({
            "uri": ref.uri,
            "source": ref.source,
            "run_id": ref.run_id or "",
            "recipe": tag("recipe.name"),
            "steps": tag("recipe.steps"),
            "teachers": tag("teachers"),
            "sha256": tag("artifact_sha256"),
            "verdict": tag("gate.verdict"),
            "git_commit": tag("git_commit"),
        })
        parent = tag("source.name"), tag("source.version")
        ref = registry.resolve(f"models:/{parent[0]}/{parent[1]}") if all(parent) else None
    return chain
