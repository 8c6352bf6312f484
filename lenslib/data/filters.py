"""The nine cleaning filters of Lens-800M (paper §3.2), one small class each.

Every filter maps a batch of decoded RGB images to one score per image and keeps an image when its score
passes a rule (``keep(score)``). The paper's thresholds are the defaults where it gives them (area ≥ 384²,
aesthetic ≥ 3, near-duplicate cosine > 0.985); for blur, entropy and exposure it names only the measure,
so the defaults here are chosen and justified in each docstring, and all are constructor arguments.

The learned scorers (NSFW, aesthetics, watermark) are *pluggable*: pass any :class:`ImageScorer`, e.g.
:class:`HFImageClassifierScorer` loaded from a local folder. A filter without a scorer reports
``available() == (False, reason)`` and the funnel skips it with a warning; it never invents a score.
Near-duplicate removal needs all embeddings at once and lives in :mod:`lenslib.data.dedup`.
Used in chapter 1 and by :mod:`lenslib.data.funnel`.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image, ImageOps

# Larger images are analysed at about this many pixels (aspect kept) so blur and entropy scores do not depend
# on the original resolution; 512² is the stage-1 training resolution.
ANALYSIS_AREA = 512 * 512


# ---------------------------------------------------------------------------------------------- decoding
@dataclass
class Decoded:
    """A decoded image (always 8-bit RGB) plus what was found in the file."""

    image: object  # PIL.Image.Image in RGB
    width: int
    height: int
    mode: str  # original PIL mode, e.g. "CMYK", "I;16", "RGBA"
    format: str | None


class DecodeError(ValueError):
    """The bytes are not a readable image; the message says why."""


def decode_image(data: bytes) -> Decoded:
    """Decode bytes to 8-bit RGB, handling what web-scale data contains.

    CMYK and palette images are converted; 16-bit greyscale is rescaled to 8 bits (not clipped);
    transparency is composited over white (as a browser shows it); EXIF orientation is applied.
    Empty, truncated or unidentifiable files and decompression bombs raise :class:`DecodeError`.
    """
    if not data:
        raise DecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            fmt, mode = im.format, im.mode
            im.load()  # forces the full decode: truncated files fail here
            im = ImageOps.exif_transpose(im)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise DecodeError(f"image too large to decode safely: {e}") from e
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError...)
        raise DecodeError(f"unreadable image: {type(e).__name__}: {e}") from e
    if im.width < 1 or im.height < 1:
        raise DecodeError(f"image has zero size {im.width}x{im.height}")
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = (0.0, 65535.0) if im.mode.startswith("I;16") or a.max() > 255 else (0.0, 255.0)
        im = Image.fromarray(np.clip((a - lo) / (hi - lo) * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "RGBa"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba)
    im = im.convert("RGB")
    return Decoded(im, im.width, im.height, mode, fmt)


def analysis_view(image, area: int = ANALYSIS_AREA):
    """The image downscaled (bilinear, aspect kept) to about ``area`` pixels, for resolution-free scores.

    Never upscaled: interpolation would itself blur a small image and fake a low focus score."""
    W, H = image.size
    s = math.sqrt(area / (W * H))
    if s >= 0.99:  # at or below the analysis size: use as is
        return image
    return image.resize((max(1, round(W * s)), max(1, round(H * s))), Image.Resampling.BILINEAR)


# --------------------------------------------------------------------------------------- learned scorers
@runtime_checkable
class ImageScorer(Protocol):
    """Anything that scores a batch of RGB PIL images: ``scorer(images) -> np.ndarray[float] (N,)``."""

    name: str

    def __call__(self, images: Sequence) -> np.ndarray: ...


class HFImageClassifierScorer:
    """A ``transformers`` image classifier/regressor loaded from a local folder as an :class:`ImageScorer`.

    With one output (a regression head, like aesthetic predictors) the score is that output; with several
    labels it is the softmax probability of ``label`` (e.g. ``"nsfw"`` or ``"watermark"``). The folder must
    hold a model and image-processor config (``save_pretrained`` output); nothing is downloaded.
    """

    def __init__(self, path: str, label: str | None = None, device: str = "cpu", batch_size: int = 32):
        # lazy: torch and transformers cost 3 s (python -X importtime); only the HF classifiers need them
        import torch  # noqa: PLC0415
        from transformers import AutoImageProcessor, AutoModelForImageClassification  # noqa: PLC0415

        self.path, self.device, self.batch_size = str(path), device, batch_size
        self.processor = AutoImageProcessor.from_pretrained(self.path)
        self.model = AutoModelForImageClassification.from_pretrained(self.path).to(device).eval()
        n = self.model.config.num_labels
        self.label_index = None
        if n > 1:
            labels = {v.lower(): int(k) for k, v in self.model.config.id2label.items()}
            if label is None or label.lower() not in labels:
                raise ValueError(f"{self.path} has labels {sorted(labels)}; pass label= one of them")
            self.label_index = labels[label.lower()]
        self.name = f"{self.model.config.model_type}:{self.path}" + (f"#{label}" if label else "")
        self._torch = torch

    def __call__(self, images):
        out = []
        with self._torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                px = self.processor(images=list(images[i : i + self.batch_size]), return_tensors="pt")
                logits = self.model(**{k: v.to(self.device) for k, v in px.items()}).logits.float()
                s = logits[:, 0] if self.label_index is None else logits.softmax(-1)[:, self.label_index]
                out.append(s.cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


class FunctionScorer:
    """Wraps a plain function ``images -> scores`` with a name (for scorers from other libraries)."""

    def __init__(self, fn: Callable[[Sequence], Sequence[float]], name: str):
        self.fn, self.name = fn, name

    def __call__(self, images):
        return np.asarray(self.fn(images), dtype=np.float64)


# --------------------------------------------------------------------------------------------- filters
class Filter:
    """Base class: ``scores(images)`` then ``keep(score)``. ``rule`` is a human-readable keep rule."""

    name = "filter"

    def available(self) -> tuple[bool, str]:
        return True, ""

    def scores(self, images: Sequence) -> np.ndarray:
        return np.array([self.score_one(im) for im in images], dtype=np.float64)

    def score_one(self, image) -> float:
        raise NotImplementedError

    def keep(self, score: float) -> bool:
        raise NotImplementedError

    @property
    def rule(self) -> str:
        return ""

    def config(self) -> dict:
        return {k: v for k, v in vars(self).items() if isinstance(v, (int, float, str, bool, type(None)))}


class _AtLeast(Filter):
    """Keeps an image whose score is at least a minimum. A subclass names the attribute that holds the
    minimum (``minimum``, so :meth:`Filter.config` records it under its own name) and the rule's wording
    (``measure``, ``unit``)."""

    minimum = "threshold"
    measure = "score"
    unit = ""

    def keep(self, score):
        return score >= getattr(self, self.minimum)

    @property
    def rule(self):
        return f"{self.measure} >= {getattr(self, self.minimum)}{self.unit}"


def image_area(image) -> float:
    """Width × height of the original image, in pixels."""
    return float(image.width * image.height)


class MinAreaFilter(_AtLeast):
    """Step 2: drop images with fewer than 384² pixels (paper). Score = width × height of the original."""

    name, minimum, measure = "size", "min_area", "area"
    score_one = staticmethod(image_area)

    def __init__(self, min_area: int = 384 * 384):
        self.min_area = int(min_area)


class _LearnedFilter(Filter):
    """A filter driven by a pluggable :class:`ImageScorer`; unavailable (skipped) without one.

    ``below``: keep scores under ``threshold`` (the probability of something unwanted), else at or above it.
    """

    what = "score"
    below = True

    def keep(self, score):
        return score < self.threshold if self.below else score >= self.threshold

    @property
    def rule(self):
        return f"{self.name} {'<' if self.below else '>='} {self.threshold}"

    def __init__(self, scorer: ImageScorer | None = None, threshold: float = 0.5):
        self.scorer, self.threshold = scorer, float(threshold)

    def available(self):
        if self.scorer is None:
            return False, (
                f"no {self.what} model configured (pass a scorer, e.g. "
                f"HFImageClassifierScorer('<local folder>')); step skipped"
            )
        return True, ""

    def scores(self, images):
        ok, why = self.available()
        if not ok:
            raise RuntimeError(why)
        s = np.asarray(self.scorer(list(images)), dtype=np.float64)
        if s.shape != (len(images),):
            raise ValueError(f"{self.scorer.name} returned shape {s.shape} for {len(images)} images")
        return s

    def config(self):
        return {"threshold": self.threshold, "scorer": getattr(self.scorer, "name", None)}


class NSFWFilter(_LearnedFilter):
    """Step 3: drop images whose NSFW probability is ≥ ``threshold`` (paper: an EVA-based classifier,
    threshold not given; 0.5 is the decision boundary of a calibrated binary classifier)."""

    name, what = "nsfw", "NSFW classifier"


class AestheticFilter(_LearnedFilter):
    """Step 4: keep aesthetic score ≥ 3 (paper: Aesthetic Predictor v2.5, on its 1–10 scale)."""

    name, what, below = "aesthetic", "aesthetic predictor", False

    def __init__(self, scorer: ImageScorer | None = None, threshold: float = 3.0):
        super().__init__(scorer, threshold)


class WatermarkFilter(_LearnedFilter):
    """Step 5: drop images whose watermark probability is ≥ ``threshold`` (paper: a fine-tuned SigLIP2
    classifier, threshold not given; 0.5 as for NSFW)."""

    name, what = "watermark", "watermark classifier"


def laplacian_variance(image) -> float:
    """Variance of the 4-neighbour Laplacian of the grey image (0–255) at the analysis resolution.

    The classic focus measure (Pech-Pacheco et al. 2000; OpenCV's ``Laplacian(..., CV_64F).var()``).
    """
    # lazy: scipy.ndimage costs 0.4 s (python -X importtime); only this filter needs it
    from scipy import ndimage  # noqa: PLC0415

    g = np.asarray(analysis_view(image).convert("L"), dtype=np.float64)
    return float(ndimage.laplace(g, mode="reflect").var())


class BlurFilter(_AtLeast):
    """Step 6: drop blurry images: variance of the Laplacian < ``min_variance``.

    The paper names the measure but no threshold. Default 10, measured at the analysis resolution (larger
    images downscaled to ~512²): the photographs shipped with scikit-image/scikit-learn score 52–5,300
    (the smooth retina scan 52, the moon 65, the cat 400), and the same photos after a Gaussian blur of
    σ = 4 px score 1–6, so 10 separates them with margin on both sides. The often-quoted threshold of 100
    would drop sharp photographs of smooth subjects (the moon, the retina scan). Smooth synthetic images
    (gradients, colour wheels, flat-shaded renders) also score low; that is a known false positive of this
    measure, so set ``min_variance`` per source (0 disables the step in effect).
    """

    name, minimum, measure = "blur", "min_variance", "laplacian_var"
    score_one = staticmethod(laplacian_variance)

    def __init__(self, min_variance: float = 10.0):
        self.min_variance = float(min_variance)


def grey_entropy(image) -> float:
    """Shannon entropy (bits) of the 256-bin grey-level histogram, at the analysis resolution."""
    g = np.asarray(analysis_view(image).convert("L"))
    p = np.bincount(g.ravel(), minlength=256).astype(np.float64)
    p = p[p > 0] / g.size
    return float(-(p * np.log2(p)).sum()) + 0.0


class EntropyFilter(_AtLeast):
    """Step 7: drop low-information images: grey-histogram entropy < ``min_bits``.

    No threshold in the paper. Default 1.0 bit: a single-colour image has 0 bits and a two-level image
    split 50/50 has exactly 1, while photographs score 4–8 bits (scikit-image/scikit-learn samples:
    4.3–7.8). A higher threshold would drop clean black-on-white text renders and silhouettes
    (about 0.5–2 bits), and Lens explicitly wants text-heavy images; raise it for photo-only sources.
    """

    name, minimum, measure, unit = "entropy", "min_bits", "entropy", " bits"
    score_one = staticmethod(grey_entropy)

    def __init__(self, min_bits: float = 1.0):
        self.min_bits = float(min_bits)


def mean_hsv_value(image) -> float:
    """Mean of HSV V (= max(R, G, B)) in [0, 1], at the analysis resolution."""
    a = np.asarray(analysis_view(image).convert("RGB"))
    v = np.maximum(np.maximum(a[..., 0], a[..., 1]), a[..., 2])  # faster than a.max(-1) on a strided axis
    return float(v.mean() / 255.0)


class ExposureFilter(Filter):
    """Step 8: drop under- and over-exposed images: mean HSV V outside [``min_value``, ``max_value``].

    No thresholds in the paper. Defaults 0.05 and 0.97: below 0.05 an image is essentially black (a
    legitimately dark photo such as the Hubble deep field in scikit-image scores 0.09 and passes); above
    0.97 it is nearly all white, while white-background product shots and documents sit around 0.85–0.95
    and must pass.
    """

    name = "exposure"

    def __init__(self, min_value: float = 0.05, max_value: float = 0.97):
        if not 0 <= min_value < max_value <= 1:
            raise ValueError(f"need 0 <= min_value < max_value <= 1, got {min_value}, {max_value}")
        self.min_value, self.max_value = float(min_value), float(max_value)

    def score_one(self, image):
        return mean_hsv_value(image)

    def keep(self, score):
        return self.min_value <= score <= self.max_value

    @property
    def rule(self):
        return f"{self.min_value} <= mean V <= {self.max_value}"


def default_filters(
    nsfw: ImageScorer | None = None,
    aesthetic: ImageScorer | None = None,
    watermark: ImageScorer | None = None,
    thresholds: dict | None = None,
) -> list[Filter]:
    """Steps 2–8 with the paper's order and defaults (step 1, decoding, and step 9, near-duplicates, are
    handled by the funnel). ``thresholds`` may set min_area, nsfw, aesthetic, watermark, blur, entropy,
    exposure_min, exposure_max."""
    t = dict(thresholds or {})
    unknown = set(t) - {
        "min_area",
        "nsfw",
        "aesthetic",
        "watermark",
        "blur",
        "entropy",
        "exposure_min",
        "exposure_max",
    }
    if unknown:
        raise ValueError(
            f"unknown thresholds {sorted(unknown)}; known: min_area, nsfw, aesthetic, watermark, "
            "blur, entropy, exposure_min, exposure_max"
        )
    return [
        MinAreaFilter(t.get("min_area", 384 * 384)),
        NSFWFilter(nsfw, t.get("nsfw", 0.5)),
        AestheticFilter(aesthetic, t.get("aesthetic", 3.0)),
        WatermarkFilter(watermark, t.get("watermark", 0.5)),
        BlurFilter(t.get("blur", 10.0)),
        EntropyFilter(t.get("entropy", 1.0)),
        ExposureFilter(t.get("exposure_min", 0.05), t.get("exposure_max", 0.97)),
    ]
