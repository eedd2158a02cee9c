"""The shared training loop is seeded end to end: equal seeds give equal weights."""

import numpy as np

from squeezeflow.torch import architectures, train


def _weights(digits_dir, seed):
    arrays = np.load(digits_dir / "train.npz")
    model = train.fit(
        architectures.small_cnn(8, seed=seed), arrays["input"][:300], arrays["labels"][:300], epochs=1, seed=seed
    )
    return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])


def test_same_seed_same_model_other_seed_other_model(digits_dir):
    first, again, other = _weights(digits_dir, 0), _weights(digits_dir, 0), _weights(digits_dir, 1)
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)


def test_zoo_leaves_the_global_rng_alone():
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    architectures.small_cnn(8, seed=7)
    assert torch.equal(torch.rand(3), expected)
