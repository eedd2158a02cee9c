"""GitHub Actions: job summary, step outputs, annotations, through github-action-utils (no-ops elsewhere)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from squeezeflow import envvars


def summary(markdown: str) -> None:
    """Append markdown to the job summary."""
    if os.environ.get(envvars.GITHUB_STEP_SUMMARY):
        import github_action_utils as gha

        gha.append_job_summary(markdown)


def output(name: str, value: str | None) -> None:
    """Set a step output readable as steps.<id>.outputs.<name>."""
    if os.environ.get(envvars.GITHUB_OUTPUT):
        import github_action_utils as gha

        gha.set_output(name, "" if value is None else str(value))


def annotate(
    level: str, message: str, title: str = "squeezeflow", file: str | None = None, line: int | None = None
) -> None:
    """An error or warning annotation (on a file's line when given) when running in GitHub Actions."""
    if envvars.flag(envvars.GITHUB_ACTIONS):
        import github_action_utils as gha

        (gha.error if level == "error" else gha.warning)(message, title=title, file=file, line=line)


def params_line(params_file: str | Path, section: str, key: str) -> int | None:
    """The 1-based line of `section: ... key:` in a params.yaml (where an annotation points), or None."""
    path = Path(params_file)
    if not path.is_file():
        return None
    in_section = False
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if re.match(rf"^{re.escape(section)}\s*:", text):
            in_section = True
            if re.search(rf"[{{,\s]{re.escape(key)}\s*:", text):  # flow style: budgets: {max_size_mb: 1}
                return number
            continue
        if in_section and text and not text[0].isspace() and not text.lstrip().startswith("#"):
            return None
        if in_section and re.match(rf"^\s+{re.escape(key)}\s*:", text):
            return number
    return None
