"""The docs document every parameter, command and exit code, and the README stays a short front page."""

import re

import pytest

from conftest import ROOT
from squeezeflow import config
from squeezeflow.steps import config_class, known_steps

README = (ROOT / "README.md").read_text()
GUIDE = (ROOT / "docs" / "guide.md").read_text()
REFERENCE = (ROOT / "docs" / "reference.md").read_text()
SECTIONS = {
    "source": config.Source,
    "data": config.Data,
    "target": config.Target,
    "budgets": config.Budgets,
    "selection": config.Selection,
    "promote": config.Promote,
    "demo": config.Demo,
}


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_params_key_is_documented(section):
    for name in SECTIONS[section].model_fields:
        assert f"`{section}.{name}`" in REFERENCE


@pytest.mark.parametrize("kind", known_steps())
def test_every_step_parameter_is_documented(kind):
    block = REFERENCE.split(f"### `{kind}`", 1)[1].split("###", 1)[0]
    for name in config_class(kind).model_fields:
        assert f"`{name}`" in block


def test_params_reference_is_generated_from_the_config_models():
    from squeezeflow.config import reference

    assert reference.render(REFERENCE) == REFERENCE, "docs/reference.md is stale: run `make docs`"


def test_commands_and_exit_codes_are_documented():
    """Every subcommand the CLI's parser has (tests/test_cli.py checks the stages are among them)."""
    import argparse

    from squeezeflow.cli import commands

    (sub,) = [a for a in commands._parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert {"pull", "compress", "evaluate", "gate", "promote", "init"} <= set(sub.choices)
    for command in sub.choices:
        assert f"`squeezeflow {command}" in GUIDE and f"`squeezeflow {command}" in README, command
    for code in range(5):
        assert re.search(rf"^\| {code} \|", README, re.M) and re.search(rf"^\| {code} \|", GUIDE, re.M)
    assert README.index("make demo") < README.index("make test") < README.index("## Commands")


@pytest.mark.integration  # starts a process
def test_enum_parameters_list_their_values():
    from conftest import BIN, sh

    assert "One of: static, dynamic, auto, int4, fp16." in sh(BIN / "squeezeflow", "steps").stdout
    assert "One of: `classification`, `regression`, `embedding`, `generic`." in REFERENCE
    assert "| `promote.from_experiments` | False |" in REFERENCE


def test_the_readme_is_a_front_page_and_its_links_resolve():
    """At most about 200 lines, starting a user from `squeezeflow init --from-model`; every relative link exists."""
    assert len(README.splitlines()) <= 200
    assert README.index("## Use it on your model") < README.index("squeezeflow init --from-model")
    for doc in [README, GUIDE, REFERENCE, *(p.read_text() for p in (ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(((?!https?:)[^)#]+)(?:#[^)]*)?\)", doc):
            base = ROOT if doc is README else ROOT / "docs"
            assert (base / target).exists() or (ROOT / target).exists(), f"broken link {target}"


def test_the_benchmarks_page_is_generated_from_the_results():
    """docs/benchmarks.md is what bench/report.py writes from bench/results (`python bench/report.py`)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    assert report.render(ROOT / "bench" / "results") == (ROOT / "docs" / "benchmarks.md").read_text(), (
        "run `python bench/report.py`"
    )
