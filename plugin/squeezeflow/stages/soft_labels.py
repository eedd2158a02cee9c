"""soft-labels: every distillation teacher's logits on data.train, computed once, filed per recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from squeezeflow import artifacts, data, modelio
from squeezeflow.config import Params
from squeezeflow.errors import ConfigError
from squeezeflow.stages import REGISTERED_DIR, SOFT_LABELS_DIR, SOURCE_DIR


def soft_labels(params: Params, source_dir: Path = SOURCE_DIR, registered_dir: Path = REGISTERED_DIR, out_dir: Path = SOFT_LABELS_DIR) -> dict[str, Any]:
    """Run each teacher named by a `distill` step over data.train and write its logits, per recipe.

    Every recipe gets out_dir/RECIPE/ with index.json mapping each of its teachers' URIs (`source`
    for the source model) to its NAME-vVERSION.npy (float32, samples x outputs), resolved version
    and the digest of the training data; a recipe that does not distill gets an empty index. Each
    compress stage depends on its own folder only, and the folders are a pure function of the
    models and the data, so adding or removing a distill recipe reruns no other compress stage.
    A teacher shared by several recipes is run once.

    Returns:
        recipe -> its index.

    Raises:
        ConfigError: distillation without data.train, or a teacher that was not pulled.
    """
    import numpy as np

    from squeezeflow.artifacts import read_index
    from squeezeflow.steps.distill import SOFT_LABELS_INDEX, SOURCE, DistillConfig

    wanted = {name: sorted({t.uri for s in steps if isinstance(s, DistillConfig) for t in s.teachers}) for name, steps in params.recipes.items()}
    uris = sorted({u for us in wanted.values() for u in us})
    computed: dict[str, tuple[dict[str, Any], Any]] = {}
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
        entry = {"file": f"{root['name']}-v{root['version']}.npy", "name": root["name"], "version": root["version"], "model_id": root.get("model_id") or "",
                 "sha256": manifest["sha256"], "train_sha256": train_sha, "shape": list(logits.shape)}
        computed[uri] = (entry, logits)
        print(f"soft-labels: {uri} -> models:/{root['name']}/{root['version']}: {logits.shape[0]} samples x {logits.shape[1]} outputs")
    indexes = {}
    with artifacts.staged(out_dir) as tmp:
        for recipe, teachers in wanted.items():
            folder = tmp / recipe
            folder.mkdir()
            for uri in teachers:
                np.save(folder / computed[uri][0]["file"], computed[uri][1])
            indexes[recipe] = {uri: computed[uri][0] for uri in teachers}
            (folder / SOFT_LABELS_INDEX).write_text(json.dumps(indexes[recipe], indent=2, sort_keys=True) + "\n")
    return indexes
