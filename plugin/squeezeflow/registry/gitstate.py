"""Where a pipeline runs from: the git commit and branch, uncommitted changes, and the DVC experiment running it.

Promotion reads this so that what no commit holds does not ship by default: a `dvc exp run`, a
working tree with uncommitted changes, a branch that is not a release branch (see `blockers`).
When it does ship, the version's tags and `squeezeflow lineage` say so.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squeezeflow import envvars

# what `dvc repro` itself rewrites in a pipeline folder: not an uncommitted change of the pipeline
OUTPUTS = ("dvc.lock", "artifacts/", "metrics/", "reports/", "plots/")
EXP_NAME, EXP_BASELINE = "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"  # set by `dvc exp run` for the stages it runs
SHOWN = 5  # changed files named in messages and tags


@dataclass(frozen=True)
class GitState:
    """`in_repo` False: not a git work tree (commit, branch and changes unknown)."""

    in_repo: bool
    commit: str = ""
    branch: str = ""  # '' when detached outside GitHub Actions
    changed: tuple[str, ...] = ()  # tracked files with uncommitted changes, beyond the pipeline's own outputs
    experiment: str = ""  # the DVC experiment's name, '(unnamed)' when DVC gave none, '' outside `dvc exp run`

    def tags(self) -> dict[str, str]:
        """squeezeflow.* tag values (without the prefix) for a promoted version."""
        return {
            "git.branch": self.branch,
            "git.dirty": str(bool(self.changed)).lower() if self.in_repo else "",
            "git.changed": ",".join(self.changed[:SHOWN])
            + (f",... ({len(self.changed)} files)" if len(self.changed) > SHOWN else ""),
            "dvc.experiment": self.experiment,
        }


def git(*args: str, cwd: str | Path = ".", strip: bool = True) -> str | None:
    """Output of a git command, or None when it fails (no git, not a repository)."""
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() if strip else out.stdout


def in_actions() -> bool:
    """Inside a GitHub Actions job: the only place its GITHUB_* variables describe the checkout."""

    return os.environ.get(envvars.GITHUB_ACTIONS) == "true"


def commit(cwd: str | Path = ".") -> str:
    """HEAD of the enclosing git repository, or '' outside one.

    GITHUB_SHA is used only inside GitHub Actions and where git cannot say (a checkout without
    .git); where both exist, HEAD wins, so a forged variable never names the commit.
    """

    head = git("rev-parse", "HEAD", cwd=cwd)
    return head or (os.environ.get(envvars.GITHUB_SHA, "") if in_actions() else "")


def branch(cwd: str | Path = ".") -> str:
    """The checked-out branch, or ''. In GitHub Actions (detached checkouts) GITHUB_REF_NAME, and
    only there; in `dvc exp run` (which detaches HEAD while it runs) the branch at the experiment's baseline."""

    if in_actions() and os.environ.get(envvars.GITHUB_REF_NAME):
        return os.environ[envvars.GITHUB_REF_NAME]
    name = git("symbolic-ref", "--quiet", "--short", "HEAD", cwd=cwd)  # also names an unborn branch
    if not name and os.environ.get(EXP_BASELINE):
        name = (
            git(
                "for-each-ref",
                f"--points-at={os.environ[EXP_BASELINE]}",
                "--format=%(refname:short)",
                "refs/heads",
                cwd=cwd,
            )
            or ""
        ).split("\n")[0]
    return name or ""


def state(cwd: str | Path = ".", reads: tuple[str | Path, ...] = (), data: tuple[str | Path, ...] = ()) -> GitState:
    """The git state of the pipeline folder `cwd`.

    Args:
        reads: files the pipeline reads that must be committed (the params file): one git does
            not track counts as an uncommitted change, ignored or not.
        data: data files the pipeline reads: one git neither tracks nor ignores counts too (an
            ignored one is DVC's or the user's to version; its sha256 is in the version's tags).
    """
    experiment = os.environ.get(EXP_NAME) or ("(unnamed)" if os.environ.get(EXP_BASELINE) else "")
    prefix = git("rev-parse", "--show-prefix", cwd=cwd)
    if prefix is None:
        return GitState(in_repo=False, experiment=experiment)
    status = (git("status", "--porcelain", "-z", "--untracked-files=no", cwd=cwd, strip=False) or "").split("\0")
    paths, entries = [], iter(status)
    for entry in entries:  # "XY PATH"; a rename or copy is followed by its old path
        if len(entry) > 3:
            paths.append(entry[3:])
            if entry[0] in "RC":
                next(entries, None)
    files = {prefix + o for o in OUTPUTS if not o.endswith("/")}
    folders = tuple(prefix + o for o in OUTPUTS if o.endswith("/"))
    changed = tuple(path for path in paths if path not in files and not path.startswith(folders))
    changed += tuple(
        f"{p} (untracked)"
        for p in _untracked(reads, cwd, ignored_count=True) + _untracked(data, cwd, ignored_count=False)
    )
    return GitState(in_repo=True, commit=commit(cwd), branch=branch(cwd), changed=changed, experiment=experiment)


def _untracked(paths: tuple[str | Path, ...], cwd: str | Path, ignored_count: bool) -> list[str]:
    """Those of `paths` (existing files inside the work tree) that git does not track, relative to the repository's
    top.
    """
    top = git("rev-parse", "--show-toplevel", cwd=cwd)
    found = []
    for path in paths:
        full = (Path(cwd) / path).resolve()
        if not top or not full.is_file() or not full.is_relative_to(Path(top).resolve()):
            continue
        relative = str(full.relative_to(Path(top).resolve()))
        if git("ls-files", "--error-unmatch", "--", relative, cwd=top) is not None:
            continue  # tracked: its changes, if any, are in `git status`
        if not ignored_count and git("check-ignore", "-q", "--", relative, cwd=top) is not None:
            continue
        found.append(relative)
    return found


def blockers(current: GitState, promote: Any) -> list[str]:
    """Why promotion from `current` must stay a dry run under the `promote` settings (empty: it may ship).

    Outside a git repository nothing is known and nothing blocks (lineage then records no commit).
    """
    reasons = []
    if current.experiment and not promote.from_experiments:
        reasons.append(
            f"it runs in DVC experiment {current.experiment} (set promote.from_experiments: true to ship experiments)"
        )
    # an experiment's changes are what it tries
    if current.in_repo and current.changed and not promote.from_dirty and not current.experiment:
        shown = ", ".join(current.changed[:SHOWN]) + (
            f" and {len(current.changed) - SHOWN} more" if len(current.changed) > SHOWN else ""
        )
        reasons.append(
            f"the working tree has uncommitted changes ({shown}); commit them, or set promote.from_dirty: true"
        )
    if current.in_repo and promote.branches and current.branch not in promote.branches:
        reasons.append(
            f"branch {current.branch or '(detached HEAD)'} is not a release branch "
            f"({', '.join(promote.branches)}); promote from one, or list it in promote.branches"
        )
    return reasons


def held(params: Any, params_file: str | Path = "params.yaml", cwd: str | Path = ".") -> tuple[GitState, list[str]]:
    """The git state of the pipeline and why promotion must stay a dry run in it (`blockers`): an untracked params file
    or data file counts as an uncommitted change."""
    data_files = tuple(p for p in (params.data.eval, params.data.calibration, params.data.train) if p is not None)
    current = state(cwd, reads=(params_file,), data=data_files)
    return current, blockers(current, params.promote)
