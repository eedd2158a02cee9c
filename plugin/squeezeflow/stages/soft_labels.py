"""soft-labels: every distillation teacher's logits on data.train, computed once for all recipes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from squeezeflow import artifacts, data, modelio
from squeezeflow.config import Params
from squeezeflow.errors import ConfigError
from squeezeflow.stages import REGISTERED_DIR, SOFT_LABELS_DIR, SOURCE_DIR


def soft_labels(params: Params, source_dir: Path = SOURCE_DIR, registered_dir: Path = REGISTERED_DIR, out_dir: Path = SOFT_LABELS_DIR) -> dict[str, Any]:
    """Run each teacher named by a `distill` step over data.train and write its logits.

    Writes out_dir/NAME-vVERSION.npy (float32, samples x outputs) and index.json mapping each
    teacher URI (`source` for the source model) to its file, resolved version and the digest of
    the training data. With no distill step it writes an empty index. Outputs are a pure
    function of the models and the data, so DVC reruns no compress stage when they are unchanged.

    Returns:
        The index.

    Raises:
        ConfigError: distillation without data.train, or a teacher that was not pulled.
    """
    import numpy as np

    from squeezeflow.stages.pull import read_index
    from squeezeflow.steps.distill import SOFT_LABELS_INDEX, SOURCE, DistillConfig

    uris = sorted({t.uri for steps in params.recipes.values() for s in steps if isinstance(s, DistillConfig) for t in s.teachers})
    index: dict[str, Any] = {}
    with artifacts.staged(out_dir) as tmp:
        if uris:
            if params.data.train is None:
                raise ConfigError("params.yaml: recipes distill, so data.train must name an npz of training inputs (labels optional).")
            inputs = data.inputs_of(data.load(params.data.train, "train"))
            train_sha = data.digest(params.data.train)
            pulled = read_index(registered_dir)
        for uri in uris:
            if uri == SOURCE:
                model_dir = source_dir
            elif uri in pulled:
                model_dir = registered_dir / pulled[uri]["dir"]
            else:
                raise ConfigError(f"teacher {uri} has not been pulled into {registered_dir}. Run the pull stage first (`dvc repro pull`).")
            manifest = artifacts.read_manifest(model_dir)
            root = manifest["root"]
            sess = modelio.session(artifacts.model_path(model_dir))
            data.check_inputs(inputs, sess.get_inputs(), params.data.train)
            logits = modelio.run(sess, inputs).astype("float32")
            if logits.ndim != 2:
                raise ConfigError(f"teacher {uri} gives outputs of shape {list(logits.shape)}; distillation needs (samples, classes) logits.")
            file = f"{root['name']}-v{root['version']}.npy"
            np.save(tmp / file, logits)
            index[uri] = {"file": file, "name": root["name"], "version": root["version"], "model_id": root.get("model_id") or "", "sha256": manifest["sha256"], "train_sha256": train_sha, "shape": list(logits.shape)}
            print(f"soft-labels: {uri} -> models:/{root['name']}/{root['version']}: {logits.shape[0]} samples x {logits.shape[1]} outputs")
        (tmp / SOFT_LABELS_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index
