"""``lens sample`` end to end on a tiny CPU pipeline folder, and its input errors."""

from __future__ import annotations

import PIL.Image
import pytest
import torch

from lenslib.cli import main
from lenslib.model.cli import output_paths, parse_size
from lenslib.model.pipeline import LensPipeline
from lenslib.model.presets import cpu_config
from lenslib.model.schedule import make_scheduler
from lenslib.model.text_encoders import get_text_encoder
from lenslib.model.transformer import LensTransformer2DModel
from lenslib.model.vae import PixelCodec


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    encoder = get_text_encoder("minilm")
    torch.manual_seed(0)
    config = cpu_config(
        "cpu-tiny", in_channels=48, patch_size=4, enc_hidden_dim=384, num_text_layers=3, text_encoder_layers=6
    )
    pipe = LensPipeline(
        make_scheduler(), PixelCodec(patch_size=4), encoder, None, LensTransformer2DModel(**config)
    )
    path = tmp_path_factory.mktemp("tiny-lens")
    pipe.save_pretrained(path)
    return path


def _sample(model_dir, out, **options) -> int:
    """``lens sample --model MODEL_DIR --OPTION VALUE ... --out OUT``; ``True`` stands for a bare flag."""
    flags = []
    for name, value in options.items():
        flags += [f"--{name.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return main(["sample", "--model", str(model_dir), *flags, "--out", str(out)])


def test_sample_writes_images(model_dir, tmp_path, capsys):
    out = tmp_path / "img.png"
    rc = _sample(model_dir, out, prompt="a red circle", steps=2, size="32x48", seed=0)
    assert rc == 0 and out.is_file()
    with PIL.Image.open(out) as im:
        assert im.size == (48, 32) and im.mode == "RGB"
    rc = _sample(
        model_dir,
        tmp_path / "grid.png",
        prompt="a red circle | a blue square",
        steps=1,
        size="16x16",
        num_images=2,
        seed=1,
    )
    assert rc == 0
    names = sorted(p.name for p in tmp_path.glob("grid_*.png"))
    assert names == ["grid_p000_s00.png", "grid_p000_s01.png", "grid_p001_s00.png", "grid_p001_s01.png"]
    # the same seed reproduces the same image
    _sample(model_dir, tmp_path / "again.png", prompt="a red circle", steps=2, size="32x48", seed=0)
    assert (tmp_path / "again.png").read_bytes() == out.read_bytes()


def test_fast_sampling_gives_the_same_image(model_dir, tmp_path):
    args = [
        "sample",
        "--model",
        str(model_dir),
        "--prompt",
        "a red circle | a small blue square on the left",
        "--steps",
        "2",
        "--size",
        "32x48",
        "--seed",
        "0",
    ]
    assert main(args + ["--out", str(tmp_path / "ref.png")]) == 0
    assert main(args + ["--fast", "--out", str(tmp_path / "fast.png")]) == 0
    for i in range(2):  # two prompts of different lengths: the fast path handles the padded one too
        with (
            PIL.Image.open(tmp_path / f"ref_p00{i}_s00.png") as a,
            PIL.Image.open(tmp_path / f"fast_p00{i}_s00.png") as b,
        ):
            diff = (torch.tensor(list(a.getdata())) - torch.tensor(list(b.getdata()))).abs().max()
        assert diff <= 1  # uint8 truncation may flip a value at a rounding boundary


def test_cuda_graphs_flag_needs_cuda(model_dir, tmp_path, capsys):
    rc = _sample(
        model_dir, tmp_path / "x.png", prompt="p", steps=1, size="16x16", device="cpu", cuda_graphs=True
    )
    assert rc == 2 and "CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--size", "30x32"], "multiples of 4"),  # 4x4-pixel tokens in this tiny model
        (["--size", "big"], "HEIGHTxWIDTH"),
        (["--aspect-ratio", "5:4"], "aspect_ratio"),
        (["--size", "32x32", "--aspect-ratio", "1:1"], "not both"),
        (["--size", "32x32", "--prompt", " | "], "empty"),
        (["--size", "32x32", "--out", "x.txt"], "--out"),
    ],
)
def test_sample_errors(model_dir, tmp_path, capsys, argv, match):
    base = {"--model": str(model_dir), "--prompt": "x", "--out": str(tmp_path / "o.png"), "--steps": "1"}
    for k, v in zip(argv[::2], argv[1::2]):
        base[k] = v
    args = ["sample"] + [x for kv in base.items() for x in kv]
    assert main(args) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_missing_model_folder(tmp_path, capsys):
    assert main(["sample", "--model", str(tmp_path), "--prompt", "x", "--out", str(tmp_path / "o.png")]) == 2
    assert "model_index.json" in capsys.readouterr().err


def test_helpers():
    assert parse_size("48x80") == (48, 80)
    with pytest.raises(ValueError):
        parse_size("0x16")
    assert output_paths("a/b.png", 1, 1)[0][0].as_posix() == "a/b.png"
    assert output_paths("b.png", 2, 1)[1][0].name == "b_p001_s00.png"


def test_reasoner_flag_needs_gpt_oss(model_dir, tmp_path, capsys):
    rc = _sample(model_dir, tmp_path / "o.png", prompt="x", size="16x16", steps=1, enable_reasoner=True)
    assert rc == 2 and "GPT-OSS text encoder" in capsys.readouterr().err
