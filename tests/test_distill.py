"""Knowledge distillation: the loss, the students, the soft-labels stage and the lineage of teachers."""

import math

import numpy as np
import pytest

from conftest import error_line, sh, write_params
from squeezeflow import registry
from squeezeflow.config import load_params
from squeezeflow.errors import ConfigError, ModelError
from squeezeflow.stages.compress import compress
from squeezeflow.stages.pull import pull
from squeezeflow.stages.soft_labels import soft_labels
from squeezeflow.steps.distill import shrink
from squeezeflow.torch import architectures
from squeezeflow.torch.train import distillation_loss, soft_targets


def test_loss_matches_a_hand_computed_value():
    import torch

    student = torch.tensor([[1.0, 0.0]])
    teacher = np.array([[0.0, 1.0]])
    temperature, alpha = 2.0, 0.7
    targets = torch.from_numpy(soft_targets([teacher], [1.0], temperature))
    # by hand: the teacher's softened output is (1 - p, p) with p = sigmoid(0.5); the student's is
    # (p, 1 - p). KL = (2p - 1) * ln(p / (1 - p)) = (2p - 1) * 0.5. Cross-entropy for label 0 is
    # -ln(sigmoid(1)) = ln(1 + e^-1).
    p = 1 / (1 + math.exp(-0.5))
    assert targets.numpy()[0] == pytest.approx([1 - p, p], abs=1e-6)
    kl = (2 * p - 1) * 0.5
    expected = alpha * temperature**2 * kl + (1 - alpha) * math.log(1 + math.exp(-1))
    got = distillation_loss(student, targets, torch.tensor([0]), temperature, alpha)
    assert float(got) == pytest.approx(expected, rel=1e-5)  # 0.43687
    # without labels: the soft term alone
    assert float(distillation_loss(student, targets, None, temperature, alpha)) == pytest.approx(
        temperature**2 * kl, rel=1e-5
    )


def test_several_teachers_average_their_softened_outputs_by_weight():
    a, b = np.array([[2.0, 0.0]]), np.array([[0.0, 2.0]])
    pa = 1 / (1 + math.exp(-1.0))  # softmax([1, 0])[0] at temperature 2
    got = soft_targets([a, b], [3.0, 1.0], 2.0)
    assert got[0, 0] == pytest.approx(0.75 * pa + 0.25 * (1 - pa), abs=1e-6)
    assert got.sum() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("width,depth,channels,hidden", [(0.5, 1.0, [16, 32, 32], [64]), (0.25, 0.67, [8, 16], [32])])
def test_shrunken_cnn_keeps_the_family(width, depth, channels, hidden):
    teacher = architectures.small_cnn(28)
    x = {"input": np.zeros((2, 1, 28, 28), np.float32)}
    student, info = shrink(teacher, width, depth, x, 10)
    assert info["family"] == "cnn" and info["channels"] == channels and info["hidden"] == hidden
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(student) < n(teacher) * width  # parameters shrink at least linearly with width
    import torch

    assert student(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_shrunken_mlp_and_unknown_architecture():
    mlp = architectures.mlp(64, (256, 128))
    student, info = shrink(mlp, 0.5, 0.5, {"input": np.zeros((2, 1, 8, 8), np.float32)}, 10)
    assert info == {"family": "mlp", "hidden": [128], "width": 0.5, "depth": 0.5}
    transformer = architectures.text_transformer(100, 8, 2, dim=16, ff=32)
    x = {"input_ids": np.zeros((2, 8), np.int64), "attention_mask": np.ones((2, 8), np.int64)}
    with pytest.raises(ModelError, match="give student: models:/NAME/VERSION"):
        shrink(transformer, 0.5, 1.0, x, 2)


def _teachers(digits_dir, digits_cnn):
    """Register the source CNN and a second teacher of another architecture (an MLP)."""
    from squeezeflow.torch import train

    example = np.load(digits_dir / "eval.npz")["input"][:4]
    registry.register_torch(digits_cnn, "digits-cnn", example, alias="champion")
    arrays = np.load(digits_dir / "train.npz")
    mlp = train.fit(
        architectures.mlp(64, (128,)), arrays["input"], arrays["labels"], epochs=3, seed=1, desc="mlp teacher"
    )
    registry.register_torch(mlp, "digits-mlp", example, alias="champion")
    return example


def test_multi_teacher_candidate_records_every_teacher_through_promotion(
    local_registry, digits_cnn, digits_dir, tmp_path
):
    from squeezeflow.registry.lineage import walk
    from squeezeflow.stages.evaluate import evaluate
    from squeezeflow.stages.gate import gate
    from squeezeflow.stages.promote import promote

    _teachers(digits_dir, digits_cnn)
    teachers = [{"uri": "source"}, {"uri": "models:/digits-mlp@champion", "weight": 0.5}]
    recipes = {
        "kd": [
            {"distill": {"student": {"width": 0.5}, "teachers": teachers, "epochs": 3}},
            {"quantize": {"mode": "static"}},
        ]
    }
    params = load_params(write_params(tmp_path, digits_dir, recipes=recipes, budgets={"max_accuracy_drop": 0.5}))
    pull(params)
    index = soft_labels(params)["kd"]
    assert sorted(index) == ["models:/digits-mlp@champion", "source"]
    assert index["source"]["shape"] == [len(np.load(digits_dir / "train.npz")["labels"]), 10]
    manifest = compress(params, "kd")
    stats = manifest["steps"][0]["stats"]
    assert [(t["name"], t["version"], t["weight"]) for t in stats["teachers"]] == [
        ("digits-cnn", "1", 1.0),
        ("digits-mlp", "1", 0.5),
    ]
    assert stats["param_ratio"] < 0.3 and stats["hard_labels"] is True
    for name in ("baseline", "kd"):
        evaluate(params, name)
    gate(params)
    result = promote(params)
    mv = registry.client().get_model_version("digits-cnn-edge", result["version"])
    assert mv.tags["squeezeflow.teachers"] == "digits-cnn/1,digits-mlp/1"
    (newest, _source) = walk("models:/digits-cnn-edge@candidate")
    assert newest["teachers"] == ["digits-cnn/1", "digits-mlp/1"]
    cli = sh("squeezeflow", "lineage", "models:/digits-cnn-edge@candidate", cwd=tmp_path)
    assert "teachers digits-cnn/1, digits-mlp/1" in cli.stdout
    mermaid = sh(
        "squeezeflow", "lineage", "models:/digits-cnn-edge@candidate", "--format", "mermaid", cwd=tmp_path
    ).stdout
    assert "t_digits_mlp_1 -.-> n0" in mermaid


def test_student_checks_happen_before_training(local_registry, digits_cnn, digits_dir, tmp_path):
    example = _teachers(digits_dir, digits_cnn)
    registry.register_torch(architectures.mlp(64, (32,), classes=5), "five-way", example, alias="champion")
    recipes = {"wrong-shape": [{"distill": {"student": "models:/five-way@champion"}}]}
    folder = tmp_path / "shape"
    folder.mkdir()
    write_params(folder, digits_dir, recipes=recipes)
    for stage in ("pull", "soft-labels"):
        sh("squeezeflow", stage, cwd=folder)
    proc = sh("squeezeflow", "compress", "wrong-shape", cwd=folder, check=False)
    assert proc.returncode == 0  # a failed recipe is a row for the gate, not the end of the pipeline
    assert (
        "compress wrong-shape: FAILED at step distill: " in proc.stderr
        and "has outputs of shape [5] but the teachers have [10]" in proc.stderr
    )
    assert "epoch" not in proc.stderr  # no training progress bar: it failed before training
    assert sorted(p.name for p in (folder / "artifacts/candidates/wrong-shape").iterdir()) == ["failed.json"]

    write_params(folder, digits_dir, recipes={"missing": [{"distill": {"student": "models:/no-such-student/1"}}]})
    proc = sh("squeezeflow", "pull", cwd=folder, check=False)
    assert proc.returncode == 2 and "no-such-student" in error_line(proc)


def test_unlabelled_training_data_trains_on_soft_labels_alone(local_registry, digits_cnn, digits_dir, tmp_path):
    _teachers(digits_dir, digits_cnn)
    arrays = np.load(digits_dir / "train.npz")
    np.savez(tmp_path / "unlabelled.npz", input=arrays["input"])
    path = write_params(
        tmp_path, digits_dir, recipes={"kd": [{"distill": {"epochs": 2}}]}, data__train=str(tmp_path / "unlabelled.npz")
    )
    params = load_params(path)
    pull(params)
    soft_labels(params)
    stats = compress(params, "kd")["steps"][0]["stats"]
    assert stats["hard_labels"] is False and stats["alpha"] == 1.0
    assert stats["agreement_with_soft_targets"] > 0.8

    # the soft labels belong to the training data they were computed on
    np.savez(tmp_path / "unlabelled.npz", input=arrays["input"][:-1])
    with pytest.raises(ConfigError, match="soft labels of source were computed on another"):
        compress(params, "kd")


def test_distill_without_soft_labels_says_which_stage_to_run(local_registry, digits_cnn, digits_dir, tmp_path):
    _teachers(digits_dir, digits_cnn)
    params = load_params(write_params(tmp_path, digits_dir, recipes={"kd": [{"distill": {"epochs": 1}}]}))
    pull(params)
    with pytest.raises(ConfigError, match=r"no soft labels for teacher source .* Run the soft-labels stage"):
        compress(params, "kd")


def test_teacher_with_other_outputs_is_refused(local_registry, digits_cnn, digits_dir, tmp_path):
    example = _teachers(digits_dir, digits_cnn)
    registry.register_torch(architectures.mlp(64, (32,), classes=5), "five-way", example, alias="champion")
    teachers = [{"uri": "source"}, {"uri": "models:/five-way@champion"}]
    params = load_params(write_params(tmp_path, digits_dir, recipes={"kd": [{"distill": {"teachers": teachers}}]}))
    pull(params)
    soft_labels(params)
    record = compress(params, "kd")  # this recipe cannot work: a failed candidate, the others are still judged
    assert (
        record["failed"]
        and record["step"] == "distill"
        and "teachers disagree on the number of outputs" in record["reason"]
    )
