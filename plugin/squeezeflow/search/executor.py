"""Where trials run: in this process one at a time (`local`), or as Ray tasks on a cluster (`ray`).

Both take trials with `submit` and hand back finished ones with `next`, so the search loop (ask,
run, tell) is the same. On Ray a trial is two tasks: `prepare` (apply the recipe, score quality;
one CPU, many in parallel) and `measure` (the timing), which asks for every CPU of the node its
candidate is on, so nothing else runs there while it times, and of which one runs at a time in the
whole cluster. The source model and the data files travel through Ray's object store, so workers
need squeezeflow installed but no shared filesystem. A worker that dies mid-task has its task
retried by Ray (`max_retries`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from squeezeflow import data
from squeezeflow.errors import ConfigError, RegistryUnreachableError
from squeezeflow.search import trial as trials

RETRIES = 3


class Local:
    """Trials in this process, one at a time."""

    slots = 1

    def __init__(self, setup: trials.Setup):
        self.setup, self.queue = setup, []

    def busy(self) -> int:
        return len(self.queue)

    def submit(self, number: int, steps: list[Any]) -> None:
        self.queue.append((number, steps))

    def next(self) -> tuple[int, dict[str, Any]]:
        number, steps = self.queue.pop(0)
        return number, trials.run(self.setup, steps, number)

    def close(self) -> None:
        pass


class Ray:
    """Trials as Ray tasks on the cluster at RAY_ADDRESS (a local one when unset)."""

    def __init__(self, setup: trials.Setup):

        try:
            import ray
        except ImportError:
            raise ConfigError(
                "search.executor ray needs Ray, which is not installed; pip install "
                "'squeezeflow[ray]' (or ray), or use executor: local."
            ) from None

        address = os.environ.get("RAY_ADDRESS") or None
        why = _not_ray(address) if address else None
        if why:  # ray.init waits without end on a port that answers but is not Ray's
            raise RegistryUnreachableError(
                f"search: RAY_ADDRESS {address} is not a Ray cluster ({why}); start it "
                "(ray start --head) or fix RAY_ADDRESS."
            )
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                ignore_reinit_error=True,
            )
        except Exception as e:  # noqa: BLE001 - ConnectionError, TimeoutError or RuntimeError depending on how the cluster is gone
            raise RegistryUnreachableError(
                f"search: the Ray cluster at {address} did not answer "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                "start it (ray start --head) or fix RAY_ADDRESS."
            ) from None
        self.ray = ray
        self.cpus = {n["NodeID"]: int(n["Resources"].get("CPU", 1)) for n in ray.nodes() if n.get("Alive")}
        self.slots = max(1, sum(self.cpus.values()))
        self.bundle = ray.put(_bundle(setup))
        self.setup = setup
        self.prepare = ray.remote(_prepare).options(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)
        self.pending: dict[Any, tuple[str, int]] = {}  # object ref -> (phase, trial number)
        self.waiting: list[dict[str, Any]] = []  # prepared trials whose timing has not started
        self.timing = False

    def busy(self) -> int:
        return len(self.pending) + len(self.waiting)

    def submit(self, number: int, steps: list[Any]) -> None:
        self.pending[self.prepare.remote(self.bundle, self.setup, steps, number)] = ("prepare", number)

    def next(self) -> tuple[int, dict[str, Any]]:
        while True:
            self._start_timing()
            (ref,), _ = self.ray.wait(list(self.pending), num_returns=1)
            phase, number = self.pending.pop(ref)
            try:
                result = self.ray.get(ref)
            except Exception as e:  # noqa: BLE001 - retries spent, or the candidate's node is gone: this trial fails, the search goes on
                self.timing = self.timing and phase != "measure"
                return number, trials.failure(f"ray {phase}: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
            if phase == "measure":
                self.timing = False
                return number, result
            if result["state"] != "prepared":
                return number, result
            self.waiting.append(result)

    def _start_timing(self) -> None:
        """One timing at a time in the cluster, on the node that holds the candidate, with all of that node's CPUs."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if self.timing or not self.waiting:
            return
        prepared = self.waiting.pop(0)
        node = prepared["node"]
        task = self.ray.remote(_measure).options(
            num_cpus=self.cpus.get(node, 1),
            max_retries=RETRIES,
            retry_exceptions=False,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        )
        self.pending[task.remote(self.bundle, self.setup, prepared)] = ("measure", prepared["number"])
        self.timing = True

    def close(self) -> None:
        self.ray.shutdown()


def open_executor(kind: str, setup: trials.Setup) -> Local | Ray:
    return Ray(setup) if kind == "ray" else Local(setup)


def _bundle(setup: trials.Setup) -> dict[str, bytes]:
    """The files a trial reads (source model folder, the split data files, a few eval samples for exports), by their
    role.
    """

    files = {
        f"source/{p.relative_to(setup.source_dir)}": p.read_bytes()
        for p in sorted(setup.source_dir.rglob("*"))
        if p.is_file()
    }
    for role in ("holdout", "calibration", "train"):
        path = getattr(setup, role)
        if path is not None:
            files[f"{role}.npz"] = Path(path).read_bytes()
    if setup.soft_labels is not None:
        files.update({f"soft-labels/{p.name}": p.read_bytes() for p in sorted(setup.soft_labels.iterdir())})

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **data.head(setup.params.data.eval, "eval", 32))  # exports take their example's shapes from data.eval
    files["eval-head.npz"] = buf.getvalue()
    return files


def _local_setup(bundle: dict[str, bytes], setup: trials.Setup) -> trials.Setup:
    """The setup with its files written once per node (a folder named after the bundle's digest) and its paths pointing
    there.
    """

    digest = hashlib.sha256(
        b"".join(k.encode() + hashlib.sha256(v).digest() for k, v in sorted(bundle.items()))
    ).hexdigest()[:16]
    root = Path(tempfile.gettempdir()) / f"squeezeflow-search-{digest}"
    if not (root / ".complete").is_file():
        root.mkdir(parents=True, exist_ok=True)
        for rel, blob in bundle.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            tmp = root / f"{rel}.{os.getpid()}.partial"
            tmp.write_bytes(blob)
            tmp.replace(root / rel)
        (root / ".complete").write_text("")
    params = setup.params
    params = params.model_copy(update={"data": params.data.model_copy(update={"eval": root / "eval-head.npz"})})
    return dataclasses.replace(
        setup,
        params=params,
        source_dir=root / "source",
        registered_dir=root / "registered",
        work=root,
        holdout=root / "holdout.npz",
        calibration=root / "calibration.npz" if setup.calibration else None,
        train=root / "train.npz" if setup.train else None,
        soft_labels=root / "soft-labels" if setup.soft_labels else None,
    )


def _mark(setup: trials.Setup, phase: str, number: int) -> None:
    """Best effort, for operators and tests on one machine: which process runs which trial (the driver's work folder,
    when this node sees it).
    """
    folder = setup.work / "ray-pids"
    if folder.is_dir():
        (folder / f"{number}-{phase}-{os.getpid()}").write_text("")


def _prepare(bundle: dict[str, bytes], setup: trials.Setup, steps: list[Any], number: int) -> dict[str, Any]:
    import ray

    _mark(setup, "prepare", number)
    start = time.time()
    result = trials.prepare(_local_setup(bundle, setup), steps, number)
    return {**result, "node": ray.get_runtime_context().get_node_id(), "prepare_span": [start, time.time()]}


def _measure(bundle: dict[str, bytes], setup: trials.Setup, prepared: dict[str, Any]) -> dict[str, Any]:
    import ray

    _mark(setup, "measure", prepared["number"])
    result = trials.measure(_local_setup(bundle, setup), prepared)
    return {**result, "node": ray.get_runtime_context().get_node_id(), "prepare_span": prepared.get("prepare_span")}


# + an empty SETTINGS frame
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
PROBE_SECONDS = 5.0


def _not_ray(address: str, timeout: float = PROBE_SECONDS) -> str | None:
    """Why HOST:PORT (or ray://HOST:PORT) cannot be a Ray cluster, or None when a gRPC server answers there.

    Ray's GCS and its client server speak gRPC (HTTP/2): they answer the HTTP/2 preface with a
    SETTINGS frame. Anything else, or nothing within `timeout`, is not Ray. Addresses Ray resolves
    itself (`auto`, `local`) are not probed.
    """

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(HTTP2_PREFACE)
            frame = conn.recv(9)
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"
    if len(frame) < 4 or frame[3] != 0x04:
        return "what answers there does not speak gRPC"
    return None
