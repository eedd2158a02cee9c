"""`squeezeflow init`: a pipeline in the current folder for a registered model, ready for `dvc repro`.

Writes dvc.yaml (the package's template), a commented params.yaml, ignore rules for what the
pipeline and MLflow write (.gitignore, .dvcignore), and runs `git init` / `dvc init` where they are
missing. With `--from-model`, params.yaml is written for that model: its source URI, its inputs
(from the registered signature, named as the data files must name them), a task guessed from its
outputs, and recipes that fit its format. With `--search`, the pipeline searches recipes too
(the search template, a `search:` block and a recipe that takes its best trial). Existing files
are never overwritten.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from squeezeflow import registry
from squeezeflow.config import safeyaml
from squeezeflow.errors import ConfigError, SqueezeflowError
from squeezeflow.torch import convert

IGNORED = ("data/", "artifacts/", "mlruns/", "mlflow.db", ".squeezeflow/")
DVC_IGNORED = ("mlruns", "mlflow.db", ".squeezeflow")
ONNX_RECIPES = """  int8-static:                   # ORT static INT8 (QDQ), ranges calibrated on data.calibration
    - quantize: {mode: static, per_channel: true, calibration: minmax}
  int8-dynamic:                  # ORT dynamic INT8: weights in int8, activations quantized at run time
    - quantize: {mode: dynamic, per_channel: true}
"""
TORCH_RECIPES = (
    ONNX_RECIPES
    + """  cluster256:                    # k-means to 256 values per layer, palettized: about 4x smaller, same arithmetic
    - cluster: {clusters: 256}
"""
)
BUDGETS = {
    "classification": "  max_accuracy_drop: 0.01         # at most 1 point below FP32, on its 95% interval\n",
    "generic": "  max_output_error: 0.01          # mean |candidate - FP32| within 1% of the outputs' mean magnitude\n",
}


SEARCH = """search:                          # the search stage (docs/guide.md: Search): trials on samples held back from data.train, never eval
  space: auto                    # INT8 variants from the model's operators (+ structured pruning for a PyTorch source with labelled train data)
  trials: 20
  timeout_minutes: 30
  keep: 3
"""


TEMPLATES = {None: "dvc.yaml.in", "search": "dvc-search.yaml.in", "targets": "dvc-targets.yaml.in"}


def template(kind: str | None) -> str:
    """The package's dvc.yaml for a pipeline of `kind`: None (the release pipeline), "search" or "targets"."""
    return resources.files("squeezeflow").joinpath("templates", TEMPLATES[kind]).read_text()


def dvc_yaml_for(folder: Path) -> str:
    """The dvc.yaml that `folder`'s params.yaml calls for: the search template with `search:`, the
    targets one with `targets:`, the release pipeline otherwise."""
    params = safeyaml.load_file(folder / "params.yaml", ConfigError)
    if not isinstance(params, dict):
        raise ConfigError(f"{folder / 'params.yaml'}: must be a mapping with keys source, data, recipes, promote.")
    return template("search" if "search" in params else "targets" if "targets" in params else None)


def refresh(folders: list[Path]) -> list[Path]:
    """Rewrite each folder's dvc.yaml from the templates where it differs (`make pipelines`); returns those
    rewritten.
    """
    changed = []
    for folder in folders:
        text = dvc_yaml_for(folder)
        if (folder / "dvc.yaml").read_text() != text:
            (folder / "dvc.yaml").write_text(text)
            changed.append(folder / "dvc.yaml")
    return changed


def run(folder: Path, model_uri: str | None, search: bool = False) -> list[str]:
    """Write the pipeline files into `folder`; returns what was written or done, one line each.

    Raises:
        ConfigError: params.yaml or dvc.yaml already exists; NotFoundError: the model does not resolve.
    """
    for name in ("dvc.yaml", "params.yaml"):
        if (folder / name).exists():
            raise ConfigError(
                f"{folder / name} already exists; squeezeflow init does not overwrite a pipeline. "
                "Run it in an empty folder, or remove the file."
            )
    for tool in ("git", "dvc"):  # before anything is written: a failed init leaves nothing behind
        if shutil.which(tool) is None:
            raise ConfigError(
                f"`{tool}` is not on PATH; install it (pip install dvc for dvc) and run squeezeflow init again."
            )
    model = _describe(model_uri) if model_uri else None
    done = []
    (folder / "dvc.yaml").write_text(template("search" if search else None))
    (folder / "params.yaml").write_text(params_text(model_uri or "models:/NAME@champion", model, search))
    done += [
        "wrote dvc.yaml (the release pipeline" + (", with the search stage)" if search else ")"),
        "wrote params.yaml" + (f" for {model_uri}" if model_uri else " (set source.model_uri)"),
    ]
    for ignore, lines in ((".gitignore", IGNORED), (".dvcignore", DVC_IGNORED)):
        added = _append_missing(folder / ignore, lines)
        if added:
            done.append(f"added {', '.join(added)} to {ignore}")
    for probe, init in (
        (["git", "rev-parse", "--git-dir"], ["git", "init", "-q"]),
        (["dvc", "root"], ["dvc", "init", "-q"]),
    ):
        if subprocess.run(probe, cwd=folder, capture_output=True).returncode != 0:
            subprocess.run(init, cwd=folder, check=True, capture_output=True)
            done.append(f"ran {' '.join(init[:2])}")
    return done


def _describe(uri: str) -> dict[str, Any]:
    """Flavor, inputs and outputs of a registered model: an ONNX graph's own, or a PyTorch model's
    signature inputs and the outputs of one forward pass on zeros (pt2 signatures have no outputs)."""

    from mlflow.models.signature import ModelSignature

    ref = registry.resolve(uri)
    with tempfile.TemporaryDirectory(prefix="squeezeflow-init-") as tmp:
        folder = registry.download(ref, Path(tmp) / "model")
        kind, rel = registry.flavor(folder)
        if kind == "onnx":
            inputs, outputs = _onnx_io(folder / rel)
        else:
            sig = registry.signature(folder)
            specs = ModelSignature.from_dict(sig).inputs.inputs if sig else []
            inputs = [
                {
                    "name": sp.name or ("input" if i == 0 else f"input_{i}"),
                    "shape": list(sp.shape or []),
                    "dtype": str(sp.type),
                }
                for i, sp in enumerate(specs)
            ]
            outputs = _torch_outputs(folder, inputs)
    return {"uri": uri, "name": ref.name, "version": ref.version, "flavor": kind, "inputs": inputs, "outputs": outputs}


def _onnx_io(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    known = {i.name for i in graph.initializer}

    def describe(value: Any) -> dict[str, Any]:
        t = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return {
            "name": value.name,
            "shape": shape,
            "axes": axis_names(shape, [d.dim_param for d in t.shape.dim]),
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
        }

    return [describe(v) for v in graph.input if v.name not in known], [describe(v) for v in graph.output]


def axis_names(shape: list[int], params: list[str] | None = None) -> list[int | str]:
    """Each axis as the hint shows it: its size, N for the sample axis (the first symbolic one), and the exporter's
    name of another symbolic axis, else D1, D2, ... (`[N, 3, H, W]`, never `[N, 3, N, N]`)."""
    params = params or [""] * len(shape)
    batch = batch_axis(shape)
    names: list[int | str] = []
    for i, (size, name) in enumerate(zip(shape, params)):
        clean = "".join(c for c in name if c.isalnum() or c == "_")[:16]
        names.append(size if size > 0 else "N" if i == batch else clean if clean and clean != "N" else f"D{i}")
    return names


def batch_axis(shape: list[int]) -> int:
    """The sample axis guessed from a shape: the first, unless it is fixed and a later one is not (state [2, N, 128])."""
    if shape and shape[0] > 0:
        return next((i for i, d in enumerate(shape) if d <= 0), 0)
    return 0


def _torch_outputs(folder: Path, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Output shapes of one forward pass on a batch of 2 zeros ([] when the inputs are unknown)."""
    import numpy as np
    import torch

    if not inputs or any(-1 in i["shape"][1:] for i in inputs):
        return []
    model = convert.load_torch(
        folder
    )  # refuses what pull refuses (pickles without consent, paths outside the artifact)
    try:
        feed = [torch.from_numpy(np.zeros([2, *i["shape"][1:]], dtype=i["dtype"])) for i in inputs]
        with torch.no_grad():
            out = model(*feed)
    except Exception:  # noqa: BLE001 - a signature that does not run is only a worse guess: task generic
        return []
    return [
        {"name": f"output{k}", "shape": [-1, *t.shape[1:]], "dtype": str(t.dtype).removeprefix("torch.")}
        for k, t in enumerate(out if isinstance(out, (tuple, list)) else [out])
    ]


def guess_task(model: dict[str, Any] | None) -> str:
    """classification for one [batch, classes >= 2] output, generic otherwise (the safe default: error against FP32)."""
    if (
        model
        and len(model["outputs"]) == 1
        and len(model["outputs"][0]["shape"]) == 2
        and (model["outputs"][0]["shape"][1] or 0) >= 2
    ):
        return "classification"
    return "generic"


PARAMS_KEYS = ["source", "data", "recipes", "search", "contracts", "budgets", "target", "selection", "promote", "seed"]


def params_text(uri: str, model: dict[str, Any] | None, search: bool = False) -> str:
    """A commented params.yaml for `model` (or a skeleton without one)."""
    task = guess_task(model)
    name = model["name"] if model else "NAME"
    inputs, arrays = "", "one array per model input, named after it"
    if model and model["inputs"]:
        stored, layout = [], []
        for i in model["inputs"]:
            axes = i.get("axes") or [d if d > 0 else "N" for d in i["shape"]]
            axis = batch_axis(i["shape"])
            if not axes:  # a scalar: a constant of every run, not data
                layout.append(
                    f"    {_quoted(i['name'])}: {{value: null}}   # a scalar input: set the constant it takes"
                )
                continue
            stored.append(
                f"{_quoted(i['name'])} {_quoted(i['dtype'])} "
                f"[{', '.join(str(a) for a in [axes[axis], *axes[:axis], *axes[axis + 1 :]])}]"
            )
            if axis:
                layout.append(
                    f"    {_quoted(i['name'])}: {{batch_axis: {axis}}}   # the model takes "
                    f"[{', '.join(str(a) for a in axes)}]; the files store the samples first"
                )
        arrays = ", ".join(stored) or arrays
        if layout:
            inputs = "  inputs:                        # inputs that are not batch-first arrays in the files\n"
            inputs += "\n".join(layout) + "\n"
    labels = " plus `labels` (int64 class of each sample)" if task == "classification" else ""
    torch = bool(model and model["flavor"] == "pytorch")
    recipes = TORCH_RECIPES if torch else ONNX_RECIPES
    # what the recipes above can meet together: clustering keeps FP32's arithmetic, so its speedup is about 1
    speed = (
        "  min_speedup: 0.95               # about as fast as FP32 (cluster256 keeps its arithmetic); 1.0: faster\n"
        if torch
        else "  min_speedup: 1.0                # never slower than FP32 at batch 1, on its 95% interval\n"
    )
    # dvc.yaml depends on the file: with no recipe that trains, the calibration file stands in
    train = (
        "  train: data/train.npz          # inputs and labels: cluster's centroid epochs, finetune, QAT, distill\n"
        if torch
        else "  train: data/calibration.npz    # no recipe here trains; for finetune, QAT or distill: inputs + labels\n"
    )
    if search:
        recipes += (
            "  searched:                      # the search's best trial (search-1 of "
            "artifacts/search/recipes.yaml)\n    - searched: {rank: 1}\n"
        )
    guessed = (
        (
            "guessed from its output "
            f"{_shape(model['outputs'][0].get('axes') or model['outputs'][0]['shape']) if model and model['outputs'] else '(no signature)'}"
        )
        if model
        else "set it"
    )
    text = f"""# squeezeflow pipeline for {_quoted(uri)} (written by `squeezeflow init`). Every key: squeezeflow's
# docs/reference.md, or `squeezeflow steps` for the steps. Run: dvc repro.
source:
  model_uri: {_quoted(uri)}
data:
  task: {task}                 # {guessed}; also regression, embedding
{inputs}  # npz files with {arrays}{labels}
  eval: data/eval.npz            # what the gate measures on
  calibration: data/calibration.npz   # static quantization ranges (other samples than eval)
{train}recipes:
{recipes}{SEARCH if search else ""}contracts:
  strict: false          # true: a calibration set drawn unlike the eval set fails instead of warning
  all_classes: false     # true: the eval set must hold every class of the model
budgets:
{BUDGETS[task]}{speed}
target:
  name: cpu-x86
  threads: 1
  batch_size: 1
selection:
  objective: speedup
promote:
  registered_model: {_quoted(name + "-edge")}
  alias: candidate
seed: 0
"""
    import yaml

    written = yaml.safe_load(text)  # what the model named is data, never YAML: check it stayed so
    keys = [k for k in PARAMS_KEYS if search or k != "search"]
    if (
        list(written) != keys
        or written["source"] != {"model_uri": uri}
        or written["promote"]["registered_model"] != name + "-edge"
    ):
        raise ConfigError(
            f"the model's signature or name does not fit a params.yaml ({_quoted(uri)}); rename its "
            "inputs (letters, digits, _) and register it again."
        )
    return text


def _shape(shape: Any) -> str:
    """[-1, 10] as it is when every entry is an integer, quoted otherwise."""
    return str(shape) if isinstance(shape, list) and all(type(d) is int for d in shape) else _quoted(shape)


def _quoted(value: Any) -> str:
    """A YAML double-quoted scalar (JSON's escaping: no newline, quote or control character gets through)."""
    return json.dumps(value if isinstance(value, str) else str(value))


def _append_missing(path: Path, lines: tuple[str, ...]) -> list[str]:
    have = set(path.read_text().splitlines()) if path.is_file() else set()
    missing = [line for line in lines if line not in have]
    if missing:
        with path.open("a") as f:
            f.write(("\n" if have else "") + "\n".join(missing) + "\n")
    return missing


if __name__ == "__main__":  # make pipelines: the repository's own pipelines, from the templates
    import sys

    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    try:
        for path in refresh([root, *sorted(p.parent for p in (root / "pipelines").glob("*/params.yaml"))]):
            print(f"rewrote {path}")
    except SqueezeflowError as e:
        print(f"squeezeflow: error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
