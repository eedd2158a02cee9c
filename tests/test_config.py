"""params.yaml validation: every mistake is caught before work starts, named by its YAML path."""

import pytest
import yaml

from conftest import ROOT
from squeezeflow.config import load_params
from squeezeflow.errors import ConfigError


def test_repository_params_load():
    params = load_params(ROOT / "params.yaml")
    assert params.recipes["int8-static"][0].mode == "static"
    assert params.promote.alias == "candidate"


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in (ROOT / "pipelines").glob("*/params.yaml")))
def test_pipeline_variant_params_load(folder):
    params = load_params(ROOT / "pipelines" / folder / "params.yaml")
    assert params.recipes and (ROOT / "pipelines" / folder / "dvc.yaml").is_file()


def _edit(tmp_path, edit):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


BAD = [
    ("unknown top-level key", lambda p: p.update(budget={}), "budget is not a known key"),
    (
        "unknown nested key",
        lambda p: p["budgets"].update(max_acc_drop=0.1),
        "budgets.max_acc_drop is not a known key. Known keys: inconclusive, max_accuracy_drop, max_class_accuracy_drop",
    ),
    ("wrong type", lambda p: p["target"].update(threads="two"), "target.threads must be a valid integer"),
    ("impossible value", lambda p: p["target"].update(threads=0), "target.threads"),
    ("negative budget", lambda p: p["budgets"].update(max_accuracy_drop=-1), "budgets.max_accuracy_drop"),
    (
        "unknown step",
        lambda p: p["recipes"].update(x=[{"quantise": {}}]),
        "recipes.x.0: Unknown step 'quantise'. Known steps: cluster, distill, executorch, finetune, prune, qat, "
        "quantize.",
    ),
    (
        "unknown step key",
        lambda p: p["recipes"].update(x=[{"quantize": {"bits": 4}}]),
        "recipes.x.0.quantize.bits is not a known key",
    ),
    (
        "wrong step value",
        lambda p: p["recipes"].update(x=[{"quantize": {"per_channel": "yes please"}}]),
        "recipes.x.0.quantize.per_channel must be a valid boolean",
    ),
    (
        "two steps in one item",
        lambda p: p["recipes"].update(x=[{"quantize": {}, "prune": {}}]),
        "recipes.x.0 must be a mapping with exactly one step name",
    ),
    ("empty recipe", lambda p: p["recipes"].update(x=[]), "recipes.x must be a non-empty list"),
    ("bad model uri", lambda p: p["source"].update(model_uri="runs:/abc/model"), "source.model_uri"),
    ("missing section", lambda p: p.pop("promote"), "promote is required"),
    ("unknown objective", lambda p: p["selection"].update(objective="vibes"), "selection.objective"),
]


@pytest.mark.parametrize("case,edit,message", BAD, ids=[b[0] for b in BAD])
def test_bad_params_name_the_yaml_path(tmp_path, case, edit, message):
    path = _edit(tmp_path, edit)
    with pytest.raises(ConfigError) as err:
        load_params(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and message in text
    assert "\n" not in text


def test_invalid_yaml_and_missing_file(tmp_path):
    (tmp_path / "p.yaml").write_text("source: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "p.yaml")
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "step,field",
    [
        ("cluster", "epochs"),
        ("finetune", "epochs"),
        ("finetune", "patience"),
        ("distill", "epochs"),
        ("qat", "epochs"),
        ("prune", "epochs"),
        ("prune", "frequency"),
    ],
)
def test_training_lengths_are_bounded(tmp_path, step, field):
    """`epochs: 1000000000` is a typo, not a run that trains until it is killed (`1e9` is a YAML string, refused as not
    an integer).
    """
    path = tmp_path / "params.yaml"
    raw = (ROOT / "params.yaml").read_text()
    base = yaml.safe_load(raw)
    extra = {"prune": {"schedule": "gradual"}, "distill": {"student": {"width": 0.5}}}.get(step, {})
    base["recipes"] = {"long": [{step: {**extra, field: 1}}]}
    path.write_text(yaml.safe_dump(base).replace(f"{field}: 1\n", f"{field}: 1000000000\n"))
    assert f"{field}: 1000000000" in path.read_text()
    with pytest.raises(ConfigError, match=f"recipes.long.0.{step}.{field} must be less than or equal to"):
        load_params(path)
    path.write_text(yaml.safe_dump(base))  # the same recipe with a sane value loads
    load_params(path)
