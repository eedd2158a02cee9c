"""What a search leaves for the stages after it: recipes of the best trials, every trial, one slot file per recipe.

- `recipes.yaml`: `search-1`, `search-2`, ... (best first) as ordinary params.yaml recipes.
- `trials.json`: every trial (recipe, state, objective values, metrics, constraints, time spans),
  for the report's Pareto front and `squeezeflow search --status`.
- `slots/RECIPE.json`, one per recipe of params.yaml: for a `[{searched: {rank: K}}]` recipe the
  K-th best steps, else nothing. Each compress@RECIPE depends on its own slot file, so a new
  search result re-runs only the recipes it fills.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from squeezeflow.config import parse_recipes
from squeezeflow.errors import ConfigError, ModelError


def write(
    search_dir: Path,
    recipes: dict[str, list[Any]],
    best: list[dict[str, Any]],
    trials: list[dict[str, Any]],
    study: dict[str, Any],
) -> None:
    """Write recipes.yaml, trials.json and the slot files (`best`: {number, steps (yaml form), values}, best first)."""
    import yaml

    search_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# the best trials of search study {study['name']} (best first); recipes: {{NAME: [{{searched: "
        "{rank: K}}]} uses the K-th"
    ]
    for k, b in enumerate(best, 1):
        lines.append(f"# search-{k}: trial {b['number']}, " + ", ".join(f"{o} {v:.4g}" for o, v in b["values"].items()))
    body = (
        yaml.safe_dump({f"search-{k}": b["steps"] for k, b in enumerate(best, 1)}, sort_keys=False) if best else "{}\n"
    )
    (search_dir / "recipes.yaml").write_text("\n".join(lines) + "\n" + body)
    (search_dir / "trials.json").write_text(
        json.dumps({"study": study, "trials": trials}, indent=2, sort_keys=True) + "\n"
    )
    slots = search_dir / "slots"
    slots.mkdir(exist_ok=True)
    for old in slots.glob("*.json"):
        old.unlink()

    shutil.rmtree(soft_labels_dir(search_dir), ignore_errors=True)
    for name, steps in recipes.items():
        rank = steps[0].rank if steps[0].kind == "searched" else None
        filled = best[rank - 1] if rank and rank <= len(best) else None
        entry = {
            "recipe": name,
            "rank": rank,
            "trial": filled["number"] if filled else None,
            "steps": filled["steps"] if filled else None,
        }
        (slots / f"{name}.json").write_text(json.dumps(entry, indent=2, sort_keys=True) + "\n")


def soft_labels_dir(search_dir: Path) -> Path:
    """The source's logits on data.train for searched recipes that distill (inside the slots output: the soft-labels
    stage runs before the search).
    """
    return search_dir / "slots" / "soft-labels"


def expand(steps: list[Any], search_dir: Path, recipe: str) -> list[Any]:
    """A recipe's steps with a leading `searched` slot replaced by the search's steps for it.

    Raises:
        ConfigError: the search has not run; ModelError: it found fewer passing trials than the rank (a failed
        candidate).
    """

    if not steps or steps[0].kind != "searched":
        return steps
    slot = search_dir / "slots" / f"{recipe}.json"
    if not slot.is_file():
        raise ConfigError(
            f"recipes.{recipe} takes the search's rank {steps[0].rank}, but {slot} is missing; run "
            "the search stage first (dvc repro, or squeezeflow search)."
        )
    entry = json.loads(slot.read_text())
    # a candidate that failed, not a broken pipeline: the gate still judges the other recipes
    if not entry.get("steps"):
        raise ModelError(
            f"the search found fewer than {steps[0].rank} trials that meet the budgets (see "
            f"{search_dir / 'trials.json'}); lower the rank or widen search.space"
        )
    return parse_recipes({recipe: entry["steps"]}, str(slot))[recipe] + list(steps[1:])


def read_trials(search_dir: Path) -> dict[str, Any] | None:
    path = search_dir / "trials.json"
    return json.loads(path.read_text()) if path.is_file() else None
