"""The INT8 machinery the quantize step composes: calibration data and ranges (`calibration`), GPTQ
rounding (`gptq`), bias correction (`bias_correction`), SmoothQuant and cross-layer equalization
(`equalization`) and per-layer sensitivity (`sensitivity`).

It may import `onnx`, `data`, `config` and below; steps import it, it imports no step.
"""
