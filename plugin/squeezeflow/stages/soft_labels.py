"""soft-labels: every distillation teacher's logits on data.train, computed once, filed per recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from squeezeflow import data
from squeezeflow.config import Params
from squeezeflow.data import artifacts
from squeezeflow.data.artifacts import read_index
from squeezeflow.errors import ConfigError
from squeezeflow.stages import REGISTERED_DIR, SOFT_LABELS_DIR, SOURCE_DIR
from squeezeflow.steps.distill import SOURCE, DistillConfig, run_teacher, write_soft_labels


def soft_labels(
    params: Params,
    source_dir: Path = SOURCE_DIR,
    registered_dir: Path = REGISTERED_DIR,
    out_dir: Path = SOFT_LABELS_DIR,
) -> dict[str, Any]:
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

    wanted = {
        name: sorted({t.uri for s in steps if isinstance(s, DistillConfig) for t in s.teachers})
        for name, steps in params.recipes.items()
    }
    uris = sorted({u for us in wanted.values() for u in us})
    computed: dict[str, tuple[dict[str, Any], Any]] = {}
    if uris:
        if params.data.train is None:
            raise ConfigError(
                "params.yaml: recipes distill, so data.train must name an npz of training inputs (labels optional)."
            )
        inputs = data.inputs_of(data.load(params.data.train, "train"))
        pulled = read_index(registered_dir)
    for uri in uris:
        if uri == SOURCE:
            model_dir = source_dir
        elif uri in pulled:
            model_dir = registered_dir / pulled[uri]["dir"]
        else:
            raise ConfigError(
                f"teacher {uri} has not been pulled into {registered_dir}. Run the pull stage first (`dvc repro pull`)."
            )
        computed[uri] = run_teacher(uri, model_dir, inputs, params.data.train)
        entry, logits = computed[uri]
        print(
            f"soft-labels: {uri} -> models:/{entry['name']}/{entry['version']}: {logits.shape[0]} samples x "
            f"{logits.shape[1]} outputs"
        )
    indexes = {}
    with artifacts.staged(out_dir) as tmp:
        for recipe, teachers in wanted.items():
            indexes[recipe] = write_soft_labels(tmp / recipe, {uri: computed[uri] for uri in teachers})
    return indexes
