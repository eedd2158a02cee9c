"""MLflow pyfunc of an ExecuTorch program (models from code: nothing is pickled). squeezeflow's
promote logs it with the program as the artifact `program`; `mlflow.pyfunc.load_model` then runs
the program's `forward` on the inputs given as a dict (in the source model's input order) or one array."""

import mlflow
from mlflow.pyfunc import PythonModel


class ExecuTorchProgram(PythonModel):
    def load_context(self, context):
        from executorch.runtime import Runtime

        self._method = Runtime.get().load_program(context.artifacts["program"]).load_method("forward")

    def predict(self, context, model_input, params=None):
        import numpy as np
        import torch

        arrays = list(model_input.values()) if isinstance(model_input, dict) else [np.asarray(model_input)]
        return self._method.execute([torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])[0].numpy()


mlflow.models.set_model(ExecuTorchProgram())
