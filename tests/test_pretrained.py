"""The zoo's pretrained networks behave as their packages' models do (the architectures written
out in squeezeflow.demo.pretrained must load the published weights and read real inputs), and a pt2
model with several outputs keeps every one of them through pull, a PyTorch step and evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import write_params


def test_ctc_greedy_decoding_by_hand():
    from squeezeflow.demo.pretrained import ocr

    def one_hot(classes):
        logits = np.full((len(classes), len(ocr.CHARACTERS) + 1), -5.0)
        logits[np.arange(len(classes)), classes] = 5.0
        return logits

    code = {ch: ocr.CHARACTERS.index(ch) + 1 for ch in "Gate1"}
    # blank G G blank a a t blank t e 1 1: repeats merge, a blank separates a real double letter
    columns = [
        0,
        code["G"],
        code["G"],
        0,
        code["a"],
        code["a"],
        code["t"],
        0,
        code["t"],
        code["e"],
        code["1"],
        code["1"],
    ]
    assert ocr.read(np.stack([one_hot(columns), one_hot([0] * 12)])) == ["Gatte1", ""]


def _weights_or_skip(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (make test installs it): the zoo's weights are needed")


def test_recognizer_reads_rendered_words():
    """english_g2 with the published weights reads words drawn in a DejaVu face: a wrong layer order or pooling would
    read garbage.
    """
    _weights_or_skip("easyocr_en_models")
    import torch

    from squeezeflow.demo.pretrained import ocr

    rng = np.random.default_rng(0)
    words = ["release", "Accuracy", "budget", "compressed", "1992", "lineage"]
    images = np.stack([ocr.text_image(w, "DejaVuSerif", rng) for w in words])
    with torch.no_grad():
        read = ocr.read(ocr.crnn()(torch.from_numpy(images)).numpy())
    assert sum(r == w for r, w in zip(read, words)) >= 5, read


def test_detector_scores_text_above_background():
    """CRAFT's region map is high on drawn words and low on the bare photo they are drawn on."""
    _weights_or_skip("easyocr_en_models")
    import torch
    from PIL import Image, ImageDraw

    from squeezeflow.demo.pretrained import ocr, photos

    plain = photos.crop(photos.photos(("coffee",))[0], np.random.default_rng(0), ocr.SCENE)
    written = Image.fromarray(np.ascontiguousarray(plain))
    ImageDraw.Draw(written).text(
        (20, 30),
        "squeeze the model",
        fill=(0, 0, 0),
        font=ocr._font("DejaVuSerif", 32),
        stroke_width=1,
        stroke_fill=(255, 255, 255),
    )
    x = np.stack(
        [((np.asarray(im, np.float32) / 255 - photos.MEAN) / photos.STD).transpose(2, 0, 1) for im in (written, plain)]
    ).astype(np.float32)
    with torch.no_grad():
        region, features = ocr.craft()(torch.from_numpy(x))
    assert region.shape == (2, 96, 160, 2) and features.shape == (2, 32, 96, 160)
    text_area = region[0, 15:40, 10:150, 0]  # where the line was drawn, at half resolution
    assert float(text_area.max()) > 0.7 and float(region[1, ..., 0].max()) < float(text_area.max()) / 2


def test_onet_tells_faces_from_other_crops():
    _weights_or_skip("facenet_pytorch")
    import torch

    from squeezeflow.demo.pretrained import faces

    # even: around the astronaut's face; odd: anywhere
    crops = faces._crops(("astronaut", "brick"), 20, np.random.default_rng(0))
    with torch.no_grad():
        boxes, landmarks, probability = faces.build("mtcnn-onet")(torch.from_numpy(crops))
    assert boxes.shape == (20, 4) and landmarks.shape == (20, 10)
    face = probability[:, 1].numpy()
    assert (face[0::2] > 0.7).mean() >= 0.9 and (face[1::4] > 0.7).mean() <= 0.2  # 1::4: the brick


def test_unknown_pretrained_model_is_a_config_error():
    from squeezeflow.demo import pretrained
    from squeezeflow.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown pretrained model 'resnet'"):
        pretrained.build("resnet")


@pytest.mark.e2e
def test_pt2_model_with_two_outputs_keeps_both(local_registry, digits_dir, tmp_path):
    """Registered in pt2: pull exports both outputs (output0, output1), clustering re-exports the
    same two, and regression scores each against FP32 with the worst one on top."""
    import onnx
    import torch

    from helpers import run_until_gate
    from squeezeflow import data, registry

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU())
            self.scores, self.boxes = torch.nn.Linear(32, 10), torch.nn.Linear(32, 4)

        def forward(self, x):
            h = self.body(x)
            return self.scores(h), torch.sigmoid(self.boxes(h))

    x = data.load(digits_dir / "eval.npz", "eval")["input"]
    registry.register_torch(TwoHeads().eval(), "digits-cnn", x[:4], alias="champion")
    path = write_params(
        tmp_path,
        digits_dir,
        data__task="regression",
        budgets={"max_mae_increase": 0.05},
        selection={"objective": "size_mb"},
        recipes={"cluster16": [{"cluster": {"clusters": 16}}]},
    )
    run_until_gate(path)
    names = lambda f: [o.name for o in onnx.load(str(f), load_external_data=False).graph.output]  # noqa: E731
    assert (
        names(tmp_path / "artifacts/source/model.onnx")
        == names(tmp_path / "artifacts/candidates/cluster16/model.onnx")
        == ["output0", "output1"]
    )
    metrics = json.loads((tmp_path / "metrics" / "cluster16.json").read_text())
    per_output = [metrics["output.output0.mae_increase"], metrics["output.output1.mae_increase"]]
    assert all(v > 0 for v in per_output) and metrics["mae_increase"] == max(per_output)
