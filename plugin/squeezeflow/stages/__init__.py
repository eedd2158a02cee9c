"""DVC stages: one module each, composing the library; paths are relative to the pipeline folder.

A stage may import every library package (`steps`, `search`, `evaluate`, `report`, `registry`, ...);
no library package imports a stage, and only `cli` and `demo` sit above.
"""

from pathlib import Path

SOURCE_DIR = Path("artifacts/source")
CANDIDATES_DIR = Path("artifacts/candidates")
METRICS_DIR = Path("metrics")
REPORTS_DIR = Path("reports")
BASELINE = "baseline"
REGISTERED_DIR = Path("artifacts/registered")
SOFT_LABELS_DIR = Path("artifacts/soft-labels")
PLOTS_DIR = Path("plots")
SEARCH_DIR = Path("artifacts/search")
