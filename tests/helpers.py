"""Run the stages in-process, as dvc would in order (for tests that do not need DVC itself)."""

from squeezeflow.config import load_params
from squeezeflow.stages.compress import compress
from squeezeflow.stages.evaluate import evaluate
from squeezeflow.stages.pull import pull


def run_until_gate(params_path):
    """pull, compress and evaluate every recipe and the baseline; returns the params."""
    params = load_params(params_path)
    pull(params)
    for name in params.recipes:
        compress(params, name)
    evaluate(params, "baseline")
    for name in params.recipes:
        evaluate(params, name)
    return params
