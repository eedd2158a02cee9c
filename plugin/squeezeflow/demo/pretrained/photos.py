"""The real photos bundled with scikit-image, matplotlib and scikit-learn, and seeded crops of them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from squeezeflow.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet normalization
EVAL_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "china", "grace_hopper", "camera", "coins")
OTHER_PHOTOS = (
    "flower",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "moon",
    "clock",
    "brick",
    "gravel",
    "grass",
    "cell",
)


def photos(names: tuple[str, ...]) -> list[np.ndarray]:
    """RGB uint8 arrays of the named photos (scikit-image's data, matplotlib's grace_hopper, scikit-learn's china and
    flower).
    """
    import numpy as np

    out = []
    for name in names:
        if name in ("china", "flower"):
            from sklearn.datasets import load_sample_image

            image = load_sample_image(f"{name}.jpg")
        elif name == "grace_hopper":
            import matplotlib.cbook
            from PIL import Image

            with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
                image = np.asarray(Image.open(f).convert("RGB"))
        else:
            try:
                import skimage.data
            except ImportError:
                raise ConfigError("the zoo's photos need scikit-image: pip install -e '.[zoo]'.") from None
            image = getattr(skimage.data, name)()
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        out.append(image[..., :3].astype(np.uint8))
    return out


def crop(
    image: np.ndarray, rng: np.random.Generator, size: tuple[int, int], scale: tuple[float, float] = (0.3, 1.0)
) -> np.ndarray:
    """A random crop of `image` (its side `scale` of the shorter side, random position and flip),
    resized to size = (height, width): uint8 HWC."""
    import numpy as np
    from PIL import Image

    h, w = image.shape[:2]
    side = int(min(h, w) * rng.uniform(*scale))
    ch, cw = side, min(w, int(side * size[1] / size[0]))
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    out = np.asarray(
        Image.fromarray(image[top : top + ch, left : left + cw]).resize((size[1], size[0]), Image.BILINEAR)
    )
    return out[:, ::-1] if rng.random() < 0.5 else out


def crops(images: list[np.ndarray], count: int, seed: int, side: int) -> np.ndarray:
    """`count` seeded random crops, side x side, normalized as ImageNet models expect: float32 (count, 3, side,
    side).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    out = np.empty((count, 3, side, side), np.float32)
    for i in range(count):
        x = crop(images[i % len(images)], rng, (side, side)).astype(np.float32) / 255.0
        out[i] = ((x - MEAN) / STD).transpose(2, 0, 1)
    return out
