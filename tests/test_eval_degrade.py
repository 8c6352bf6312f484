"""Image degradations used to probe the judge's limits (chapter 5)."""

import numpy as np
import pytest

from lenslib.eval.degrade import blur, breaking_level, color_jitter, degrade, noise, occlusion
from lenslib.world.render import render
from lenslib.world.spec import BACKGROUNDS, Scene, SceneObject

SCENE = Scene("shapes", (SceneObject("square", "red", (0.2, 0.2, 0.6, 0.6)),), "gray")


@pytest.fixture(scope="module")
def image():
    return render(SCENE, 64, 64)


def test_level_zero_leaves_the_image_alone(image):
    for kind in ("blur", "noise", "color_jitter", "occlusion"):
        assert np.array_equal(np.asarray(degrade(image, kind, 0.0, SCENE)), np.asarray(image))


def test_noise_and_jitter_have_the_requested_size_and_are_seeded(image):
    base = np.asarray(image, float)
    noisy = np.asarray(noise(image, 10.0, seed=1), float)
    # std of the added noise, away from clipping (gray background and a mid red)
    assert abs((noisy - base)[:8, :8].std() - 10.0) < 1.0
    assert np.array_equal(np.asarray(noise(image, 10.0, seed=1)), np.asarray(noise(image, 10.0, seed=1)))
    shift = np.asarray(color_jitter(image, 20.0, seed=3), float)[:4, :4] - base[:4, :4]
    assert (
        np.all(np.abs(shift) <= 20.5) and np.ptp(shift.reshape(-1, 3), axis=0).max() == 0
    )  # one cast per channel


def test_blur_spreads_the_edge(image):
    row = np.asarray(blur(image, 1.5))[32, :, 1].astype(int)
    sharp = np.asarray(image)[32, :, 1].astype(int)
    assert len(np.unique(row)) > len(np.unique(sharp))


def test_occlusion_covers_the_requested_fraction_with_background(image):
    out = np.asarray(occlusion(image, SCENE, 0.25, seed=0))
    box = out[13:38, 13:38]  # the square's pixels at 64 px
    bg = np.all(box == np.array(BACKGROUNDS["gray"]), axis=-1).mean()
    assert 0.2 < bg < 0.3


def test_unknown_kind_and_missing_scene_are_clear_errors(image):
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(image, "rotate", 1.0)
    with pytest.raises(ValueError, match="needs the scene"):
        degrade(image, "occlusion", 0.2)


def test_breaking_level_is_the_first_level_below_100_percent():
    rows = [
        {"kind": "blur", "level": lv, "tag": t, "accuracy": acc}
        for lv, t, acc in [(0.0, "a", 1.0), (1.0, "a", 1.0), (1.0, "b", 0.9), (2.0, "a", 0.5)]
    ]
    assert breaking_level(rows, "blur") == 1.0 and breaking_level(rows, "noise") is None


def test_degrade_folder_copies_the_layout_with_damaged_samples(tmp_path, image):
    src = tmp_path / "src" / "00000" / "samples"
    src.mkdir(parents=True)
    image.save(src / "0000.png")
    (src.parent / "metadata.jsonl").write_text('{"tag": "single_object"}\n')
    from lenslib.eval.degrade import degrade_folder

    out = degrade_folder(tmp_path / "src", tmp_path / "out", "blur", 1.5)
    assert (out / "00000" / "metadata.jsonl").read_text() == '{"tag": "single_object"}\n'
    from PIL import Image

    assert np.array_equal(
        np.asarray(Image.open(out / "00000" / "samples" / "0000.png")), np.asarray(blur(image, 1.5))
    )
    with pytest.raises(FileExistsError):
        degrade_folder(tmp_path / "src", out, "blur", 1.0)
    with pytest.raises(ValueError, match="occlusion needs the scenes"):
        degrade_folder(tmp_path / "src", tmp_path / "o2", "occlusion", 0.2)
