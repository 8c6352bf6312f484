"""A text-to-image dataset from the synthetic world: images, exact specs and every caption kind.

Lens trains on (image, caption) pairs; the companion's world gives the same pairs with the truth
attached, so a caption ablation (alt-text vs brief vs detailed vs mixed) trains on identical
images and differs only in text. ``make_dataset`` writes

- a Hugging Face ``datasets`` folder (``save_to_disk``; open with ``datasets.load_from_disk(out)``)
  with columns ``image``, ``spec`` (the scene as JSON), ``alt_text``, ``brief``, ``detailed``,
  ``mixed`` and ``seed``;
- with ``shards=True``, webdataset tar shards in ``out/shards/`` (``<key>.png``, ``<key>.spec.json``,
  ``<key>.<kind>.txt``, ``<key>.seed.txt``), the format large-scale trainers stream;
- ``out/manifest.json``: arguments, columns, files with SHA-256 and row counts;
- for emoji data, ``out/ATTRIBUTION.md``: OpenMoji's CC BY-SA 4.0 attribution, which must travel
  with the images (share-alike applies to redistributed renders).

Same arguments, same bytes: example ``i`` uses seed ``SeedSequence([seed, i])``, PNGs and tar
headers carry no timestamps, and the manifest no dates. Used in chapters 4 and 6.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np

from lenslib import __version__
from lenslib.atomic import atomic_output_dir, check_output_dir
from lenslib.paths import sha256_file
from lenslib.world.captions import CAPTION_KINDS, caption_all
from lenslib.world.render import render
from lenslib.world.spec import VOCAB_MIN_SIDE, VOCABS, sample_scene
from lenslib.world.vocab import EMOJI_ATTRIBUTION

COLUMNS = ("image", "spec", *CAPTION_KINDS, "seed")
MANIFEST = "manifest.json"
SHARD_PATTERN = "world-%06d.tar"
CHUNK = 2048  # rows built in memory at a time before they are appended to the Arrow table


def example_seed(seed: int, index: int) -> int:
    """The scene/caption seed of example ``index``: independent streams per (seed, index)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def make_example(index: int, size: int, vocab: str, seed: int) -> dict:
    """One row: PNG bytes, spec JSON, every caption kind, and the example's seed."""
    s = example_seed(seed, index)
    scene = sample_scene(s, vocab)
    buf = io.BytesIO()
    render(scene, size, size).save(buf, format="PNG")
    return {"image": buf.getvalue(), "spec": scene.to_json(), **caption_all(scene, s), "seed": s}


def _check_args(n, size, vocab):
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of examples, got {n!r}")
    if vocab not in VOCABS:
        raise ValueError(f"unknown vocabulary {vocab!r}; choose one of {list(VOCABS)}")
    if not isinstance(size, int) or size < VOCAB_MIN_SIDE[vocab]:
        raise ValueError(
            f"size must be an integer >= {VOCAB_MIN_SIDE[vocab]} px for {vocab} (below it the judge "
            f"cannot read the images exactly), got {size!r}"
        )


def make_dataset(
    n: int,
    size: int | None = None,
    vocab: str = "shapes",
    out: str | Path = "world",
    seed: int = 0,
    shards: bool = False,
    overwrite: bool = False,
    shard_size: int = 1000,
    progress: bool | None = None,
) -> Path:
    """Write ``n`` examples of ``size``x``size`` scenes from ``vocab`` to ``out`` (see module doc).

    ``size`` defaults to the vocabulary's smallest exact size (64 px shapes, 128 px emoji).

    Refuses a non-empty ``out`` unless ``overwrite=True``; writes into a temporary folder beside
    ``out`` and renames it into place only when everything is written. The Arrow table is built in
    memory (about 3 KB per 64 px image, so 100k examples take ~0.3 GB) before ``save_to_disk``. A
    progress bar is shown when stderr is a terminal (or ``progress=True``). Returns ``out``.
    """
    # lazy: datasets costs 2.1 s and tqdm 0.09 s to import (python -X importtime); `lens world --help`
    # and the readers of this module's constants need neither
    import datasets  # noqa: PLC0415
    from tqdm.auto import tqdm  # noqa: PLC0415

    if size is None and vocab in VOCAB_MIN_SIDE:
        size = VOCAB_MIN_SIDE[vocab]
    _check_args(n, size, vocab)
    if shards and (not isinstance(shard_size, int) or shard_size < 1):
        raise ValueError(
            f"shard_size (--shard-size) must be a positive number of examples per shard, got {shard_size!r}"
        )
    out = check_output_dir(out, overwrite)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "spec": datasets.Value("string"),
            **{k: datasets.Value("string") for k in CAPTION_KINDS},
            "seed": datasets.Value("int64"),
        }
    )
    show = progress if progress is not None else sys.stderr.isatty()

    with atomic_output_dir(out, overwrite) as tmp:
        writer = None
        if shards:
            import webdataset as wds  # noqa: PLC0415  # lazy: 5.4 s to import, only for shards=True

            (tmp / "shards").mkdir()
            writer = wds.ShardWriter(
                str(tmp / "shards" / SHARD_PATTERN), maxcount=shard_size, verbose=0, mtime=0.0
            )
        parts = []
        with tqdm(total=n, desc=f"world {vocab} {size}px", disable=not show) as bar:
            for start in range(0, n, CHUNK):
                rows = [make_example(i, size, vocab, seed) for i in range(start, min(n, start + CHUNK))]
                if writer is not None:
                    for i, row in enumerate(rows, start):
                        writer.write(
                            {
                                "__key__": f"{i:09d}",
                                "png": row["image"],
                                "spec.json": row["spec"],
                                **{f"{k}.txt": row[k] for k in CAPTION_KINDS},
                                "seed.txt": str(row["seed"]),
                            }
                        )
                cols = {c: [r[c] for r in rows] for c in COLUMNS}
                cols["image"] = [{"bytes": b, "path": None} for b in cols["image"]]
                parts.append(datasets.Dataset.from_dict(cols, features=features))
                bar.update(len(rows))
        if writer is not None:
            writer.close()
        ds = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        bars_were_on = not datasets.are_progress_bars_disabled()
        if not show:
            datasets.disable_progress_bars()
        try:
            ds.save_to_disk(str(tmp))
        finally:
            if bars_were_on:
                datasets.enable_progress_bars()

        if vocab == "emoji":
            write_attribution(tmp)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        if shards:
            last_shard = max(0, -(-n // shard_size) - 1)
            shard_range = SHARD_PATTERN.replace("%06d", "{000000..%06d}" % last_shard)
        manifest = {
            "format": "lens-world-dataset",
            "format_version": 1,
            "lenslib": __version__,
            "args": {
                "n": n,
                "size": size,
                "vocab": vocab,
                "seed": seed,
                "shards": shards,
                "shard_size": shard_size,
            },
            "columns": list(COLUMNS),
            "caption_kinds": list(CAPTION_KINDS),
            "load": {
                "datasets": "datasets.load_from_disk(<out>)",
                "webdataset": f"webdataset.WebDataset(<out>/shards/{shard_range})" if shards else None,
            },
            "shards": [
                {"path": str(p.relative_to(tmp)), "n": min(shard_size, n - i * shard_size)}
                for i, p in enumerate(sorted((tmp / "shards").glob("*.tar")))
            ]
            if shards
            else [],
            "files": {
                str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in files
            },
            "license": "CC BY-SA 4.0 (OpenMoji), see ATTRIBUTION.md" if vocab == "emoji" else None,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return Path(out)


def write_attribution(folder: str | Path) -> Path:
    """Write OpenMoji's CC BY-SA 4.0 attribution into ``folder`` (every folder of emoji renders
    needs it)."""
    path = Path(folder) / "ATTRIBUTION.md"
    path.write_text(
        "# Attribution\n\nThe emoji images in this folder are renders of OpenMoji glyphs.\n\n"
        f"{EMOJI_ATTRIBUTION}\n\nOpenMoji is licensed CC BY-SA 4.0 "
        "(https://creativecommons.org/licenses/by-sa/4.0/): if you redistribute these images "
        "or data derived from them, keep this attribution and share them under the same licence.\n"
    )
    return path


def read_manifest(out: str | Path) -> dict:
    """The manifest of a dataset folder written by :func:`make_dataset`."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {out} a folder written by make_dataset?")
    return json.loads(path.read_text())
