"""Lineage: what goes into ONNX metadata, registry tags, and the walk back to the source."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow import registry
from squeezeflow.errors import ModelError
from squeezeflow.onnx import modelfile
from squeezeflow.registry import gitstate

if TYPE_CHECKING:
    from squeezeflow.registry.gitstate import GitState

PREFIX = "squeezeflow."
STEPS_TAG_LIMIT = 5000  # MLflow tag values are bounded; longer step lists keep their kinds only


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

    return gitstate.commit(cwd)


def version_tags(
    manifest: dict[str, Any],
    verdict: dict[str, Any],
    data_digests: dict[str, str],
    dvc_lock_digest: str,
    where: GitState | None = None,
) -> dict[str, str]:
    """The `squeezeflow.*` tags of a promoted version (also set on its run); `where`: the git state it was promoted
    from.
    """
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
        "steps": _steps_tag(manifest["steps"]),
        "teachers": ",".join(teachers(manifest)),
        "artifact_sha256": manifest["sha256"],
        "parent_digest": manifest["parent_digest"] or "",
        "git_commit": where.commit if where else git_commit(),
        **(where.tags() if where else {}),
        "dvc_lock_digest": dvc_lock_digest,
        "gate.verdict": verdict["verdict"],
        **{f"data.{role}_sha256": d for role, d in sorted(data_digests.items())},
        **{
            f"metric.{k}": f"{metrics[k]:.6g}"
            for k in (
                "accuracy",
                "accuracy_drop",
                "agreement",
                "mae",
                "mae_increase",
                "cosine",
                "retrieval_agreement",
                "max_abs_error",
                "mean_rel_error",
                "latency_p95_ms",
                "speedup",
                "size_mb",
                "compression_ratio",
            )
            if k in metrics
        },
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


def without_stats(step: dict[str, Any]) -> dict[str, Any]:
    """A manifest step's kind and resolved parameters, without its statistics."""
    return {k: v for k, v in step.items() if k != "stats"}


def _steps_tag(steps: list[dict[str, Any]]) -> str:
    """The steps with their resolved parameters (no statistics), as compact JSON that fits a tag."""
    text = json.dumps([without_stats(step) for step in steps], sort_keys=True, separators=(",", ":"))
    return text if len(text) <= STEPS_TAG_LIMIT else json.dumps([{"kind": step["kind"]} for step in steps])


def _link(ref: Any) -> dict[str, Any]:
    """One link of a chain, from a registered version's `squeezeflow.*` tags (untrusted: whoever
    can tag a version wrote them).

    Raises:
        ModelError: tags that do not parse as squeezeflow writes them.
    """

    try:
        return _parse_link(ref)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ModelError(
            f"{ref.uri}: malformed squeezeflow.* lineage tags ({type(e).__name__}: {str(e)[:120]}); "
            "they were not written by squeezeflow promote."
        ) from None


def _parse_link(ref: Any) -> dict[str, Any]:
    tags = {k[len(PREFIX) :]: v for k, v in ref.tags.items() if k.startswith(PREFIX)}
    return {
        "uri": ref.uri,
        "name": ref.name,
        "version": ref.version,
        "run_id": ref.run_id or "",
        "recipe": tags.get("recipe.name", ""),
        "recipe_digest": tags.get("recipe.digest", ""),
        "steps": _steps(json.loads(tags["steps"]))
        if tags.get("steps")
        else [{"kind": k} for k in tags.get("recipe.steps", "").split(",") if k],
        "teachers": [t for t in tags.get("teachers", "").split(",") if t],
        "data": {k[len("data.") : -len("_sha256")]: v for k, v in sorted(tags.items()) if k.startswith("data.")},
        "git_commit": tags.get("git_commit", ""),
        "git_branch": tags.get("git.branch", ""),
        "git_dirty": tags.get("git.dirty", ""),
        "git_changed": tags.get("git.changed", ""),
        "experiment": tags.get("dvc.experiment", ""),
        "dvc_lock_digest": tags.get("dvc_lock_digest", ""),
        "verdict": tags.get("gate.verdict", ""),
        "metrics": {k[len("metric.") :]: float(v) for k, v in sorted(tags.items()) if k.startswith("metric.")},
        "sha256": tags.get("artifact_sha256", ""),
        "parent": f"models:/{tags['source.name']}/{tags['source.version']}" if tags.get("source.name") else "",
    }


def walk(uri: str, max_depth: int = 20) -> list[dict[str, Any]]:
    """Follow `squeezeflow.source.*` tags from a version back to its root model.

    Returns:
        One link per version, newest first: uri, recipe and digest, steps with parameters,
        teachers, data digests, git commit, dvc.lock digest, gate verdict, key metrics.

    Example:
        >>> walk("models:/digits-cnn-edge@candidate")[-1]["uri"]  # doctest: +SKIP
        'models:/digits-cnn/1'
    """

    chain = [_link(registry.resolve(uri))]
    while chain[-1]["parent"] and len(chain) < max_depth:
        chain.append(_link(registry.resolve(chain[-1]["parent"])))
        _refuse_cycle(chain[-1], chain[:-1])
    return chain


def _refuse_cycle(link: dict[str, Any], before: list[dict[str, Any]]) -> None:
    """Forged source tags can point back at a version already on the path: a loop, not a lineage.

    Raises:
        ModelError: `link` is one of `before`.
    """

    key = (link["name"], str(link["version"]))
    if any((b["name"], str(b["version"])) == key for b in before):
        raise ModelError(
            f"malformed lineage (cycle at models:/{key[0]}/{key[1]}): its squeezeflow.source.* tags "
            "lead back to a version already on the path; "
            "they were not written by squeezeflow promote."
        )


def from_onnx(path: str | Path) -> list[dict[str, Any]]:
    """The chain recorded in a compressed ONNX file's metadata_props (no registry needed)."""

    props = modelfile.metadata(path)
    if PREFIX + "root" not in props:
        raise ModelError(
            f"{path}: no squeezeflow lineage in its metadata_props; it was not written by squeezeflow compress."
        )
    try:
        root = json.loads(props[PREFIX + "root"])
        steps = _steps(json.loads(props.get(PREFIX + "steps", "[]")))
        recipe = json.loads(props.get(PREFIX + "recipe", "{}") or "{}")
        source = f"models:/{str(root['name'])}/{str(root['version'])}"
        made = _blank(
            uri=str(path),
            recipe=str(recipe.get("name", "")),
            recipe_digest=str(recipe.get("digest", "")),
            steps=[without_stats(s) for s in steps],
            teachers=teachers({"steps": steps}),
            parent=source,
        )
        origin = _blank(
            uri=source,
            name=str(root["name"]),
            version=str(root["version"]),
            run_id=str(root.get("run_id") or ""),
            sha256=str(root.get("artifact_sha256", "")),
        )
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ModelError(
            f"{path}: malformed squeezeflow lineage in its metadata_props ({type(e).__name__}: "
            f"{str(e)[:120]}); it was not written by squeezeflow compress."
        ) from None
    return [made, origin]


def _steps(value: Any) -> list[dict[str, Any]]:
    """Recorded steps, checked to be a list of {"kind": str, ...} (with stats a mapping, teachers a list of
    mappings).
    """
    if not isinstance(value, list) or not all(isinstance(s, dict) and isinstance(s.get("kind"), str) for s in value):
        raise ValueError("steps must be a list of mappings with a `kind`")
    for s in value:
        stats = s.get("stats", {})
        if not isinstance(stats, dict) or not all(
            isinstance(t, dict) and {"name", "version"} <= set(t) for t in stats.get("teachers", [])
        ):
            raise ValueError("step stats must be a mapping; teachers a list of {name, version}")
    return value


def _blank(**known: Any) -> dict[str, Any]:
    """A link with only what is known filled in (the keys of `_link`)."""
    return {
        "uri": "",
        "name": "",
        "version": "",
        "run_id": "",
        "recipe": "",
        "recipe_digest": "",
        "steps": [],
        "teachers": [],
        "data": {},
        "git_commit": "",
        "git_branch": "",
        "git_dirty": "",
        "git_changed": "",
        "experiment": "",
        "dvc_lock_digest": "",
        "verdict": "",
        "metrics": {},
        "sha256": "",
        "parent": "",
        **known,
    }


def descendants(uri: str, max_depth: int = 20) -> list[dict[str, Any]]:
    """Every version derived from `uri` (its `squeezeflow.source.*` tags point at it), as a tree.

    Returns:
        Links as in `walk`, each with `children` (derived from it in turn).
    """

    def grow(ref: Any, path: list[dict[str, Any]]) -> dict[str, Any]:
        link = _link(ref)
        _refuse_cycle(link, path)
        found = registry.derived_from(ref.name, ref.version) if len(path) < max_depth else []
        link["children"] = [grow(child, [*path, link]) for child in found]
        return link

    return [grow(registry.resolve(uri), [])]


def render(links: list[dict[str, Any]], fmt: str, tree: bool = False) -> str:
    """Text (one block per link), JSON, or a Mermaid flowchart of a chain or a descendants tree."""
    if fmt == "json":
        return json.dumps(links, indent=2, sort_keys=True)
    flat = _flatten(links) if tree else [(i, link, links[i - 1] if i else None) for i, link in enumerate(links)]
    if fmt == "mermaid":
        ids = {link["uri"]: f"n{i}" for i, (_, link, _) in enumerate(flat)}
        lines = ["graph BT" if not tree else "graph TD"]
        for _, link, _ in flat:
            label = link["uri"].removeprefix("models:/") + (
                f"<br/>{link['recipe']}: {' → '.join(s['kind'] for s in link['steps'])}" if link["recipe"] else ""
            )
            lines.append(f'    {ids[link["uri"]]}["{label}"]')
        for _, link, up in flat:
            if up is not None:
                lines.append(
                    f"    {ids[up['uri']]} --> {ids[link['uri']]}"
                    if tree
                    else f"    {ids[link['uri']]} --> {ids[up['uri']]}"
                )
        for teacher in sorted({t for _, link, _ in flat for t in link["teachers"]}):
            lines.append(f'    {_node(teacher)}(["{teacher} (teacher)"])')
        for _, link, _ in flat:
            lines += [f"    {_node(t)} -.-> {ids[link['uri']]}" for t in link["teachers"]]
        return "\n".join(lines)
    out = []
    for depth, link, _ in flat:
        pad = "  " * depth
        out.append(f"{pad}{'└─ ' if depth else ''}{link['uri']}" + ("" if link["recipe"] else "  (source model)"))
        if link["recipe"]:
            steps = "; ".join(
                s["kind"] + "(" + ", ".join(f"{k}={v}" for k, v in s.items() if k != "kind") + ")"
                for s in link["steps"]
            )
            out.append(f"{pad}   recipe {link['recipe']} ({link['recipe_digest'][:12]}): {steps}")
            if link["teachers"]:
                out.append(f"{pad}   teachers {', '.join(link['teachers'])}")
            if link["verdict"] or link["metrics"]:
                out.append(
                    f"{pad}   gate {link['verdict']}: " + ", ".join(f"{k} {v:g}" for k, v in link["metrics"].items())
                )
            if link["git_commit"] or link["data"]:
                out.append(
                    f"{pad}   git {link['git_commit'][:12]}{_where(link)}  dvc.lock "
                    f"{link['dvc_lock_digest'][:12]}  data "
                    + ", ".join(f"{k} {v[:12]}" for k, v in link["data"].items())
                )
        if link["run_id"]:
            out.append(f"{pad}   run {link['run_id']}")
    return "\n".join(out)


def _where(link: dict[str, Any]) -> str:
    """' on main', plus what did not come from a commit: uncommitted files, the DVC experiment."""
    out = f" on {link['git_branch']}" if link.get("git_branch") else ""
    if link.get("git_dirty") == "true":
        out += f" + UNCOMMITTED CHANGES ({link.get('git_changed', '')})"
    if link.get("experiment"):
        out += f" from DVC experiment {link['experiment']}"
    return out


def _node(teacher: str) -> str:
    return "t_" + re.sub(r"\W", "_", teacher)


def _flatten(
    tree: list[dict[str, Any]], depth: int = 0, up: dict[str, Any] | None = None
) -> list[tuple[int, dict[str, Any], dict[str, Any] | None]]:
    rows = []
    for link in tree:
        rows.append((depth, link, up))
        rows += _flatten(link.get("children", []), depth + 1, link)
    return rows
