"""Registered PyTorch models: load one from its MLflow folder (pt2 archives checked first), export it to ONNX."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezeflow import envvars
from squeezeflow.config import safeyaml
from squeezeflow.errors import ConfigError, ModelError
from squeezeflow.onnx.modelfile import first_line
from squeezeflow.onnx.sessions import check_finite, run_outputs, session
from squeezeflow.torch import pt2check, rebuild

if TYPE_CHECKING:
    import numpy as np

PT2_FILE = "model.pt2"  # MLflow pytorch flavor, pt2 format (torch.export): no pickled code
OUTPUT_NAMES = "squeezeflow_output_names"  # a loaded model's output names from its signature, for every export of it


def signature_outputs(spec: Any) -> list[str] | None:
    """The output names an MLmodel document's signature gives (all of them named), else None."""
    from mlflow.models.signature import ModelSignature

    found = spec.get("signature") if isinstance(spec, dict) else None
    try:
        outputs = ModelSignature.from_dict(found).outputs if isinstance(found, dict) and found.get("outputs") else None
    except Exception:  # noqa: BLE001 - an unreadable signature names nothing
        return None
    return outputs.input_names() if outputs is not None and outputs.has_input_names() else None


def load_torch(model_dir: str | Path) -> Any:
    """Load an MLflow pytorch-flavor model directory into an eval-mode module.

    Loading a pickle runs code stored in the file, so unless the user allows it explicitly
    (`envvars.pickle_allowed`) MLflow loads it with its own pickle switch off: MLflow then
    refuses pickled models and pt2 archives whose weights, constants or sample inputs are not
    plain tensors. On top of that, squeezeflow refuses a model folder that holds a pickled
    `model.pth` (which MLflow would load instead of `model.pt2`) or code paths (which MLflow
    puts on sys.path). The pt2 archive's JSON graph is checked first (`pt2check`): torch evaluates
    its shape expressions, guards and operator names as Python, so unless the user allows model
    code (`envvars.ALLOW_CODE`), anything torch.export would not write is refused.

    Raises:
        ConfigError: anything that would unpickle or import code, without that permission.
        ModelError: it does not load.
    """

    model_dir = Path(model_dir)
    spec = safeyaml.load_file(model_dir / "MLmodel", ModelError)
    flavor = ((spec.get("flavors") or {}).get("pytorch") or {}) if isinstance(spec, dict) else {}
    data_dir = model_dir / str(flavor.get("model_data", "data"))
    consent = (
        f"If you trust the model, set {envvars.ALLOW_PICKLE}=true (or {envvars.ALLOW_CODE}=true); or "
        "register it with "
        "mlflow.pytorch.log_model(..., serialization_format='pt2') and no code_paths."
    )
    allowed = envvars.pickle_allowed()
    if not allowed:
        pickled = [p.name for p in (data_dir / "model.pth", data_dir / "pickle_module_info.txt") if p.exists()]
        if pickled or not (data_dir / PT2_FILE).is_file():
            raise ConfigError(
                f"{model_dir}: the PyTorch model is in pickle format "
                f"({', '.join(pickled) or 'no ' + PT2_FILE}), and loading it runs code stored in the "
                f"file. {consent}"
            )
        if flavor.get("code"):
            raise ConfigError(
                f"{model_dir}: the model ships code paths ({str(flavor['code'])[:80]}), which MLflow "
                f"puts on sys.path when it loads the model. {consent}"
            )
    if not envvars.flag(envvars.ALLOW_CODE) and (data_dir / PT2_FILE).is_file():
        pt2check.check_archive(data_dir / PT2_FILE, f"If you trust the model, set {envvars.ALLOW_CODE}=true.")
    import mlflow.pytorch

    # MLflow reads both switches itself: 3.18 unpickles only when both are true, and refuses a value that is not a
    # boolean (an empty one included). While it loads: with consent both are true; without, pickle is off and the code
    # switch keeps a boolean the user set (false also refuses a model folder on the Python path) or MLflow's default.
    switches = {envvars.ALLOW_PICKLE: "true" if allowed else "false"}
    if allowed:
        switches[envvars.ALLOW_CODE] = "true"
    before = {name: os.environ.get(name) for name in (envvars.ALLOW_PICKLE, envvars.ALLOW_CODE)}
    if not allowed and before[envvars.ALLOW_CODE] is not None and not envvars.is_boolean(before[envvars.ALLOW_CODE]):
        os.environ.pop(envvars.ALLOW_CODE)
    os.environ.update(switches)
    try:
        model = mlflow.pytorch.load_model(str(model_dir), map_location="cpu")
    except Exception as e:
        if "pickle is disallowed" in str(e):
            raise ConfigError(
                f"{model_dir}: the pt2 archive holds pickled records beyond plain tensors, and "
                f"loading them runs code. {consent}"
            ) from None
        raise ModelError(f"{model_dir}: cannot load the PyTorch model ({first_line(e)}).") from None
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    # pt2: real Conv/Linear/BatchNorm layers again, so every step treats it like the pickled module
    model = rebuild.with_modules(model)
    try:
        model.eval()
    except NotImplementedError:
        pass  # exported graphs that keep no layer to rebuild refuse .eval(); they are captured in eval mode
    names = signature_outputs(spec)
    if names:
        setattr(model, OUTPUT_NAMES, names)
    return model


def export_onnx(
    model: Any,
    example: dict[str, np.ndarray],
    path: str | Path,
    output_name: str = "output",
    atol: float = 1e-4,
    min_agreement: float | None = None,
) -> None:
    """Export a torch module to a single ONNX file with a dynamic batch axis, and check it.

    The example arrays are passed positionally in their order; their names become the ONNX input
    names. The outputs keep the names the model's signature gives (`load_torch` keeps them on the
    module); otherwise a model that returns a tuple gets one ONNX output per element, `output_name`
    followed by its index (`output0`, `output1`, ...), and a single output is `output_name`. The export is checked
    against torch on the example (max abs difference <= atol scaled by each output's magnitude) and
    every output must be finite. With `min_agreement`, the check is
    instead the share of samples whose top class agrees: for quantized graphs, where torch
    simulates integer arithmetic in float and ONNX Runtime's integer kernels round differently.

    Raises:
        ModelError: the export fails, the outputs differ, or contain NaN/inf.
    """

    import numpy as np
    import torch

    names = list(example)
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(example[n][:2])) for n in names)
    if tensors[0].shape[0] < 2:
        raise ModelError("the export example needs at least 2 samples (a batch of 1 fixes the batch axis).")
    with torch.no_grad():
        expected = model(*[torch.from_numpy(example[n]) for n in names])
    outputs = [t.numpy() for t in expected] if isinstance(expected, (tuple, list)) else [expected.numpy()]
    for out in outputs:
        check_finite(out, "PyTorch outputs of the source model")
    output_names = [output_name] if len(outputs) == 1 else [f"{output_name}{i}" for i in range(len(outputs))]
    named = getattr(model, OUTPUT_NAMES, None)
    if isinstance(named, list) and len(named) == len(outputs) and len(set(named)) == len(named):
        output_names = [str(n) for n in named]
    batch = torch.export.Dim("batch")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model,
                tensors,
                str(path),
                input_names=names,
                output_names=output_names,
                dynamic_shapes=tuple({0: batch} for _ in names),
                external_data=sum(p.numel() * p.element_size() for p in model.parameters())
                > envvars.external_data_bytes(),
                verbose=False,
                report=False,
            )
        except Exception as e:
            raise ModelError(
                f"torch.onnx.export failed ({str(e).strip().splitlines()[0]}). The model must be "
                "exportable with torch.export."
            ) from None
    got = list(run_outputs(session(path), example).values())
    if min_agreement is not None:
        agreement = float(np.mean(got[0].argmax(-1) == outputs[0].argmax(-1)))
        if agreement < min_agreement:
            raise ModelError(
                f"the ONNX export predicts the same class as PyTorch on {agreement:.1%} of the "
                f"example (at least {min_agreement:.0%} required); the export is not faithful."
            )
        return
    for name, out, ref in zip(output_names, got, outputs):
        err = float(np.max(np.abs(out - ref)))
        if err > atol * max(1.0, float(np.max(np.abs(ref)))):
            raise ModelError(
                f"the ONNX export's output {name!r} differs from PyTorch by {err:.3g} (tolerance "
                f"{atol:g}); the export is not faithful."
            )
