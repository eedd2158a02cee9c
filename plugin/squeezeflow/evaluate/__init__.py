"""Task metrics, latency and size of a model; see `squeezeflow.stages.evaluate` for the stage."""
