"""The skeleton's promises: the CLI, the version pin, the paper tables, and pyproject <-> environment.yml."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest
import yaml
from conftest import REPO_ROOT

import lenslib
from lenslib import paper
from lenslib.book import check_version_pin, pinned_version
from lenslib.cli import main


def _requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~\[ ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_lens_version_prints_package_version():
    out = subprocess.run(
        [sys.executable, "-m", "lenslib", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"lenslib {lenslib.__version__}"


def test_lens_help_lists_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "usage: lens" in capsys.readouterr().out


def test_console_script_declared():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["lens"] == "lenslib.cli:main"


def test_book_is_pinned_to_this_package_version(tmp_path):
    assert check_version_pin() == lenslib.__version__
    stale = tmp_path / "requirements.txt"
    stale.write_text("lenslib==0.0.1\n")
    assert pinned_version(stale) == "0.0.1"
    with pytest.raises(RuntimeError, match="pinned to lenslib==0.0.1"):
        check_version_pin(stale)


def test_explorer_draws_its_first_view_in_the_cell_and_redraws_when_a_control_moves():
    import ipywidgets as widgets

    from lenslib.book import explorer

    calls = []
    steps, rescale = widgets.IntSlider(value=3, min=1, max=9), widgets.Checkbox(value=True)
    explorer(lambda steps, rescale: calls.append((steps, rescale)), steps=steps, rescale=rescale)
    assert calls == [(3, True)]  # once, with the controls' values, while the cell runs
    steps.value = 5
    rescale.value = False
    assert calls == [(3, True), (5, True), (5, False)]


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in ("book", "test"):
        declared += project["optional-dependencies"][extra]
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_list = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_specs = {_requirement_name(s): s.replace(" ", "") for s in pip_list if not s.startswith(("-", "--"))}
    py_specs = {_requirement_name(s): s.replace(" ", "") for s in declared}
    assert set(env_specs) == set(py_specs), (
        f"only in environment.yml: {sorted(set(env_specs) - set(py_specs))}; "
        f"only in pyproject.toml: {sorted(set(py_specs) - set(env_specs))}"
    )
    for name, spec in py_specs.items():
        if name == "torch":  # pyproject allows any build >= 2.4; the environment pins the CPU wheel
            assert env_specs[name] == "torch==2.13.0"
            continue
        assert env_specs[name] == spec, (
            f"{name}: pyproject says {spec}, environment.yml says {env_specs[name]}"
        )


def test_every_dependency_is_pinned():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"] + sum(project["optional-dependencies"].values(), []):
        if _requirement_name(spec) != "torch":
            assert "==" in spec, f"{spec} is not pinned"


def test_paper_tables_load_and_match_the_paper():
    table = paper.main_table().set_index("model")
    assert table.loc["Lens", "geneval"] == pytest.approx(0.930)
    assert table.loc["Lens-Turbo", "oneig_en"] == pytest.approx(0.554)
    sub = paper.load("geneval_subscores").set_index("model")
    assert list(sub.columns) == list(paper.GENEVAL_TAGS)
    # GenEval's overall score is the unweighted mean of its six tags; the paper's sub-scores agree
    assert sub.loc["Lens"].mean() == pytest.approx(table.loc["Lens", "geneval"], abs=0.001)
    with pytest.raises(ValueError, match="unknown paper table"):
        paper.load("table9")


def test_compute_ratio_is_the_papers_19_3_percent():
    c = paper.compute_comparison()
    assert c.flops_ratio == pytest.approx(0.193, abs=0.0005)
    assert c.raw_ratio == pytest.approx(192 / 314)


def test_reasoner_gain():
    gain = paper.reasoner_gain("geneval")
    assert gain.loc["GPT-5.5", "gain"] == pytest.approx(0.087)
    with pytest.raises(ValueError, match="unknown benchmark"):
        paper.reasoner_gain("dpg")
