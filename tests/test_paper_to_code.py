"""The paper-to-code map names only modules that exist."""

from __future__ import annotations

import importlib
import re

from conftest import REPO_ROOT


def test_every_module_in_the_map_imports():
    text = (REPO_ROOT / "book" / "paper_to_code.md").read_text()
    modules = sorted(set(re.findall(r"`(lenslib(?:\.\w+)*)`", text)))
    assert len(modules) > 20
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            missing.append(f"{name}: {err}")
    assert not missing, missing
