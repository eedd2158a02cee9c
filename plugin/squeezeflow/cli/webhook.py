"""`squeezeflow webhook`: receive MLflow registry webhooks and start the pipeline when the source alias moves.

MLflow signs each delivery: `X-MLflow-Signature: v1,<base64 HMAC-SHA256(secret, "<delivery id>.<timestamp>.<body>")>`
with `X-MLflow-Delivery-Id` and `X-MLflow-Timestamp` (Unix seconds). A delivery is accepted only
with a valid signature, a timestamp inside the replay window and a delivery id not seen before.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from squeezeflow import envvars
from squeezeflow.errors import ConfigError

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
EVENT = ("model_version_alias", "created")
MAX_BODY = 1 << 20
SEEN_DELIVERIES = 10_000
SOCKET_TIMEOUT_S = 10.0
REQUEST_DEADLINE_S = 15.0  # from accept to the whole request read: a client sending a byte now and then is cut off
MAX_CONNECTIONS = 32
PER_ADDRESS = 8  # connections one client address may hold at once: the rest stay free for the registry's deliveries


class Rejected(Exception):
    """A delivery that must not be acted on; `status` is the HTTP answer."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """MLflow's signature of a delivery (what the server computes)."""
    digest = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@dataclasses.dataclass
class Verifier:
    """Checks signature, replay window and delivery-id reuse; remembers the deliveries it accepted.

    With `state`, accepted delivery ids are appended to that file (one `ID TIMESTAMP` line each,
    flushed before the delivery is acted on) and read back at start, so a restarted receiver
    still refuses a replay inside the window.
    """

    secret: str
    window_s: float = 300.0
    state: Path | None = None
    seen: OrderedDict[str, int] = dataclasses.field(default_factory=OrderedDict)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.state is None:
            return
        now = time.time()
        if self.state.is_file():
            for line in self.state.read_text(errors="replace").splitlines()[-SEEN_DELIVERIES:]:
                delivery, _, stamp = line.rpartition(" ")
                if delivery and stamp.isdigit() and abs(now - int(stamp)) <= self.window_s:
                    self.seen[delivery] = int(stamp)
        self.state.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state.with_name(self.state.name + ".tmp")  # rewritten without the expired ids
        tmp.write_text("".join(f"{d} {t}\n" for d, t in self.seen.items()))
        tmp.replace(self.state)

    def check(self, headers: Any, body: bytes, now: float | None = None) -> dict[str, Any]:
        """The delivery's JSON payload, or `Rejected` (401 bad or missing signature, stale; 409 replayed id)."""
        delivery, stamp, signature = (headers.get(h) for h in (DELIVERY_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER))
        if not (delivery and stamp and signature):
            raise Rejected(401, f"missing {SIGNATURE_HEADER}, {TIMESTAMP_HEADER} or {DELIVERY_HEADER}")
        if not hmac.compare_digest(
            sign(self.secret, delivery, stamp, body).encode(), signature.strip().encode("utf-8", "replace")
        ):
            raise Rejected(401, "signature does not match")
        try:
            age = (time.time() if now is None else now) - int(stamp)
        except ValueError:
            raise Rejected(401, f"{TIMESTAMP_HEADER} is not a Unix time") from None
        if abs(age) > self.window_s:
            raise Rejected(401, f"timestamp {age:+.0f} s away, outside the {self.window_s:g} s replay window")
        if len(delivery) > 200 or any(c.isspace() for c in delivery):
            raise Rejected(400, f"{DELIVERY_HEADER} is not a delivery id")
        with self.lock:
            if delivery in self.seen:
                raise Rejected(409, f"delivery {delivery} was already received")
            self.seen[delivery] = int(stamp)
            while len(self.seen) > SEEN_DELIVERIES:
                self.seen.popitem(last=False)
            if self.state is not None:
                with self.state.open("a") as f:
                    f.write(f"{delivery} {int(stamp)}\n")
                    f.flush()
                    os.fsync(f.fileno())
        try:
            payload = json.loads(body)
        except ValueError:
            raise Rejected(400, "body is not JSON") from None
        if not isinstance(payload, dict):
            raise Rejected(400, f"body is a JSON {type(payload).__name__}, not an object")
        return payload


@dataclasses.dataclass(frozen=True)
class Trigger:
    """What to start for an accepted alias event on the watched model and alias."""

    name: str
    alias: str
    command: tuple[str, ...] = ("dvc", "repro")
    dispatch_url: str | None = None  # https://api.github.com/repos/OWNER/REPO/dispatches
    token: str | None = None

    def wants(self, payload: dict[str, Any]) -> str | None:
        """The model URI when the payload is the watched alias being set, else None."""
        data = payload.get("data") or {}
        if (
            (payload.get("entity"), payload.get("action")) != EVENT
            or data.get("name") != self.name
            or data.get("alias") != self.alias
        ):
            return None
        return f"models:/{self.name}/{data.get('version')}"

    def fire(self, model_uri: str) -> None:
        """Run the pipeline command, or send a GitHub repository_dispatch carrying the model URI."""

        if self.dispatch_url:
            body = json.dumps({"event_type": "model-registered", "client_payload": {"model_uri": model_uri}}).encode()
            request = urllib.request.Request(
                self.dispatch_url,
                data=body,
                method="POST",
                headers={
                    "Accept": "application/vnd.github+json",
                    "Content-Type": "application/json",
                    **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
                },
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                print(f"webhook: repository_dispatch for {model_uri}: HTTP {response.status}", flush=True)
            return
        result = subprocess.run(list(self.command), env={**os.environ, "SQUEEZEFLOW_WEBHOOK_MODEL_URI": model_uri})
        print(f"webhook: `{' '.join(self.command)}` for {model_uri} exited {result.returncode}", flush=True)


def server(
    host: str,
    port: int,
    verifier: Verifier,
    trigger: Trigger,
    timeout_s: float = SOCKET_TIMEOUT_S,
    deadline_s: float = REQUEST_DEADLINE_S,
) -> ThreadingHTTPServer:
    """The receiver, bound and ready for `serve_forever`; accepted events start the trigger one at a
    time, in order.

    A connection that sends nothing for `timeout_s` seconds, or has not sent its whole request
    `deadline_s` seconds after it was accepted, is closed. At most MAX_CONNECTIONS are served at
    once, PER_ADDRESS of them from one client address; connections beyond are closed unread.
    """

    runs = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        timeout = timeout_s  # socket timeout of each read: a silent connection cannot hold a thread

        def setup(self) -> None:
            super().setup()
            # the whole request within deadline_s: shutting the socket down ends any read still waiting
            self._deadline = threading.Timer(deadline_s, self._cut_off)
            self._deadline.daemon = True
            self._deadline.start()

        def _cut_off(self) -> None:
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def finish(self) -> None:
            self._deadline.cancel()
            super().finish()

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            raw = self.headers.get("Content-Length")
            if raw is None or not raw.strip().isdigit():
                return self._answer(
                    400 if raw is not None else 411,
                    f"Content-Length must be a non-negative integer, got {str(raw)[:40]!r}",
                )
            length = int(raw)
            if length > MAX_BODY:
                return self._answer(413, "body too large")
            body = self.rfile.read(length)
            if len(body) < length:
                return self._answer(400, "body shorter than its Content-Length")
            self._deadline.cancel()  # the request is in: answering (and verifying) is not the client's time
            try:
                payload = verifier.check(self.headers, body)
            except Rejected as e:
                print(f"webhook: refused a delivery from {self.client_address[0]}: {e}", flush=True)
                return self._answer(e.status, str(e))
            model_uri = trigger.wants(payload)
            if model_uri is None:
                return self._answer(200, "ignored: not the watched alias")
            threading.Thread(target=self._fire, args=(model_uri,), daemon=True).start()
            self._answer(202, f"starting the pipeline for {model_uri}")

        def _fire(self, model_uri: str) -> None:
            with runs:
                try:
                    trigger.fire(model_uri)
                except Exception as e:  # noqa: BLE001 - a failed trigger must not stop the receiver
                    print(f"webhook: could not start the pipeline for {model_uri}: {e}", flush=True)

        def _answer(self, status: int, text: str) -> None:
            data = json.dumps({"status": status, "message": text}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:  # the decisions are printed above
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = MAX_CONNECTIONS
        slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        held: collections.Counter = collections.Counter()  # open connections per client address
        held_lock = threading.Lock()

        # at most MAX_CONNECTIONS threads, PER_ADDRESS per address
        def process_request(self, request: Any, client_address: Any) -> None:
            with self.held_lock:
                if self.held[client_address[0]] >= PER_ADDRESS or not self.slots.acquire(blocking=False):
                    self.shutdown_request(request)
                    return
                self.held[client_address[0]] += 1
            try:
                super().process_request(request, client_address)
            except BaseException:
                self._release(client_address)
                raise

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                self._release(client_address)

        def _release(self, client_address: Any) -> None:
            with self.held_lock:
                self.held[client_address[0]] -= 1
                if self.held[client_address[0]] <= 0:
                    del self.held[client_address[0]]
                self.slots.release()

        # a broken connection is the sender's problem: one line, no traceback
        def handle_error(self, request: Any, client_address: Any) -> None:

            print(f"webhook: dropped a connection from {client_address[0]}: {sys.exc_info()[0].__name__}", flush=True)

    return Server((host, port), Handler)


def serve(host: str, port: int, verifier: Verifier, trigger: Trigger) -> None:
    """Answer deliveries until interrupted (see `server`)."""
    httpd = server(host, port, verifier, trigger)
    print(
        f"webhook: listening on http://{host}:{httpd.server_address[1]}/ for {EVENT[0]}.{EVENT[1]} on "
        f"models:/{trigger.name}@{trigger.alias}",
        flush=True,
    )
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()


def secret_from_env() -> str:
    """The shared secret (SQUEEZEFLOW_WEBHOOK_SECRET); a receiver without one refuses to start."""

    secret = os.environ.get(envvars.WEBHOOK_SECRET, "")
    if not secret:
        raise ConfigError(
            f"{envvars.WEBHOOK_SECRET} is not set. Set it to the secret given to MLflow's create_webhook."
        )
    return secret
