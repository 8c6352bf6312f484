"""``lenslib.atomic``: every writer in the package leaves the old file/folder or the new one, never a part."""

from __future__ import annotations

import json

import pytest

from lenslib.atomic import (
    atomic_file,
    atomic_output_dir,
    is_temporary,
    write_json_atomic,
    write_text_atomic,
)


def test_text_and_json_replace_the_old_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "run" / "record.json"
    path.parent.mkdir()
    path.write_text("old")
    write_json_atomic(path, {"b": 1, "a": [1, 2]}, sort_keys=True)
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    assert path.read_text().index('"a"') < path.read_text().index('"b"')
    write_text_atomic(path, "new\n")
    assert path.read_text() == "new\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["record.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    path = tmp_path / "image.png"
    path.write_text("old image")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_file(path, keep_suffix=True) as tmp:
            assert tmp.suffix == ".png" and tmp.parent == tmp_path and is_temporary(tmp.name)
            tmp.write_text("half an ima")
            raise RuntimeError("disk full")
    assert path.read_text() == "old image"
    assert [p.name for p in tmp_path.iterdir()] == ["image.png"]
    with pytest.raises(TypeError):
        write_json_atomic(path, {"not json": object()})
    assert path.read_text() == "old image"
    assert [p.name for p in tmp_path.iterdir()] == ["image.png"]


@pytest.mark.parametrize(
    "name, temporary",
    [
        ("step_0000010.tmp", True),
        ("config.yaml.tmp", True),
        ("metrics.jsonl.tmp4242", True),
        ("sample.png.tmp77.png", True),
        ("sample.png", False),
        ("notes.tmp.md", False),
        ("latest", False),
    ],
)
def test_temporaries_are_recognised_by_name(name, temporary):
    assert is_temporary(name) is temporary


def test_output_dir_is_replaced_whole_or_not_at_all(tmp_path):
    out = tmp_path / "suite"
    with atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    with pytest.raises(FileExistsError, match="overwrite"):
        with atomic_output_dir(out):
            pass
    with pytest.raises(KeyError):
        with atomic_output_dir(out, overwrite=True) as tmp:
            (tmp / "b.txt").write_text("2")
            raise KeyError("interrupted")
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["suite"]
