"""GitHub Actions workflow commands: job summary, step outputs, annotations (no-ops elsewhere)."""

from __future__ import annotations

import os

from squeezeflow import env


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def summary(markdown: str) -> None:
    """Append markdown to the job summary."""
    path = os.environ.get(env.GITHUB_STEP_SUMMARY)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(markdown + "\n")


def output(name: str, value: str) -> None:
    """Set a step output readable as steps.<id>.outputs.<name>."""
    path = os.environ.get(env.GITHUB_OUTPUT)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{name}={value}\n")


def annotate(level: str, message: str, title: str = "squeezeflow") -> None:
    """Print an error/warning/notice annotation when running in GitHub Actions."""
    if env.flag(env.GITHUB_ACTIONS):
        print(f"::{level} title={_escape(title)}::{_escape(message)}", flush=True)
