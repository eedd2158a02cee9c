"""`squeezeflow demo`: bootstrap data and a registered source model if missing, then `dvc repro`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from squeezeflow import data, registry
from squeezeflow.config import Params
from squeezeflow.demo import datasets, pretrained
from squeezeflow.errors import ConfigError, NotFoundError
from squeezeflow.report import markdown
from squeezeflow.stages import REPORTS_DIR
from squeezeflow.torch import train


def ensure_data(params: Params) -> None:
    """Write the demo dataset's npz splits when any of them is missing."""

    paths = {"eval": params.data.eval, "calibration": params.data.calibration, "train": params.data.train}
    if all(p is not None and Path(p).is_file() for p in paths.values()):
        return
    if any(p is None for p in paths.values()):
        raise ConfigError(
            "params.yaml: the demo needs data.eval, data.calibration and data.train paths to write its data to."
        )
    if params.demo.pretrained:
        counts = pretrained.write_data(params.demo.pretrained, paths, seed=params.seed)
        print(f"demo: wrote the real inputs of {params.demo.pretrained} {counts}")
        return
    counts = datasets.write_splits(params.demo.dataset, paths, seed=params.seed)
    print(f"demo: wrote {params.demo.dataset} splits {counts}")


def ensure_source(params: Params) -> str:
    """Train, register and alias the demo source model unless the reference already resolves."""
    try:
        return registry.resolve(params.source.model_uri).uri
    except NotFoundError:
        pass
    return register_demo_model(params)


def register_demo_model(params: Params) -> str:
    """Train the demo model on the train split (or take the pretrained one) and register it under the source name and
    alias.
    """

    name, alias, _ = registry.parse_uri(params.source.model_uri)
    if params.demo.pretrained:
        example = next(iter(data.inputs_of(data.head(params.data.eval, "eval", 4)).values()))
        uri = pretrained.register(params.demo.pretrained, name, alias, example)
        print(f"demo: registered the pretrained {params.demo.pretrained} as {uri}" + (f" @{alias}" if alias else ""))
        return uri
    arrays = data.load(params.data.train, "train")
    inputs, y = data.inputs_of(arrays), arrays[data.LABELS]
    model = datasets.for_data(params.demo.model, inputs, int(y.max()) + 1, seed=params.seed)
    model = train.fit(
        model, inputs, y, epochs=params.demo.epochs, lr=params.demo.lr, seed=params.seed, desc=f"train {name}"
    )
    example = tuple(v[:4] for v in inputs.values())
    uri = registry.register_torch(
        model, name, example if len(example) > 1 else example[0], alias=alias, experiment="squeezeflow-demo"
    )
    print(f"demo: registered {uri}" + (f" as @{alias}" if alias else ""))
    return uri


def run(params: Params, params_path: Path) -> int:
    """Bootstrap, run `dvc repro` on the pipeline beside params.yaml, print the outcome."""
    ensure_data(params)
    source = ensure_source(params)
    print(f"demo: source model {params.source.model_uri} -> {source}")
    folder = params_path.resolve().parent
    rc = subprocess.run(["dvc", "repro", str(folder / "dvc.yaml")], cwd=folder).returncode
    gate_file, promo_file = folder / REPORTS_DIR / "gate.json", folder / REPORTS_DIR / "promotion.json"
    verdict = json.loads(gate_file.read_text()) if gate_file.is_file() else None
    if verdict and "targets" in verdict:  # a verdict per target: gate.md has the tables
        for target, one in verdict["targets"].items():
            print(
                f"target {target}: {one['verdict'].upper()}"
                + (f", selected {one['selected']}" if one.get("selected") else "")
            )
        if rc == 0 and promo_file.is_file():
            for target, promo in json.loads(promo_file.read_text())["targets"].items():
                print(f"promoted for {target}: {promo['model_uri']} ({promo['alias_uri']})")
        print(
            f"report: {folder / REPORTS_DIR / 'gate.md'} (pull requests), {folder / REPORTS_DIR / 'index.html'} "
            "(open in a browser)"
        )
    elif verdict:
        print("\n" + markdown.text_table(verdict))
        print("\nbudgets: " + ", ".join(f"{k}={v:g}" for k, v in verdict["budgets"].items()))
        for line in markdown.missed_lines(verdict):
            print("  " + line)
        print(
            f"verdict: {verdict['verdict'].upper()}"
            + (f", selected {verdict['selected']}" if verdict["selected"] else "")
        )
        if rc == 0 and promo_file.is_file():
            promo = json.loads(promo_file.read_text())
            print(f"promoted: {promo['model_uri']} ({promo['alias_uri']})")
        print(
            f"report: {folder / REPORTS_DIR / 'gate.md'} (pull requests), {folder / REPORTS_DIR / 'index.html'} "
            "(open in a browser)"
        )
    if rc != 0:
        print(f"demo: dvc repro exited with {rc}", file=sys.stderr)
        return 1 if verdict and verdict["verdict"] == "fail" else rc
    return 0
