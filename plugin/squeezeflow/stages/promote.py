"""promote: register the selected candidate with its lineage and move the alias (idempotent)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from squeezeflow import data, registry
from squeezeflow.config import Params
from squeezeflow.data import artifacts
from squeezeflow.errors import ConfigError, GateFailedError
from squeezeflow.registry import gitstate, lineage
from squeezeflow.registry.gate_runs import attempt_metrics, close_abandoned, record_attempt
from squeezeflow.report import github
from squeezeflow.stages import CANDIDATES_DIR, REPORTS_DIR

DVC_LOCK = Path("dvc.lock")


def promote(
    params: Params,
    dry_run: bool = False,
    reports_dir: Path = REPORTS_DIR,
    candidates_dir: Path = CANDIDATES_DIR,
    params_file: Path = Path("params.yaml"),
) -> dict[str, Any]:
    """Promote the gate's selected candidate and write reports/promotion.json.

    The same artifact sha256 never makes a second version: when it is already registered only
    the alias moves. With `dry_run`, the registry is read but never written. What no commit holds
    is a dry run too unless the settings allow it (`gitstate.blockers`: a DVC experiment, a dirty
    tree, an untracked params file or data file, a branch that is not a release branch); the
    reasons are printed and in `held`.

    With `targets`, each target that passed gets its own winner promoted (a target that chose the
    same artifact as another shares its version) under the alias `<alias>-<target>`, with tags
    `squeezeflow.target.<target>.runtime|runtime_version|device|cpu_flags` (and, on the version it
    registers, `squeezeflow.target`, `squeezeflow.runtime`, ...).

    Returns:
        What was (or would be) done: version, URIs, action (register, move-alias, none); with
        targets, that per target under `targets`.

    Raises:
        GateFailedError: the verdict is fail. ConfigError: no gate report.
        RegistryUnreachableError: the registry does not answer.
    """
    gate_file = reports_dir / "gate.json"
    if not gate_file.is_file():
        raise ConfigError(f"{gate_file}: not found. Run the gate stage first (`dvc repro gate`).")
    verdict = json.loads(gate_file.read_text())
    if verdict["verdict"] != "pass":
        raise GateFailedError(f"{gate_file}: verdict is {verdict['verdict']}; nothing is promoted.")
    current, held = gitstate.held(params, params_file)
    if held and not dry_run:
        print(f"promote: dry run, the registry is not written: {'; '.join(held)}.")
        dry_run = True
    if "targets" not in verdict:
        result = _promote_one(
            params, verdict, params.promote.alias, {}, dry_run, held, current, reports_dir, candidates_dir
        )
    # each target's winner, under the alias <alias>-<target>; a target that did not pass (optional, or skipped) promotes
    # nothing
    else:
        results = {}
        for target, one in verdict["targets"].items():
            if one["verdict"] != "pass":
                print(
                    f"promote: target {target}: "
                    f"{one['verdict']}{' (' + one['reason'] + ')' if one.get('reason') else ''}; nothing "
                    "promoted for it"
                )
                continue
            results[target] = _promote_one(
                params,
                one,
                f"{params.promote.alias}-{target}",
                _target_tags(target, one),
                dry_run,
                held,
                current,
                reports_dir,
                candidates_dir,
            )
        result = {
            "dry_run": dry_run,
            "registered_model": params.promote.registered_model,
            "held": held,
            "targets": results,
        }
    (reports_dir / "promotion.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def _target_tags(target: str, verdict: dict[str, Any]) -> dict[str, str]:
    """What a version promoted for `target` says of it: the target, its runtime and version, the device and the CPU's
    flags.
    """
    rt = verdict.get("runtime") or {}
    fields = {
        "runtime": rt.get("runtime") or "",
        "runtime_version": rt.get("runtime_version") or "",
        "device": rt.get("device") or "",
        "cpu_flags": rt.get("cpu_flags") or "",
    }
    return (
        {f"{lineage.PREFIX}target.{target}.{k}": str(v) for k, v in fields.items()}
        | {f"{lineage.PREFIX}target": target}
        | {f"{lineage.PREFIX}{k}": str(v) for k, v in fields.items()}
    )


def _promote_one(
    params: Params,
    verdict: dict[str, Any],
    alias: str,
    target_tags: dict[str, str],
    dry_run: bool,
    held: list[str],
    current: Any,
    reports_dir: Path,
    candidates_dir: Path,
) -> dict[str, Any]:
    """Register `verdict`'s selected candidate (unless its artifact is already a version) and move `alias` to it."""
    gate_file = reports_dir / "gate.json"
    selected = verdict["selected"]
    cand_dir = candidates_dir / selected
    manifest = artifacts.read_manifest(cand_dir)
    judged = (verdict["candidates"].get(selected) or {}).get("sha256")
    if judged != manifest["sha256"]:
        raise ConfigError(
            f"{cand_dir}: its model is not the artifact the gate judged (sha256 "
            f"{manifest['sha256'][:12]}, gate.json says {str(judged)[:12]}). "
            "Run the evaluate and gate stages again (`dvc repro`)."
        )
    name = params.promote.registered_model
    existing = registry.find_by_sha(name, manifest["sha256"])
    pointed = registry.alias_version(name, alias)
    run_id = existing.run_id if existing else None
    if existing:
        version = existing.version
        if not dry_run:  # a promote killed after it registered this version left its run RUNNING: close it
            close_abandoned(params.promote.experiment, {existing.run_id: version})
        action = "none" if pointed == version else "move-alias"
        # the same artifact won another target too: this one's tags join (the plain squeezeflow.target keeps the first)
        if target_tags and not dry_run:
            registry.set_version_tags(name, version, {k: v for k, v in target_tags.items() if ".target." in k})
        if action == "move-alias" and not dry_run:
            registry.set_alias(name, alias, version)
            pointed = registry.alias_version(name, alias)  # a concurrent pipeline may have moved it since
    elif dry_run:
        version, action = None, "register"
    else:
        action = "register"
        tags = {
            **lineage.version_tags(
                manifest, verdict, _data_digests(params), data.digest(DVC_LOCK) if DVC_LOCK.is_file() else "", current
            ),
            **target_tags,
        }
        files = [gate_file, reports_dir / "gate.md", DVC_LOCK, cand_dir / artifacts.MANIFEST]
        run_id = record_attempt(
            params,
            verdict,
            files,
            run_name=f"promote-{selected}",
            tags=tags,
            parent_model_id=manifest["root"].get("model_id"),
            with_metrics=False,
        )
        try:
            version, joined = registry.publish(
                name,
                alias,
                artifacts.model_path(cand_dir),
                run_id,
                tags,
                attempt_metrics(verdict),
                signature=manifest.get("signature"),
            )
        except BaseException:
            with contextlib.suppress(Exception):  # the registry may be the thing that failed
                registry.end_run(run_id, "FAILED")
            raise
        if joined:
            action = "joined"  # a concurrent promotion registered the same artifact first
        pointed = registry.alias_version(name, alias)  # a concurrent pipeline may have moved it since
        registry.set_run_tags(
            run_id,
            {
                "squeezeflow.promotion.action": action,
                "squeezeflow.promotion.version": version,
                "squeezeflow.promotion.alias_after": pointed or "",
            },
        )
        registry.end_run(run_id, "FINISHED")
    result = {
        "action": action,
        "dry_run": dry_run,
        "registered_model": name,
        "alias": alias,
        "version": version,
        "model_uri": f"models:/{name}/{version}" if version else None,
        "alias_uri": f"models:/{name}@{alias}",
        "selected": selected,
        "sha256": manifest["sha256"],
        "run_id": run_id,
        "source": manifest["root"]["name"] + "/" + manifest["root"]["version"],
        "alias_after": pointed,
        "held": held,
    }
    suffix = alias.removeprefix(params.promote.alias)
    github.output(f"model_uri{suffix}", result["model_uri"])
    github.output(f"version{suffix}", version)
    github.summary(
        f"Promotion{' (dry run)' if dry_run else ''}: {action} "
        f"`{result['model_uri'] or name + ' (new version)'}` as `{result['alias_uri']}`"
    )
    done = (
        {"register": "would register", "move-alias": "would move the alias to", "none": "already promoted:"}
        if dry_run
        else {
            "register": "registered",
            "joined": "joined a concurrent promotion of",
            "move-alias": "moved the alias to",
            "none": "already promoted:",
        }
    )[action]
    print(
        f"promote{' (dry run, registry untouched)' if dry_run else ''}: {done} "
        f"{result['model_uri'] or name + ' (new version)'} as {result['alias_uri']}"
    )
    return result


def _data_digests(params: Params) -> dict[str, str]:
    files = {"eval": params.data.eval, "calibration": params.data.calibration, "train": params.data.train}
    return {role: data.digest(p) for role, p in files.items() if p is not None and Path(p).is_file()}
