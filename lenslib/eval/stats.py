"""Bootstrap intervals for GenEval scores: one home for the resampling schemes of the book.

* :func:`bootstrap_ci` -- intervals for one run's GenEval summary (per tag, overall, % correct images,
  % prompts with a correct image), resampling prompts within tags and images within prompts.
  :func:`lenslib.eval.geneval.summarize` reports it; chapter 5 compares its resampling choices and
  chapter 4 reads it for each training run.
* :func:`paired_difference` -- the difference of two runs' GenEval overall scores on the same prompts
  and training seeds, resampling both jointly (paired). Chapter 6's caption ablation (paper §3.4) and
  reasoner ablation (paper §4.3) state their findings with it; chapter 4 compares two runs with it.
* :func:`share_interval` -- the interval of a plain share of 0/1 outcomes (scenes denoised exactly right,
  samples that follow a word), resampling the outcomes; chapter 4's diagnostics report it.

All are seeded (``numpy.random.default_rng(seed)``): the same input gives the same interval.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from lenslib.world.suites import GENEVAL_TAGS

__all__ = ["bootstrap_ci", "paired_difference", "share_interval"]


def share_interval(hits, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the mean of 0/1 outcomes ``hits``, resampling them.

    For outcomes that are independent draws (one per held-out scene or per sample); ``(nan, nan)`` for none.
    """
    hits = np.asarray(hits, dtype=float)
    if hits.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = hits[rng.integers(0, len(hits), size=(n_boot, len(hits)))].mean(axis=1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def bootstrap_ci(
    per_prompt, tags=None, n_boot: int = 2000, seed: int = 0, level: float = 0.95, resample: str = "both"
) -> dict:
    """Percentile bootstrap intervals for GenEval's summary numbers, resampling prompts and seeds.

    ``per_prompt`` is a list with one 1-D array per prompt of its images' scores (0/1, or a DPG
    fraction); ``tags`` the tag of each prompt. Each replicate draws prompts with replacement
    *within each tag* (the tag sizes are fixed by the suite), then draws that prompt's images
    with replacement (the sampling seeds), and recomputes every statistic. Returns
    ``{name: (low, high)}`` for ``overall`` (mean of GenEval tags present), ``pct_correct_images``,
    ``pct_prompts_any_correct`` and ``tag:<tag>`` for each tag. Seeded: same input, same intervals.

    ``resample`` = ``"both"`` (default) answers "another suite of this kind, and other seeds";
    it is slightly conservative, since the seed-to-seed noise is already inside the prompt-level
    spread and is counted again (Davison & Hinkley 1997, section 3.8). ``"prompts"`` resamples
    prompts only (the usual cluster bootstrap: close to nominal coverage for the suite mean);
    ``"seeds"`` only images within prompts (this fixed suite, other seeds). Chapter 5 compares them.
    """
    if resample not in ("both", "prompts", "seeds"):
        raise ValueError(f"resample must be 'both', 'prompts' or 'seeds', got {resample!r}")
    groups = [np.asarray(g, dtype=float).ravel() for g in per_prompt]
    if any(len(g) == 0 for g in groups):
        raise ValueError("every prompt needs at least one scored image for the bootstrap")
    if not groups:
        return {}
    tags = list(tags) if tags is not None else ["all"] * len(groups)
    if len(tags) != len(groups):
        raise ValueError(f"{len(tags)} tags for {len(groups)} prompts")
    rng = np.random.default_rng(seed)
    counts = np.array([len(g) for g in groups])
    scores = np.zeros((len(groups), counts.max()))
    for i, g in enumerate(groups):
        scores[i, : len(g)] = g

    tag_names = list(dict.fromkeys(tags))
    sums, imgs, anys, n_prompts = {}, {}, {}, {}
    for tag in tag_names:
        idx = np.flatnonzero(np.array(tags) == tag)
        if resample == "seeds":
            pick = np.broadcast_to(idx, (n_boot, len(idx)))
        else:
            pick = idx[rng.integers(0, len(idx), size=(n_boot, len(idx)))]  # (B, n_tag) prompts
        k = counts[pick]  # images of each drawn prompt
        if resample == "prompts":
            draw = np.broadcast_to(np.arange(counts.max()), (*pick.shape, counts.max()))
        else:
            draw = np.floor(rng.random((*pick.shape, counts.max())) * k[..., None]).astype(int)
        valid = np.arange(counts.max())[None, None, :] < k[..., None]
        vals = np.where(valid, scores[pick[..., None], draw], 0.0)
        sums[tag] = vals.sum(axis=(1, 2))
        imgs[tag] = k.sum(axis=1)
        anys[tag] = (np.where(valid, vals, -np.inf).max(axis=2) >= 1.0).sum(axis=1)
        n_prompts[tag] = len(idx)

    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]

    def interval(x):
        lo, hi = np.percentile(x, q)
        return float(lo), float(hi)

    out = {f"tag:{t}": interval(sums[t] / imgs[t]) for t in tag_names}
    geneval = [t for t in tag_names if t in GENEVAL_TAGS]
    if geneval:
        out["overall"] = interval(np.mean([sums[t] / imgs[t] for t in geneval], axis=0))
    out["pct_correct_images"] = interval(sum(sums.values()) / sum(imgs.values()))
    out["pct_prompts_any_correct"] = interval(sum(anys.values()) / sum(n_prompts.values()))
    return out


def _by_prompt_seed(rows: list[dict]) -> tuple[dict, dict]:
    """``{(index, seed): mean correct over images}`` and ``{index: tag}``."""
    acc, tag = defaultdict(list), {}
    for r in rows:
        acc[(r["index"], r["seed"])].append(float(bool(r["correct"])))
        tag[r["index"]] = r["tag"]
    return {k: float(np.mean(v)) for k, v in acc.items()}, tag


def paired_difference(
    rows_a: list[dict], rows_b: list[dict], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict:
    """GenEval overall of ``rows_a`` minus that of ``rows_b``, with a paired bootstrap interval.

    Both sets must score the same prompts (``index``, with ``tag``) under the same training seeds
    (``seed``); each (prompt, seed) cell is the mean of its images. The overall score is GenEval's:
    the unweighted mean of the tags' accuracies. Each replicate draws prompts with replacement within
    each tag and training seeds with replacement, the *same* draws for both sets (they share prompts
    and seeds, so their noise partly cancels), and recomputes the difference. Returns ``diff``,
    ``ci95`` (percentile interval), ``p_le_zero`` (share of replicates <= 0), ``n_prompts``, ``n_seeds``.
    """
    a, tag_a = _by_prompt_seed(rows_a)
    b, tag_b = _by_prompt_seed(rows_b)
    if set(a) != set(b) or tag_a != tag_b:
        raise ValueError(
            "paired_difference needs both sets to cover the same (prompt index, seed) cells with the "
            f"same tags; only in the first: {sorted(set(a) - set(b))[:5]}, "
            f"only in the second: {sorted(set(b) - set(a))[:5]}"
        )
    if not a:
        raise ValueError("paired_difference got no rows")
    prompts = sorted(tag_a)
    seeds = sorted({s for _, s in a})
    d = np.array([[a[(i, s)] - b[(i, s)] for s in seeds] for i in prompts])  # prompts x seeds
    tags = [t for t in GENEVAL_TAGS if t in tag_a.values()] + sorted(set(tag_a.values()) - set(GENEVAL_TAGS))
    groups = [np.array([j for j, i in enumerate(prompts) if tag_a[i] == t]) for t in tags]

    def overall(pick_seeds, picks):
        return float(np.mean([d[np.ix_(g[pick], pick_seeds)].mean() for g, pick in zip(groups, picks)]))

    estimate = overall(np.arange(len(seeds)), [np.arange(len(g)) for g in groups])
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for r in range(n_boot):
        pick_seeds = rng.integers(0, len(seeds), len(seeds))
        reps[r] = overall(pick_seeds, [rng.integers(0, len(g), len(g)) for g in groups])
    lo, hi = np.quantile(reps, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {
        "diff": estimate,
        "ci95": (float(lo), float(hi)),
        "p_le_zero": float(np.mean(reps <= 0)),
        "n_prompts": len(prompts),
        "n_seeds": len(seeds),
        "n_boot": n_boot,
    }
