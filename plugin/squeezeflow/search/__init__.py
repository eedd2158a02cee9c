"""Search for the best recipe under the budgets: the space, one trial, the study, its results.

The search stage (squeezeflow.stages.search) composes these; the compress stage reads the results.
It may import the steps (a trial runs a recipe), `evaluate`, `registry` and below.
"""
