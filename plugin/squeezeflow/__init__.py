"""squeezeflow: a compression gate for model releases (MLflow registry + DVC stages)."""

__version__ = "0.1.0"
