"""What several test files share: the stages up to the gate, in this process, through the one driver."""

from squeezeflow.config import load_params
from squeezeflow.stages import pipeline


def run_until_gate(params_path):
    """pull, soft-labels, compress and evaluate every recipe and the baseline (stages.pipeline); returns the params."""
    params = load_params(params_path)
    pipeline.run(params, until="evaluate", skip=("check-data",))
    return params
