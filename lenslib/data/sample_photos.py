"""Real photographs that ship inside scikit-image and scikit-learn (offline), as PIL images.

The book's funnel demo needs real photographs, and these are the ones every machine with the
environment has: no download. Used in chapter 1.
"""
from __future__ import annotations

# scikit-image sample images that are photographs or scans (not synthetic test patterns)
SKIMAGE_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "coins", "moon", "brick", "grass",
                  "gravel", "hubble_deep_field", "retina", "immunohistochemistry", "horse", "page", "text",
                  "clock", "colorwheel", "logo")


def sample_photographs(include: tuple = SKIMAGE_PHOTOS) -> dict:
    """{name: PIL image}: the scikit-image images in ``include`` plus scikit-learn's china and flower."""
    import numpy as np
    import skimage.data as D
    from PIL import Image
    from sklearn.datasets import load_sample_images

    out = {}
    for name in include:
        a = getattr(D, name)()
        if a.dtype == bool:
            a = a.astype(np.uint8) * 255
        out[name] = Image.fromarray(a)
    sk = load_sample_images()
    for fname, a in zip(sk.filenames, sk.images):
        out[fname.rsplit("/", 1)[-1].split(".")[0]] = Image.fromarray(a)
    return out
