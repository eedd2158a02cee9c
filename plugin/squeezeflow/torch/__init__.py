"""PyTorch models: load a registered one and export it to ONNX (`convert`), check a pt2 archive before
torch reads it (`pt2check`), rebuild real layers from an exported program (`rebuild`), the one
training loop (`train`), the architectures squeezeflow builds (`architectures`) and ExecuTorch
programs (`executorch`).

It may import `onnx` and what is below it; `torch` itself is imported inside functions.
"""
