"""Task metrics, latency and size of a model, the budgets over them, and the sealed metrics files.

`tasks` and `classification` score outputs, `latency` and `stats` time them with intervals,
`size` measures files, `compare` runs a candidate against the baseline, `budgets` checks a
candidates table, `promises` says whether a recipe did what its steps are for, `seal` binds a
metrics file to what it measured and `plotfiles` writes the DVC plot records. It may import
`runtimes`, `onnx`, `torch`, `data`, `config` and below, never `report` or a stage.
"""
