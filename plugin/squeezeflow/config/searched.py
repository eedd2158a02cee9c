"""`searched`: a recipe slot the search stage fills with one of its best trials.

`recipes: {best: [{searched: {rank: 1}}]}` is the search's best trial; the compress stage replaces
this entry by that trial's steps (artifacts/search/slots/best.json), and steps after it still
apply, e.g. `[{searched: {rank: 1}}, {executorch: {}}]`. It is not a technique, so it is not in
the step table: params parsing knows it by name, and it must be the recipe's first entry.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from squeezeflow.steps import StepConfig

KIND = "searched"


class SearchedConfig(StepConfig):
    """The `rank`-th best recipe of the search stage (params.yaml `search:`), in its place."""

    kind: ClassVar[str] = KIND
    rank: int = Field(1, ge=1, description="1 for the search's best trial, 2 for the next, ... (at most search.keep).")
