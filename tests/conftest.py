"""Shared test fixtures: offline hubs, the official golden tensors, and chapter timings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = REPO_ROOT.parent / "shared" / "reference" / "golden"

# chapter -> wall seconds, filled by tests/test_book.py and printed at the end of the run
CHAPTER_TIMES: dict[str, float] = {}


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """Tensors produced by the official Lens code (../shared/reference/golden); skip when absent."""
    if not GOLDEN_DIR.is_dir():
        pytest.skip(f"official golden fixtures not found at {GOLDEN_DIR}")
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def load_golden_tiny(golden_dir):
    """A loader of the official tiny transformer (config from the file's metadata, strict weights), in eval
    mode. Each call builds a fresh model, so a module that switches fast paths on its copy leaves the others
    alone."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    from lenslib.model.transformer import LensTransformer2DModel

    def load():
        path = golden_dir / "tiny_transformer.safetensors"
        with safe_open(str(path), "pt") as f:
            config = json.loads(f.metadata()["config"])
        model = LensTransformer2DModel(**config).eval()
        model.load_state_dict(load_file(str(path)), strict=True)
        return model

    return load


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not CHAPTER_TIMES:
        return
    terminalreporter.section("chapter wall times (CPU, default parameters)")
    for name, seconds in sorted(CHAPTER_TIMES.items()):
        terminalreporter.write_line(f"{name:<40s} {seconds:8.1f} s")
    terminalreporter.write_line(f"{'total':<40s} {sum(CHAPTER_TIMES.values()):8.1f} s")
