"""Untrusted models, data and requests: no code runs, no file outside the artifact is read, nothing
exhausts the machine or slips past the gate, and every refusal is one line with exit code 2 or 3.

Each test builds its malicious input itself, on a temp sqlite registry (or a receiver on 127.0.0.1).
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import socket
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import BIN, error_line, free_port, register_onnx, restore, sh, write_params
from squeezeflow import registry

SQUEEZEFLOW = BIN / "squeezeflow"


class _Payload:
    """Unpickling this creates `marker`: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _stored(name: str, version: str = "1") -> Path:
    """The artifact folder of a registered version in the local (file) artifact store."""
    c = registry.client()
    mv = c.get_model_version(name, version)
    location = c.get_logged_model(mv.source.removeprefix("models:/")).artifact_location
    return Path(location.removeprefix("file://"))


def _run(*args, env=None, timeout=300, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SQUEEZEFLOW), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def _refused(proc: subprocess.CompletedProcess, code: int, *words: str) -> str:
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = error_line(proc)
    assert all(w in line for w in words), line
    return line


# 1. pickle consent -------------------------------------------------------------------------------


def _pt2_model(digits_cnn, digits_dir, name: str) -> Path:
    example = np.load(digits_dir / "eval.npz")["input"][:4]
    registry.register_torch(digits_cnn, name, example, alias="champion")
    return _stored(name) / "data"


def _rewrite_zip(path: Path, member: str, payload: bytes) -> None:
    with zipfile.ZipFile(path) as src:
        records = {i.filename: src.read(i) for i in src.infolist()}
    names = [n for n in records if n.endswith(member)]
    assert names, sorted(records)
    records[names[0]] = payload
    with zipfile.ZipFile(path, "w") as dst:
        for name, blob in records.items():
            dst.writestr(name, blob)


@pytest.mark.parametrize("where", ["model.pth beside model.pt2", "pickle in the pt2 sample inputs"])
def test_pull_never_unpickles_without_consent(local_registry, digits_cnn, digits_dir, tmp_path, where):
    data_dir = _pt2_model(digits_cnn, digits_dir, "digits-cnn")
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(_Payload(marker))
    if where.startswith("model.pth"):
        (data_dir / "model.pth").write_bytes(payload)
        (data_dir / "pickle_module_info.txt").write_text("pickle")
    else:
        _rewrite_zip(data_dir / "model.pt2", "sample_inputs/model.pt", payload)
    write_params(tmp_path, digits_dir)
    env = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "", "MLFLOW_ALLOW_MODEL_CODE_EXECUTION": ""}
    _refused(_run("pull", env=env), 2, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true")
    assert not marker.exists()
    assert not (tmp_path / "artifacts" / "source").exists()
    # with consent the payload is live: the test is real
    _run("pull", env={"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"})
    assert marker.exists()


def test_pt2_source_still_pulls_without_consent(local_registry, digits_cnn, digits_dir, tmp_path):
    _pt2_model(digits_cnn, digits_dir, "digits-cnn")
    write_params(tmp_path, digits_dir)
    proc = _run("pull", env={"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]


def _graph_json(pt2: Path) -> tuple[str, dict]:
    with zipfile.ZipFile(pt2) as archive:
        name = next(n for n in archive.namelist() if n.endswith("models/model.json"))
        return name, json.loads(archive.read(name))


def _with_code_in_graph(pt2: Path, where: str, marker: Path) -> None:
    """Put `marker`-writing Python where torch's deserializer evaluates strings of the JSON graph."""
    code = f"__import__('pathlib').Path({str(marker)!r}).write_text('ran')"
    member, graph = _graph_json(pt2)
    if where == "expr_str":  # sympy.sympify(expr_str) at load: the payload
        text = json.dumps(graph)
        symbol = next(s for s in set(__import__("re").findall(r'"expr_str": "(Symbol[^"]*)"', text)))
        text = text.replace(f'"expr_str": "{symbol}"', json.dumps({"expr_str": f"({code}, {symbol})[1]"})[1:-1])
        payload = text.encode()
    else:  # guards_code: exec'd into the guard function by .module(), run at the first call
        graph["guards_code"] = [f"{code} > 0"]
        payload = json.dumps(graph).encode()
    _rewrite_zip(pt2, member.split("/", 1)[1], payload)


@pytest.mark.parametrize("where", ["expr_str", "guards_code"])
def test_code_in_a_pt2_graph_never_runs(local_registry, digits_cnn, digits_dir, tmp_path, where):
    import torch

    data_dir = _pt2_model(digits_cnn, digits_dir, "digits-cnn")
    marker = tmp_path / "code-ran"
    _with_code_in_graph(data_dir / "model.pt2", where, marker)
    # the payload is live when torch loads the file itself
    torch.export.load(data_dir / "model.pt2").module()(torch.zeros(2, 1, 8, 8))
    assert marker.read_text() == "ran"
    marker.unlink()
    write_params(tmp_path, digits_dir)
    env = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "", "MLFLOW_ALLOW_MODEL_CODE_EXECUTION": ""}
    _refused(_run("pull", env=env), 2, "would run as Python code", "MLFLOW_ALLOW_MODEL_CODE_EXECUTION=true")
    assert not (tmp_path / "artifacts" / "source").exists()
    init_dir = tmp_path / "init"
    init_dir.mkdir()
    _refused(
        _run("init", "--from-model", "models:/digits-cnn@champion", env=env, cwd=init_dir),
        2,
        "would run as Python code",
    )
    assert not marker.exists() and not (init_dir / "params.yaml").exists()


def test_every_pt2_load_goes_through_the_graph_check():
    """pull, init, soft-labels, search, distill's teachers and the executorch target all load through
    convert.load_torch.
    """
    from conftest import ROOT

    def loads_a_model(line: str) -> bool:
        code = line.split("#")[0]
        return (
            "mlflow.pytorch.load_model(" in code
            or "torch.export.load(" in code
            or ("torch.load(" in code and "weights_only=True" not in code)
        )

    callers = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "plugin").rglob("*.py")
        for line in p.read_text().splitlines()
        if loads_a_model(line) and not line.lstrip().startswith((">>>", "`"))
    }
    assert callers == {"plugin/squeezeflow/torch/convert.py"}, callers


def test_a_damaged_pt2_graph_member_is_one_config_error(tmp_path):
    """A deflated models/model.json whose bytes are damaged: zlib's error is bad input, not a squeezeflow bug."""
    from squeezeflow.errors import ConfigError
    from squeezeflow.torch import pt2check

    archive = tmp_path / "m.pt2"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(
            "m/models/model.json",
            json.dumps({"graph_module": {"graph": {"nodes": [{"target": "torch.ops.aten.add.Tensor"}] * 200}}}),
        )
    data = bytearray(archive.read_bytes())
    start = data.find(b"m/models/model.json") + 40
    data[start : start + 20] = b"\xff" * 20
    archive.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="cannot be read as JSON"):
        pt2check.check_archive(archive, "")


@pytest.mark.parametrize(
    "field,value,refused",
    [
        ("expr_str", "Mul(Integer(2), Symbol('s0', positive=True, integer=True))", False),
        (
            "expr_str",
            "Add(FloorDiv(Add(Symbol('s53', positive=True, integer=True), Integer(-1)), Integer(2)), Integer(1))",
            False,
        ),
        ("expr_str", "s0 + 2*s1", False),
        ("expr_str", "Symbol('s0', positive=True, integer=True).__class__", True),
        ("expr_str", "Symbol(__import__('os').getcwd())", True),
        ("expr_str", "exec('1')", True),
        # a big-integer computation, not code, but unbounded time
        ("expr_str", "Pow(Integer(10), Integer(1000000000))", True),
        ("expr_str", "lambda: 1", True),
        ("expr_str", "Ｓymbol('s0')", True),  # non-ASCII names are NFKC-normalized by Python's parser
        ("guards_code", "((6*L['x'].size()[0]) % (2*(L['x'].size()[0] // 2))) == 0", False),
        ("guards_code", "L['y'].size()[0] == L['x'].size()[0]", False),
        ("guards_code", "L['x'].size()[0] == 2 or open('f')", True),
        ("guards_code", "L['x'].__class__", True),
        ("guards_code", "L['x\\'].size()[0] == 1", True),
        ("target", "torch.ops.aten.conv2d.default", False),
        ("target", "_operator.floordiv", False),
        ("target", "torch.save", True),
        ("target", "torch.ops.higher_order.run_const_graph", True),
        ("target", "#custom.op", True),
        ("as_string", "bij,bjk->bik", False),
        ("as_string", "x' or __import__('os') or '", True),
        ("class_fqn", "__torch__.torch.classes.evil", True),
    ],
)
def test_pt2_graph_grammar(field, value, refused):
    from squeezeflow.torch import pt2check

    graph = {"graph_module": {"graph": {"nodes": [{field: value} if field != "guards_code" else {}]}}}
    if field == "guards_code":
        graph["guards_code"] = [value]
    try:
        pt2check._walk(graph)
    except pt2check._Refused:
        assert refused
    else:
        assert not refused


# 2, 3. ONNX external data ------------------------------------------------------------------------


def _point_weights_at(model_file: Path, location: str, length: int | None = None) -> None:
    """Make the largest initializer of `model_file` read its bytes from `location`."""
    import onnx

    model = onnx.load(str(model_file))
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    size = len(tensor.raw_data)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", "0"), ("length", str(size if length is None else length))):
        tensor.external_data.add(key=key, value=value)
    onnx.save(model, str(model_file))


EXTERNAL = [
    ("absolute path", lambda secret, folder: str(secret), "not a file name inside the model folder"),
    (
        "parent folder",
        lambda secret, folder: os.path.relpath(secret, folder),
        "not a file name inside the model folder",
    ),
    ("symlink", lambda secret, folder: (folder / "weights.bin").symlink_to(secret) or "weights.bin", "symlink"),
    ("device", lambda secret, folder: "/dev/zero", "not a file name inside the model folder"),
    (
        "symlink to a device",
        lambda secret, folder: (folder / "zero.bin").symlink_to("/dev/zero") or "zero.bin",
        "symlink",
    ),
]


@pytest.mark.parametrize("case,location,message", EXTERNAL, ids=[c[0] for c in EXTERNAL])
def test_external_data_outside_the_model_is_refused(
    local_registry, digits_onnx, digits_dir, tmp_path, case, location, message
):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOP-SECRET-" * 4000)
    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    model_file = _stored("digits-cnn") / "model.onnx"
    _point_weights_at(model_file, location(secret, model_file.parent))
    write_params(tmp_path, digits_dir)
    _refused(_run("pull"), 2, message)
    assert not (tmp_path / "artifacts" / "source").exists()
    assert not any(b"TOP-SECRET" in f.read_bytes() for f in tmp_path.joinpath("artifacts").rglob("*") if f.is_file())


def test_declared_length_past_the_end_of_the_file_is_refused(local_registry, digits_onnx, digits_dir, tmp_path):
    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    model_file = _stored("digits-cnn") / "model.onnx"
    (model_file.parent / "weights.bin").write_bytes(b"\0" * 100)
    _point_weights_at(model_file, "weights.bin", length=1 << 40)
    write_params(tmp_path, digits_dir)
    _refused(_run("pull", timeout=120), 2, "weights.bin", "but the file has 100")


# 4. outputs that cannot be scored ----------------------------------------------------------------


def _onnx_with_output(path: Path, tail: str) -> Path:
    """A linear digits classifier whose logits are reshaped by `tail` before they leave the graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32), "w")
    nodes = [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    inits = [w]
    if tail == "N,C,1":
        inits.append(numpy_helper.from_array(np.array([2], np.int64), "axes"))
        nodes.append(helper.make_node("Unsqueeze", ["logits", "axes"], ["output"]))
    elif tail == "N":
        nodes.append(helper.make_node("ReduceMax", ["logits"], ["output"], axes=[1], keepdims=0))
    elif tail == "1,C":
        nodes.append(helper.make_node("ReduceMean", ["logits"], ["output"], axes=[0], keepdims=1))
    shape = {"N,C,1": ["batch", 10, 1], "N": ["batch"], "1,C": [1, 10]}[tail]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("shape", ["N,C,1", "N", "1,C"])
def test_outputs_that_cannot_be_scored_are_refused(local_registry, digits_dir, tmp_path, shape):
    register_onnx(_onnx_with_output(tmp_path / "odd.onnx", shape), "digits-cnn", alias="champion")
    write_params(tmp_path, digits_dir)
    sh(SQUEEZEFLOW, "pull")
    _refused(_run("check-data"), 2, "task classification needs [")
    _refused(_run("evaluate", "baseline"), 2, "task classification needs [")
    assert not (tmp_path / "metrics" / "baseline.json").exists()


# 5. recipe names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,message",
    [
        ("..", "is not allowed"),
        ("", "is not allowed"),
        ("a/b", "is not allowed"),
        (".hidden", "is not allowed"),
        ("baseline", "is reserved"),
    ],
)
@pytest.mark.integration  # starts a process
def test_recipe_names_that_are_paths_or_reserved(tmp_path, digits_dir, name, message):
    raw = yaml.safe_load(write_params(tmp_path, digits_dir).read_text())
    raw["recipes"] = {name: [{"quantize": {"mode": "dynamic"}}], "int8-static": [{"quantize": {"mode": "static"}}]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    keep = tmp_path / "artifacts" / "candidates" / "int8-static" / "keep.txt"
    keep.parent.mkdir(parents=True)
    keep.write_text("still here")
    _refused(_run("compress", name, cwd=tmp_path), 2, "recipe name", message)
    assert keep.read_text() == "still here"


# 6. webhook receiver -----------------------------------------------------------------------------


@pytest.fixture
def receiver(tmp_path):
    """A webhook receiver on 127.0.0.1 in this process (1 s socket timeout); yields (port, start)."""
    import threading

    from squeezeflow.cli import webhook

    servers = []

    def start(state: Path | None = tmp_path / "deliveries", deadline_s: float = webhook.REQUEST_DEADLINE_S):
        httpd = webhook.server(
            "127.0.0.1",
            0,
            webhook.Verifier("s3cret", 300, state),
            webhook.Trigger("m", "champion", ("true",)),
            timeout_s=1.0,
            deadline_s=deadline_s,
        )
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return httpd.server_address[1]

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def _raw(port: int, request: bytes, wait: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(request)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def _signed(delivery: str, body: bytes = b"{}") -> bytes:
    from squeezeflow.cli.webhook import sign

    stamp = str(int(time.time()))
    headers = {
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": sign("s3cret", delivery, stamp, body),
        "Content-Length": str(len(body)),
    }
    return (
        b"POST / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
        + b"\r\n"
        + body
    )


def _trickle(port: int, source: str, stop, closed: list) -> None:
    """A client that sends a request one byte every 0.4 s (under the 1 s read timeout) until `stop` is set or the server
    closes.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0)) as s:
            for byte in b"POST / HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 1000:
                if stop.is_set():
                    return
                s.sendall(bytes([byte]))
                time.sleep(0.4)
    except OSError:
        closed.append(source)


def test_webhook_slow_clients_cannot_hold_the_receiver(receiver):
    import threading

    port = receiver(deadline_s=3.0)
    stop, closed = threading.Event(), []
    clients = [
        threading.Thread(target=_trickle, args=(port, "127.0.0.2", stop, closed), daemon=True) for _ in range(33)
    ]
    try:
        for c in clients:
            c.start()
        time.sleep(1.0)  # every slow client is connected and trickling
        answer = _raw(port, _signed("d-slow"), wait=5.0)  # from another address: a slot is left for it
        assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200"), answer[:200]
        for c in clients:
            c.join(timeout=15)
        # each was cut off (over the per-address limit at once, or at the 3 s request deadline), none still held
        assert len(closed) == 33
    finally:
        stop.set()


def test_webhook_signed_json_that_is_not_an_object_is_400(receiver):
    port = receiver()
    answer = _raw(port, _signed("d-list", b"[1, 2]"))
    assert b" 400 " in answer.split(b"\r\n")[0] and b"not an object" in answer


@pytest.mark.parametrize("length", [b"-1", b"abc", b"1e3", b""])
def test_webhook_malformed_content_length_is_400(receiver, length):
    port = receiver()
    reply = _raw(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n" + b"x" * 1000)
    assert reply.startswith(b"HTTP/1.0 400") or reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert _raw(port, _signed("ok-1")).split(b" ")[1] == b"200"  # still serving


def test_webhook_non_ascii_signature_is_401(receiver):
    port = receiver()
    request = _signed("x-1").replace(b"X-MLflow-Signature: v1,", "X-MLflow-Signature: v1,\u00e9".encode())
    assert _raw(port, request).split(b" ")[1] == b"401"


def test_webhook_half_sent_request_is_dropped(receiver):
    port = receiver()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        start = time.monotonic()
        # the server gives up on the body: it answers 400 or closes; without a socket timeout this blocks for 30 s
        reply = s.recv(65536)
        waited = time.monotonic() - start
    assert waited < 20 and (reply == b"" or b" 400 " in reply[:20]), (waited, reply[:100])


def test_webhook_replay_is_refused_after_a_restart(receiver):
    request = _signed("delivery-42")
    assert _raw(receiver(), request).split(b" ")[1] == b"200"
    assert _raw(receiver(), request).split(b" ")[1] == b"409"  # a fresh receiver on the same state file


# 7. npz bounds -----------------------------------------------------------------------------------


def _npz_declaring(path: Path, shape: tuple, payload: bytes = b"\0" * 64, member: str = "input.npy") -> Path:
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    text = repr(header).encode()
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + payload
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, npy)
    return path


@pytest.fixture
def pulled_source(local_registry, pulled_snapshot, tmp_path):
    """The digits model registered and pulled in tmp_path (the cwd), restored from one session snapshot."""
    return restore(pulled_snapshot, tmp_path)


def _with_eval(tmp_path, digits_dir, path) -> None:
    write_params(tmp_path, digits_dir, data__eval=str(path))


NPZ = [
    (
        "declares 20 GB",
        lambda p: _npz_declaring(p, (5_000_000_000, 1, 8, 8)),
        {},
        "declares shape [5000000000, 1, 8, 8]",
    ),
    (
        "declares 20 GB, no .npy suffix",
        lambda p: _npz_declaring(p, (5_000_000_000, 1, 8, 8), member="input"),
        {},
        "declares shape [5000000000, 1, 8, 8]",
    ),
    (
        "zip bomb",
        lambda p: np.savez_compressed(p, input=np.zeros((200_000, 1, 8, 8), np.float32)) or p,
        {"SQUEEZEFLOW_MAX_DATA_BYTES": "10000000"},
        "inflates to 51200",
    ),
    (
        "object array",
        lambda p: np.savez(p, input=np.array([{"a": 1}] * 3, dtype=object)) or p,
        {},
        "holds Python objects",
    ),
    (
        "zero samples",
        lambda p: np.savez(p, input=np.zeros((0, 1, 8, 8), np.float32), labels=np.zeros(0, np.int64)) or p,
        {},
        "holds 0 samples",
    ),
    (
        "labels shorter",
        lambda p: np.savez(p, input=np.zeros((10, 1, 8, 8), np.float32), labels=np.zeros(5, np.int64)) or p,
        {},
        "different numbers of samples",
    ),
    ("not a zip", lambda p: p.write_bytes(b"\x93NUMPY junk") and p, {}, "not an .npz"),
]


@pytest.mark.parametrize("case,make,env,message", NPZ, ids=[c[0] for c in NPZ])
def test_npz_files_are_checked_before_loading(pulled_source, digits_dir, case, make, env, message):
    bad = make(pulled_source / "bad.npz")
    _with_eval(pulled_source, digits_dir, bad)
    _refused(_run("check-data", env=env, timeout=120), 2, str(bad), message)


# 8. YAML aliases ---------------------------------------------------------------------------------


@pytest.mark.integration  # starts a process
def test_yaml_alias_bomb_is_refused_before_it_expands(tmp_path, digits_dir):
    text = write_params(tmp_path, digits_dir).read_text()
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi")
    )
    (tmp_path / "params.yaml").write_text(text + "bomb:\n  - " + bomb.replace("\n", "\n    ").rstrip() + "\n")
    proc = _run("pull", timeout=60, cwd=tmp_path)  # 10^9 strings when expanded: minutes and gigabytes
    line = _refused(proc, 2, "aliases (*name) expand to more than 100000 values")
    assert len(line) < 400


def test_yaml_aliases_that_stay_small_are_fine(tmp_path, digits_dir):
    from squeezeflow.config import load_params

    text = write_params(tmp_path, digits_dir).read_text()
    (tmp_path / "params.yaml").write_text(
        text.replace("recipes:", "recipes:\n  one: [{quantize: &q {mode: static}}]\n  two: [{quantize: *q}]", 1)
    )
    assert load_params(tmp_path / "params.yaml").recipes["two"][0].mode == "static"


# 9. bounded warm-up, sane seeds ------------------------------------------------------------------


def test_huge_warmup_is_bounded_by_max_seconds(pulled_source, digits_dir):
    write_params(pulled_source, digits_dir, target__warmup=10**9, target__max_seconds=2)
    proc = _run("evaluate", "baseline", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((pulled_source / "metrics" / "baseline.json").read_text())["latency_rounds"] >= 3


@pytest.mark.integration  # starts a process
def test_huge_seed_is_a_config_error(tmp_path, digits_dir):
    write_params(tmp_path, digits_dir, seed=1e26)
    _refused(_run("pull", cwd=tmp_path), 2, "seed")


# 10. bad input never exits 1 ---------------------------------------------------------------------


@pytest.fixture
def fake_server():
    """An HTTP server on 127.0.0.1 that answers every request with one fixed (status, body)."""
    import http.server
    import threading

    servers = []

    def start(status: int, body: bytes) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *_):
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()


@pytest.mark.parametrize(
    "status,body,code,message",
    [
        (401, b"Unauthorized", 2, "refused access"),
        (403, b'{"error_code": "PERMISSION_DENIED", "message": "no"}', 2, "refused access"),
        (404, b"<html>not here</html>", 3, "does not answer as an MLflow tracking server"),
        (200, b"<html>a web page</html>", 3, "does not answer as an MLflow tracking server"),
    ],
)
@pytest.mark.integration  # starts a process
def test_servers_that_are_not_a_usable_registry(fake_server, tmp_path, digits_dir, status, body, code, message):
    write_params(tmp_path, digits_dir)
    env = {"MLFLOW_TRACKING_URI": fake_server(status, body), "SQUEEZEFLOW_REGISTRY_DEADLINE": "5"}
    _refused(_run("pull", env=env, cwd=tmp_path), code, message)


@pytest.mark.integration  # starts a process
def test_a_fast_answer_under_a_short_deadline_is_never_a_timeout(fake_server, tmp_path, digits_dir):
    """The deadline starts at the first request: importing MLflow (about 1 s here) is not the registry's time."""
    write_params(tmp_path, digits_dir)
    env = {"MLFLOW_TRACKING_URI": fake_server(401, b"Unauthorized"), "SQUEEZEFLOW_REGISTRY_DEADLINE": "0.3"}
    _refused(_run("pull", env=env, cwd=tmp_path), 2, "refused access")


@pytest.mark.integration  # starts a process
def test_lineage_of_garbage_or_malformed_files(tmp_path, digits_onnx):
    from squeezeflow.onnx import modelfile

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(4096))
    _refused(_run("lineage", str(garbage)), 2, "not a valid ONNX model")
    forged = tmp_path / "forged.onnx"
    forged.write_bytes(digits_onnx.read_bytes())
    modelfile.set_metadata(forged, {"squeezeflow.root": "{not json", "squeezeflow.steps": "[]"})
    _refused(_run("lineage", str(forged)), 2, "malformed squeezeflow lineage")
    modelfile.set_metadata(
        forged,
        {"squeezeflow.root": json.dumps({"name": "x", "version": "1"}), "squeezeflow.steps": json.dumps([{"kind": 3}])},
    )
    _refused(_run("lineage", str(forged)), 2, "malformed squeezeflow lineage")


@pytest.mark.parametrize("how", ["walk", "--descendants"])
def test_forged_lineage_that_loops_is_malformed(local_registry, digits_onnx, how):
    register_onnx(digits_onnx, "a")
    register_onnx(digits_onnx, "b")
    c = registry.client()
    for name, parent in (("a", "b"), ("b", "a")):  # a/1 says it came from b/1, b/1 from a/1
        c.set_model_version_tag(name, "1", "squeezeflow.source.name", parent)
        c.set_model_version_tag(name, "1", "squeezeflow.source.version", "1")
    args = ["lineage", "models:/a/1"] + ([how] if how.startswith("--") else [])
    _refused(_run(*args), 2, "malformed lineage (cycle at models:/")


def test_a_symlink_in_the_artifact_store_is_refused(local_registry, digits_onnx, digits_dir, tmp_path):
    secret = tmp_path / "secret.onnx"
    secret.write_bytes(digits_onnx.read_bytes())
    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    stored = _stored("digits-cnn") / "model.onnx"
    stored.unlink()
    stored.symlink_to(secret)
    write_params(tmp_path, digits_dir)
    _refused(_run("pull"), 2, "outside its folder")


# 11. the registry deadline -----------------------------------------------------------------------


def _closed_port() -> int:
    return free_port()  # bound once, then released: nothing listens


@pytest.mark.parametrize("kind", ["closed postgres port", "server that never answers"])
@pytest.mark.integration  # starts a process
def test_registry_deadline_bounds_the_whole_call(tmp_path, digits_dir, kind):
    pytest.importorskip("psycopg")
    listener = None
    if kind.startswith("closed"):
        uri = f"postgresql://postgres@127.0.0.1:{_closed_port()}/nothing"
    else:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # accepts connections (kernel backlog) and never answers
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
    write_params(tmp_path, digits_dir)
    start = time.monotonic()
    try:
        proc = _run(
            "pull", env={"MLFLOW_TRACKING_URI": uri, "SQUEEZEFLOW_REGISTRY_DEADLINE": "3"}, cwd=tmp_path, timeout=120
        )
    finally:
        if listener:
            listener.close()
    elapsed = time.monotonic() - start
    _refused(proc, 3, "answer", "SQUEEZEFLOW_REGISTRY_DEADLINE=3")
    assert elapsed < 3 + 15, elapsed  # the deadline plus interpreter start-up and imports; it took 52-117 s before


# 12. credentials with an unencoded @ -------------------------------------------------------------


@pytest.mark.integration  # starts a process
def test_password_with_at_sign_is_hidden_whole(tmp_path, digits_dir):
    assert registry.redact("postgresql://admin:S3c@ret@db.example:5432/m") == "postgresql://***@db.example:5432/m"
    write_params(tmp_path, digits_dir)
    proc = _run(
        "pull",
        env={
            "MLFLOW_TRACKING_URI": f"http://admin:S3c@ret@127.0.0.1:{_closed_port()}",
            "SQUEEZEFLOW_REGISTRY_DEADLINE": "1",
        },
        cwd=tmp_path,
    )
    assert proc.returncode == 3
    assert "S3c" not in proc.stderr + proc.stdout and "ret@" not in proc.stderr + proc.stdout, proc.stderr


# 13. a killed promote --------------------------------------------------------------------------


def _promote_runs(c) -> list:
    exp = c.get_experiment_by_name("squeezeflow")
    return c.search_runs([exp.experiment_id], filter_string="tags.`squeezeflow.owner` != ''") if exp else []


@pytest.mark.parametrize("when", ["after the run started", "after the model upload", "after the version row"])
def test_killed_promote_is_marked_killed_by_the_next_one(local_registry, digits_onnx, digits_dir, tmp_path, when):
    from helpers import run_until_gate
    from squeezeflow.config import load_params
    from squeezeflow.stages.gate import gate

    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    # the test is about a killed promotion, not speed: a budget the noisy machine cannot make inconclusive
    path = write_params(
        tmp_path,
        digits_dir,
        recipes={"int8-static": [{"quantize": {"mode": "static"}}]},
        budgets={"max_accuracy_drop": 0.05, "min_speedup": 0.3},
    )
    run_until_gate(path)
    gate(load_params(path), params_file=path)
    c = registry.client()
    proc = subprocess.Popen(
        [str(SQUEEZEFLOW), "promote"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    import sqlite3

    # watch the registry's database read-only, a query per millisecond, and kill at once
    query = {
        "after the run started": "SELECT count(*) FROM runs WHERE name LIKE 'promote-%'",
        "after the model upload":  # 2: LoggedModelStatus.READY, the upload is done
        "SELECT count(*) FROM logged_models m JOIN runs r ON m.source_run_id = r.run_uuid WHERE r.name LIKE "
        "'promote-%' AND m.status = 2",
        "after the version row": "SELECT count(*) FROM model_versions WHERE name = 'digits-cnn-edge'",
    }[when]
    deadline = time.monotonic() + 120
    with sqlite3.connect(f"file:{tmp_path / 'mlflow.db'}?mode=ro", uri=True, timeout=5) as db:
        while not db.execute(query).fetchone()[0]:
            assert time.monotonic() < deadline and proc.poll() is None, "promote finished before it could be killed"
            time.sleep(0.001)
    proc.kill()
    proc.wait()
    runs = _promote_runs(c)
    assert len(runs) == 1
    killed = runs[0].info.run_id
    assert c.get_run(killed).info.status == "RUNNING"  # not FINISHED: the promotion had not finished
    sh(SQUEEZEFLOW, "promote")
    assert c.get_run(killed).info.status == "KILLED"
    assert "killed" in c.get_run(killed).data.tags["squeezeflow.outcome"]
    assert registry.alias_version("digits-cnn-edge", "candidate") is not None
    # the later promote found the version: it moved the alias, closed the dead run and made none of its own
    if when == "after the version row":
        assert (
            "after registering version 1" in c.get_run(killed).data.tags["squeezeflow.outcome"]
            and len(_promote_runs(c)) == 1
        )
    else:
        assert {r.info.status for r in _promote_runs(c) if r.info.run_id != killed} == {"FINISHED"}


# 2. metrics files the gate did not see written ---------------------------------------------------


@pytest.fixture
def gated(local_registry, digits_onnx, digits_dir, tmp_path, monkeypatch):
    """A pipeline folder evaluated up to the gate, two recipes; returns its params path."""
    from helpers import run_until_gate

    register_onnx(digits_onnx, "digits-cnn", alias="champion")
    path = write_params(
        tmp_path,
        digits_dir,
        recipes={
            "int8-static": [{"quantize": {"mode": "static"}}],
            "int8-dynamic": [{"quantize": {"mode": "dynamic"}}],
        },
    )
    monkeypatch.chdir(tmp_path)
    run_until_gate(path)
    return path


@pytest.mark.parametrize(
    "tamper,message",
    [
        ("edited", "numbers changed after evaluate wrote them"),
        ("another candidate's file", "measured another candidate model"),
        ("eval data changed", "measured another eval data"),
        ("no record", "no record of what it measured"),
    ],
)
def test_gate_refuses_metrics_it_cannot_tie_to_the_candidate(gated, tamper, message):
    metrics = Path("metrics/int8-dynamic.json")
    row = json.loads(metrics.read_text())
    if tamper == "edited":
        row["speedup"] = 5.0
        metrics.write_text(json.dumps(row))
    elif tamper == "another candidate's file":
        metrics.write_text(Path("metrics/int8-static.json").read_text())
    elif tamper == "no record":
        metrics.write_text(json.dumps({k: v for k, v in row.items() if k != "measured"}))
    else:
        params = yaml.safe_load(gated.read_text())
        eval_file = Path(params["data"]["eval"])
        with np.load(eval_file) as z:
            arrays = {k: z[k][:-1] for k in z.files}
        np.savez(Path("eval-smaller.npz"), **arrays)
        params["data"]["eval"] = "eval-smaller.npz"
        gated.write_text(yaml.safe_dump(params))
    proc = _run("gate")
    line = _refused(proc, 2, message)
    assert "metrics/" in line and not Path("reports/gate.json").exists()


@pytest.mark.integration  # starts a process
def test_promote_refuses_a_candidate_changed_after_the_gate(gated):
    import shutil

    sh(SQUEEZEFLOW, "gate")
    selected = json.loads(Path("reports/gate.json").read_text())["selected"]
    other = next(n for n in ("int8-static", "int8-dynamic") if n != selected)
    shutil.rmtree(f"artifacts/candidates/{selected}")
    shutil.copytree(f"artifacts/candidates/{other}", f"artifacts/candidates/{selected}")
    _refused(_run("promote"), 2, "not the artifact the gate judged")
    assert registry.client().search_model_versions("name = 'digits-cnn-edge'") == []


# 13. a broken pipeline is not a failed recipe ------------------------------------------------------


@pytest.mark.parametrize(
    "damage,message",
    [
        ("source folder missing", "manifest.json: not found"),
        ("manifest corrupt", "corrupt manifest (JSONDecodeError)"),
        ("model.onnx truncated", "sha256 mismatch"),
    ],
)
def test_compress_on_a_broken_source_is_a_pipeline_error(pulled_source, damage, message):
    import shutil

    source = Path("artifacts/source")
    if damage == "source folder missing":
        shutil.rmtree(source)
    elif damage == "manifest corrupt":
        (source / "manifest.json").write_text('{"schema_version": 1, "files": ')
    else:
        model = source / "model.onnx"
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    line = _refused(_run("compress", "int8-static"), 2, message, "dvc repro pull")
    assert "Traceback" not in line and not Path("artifacts/candidates/int8-static").exists()
