"""Reading and writing image–caption shards: webdataset tar, parquet, HF ``datasets`` folders.

A *shard* is the unit of work, resumption and parallelism of the recaptioning pipeline. Inputs can be

- webdataset tar shards (``<key>.jpg|png|…`` plus optional ``<key>.json``, ``<key>.txt``,
  ``<key>.<kind>.txt`` and ``<key>.spec.json``, the layout of the world datasets);
- parquet files, or a folder written by ``datasets.Dataset.save_to_disk`` (each Arrow file is a shard),
  with an ``image`` column (HF ``Image`` struct or raw bytes) and optional caption/metadata columns;
- a folder of image files (grouped into shards of ``images_per_shard``; handy for small demos).

Image bytes are passed through untouched (never re-encoded). Text fields that are not valid UTF-8 are
decoded with replacement characters and reported per sample (``meta["issues"]``), never fatal.
Outputs are webdataset tars or HF-compatible parquet, each written to a temporary file and renamed
into place, so a crash never leaves a half-written shard. Used by :mod:`lenslib.data.pipeline`.
"""

from __future__ import annotations

import glob
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import braceexpand

from lenslib.atomic import atomic_file

from .funnel import Sample

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif")
CAPTION_COLUMNS = ("alt_text", "brief", "detailed", "mixed", "caption", "text", "txt")


@dataclass(frozen=True)
class ShardRef:
    """One input shard. ``name`` is unique within a run and names the output shard."""

    name: str
    path: str
    format: str  # "tar", "parquet", "arrow", "folder"
    files: tuple = ()  # for "folder": the image files of this shard


def list_shards(source: str, images_per_shard: int = 256) -> list[ShardRef]:
    """Every shard of an input: a tar/parquet/arrow file, a glob or brace pattern, or a folder."""
    p = Path(source)
    if p.is_dir():
        tars = sorted(p.rglob("*.tar"))
        if tars:
            return [ShardRef(_name(t, p), str(t), "tar") for t in tars]
        pq = sorted(p.rglob("*.parquet"))
        if pq:
            return [ShardRef(_name(t, p), str(t), "parquet") for t in pq]
        arrow = sorted(p.rglob("*.arrow"))
        if arrow:
            return [ShardRef(_name(t, p), str(t), "arrow") for t in arrow]
        imgs = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower().lstrip(".") in IMAGE_EXTS)
        if not imgs:
            raise FileNotFoundError(f"{source} holds no .tar, .parquet, .arrow or image files")
        return [
            ShardRef(
                f"images-{i // images_per_shard:06d}",
                str(p),
                "folder",
                tuple(str(f) for f in imgs[i : i + images_per_shard]),
            )
            for i in range(0, len(imgs), images_per_shard)
        ]
    paths = sorted({q for pat in braceexpand.braceexpand(source) for q in glob.glob(pat)})
    if not paths:
        raise FileNotFoundError(
            f"no input shards match {source!r}: give a folder of images or shards, a shard file "
            "(.tar, .parquet, .arrow), a glob or a {a..b} pattern"
        )
    fmt = {".tar": "tar", ".parquet": "parquet", ".arrow": "arrow"}
    out = []
    for q in paths:
        f = fmt.get(Path(q).suffix)
        if f is None:
            raise ValueError(f"{q}: unsupported shard type (use .tar, .parquet or .arrow)")
        out.append(ShardRef(Path(q).stem, q, f))
    if len({r.name for r in out}) != len(out):
        raise ValueError(f"input shards in {source!r} have clashing file names; give them unique names")
    return out


def _name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    return "__".join(rel.parts)


def _text(value, issues: list, field: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        issues.append(f"{field}: not valid UTF-8, decoded with replacement characters")
        return value.decode("utf-8", errors="replace")


def _sample_from_fields(key: str, fields: dict, source: str) -> Sample:
    """Builds a Sample from webdataset-style fields {ext: bytes}."""
    issues: list = []
    data = None
    captions, meta = {}, {"source_shard": source}
    for ext in sorted(fields):
        value = fields[ext]
        low = ext.lower()
        if low in IMAGE_EXTS and data is None:
            data, meta["ext"] = bytes(value), low
        elif low == "json":
            try:
                meta.update(json.loads(_text(value, issues, ext)))
            except ValueError:
                issues.append("json: not valid JSON, ignored")
        elif low.endswith(".json"):  # e.g. spec.json
            meta[low[:-5]] = _text(value, issues, ext)
        elif low == "txt" or low.endswith(".txt"):
            kind = "alt_text" if low == "txt" else low[:-4]
            if kind == "seed":
                try:
                    meta["seed"] = int(_text(value, issues, ext))
                except ValueError:
                    issues.append("seed.txt: not an integer, ignored")
                continue
            captions[kind] = {"text": _text(value, issues, ext), "kind": kind, "source": "input"}
    if data is None:
        issues.append("no image field in this sample")
        data = b""
    if issues:
        meta["issues"] = issues
    s = Sample(key, data, meta)
    s.scores = {}
    s.meta["captions_in"] = captions
    return s


def read_shard(ref: ShardRef) -> Iterator[Sample]:
    """Samples of one shard, in stored order."""
    if ref.format == "tar":
        # lazy: webdataset costs 2.5 s (python -X importtime); only tar shards need it
        import webdataset as wds  # noqa: PLC0415

        ds = wds.WebDataset(ref.path, shardshuffle=False, empty_check=False)
        for rec in ds:
            key = rec["__key__"]
            fields = {k: v for k, v in rec.items() if not k.startswith("__")}
            yield _sample_from_fields(key, fields, ref.name)
    elif ref.format == "folder":
        for f in ref.files:
            fp = Path(f)
            fields = {fp.suffix.lower().lstrip("."): fp.read_bytes()}
            side = fp.with_suffix(".txt")
            if side.is_file():
                fields["txt"] = side.read_bytes()
            # webdataset splits keys at the first dot, so dots in file names become underscores
            yield _sample_from_fields(fp.stem.replace(".", "_"), fields, ref.name)
    elif ref.format in ("parquet", "arrow"):
        yield from _read_table(ref)
    else:
        raise ValueError(f"unknown shard format {ref.format}")


def _read_table(ref: ShardRef) -> Iterator[Sample]:
    # lazy: pyarrow costs 0.26 s (python -X importtime); only parquet shards need it
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    if ref.format == "parquet":
        table = pq.read_table(ref.path)
    else:
        with pa.memory_map(ref.path) as src:
            try:
                table = pa.ipc.open_stream(src).read_all()
            except pa.ArrowInvalid:
                table = pa.ipc.open_file(src).read_all()
    cols = table.column_names
    img_col = next((c for c in ("image", "jpg", "png", "img") if c in cols), None)
    if img_col is None:
        raise ValueError(f"{ref.path}: no image column (expected one of image/jpg/png/img; has {cols})")
    for i, row in enumerate(table.to_pylist()):
        img = row.pop(img_col)
        if isinstance(img, dict):
            img = img.get("bytes") or (Path(img["path"]).read_bytes() if img.get("path") else b"")
        fields = {"png" if img is None else _sniff(img): img or b""}
        key = str(row.pop("key", None) or row.pop("__key__", None) or f"{ref.name}-{i:08d}")
        for c, v in row.items():
            if v is None:
                continue
            if c in CAPTION_COLUMNS:
                fields[("txt" if c in ("caption", "text", "txt") else f"{c}.txt")] = v
            elif c == "spec":
                fields["spec.json"] = v
            elif c == "seed":
                fields["seed.txt"] = str(v)
            elif c == "json":
                fields["json"] = v
        s = _sample_from_fields(key, fields, ref.name)
        extra = {
            c: v
            for c, v in row.items()
            if c not in CAPTION_COLUMNS
            and c not in ("spec", "seed", "json")
            and isinstance(v, (str, int, float, bool))
        }
        s.meta.update(extra)
        yield s


def _sniff(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "png"


# ------------------------------------------------------------------------------------------- writing
def output_record(s: Sample) -> dict:
    """The JSON stored with each output sample: all captions with provenance, scores and metadata."""
    meta = {k: v for k, v in s.meta.items() if k not in ("captions_in", "captions")}
    return {"key": s.key, "captions": s.meta.get("captions", {}), "scores": s.scores, "meta": meta}


def write_tar(path: str | Path, samples: list[Sample]) -> None:
    """Atomically write a webdataset tar: ``<key>.<ext>`` (original bytes), ``<key>.json`` and one
    ``<key>.<kind>.txt`` per caption."""
    # lazy: webdataset costs 2.5 s (python -X importtime); only tar shards need it
    import webdataset as wds  # noqa: PLC0415

    with atomic_file(path) as tmp, wds.TarWriter(str(tmp), mtime=0.0) as tw:
        for s in samples:
            rec = output_record(s)
            d = {"__key__": s.key, s.meta.get("ext", "png"): s.data, "json": json.dumps(rec).encode()}
            for kind, cap in rec["captions"].items():
                d[f"{kind}.txt"] = cap["text"].encode("utf-8")
            tw.write(d)


def write_parquet(path: str | Path, samples: list[Sample]) -> None:
    """Atomically write an HF-compatible parquet shard (``image`` as the ``datasets`` Image struct)."""
    # lazy: datasets costs 0.9 s (python -X importtime); only parquet output needs it
    import datasets  # noqa: PLC0415

    path = Path(path)
    recs = [output_record(s) for s in samples]
    kinds = sorted({k for r in recs for k in r["captions"]})
    feats = datasets.Features(
        {
            "key": datasets.Value("string"),
            "image": datasets.Image(),
            **{k: datasets.Value("string") for k in kinds},
            "json": datasets.Value("string"),
        }
    )
    cols = {
        "key": [s.key for s in samples],
        "image": [{"bytes": s.data, "path": None} for s in samples],
        **{k: [r["captions"].get(k, {}).get("text") for r in recs] for k in kinds},
        "json": [json.dumps(r) for r in recs],
    }
    ds = datasets.Dataset.from_dict(cols, features=feats)
    with atomic_file(path) as tmp:
        ds.to_parquet(str(tmp))


def read_output(path: str | Path) -> list[dict]:
    """Records of an output shard (tar or parquet): key, image bytes, captions, scores, meta."""
    path = Path(path)
    out = []
    if path.suffix == ".tar":
        # lazy: webdataset costs 2.5 s (python -X importtime); only tar shards need it
        import webdataset as wds  # noqa: PLC0415

        for rec in wds.WebDataset(str(path), shardshuffle=False, empty_check=False):
            j = json.loads(rec["json"])
            img = next(v for k, v in rec.items() if k in IMAGE_EXTS)
            out.append(j | {"image": img})
    else:
        # lazy: pyarrow costs 0.26 s (python -X importtime); only parquet shards need it
        import pyarrow.parquet as pq  # noqa: PLC0415

        for row in pq.read_table(path).to_pylist():
            out.append(json.loads(row["json"]) | {"image": row["image"]["bytes"]})
    return out


def images_to_shards(
    images: dict, out_dir: str | Path, per_shard: int = 64, captions: dict | None = None
) -> list[Path]:
    """Write {key: PIL image or encoded bytes} as webdataset tar shards (PNG for PIL images), with
    optional {key: alt-text}. Used by the book and tests to make pipeline inputs."""
    # lazy: webdataset costs 2.5 s (python -X importtime); only tar shards need it
    import webdataset as wds  # noqa: PLC0415

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = list(images)
    bad = [k for k in keys if "." in k or "/" in k]
    if bad:
        raise ValueError(f"keys may not contain '.' or '/' (webdataset splits on them): {bad[:5]}")
    paths = []
    for si in range(0, len(keys), per_shard):
        p = out_dir / f"input-{si // per_shard:06d}.tar"
        with atomic_file(p) as tmp, wds.TarWriter(str(tmp), mtime=0.0) as tw:
            for k in keys[si : si + per_shard]:
                v = images[k]
                if not isinstance(v, (bytes, bytearray)):
                    buf = io.BytesIO()
                    v.save(buf, format="PNG")
                    v, ext = buf.getvalue(), "png"
                else:
                    ext = _sniff(bytes(v)) if v else "jpg"
                d = {"__key__": k, ext: bytes(v)}
                if captions and k in captions:
                    c = captions[k]
                    d["txt"] = c if isinstance(c, bytes) else c.encode("utf-8")
                tw.write(d)
        paths.append(p)
    return paths
