"""The Lens paper's reported results, as data (``data/paper/*.csv``).

Chapter 0 plots them and chapter 5 sets the companion's own numbers beside them. Keeping the paper's
tables as files, not as numbers typed into notebooks, means every derived figure (such as the 19.3 %
compute ratio) is computed and can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lenslib.paths import data_dir
from lenslib.world.suites import GENEVAL_TAGS as GENEVAL_TAGS  # the six tags, for the book

TABLES = (
    "table2_main",
    "geneval_subscores",
    "oneig_en_subscores",
    "cvtg_regions",
    "reasoner_ablation",
    "compute",
    "rl_prompt_diversity",
)


def load(name: str) -> pd.DataFrame:
    """Load one paper table by name (see ``TABLES``)."""
    if name not in TABLES:
        raise ValueError(f"unknown paper table {name!r}; choose one of {', '.join(TABLES)}")
    return pd.read_csv(data_dir() / "paper" / f"{name}.csv")


def main_table() -> pd.DataFrame:
    """Table 2: every model's OneIG, GenEval, LongText and CVTG scores (NaN = not reported)."""
    return load("table2_main")


@dataclass(frozen=True)
class ComputeComparison:
    """Lens vs Z-Image pre-training compute, raw and normalised by peak BF16 throughput."""

    lens_gpu_hours: float
    lens_gpu: str
    other_gpu_hours: float
    other_gpu: str
    other_model: str
    raw_ratio: float  # GPU-hours / GPU-hours
    flops_ratio: float  # (GPU-hours x peak TFLOPS) / (GPU-hours x peak TFLOPS): the paper's 19.3 %
    lens_peak_exaflop: float  # GPU-hours x peak, in EFLOP (an upper bound on work done)
    other_peak_exaflop: float


def compute_comparison() -> ComputeComparison:
    """The paper's "19.3 % of Z-Image's compute", computed from ``compute.csv``.

    The paper normalises GPU-hours by each GPU's peak dense BF16 TFLOPS; this ignores utilisation
    (MFU) and bandwidth, as the paper itself notes. Used in chapters 0 and 4.
    """
    table = load("compute").set_index("model")
    lens, other = table.loc["Lens"], table.drop(index="Lens").iloc[0]
    lens_work = lens.gpu_hours * 3600 * lens.peak_bf16_tflops * 1e12
    other_work = other.gpu_hours * 3600 * other.peak_bf16_tflops * 1e12
    return ComputeComparison(
        lens_gpu_hours=float(lens.gpu_hours),
        lens_gpu=str(lens.gpu),
        other_gpu_hours=float(other.gpu_hours),
        other_gpu=str(other.gpu),
        other_model=str(other.name),
        raw_ratio=float(lens.gpu_hours / other.gpu_hours),
        flops_ratio=float(lens_work / other_work),
        lens_peak_exaflop=float(lens_work / 1e18),
        other_peak_exaflop=float(other_work / 1e18),
    )


def reasoner_gain(benchmark: str = "geneval") -> pd.DataFrame:
    """Score with each reasoner minus the score without one (Lens rows of the reasoner ablation)."""
    table = load("reasoner_ablation")
    lens = table[table.generator == "Lens"].set_index("reasoner")
    if benchmark not in lens.columns:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(lens.columns[1:])}")
    out = lens[[benchmark]].copy()
    out["gain"] = out[benchmark] - lens.loc["none", benchmark]
    return out
