"""make_dataset: HF datasets folder, webdataset shards, determinism, refusal to overwrite, atomicity."""

import io

import datasets
import pytest
import webdataset as wds
from PIL import Image

from lenslib.cli import main
from lenslib.world import dataset as dataset_mod
from lenslib.world.captions import CAPTION_KINDS, caption
from lenslib.world.dataset import make_dataset, read_manifest
from lenslib.world.spec import Scene


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def shapes_ds(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "shapes"
    make_dataset(12, 64, "shapes", out, seed=1, shards=True, shard_size=5)
    return out


def test_hf_folder_loads_with_every_column(shapes_ds):
    ds = datasets.load_from_disk(str(shapes_ds))
    assert len(ds) == 12
    assert ds.column_names == ["image", "spec", *CAPTION_KINDS, "seed"]
    row = ds[3]
    assert row["image"].size == (64, 64)
    scene = Scene.from_json(row["spec"])
    for kind in CAPTION_KINDS:  # the captions are those of the stored spec and seed
        assert row[kind] == caption(scene, kind, row["seed"])
    assert len(set(ds["seed"])) == 12


def test_webdataset_shards_hold_the_same_examples(shapes_ds):
    manifest = read_manifest(shapes_ds)
    assert [s["n"] for s in manifest["shards"]] == [5, 5, 2]
    urls = [str(shapes_ds / s["path"]) for s in manifest["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    ds = datasets.load_from_disk(str(shapes_ds))
    assert len(samples) == 12
    for i, s in enumerate(samples):
        assert Image.open(io.BytesIO(s["png"])).size == (64, 64)
        assert s["spec.json"].decode() == ds[i]["spec"]
        assert s["detailed.txt"].decode() == ds[i]["detailed"]
        assert int(s["seed.txt"]) == ds[i]["seed"]
    for name, info in manifest["files"].items():
        assert (shapes_ds / name).stat().st_size == info["bytes"]


def test_same_arguments_give_identical_bytes(shapes_ds, tmp_path):
    again = tmp_path / "again"
    make_dataset(12, 64, "shapes", again, seed=1, shards=True, shard_size=5)
    assert _tree(again) == _tree(shapes_ds)
    other = tmp_path / "other"
    make_dataset(12, 64, "shapes", other, seed=2)
    assert datasets.load_from_disk(str(other))["spec"] != datasets.load_from_disk(str(shapes_ds))["spec"]


def test_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    out = tmp_path / "occupied"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty.*overwrite"):
        make_dataset(3, 64, "shapes", out)
    assert (out / "precious.txt").read_text() == "keep me"
    assert main(["world", "make", "--n", "3", "--out", str(out)]) == 2
    assert main(["world", "make", "--n", "3", "--out", str(out), "--overwrite"]) == 0
    assert not (out / "precious.txt").exists()
    assert len(datasets.load_from_disk(str(out))) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["occupied"]  # no temporary folders left


def test_a_failure_midway_leaves_nothing_behind(tmp_path, monkeypatch):
    real = dataset_mod.make_example

    def flaky(index, *args):
        if index == 4:
            raise RuntimeError("disk full")
        return real(index, *args)

    monkeypatch.setattr(dataset_mod, "make_example", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        make_dataset(8, 64, "shapes", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_emoji_data_carries_the_openmoji_attribution(tmp_path):
    out = make_dataset(2, None, "emoji", tmp_path / "emoji")
    assert datasets.load_from_disk(str(out))[0]["image"].size == (128, 128)  # emoji's smallest exact size
    text = (out / "ATTRIBUTION.md").read_text()
    assert "OpenMoji" in text and "CC BY-SA 4.0" in text
    assert "ATTRIBUTION.md" in read_manifest(out)["files"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0}, "positive"),
        ({"size": 32}, ">= 64"),
        ({"vocab": "emoji", "size": 64}, ">= 128"),
        ({"vocab": "animals"}, "unknown vocabulary"),
    ],
)
def test_bad_arguments_fail_before_any_work(tmp_path, kwargs, match):
    args = {"n": 2, "size": 64, "vocab": "shapes", "out": tmp_path / "x"} | kwargs
    with pytest.raises(ValueError, match=match):
        make_dataset(**args)
    assert not (tmp_path / "x").exists()
