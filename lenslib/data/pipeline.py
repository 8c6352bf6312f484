"""The recaptioning pipeline: filter → global near-dup → caption → shards + manifest, in one process or
on Ray Data.

Three stages, each resumable:

1. **filter** (per shard, parallel): decode, steps 2–8 of the funnel, image embeddings of the survivors
   → ``work/filter/<shard>.json`` (+ ``.npy`` embeddings).
2. **dedup** (global, one process): faiss over all embeddings in shard order → ``work/dedup.json``.
   Near-duplicates are found across shards, which is why this stage cannot run per shard. Cheap; it is
   recomputed on every run (deterministic).
3. **caption** (per shard, parallel): every captioner on the survivors; all captions kept side by side
   (input alt-text, brief, detailed … each with its source) → ``shards/<shard>.tar|.parquet`` and
   ``reports/<shard>.json``.

Captioning is last because it is the expensive step (GPT-4.1 at 800M images): nothing is captioned that
the filters or dedup would drop. Every file is written atomically; a shard counts as finished only when
its report exists and its output file matches the recorded size, so an interrupted run picks up where
it stopped, and a finished run re-run is a no-op. ``run.json`` pins the configuration: resuming with a
different one is refused (use a new output folder or ``overwrite=True``).

With ``ray_address`` set, stages 1 and 3 run as Ray Data actor pools (one model load per actor, one shard
per task) on a local or remote cluster; the records are the same as in the single-process run (only the
measured latencies differ). The stages themselves are :mod:`lenslib.data.pipeline_stages`; this module
pins the run, drives them and writes the manifest. Used by ``lens recaption`` and in chapter 1.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from lenslib.atomic import write_json_atomic
from lenslib.recaption.registry import parse_spec

from .filters import default_filters
from .funnel import FunnelReport, StepReport
from .pipeline_stages import (
    build_captioners,
    build_funnel,
    caption_shard,
    dedup_all,
    filter_shard,
    shard_done,
)
from .shards import ShardRef, list_shards

log = logging.getLogger(__name__)
FORMAT = "lens-recaption"
FORMAT_VERSION = 1


@dataclass
class PipelineConfig:
    """Everything that determines the output (paths excepted). Stored in ``run.json`` and the manifest.

    ``funnel``: ``thresholds`` (see :func:`~lenslib.data.filters.default_filters`), ``nsfw`` /
    ``aesthetic`` / ``watermark`` (local model folders; ``<kind>_label`` for classifiers), ``embedder``
    (``"pixels-16"`` or a local CLIP/SigLIP folder), ``dedup_threshold``, ``dedup`` (bool).
    ``captioner_options``: keyword arguments for the captioners (``base_url``, ``api_key_env``,
    ``max_concurrency``, prices, ``device``, ``batch_size``, ``max_new_tokens`` …).
    """

    captioners: list = field(default_factory=list)
    output_format: str = "tar"
    funnel: dict = field(default_factory=dict)
    captioner_options: dict = field(default_factory=dict)
    batch_size: int = 16
    images_per_shard: int = 256
    max_caption_failure_rate: float = 0.5

    def __post_init__(self):
        if self.output_format not in ("tar", "parquet"):
            raise ValueError(f"output_format must be 'tar' or 'parquet', got {self.output_format!r}")

        for spec in self.captioners:
            parse_spec(spec)  # bad specs fail here, before any work

        default_filters(thresholds=self.funnel.get("thresholds"))  # unknown or invalid thresholds fail here

    def fingerprint(self) -> str:
        d = asdict(self)
        # options that change speed, not results, are left out
        d["captioner_options"] = {
            k: v
            for k, v in d["captioner_options"].items()
            if k
            not in (
                "max_concurrency",
                "timeout_s",
                "max_retries",
                "device",
                "batch_size",
                "backoff_s",
                "price_in_per_m",
                "price_out_per_m",
            )
        }
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------- Ray workers
class _RayStage:
    """Ray Data actor: builds the funnel or the captioners once, then processes one shard per row."""

    def __init__(self, stage: str, out: str, cfg: dict):
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per actor; read when torch is imported
        logging.basicConfig(level=logging.WARNING)
        self.stage, self.out, self.cfg = stage, Path(out), PipelineConfig(**cfg)
        self.funnel = build_funnel(self.cfg.funnel) if stage == "filter" else None
        self.captioners = build_captioners(self.cfg) if stage == "caption" else None
        # read from the shared output folder rather than shipped with the task (it can be large)
        self.dropped = (
            set(json.loads((self.out / "work" / "dedup.json").read_text())["dropped"])
            if stage == "caption"
            else set()
        )

    def __call__(self, row: dict) -> dict:
        ref = ShardRef(row["name"], row["path"], row["format"], tuple(json.loads(row["files"])))
        if self.stage == "filter":
            r = filter_shard(ref, self.out, self.funnel)
        else:
            r = caption_shard(ref, self.out, self.cfg, self.captioners, self.dropped)
        return {"shard": r["shard"], "result": json.dumps(r)}


def _ray_run(stage: str, refs: list[ShardRef], out: Path, cfg: PipelineConfig, concurrency=None):
    # lazy: ray costs 0.4 s (python -X importtime); only runs with ray_address use it
    import ray  # noqa: PLC0415

    items = [
        {"name": r.name, "path": r.path, "format": r.format, "files": json.dumps(list(r.files))} for r in refs
    ]
    n = concurrency or max(1, min(len(items), int(ray.available_resources().get("CPU", 1))))
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map(
        _RayStage,
        fn_constructor_kwargs={"stage": stage, "out": str(out), "cfg": asdict(cfg)},
        compute=ray.data.ActorPoolStrategy(size=n),
        num_cpus=1,
    )
    return [json.loads(r["result"]) for r in ds.take_all()]


def _ensure_ray(address: str):
    # lazy: ray costs 0.4 s (python -X importtime); only runs with ray_address use it
    import ray  # noqa: PLC0415

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address in ("local", ""):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(include_dashboard=False, object_store_memory=512 << 20, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)


# ------------------------------------------------------------------------------------- driver
def run_pipeline(
    input: str,
    output: str,
    cfg: PipelineConfig,
    ray_address: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    ray_concurrency: int | None = None,
) -> dict:
    """Run (or resume) the pipeline; returns the manifest. ``ray_address``: None = one process;
    ``"auto"`` or ``"ray://…"`` = an existing cluster; ``"local"`` = start Ray here (or reuse one
    already initialised in this process). On a multi-node cluster, ``input`` and ``output`` must be paths
    every node sees (a shared file system), and the captioners' environment (API key variable, model
    folders) must exist on every node."""
    refs = list_shards(input, cfg.images_per_shard)
    out = Path(output)
    run_file = out / "run.json"
    run = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "input": str(input),
        "fingerprint": cfg.fingerprint(),
        "config": asdict(cfg),
        "shards": [r.name for r in refs],
    }
    if out.exists() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
        elif not run_file.is_file():
            raise FileExistsError(f"{out} exists and is not a recaption output; choose another --output")
        else:
            prev = json.loads(run_file.read_text())
            if prev["fingerprint"] != run["fingerprint"] or prev["input"] != run["input"]:
                raise ValueError(
                    f"{out} was made with a different input or configuration "
                    f"({prev['fingerprint']} != {run['fingerprint']}); use a new --output or "
                    "--overwrite to start again"
                )
            if prev.get("shards") != run["shards"]:
                raise ValueError(
                    f"the input shards changed since {out} was started ({len(prev.get('shards', []))} "
                    f"then, {len(refs)} now); near-duplicates are removed across all shards, so "
                    "finished shards would be stale: use a new --output (or --overwrite)"
                )
    for d in ("work/filter", "shards", "reports"):
        (out / d).mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_file, run, sort_keys=True)

    if ray_address is not None:
        _ensure_ray(ray_address)

    # stage 1
    todo = [r for r in refs if not (out / "work" / "filter" / f"{r.name}.json").is_file()]
    log.info("filter: %d of %d shards to do", len(todo), len(refs))
    if todo:
        if ray_address is not None:
            _ray_run("filter", todo, out, cfg, concurrency=ray_concurrency)
        else:
            funnel = build_funnel(cfg.funnel)
            for r in tqdm(todo, desc="filter", disable=not progress, unit="shard"):
                filter_shard(r, out, funnel)
    # stage 2
    dd = dedup_all(refs, out, cfg.funnel)
    dropped = set(dd["dropped"])
    # stage 3
    todo = [r for r in refs if not shard_done(out, r.name)]
    log.info("caption: %d of %d shards to do", len(todo), len(refs))
    if todo:
        if ray_address is not None:
            _ray_run("caption", todo, out, cfg, concurrency=ray_concurrency)
        else:
            captioners = build_captioners(cfg)
            for r in tqdm(todo, desc="caption", disable=not progress, unit="shard"):
                caption_shard(r, out, cfg, captioners, dropped)
    return finalize(out, refs, cfg)


def finalize(out: Path, refs: list[ShardRef], cfg: PipelineConfig) -> dict:
    """Merges the per-shard reports into ``funnel.json`` and writes ``manifest.json``."""
    frecs = [json.loads((out / "work" / "filter" / f"{r.name}.json").read_text()) for r in refs]
    reps = [json.loads((out / "reports" / f"{r.name}.json").read_text()) for r in refs]
    report = FunnelReport.merge([FunnelReport.from_dict(f["report"]) for f in frecs])
    report.steps.append(StepReport(**json.loads((out / "work" / "dedup.json").read_text())["report"]))
    cap = FunnelReport.merge([FunnelReport([StepReport(**r["caption_step"])]) for r in reps]).steps
    report.steps += cap
    report.check()
    report.save(out / "funnel.json")
    usage = {k: sum(r["usage"][k] for r in reps) for k in ("input_tokens", "output_tokens", "captions")}
    issues = {f"{f['shard']}/{k}": v for f in frecs for k, v in f["input_issues"].items()}
    kinds = sorted({k for r in reps for k in r["caption_kinds"]})
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fingerprint": cfg.fingerprint(),
        "config": asdict(cfg),
        "caption_kinds": kinds,
        "n_in": report.n_in,
        "n_out": report.n_kept,
        "funnel": [
            {k: s[k] for k in ("name", "n_in", "dropped", "kept", "skipped")}
            for s in report.to_dict()["steps"]
        ],
        "usage": usage,
        "input_issues": issues,
        "shards": [{k: r[k] for k in ("shard", "input", "output", "n", "bytes", "sha256")} for r in reps],
    }
    write_json_atomic(out / "manifest.json", manifest, sort_keys=True)
    return manifest
