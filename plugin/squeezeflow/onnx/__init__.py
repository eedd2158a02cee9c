"""ONNX models: files with their external-data checks and metadata (`modelfile`), ONNX Runtime sessions
(`sessions`), graph rewrites (`rewrites`) and per-channel statistics of intermediate tensors
(`channel_stats`).

It may import `errors`, `envvars`, `config` and `data`; `onnx` and `onnxruntime` are imported inside functions.
"""
