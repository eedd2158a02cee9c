"""The README documents every parameter, command and exit code."""

import re

import pytest

from conftest import ROOT
from squeezeflow import config
from squeezeflow.steps import config_class, known_steps

README = (ROOT / "README.md").read_text()
SECTIONS = {"source": config.Source, "data": config.Data, "target": config.Target, "budgets": config.Budgets, "selection": config.Selection, "promote": config.Promote, "demo": config.Demo}


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_params_key_is_documented(section):
    for name in SECTIONS[section].model_fields:
        assert f"`{section}.{name}`" in README


@pytest.mark.parametrize("kind", known_steps())
def test_every_step_parameter_is_documented(kind):
    block = README.split(f"#### `{kind}`", 1)[1].split("###", 1)[0]
    for name in config_class(kind).model_fields:
        assert f"`{name}`" in block


def test_params_reference_is_generated_from_the_config_models():
    from squeezeflow import docs

    assert docs.render(README) == README, "README.md params reference is stale: run `make docs`"


def test_commands_and_exit_codes_are_documented():
    for command in ("pull", "soft-labels", "compress", "evaluate", "gate", "promote", "demo", "lineage", "webhook", "steps", "init"):
        assert f"`squeezeflow {command}" in README
    for code in range(5):
        assert re.search(rf"^\| {code} \|", README, re.M)
    assert README.index("make demo") < README.index("make test") < README.index("## Commands")


def test_enum_parameters_list_their_values():
    from conftest import BIN, sh

    assert "One of: static, dynamic, auto, int4, fp16." in sh(BIN / "squeezeflow", "steps").stdout
    assert "One of: `classification`, `regression`, `embedding`, `generic`." in README
    assert "| `promote.from_experiments` | False |" in README
