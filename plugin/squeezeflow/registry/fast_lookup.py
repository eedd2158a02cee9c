"""Read-only version lookups that skip importing MLflow (about 2 s, plus 1-2 s to open a sqlite store).

`pull` runs on every `dvc repro` (the alias may have moved); when the alias still points where
artifacts/ says, these lookups let it stop in a fraction of a second. They answer only for the
common setups (a sqlite file, or an HTTP server with no or token/basic credentials) and return
None on anything unexpected, in which case the caller goes through MLflow as usual.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import urllib.parse
import urllib.request
from pathlib import Path

from squeezeflow import envvars
from squeezeflow.registry import parse_uri

_DELETED = "Deleted_Internal"  # MLflow's stage for a deleted version row


def version(uri: str) -> tuple[str, str, str] | None:
    """(name, version, source) of a READY version that `uri` names now, or None when unsure."""

    try:
        name, alias, number = parse_uri(uri)
        if number == "latest":
            return None
        tracking = envvars.tracking_uri()
        if tracking.startswith("sqlite:///"):
            return _sqlite(tracking[len("sqlite:///") :], name, alias, number)
        if tracking.startswith(("http://", "https://")):
            return _http(tracking, name, alias, number)
    except Exception:  # any doubt: let MLflow answer
        return None
    return None


def _sqlite(path: str, name: str, alias: str | None, number: str | None) -> tuple[str, str, str] | None:

    if not Path(path).is_file():
        return None
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
        if alias:
            row = db.execute(
                "SELECT version FROM registered_model_aliases WHERE workspace = 'default' AND name = ? AND alias = ?",
                (name, alias),
            ).fetchone()
            if row is None:
                return None
            number = str(row[0])
        row = db.execute(
            "SELECT source, status, current_stage FROM model_versions WHERE workspace = 'default' AND "
            "name = ? AND version = ?",
            (name, int(number)),
        ).fetchone()
    if row is None or row[1] != "READY" or row[2] == _DELETED:
        return None
    return name, number, row[0]


def _http(tracking: str, name: str, alias: str | None, number: str | None) -> tuple[str, str, str] | None:
    parts = urllib.parse.urlsplit(tracking)
    base = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl().rstrip("/")
    if alias:
        path, query = "registered-models/alias", {"name": name, "alias": alias}
    else:
        path, query = "model-versions/get", {"name": name, "version": number}
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}")
    user, password = (
        parts.username or os.environ.get("MLFLOW_TRACKING_USERNAME"),
        parts.password or os.environ.get("MLFLOW_TRACKING_PASSWORD"),
    )
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        request.add_header("Authorization", f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}")
    elif user and password:
        request.add_header(
            "Authorization",
            "Basic "
            + base64.b64encode(f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()).decode(),
        )
    with urllib.request.urlopen(request, timeout=5) as response:
        mv = json.load(response)["model_version"]
    if mv.get("status") != "READY":
        return None
    return name, str(mv["version"]), mv["source"]
