"""The bad-input catalogue: every ``lens`` command refuses input that cannot work with exit status 2 and one
line on stderr naming the problem and the fix, before any expensive work, leaving nothing on disk.

Each case runs ``lenslib.cli.main`` in this process. The work a command would start (a process group, the text
encoder and data, rendering, judging, a notebook execution, a job submission, ...) is replaced by a function
that fails the test when it is called, and every file under the case's folder and the cache is compared before
and after. A case that regresses (a traceback, another exit status, a second line, a message that no longer
names the problem, a folder created) fails here.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lenslib.cli import main

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "data" / "suites" / "shapes_geneval.jsonl"
NOTEBOOK = REPO / "lenslib" / "cluster" / "templates" / "train_run.md"

# What each command would do once its input is accepted: none of it may happen for a bad input.
EXPENSIVE = {
    "train": [
        "lenslib.train.trainer.init_distributed",
        "lenslib.train.trainer.build_source",
        "lenslib.train.cli.launch",
        "lenslib.model.text_encoders.registry.get_text_encoder",
    ],
    "export": ["lenslib.train.checkpoint.verify_checkpoint", "lenslib.train.checkpoint.load_tensors"],
    "world": ["lenslib.world.dataset.make_example", "lenslib.world.render.render"],
    "eval": [
        "lenslib.eval.geneval_folder._load_image",
        "lenslib.eval.geneval_folder._judge_image",
        "lenslib.eval.geneval.summarize",
    ],
    "record": ["lenslib.cluster.records.write_record_page", "lenslib.cluster.records.record_to_page"],
    "recaption": ["lenslib.data.pipeline.run_pipeline"],
    "run-notebook": ["papermill.execute_notebook"],
    "submit": ["lenslib.cluster.slurm.submit", "papermill.execute_notebook"],
    "data": [
        "lenslib.model.text_encoders.registry.get_text_encoder",
        "lenslib.data.feature_cache.build_feature_cache",
    ],
    "experiment": ["lenslib.experiments.caption_runs.run_captions"],
    "sample": ["lenslib.model.pipeline.LensPipeline.from_pretrained"],
}

T = ["train", "--config", "cpu-tiny", "run.out_dir={ws}/run"]  # a run that would be fine


@dataclass
class Case:
    id: str
    argv: list[str]
    says: list[str]  # fragments of the one line: the problem and the fix
    uses: list[str] = field(default_factory=list)  # more functions that must not run


CASES = [
    # --- lens train: names, numbers, paths, files, the command line -----------------------------------------
    Case(
        "preset", [*T, "model.preset=nosuch"], ["unknown model preset 'nosuch'", "valid presets: cpu-small"]
    ),
    Case(
        "model-key", [*T, "model.kwargs.num_blocks=2"], ["unknown config keys ['num_blocks']", "valid keys"]
    ),
    Case("vocab", [*T, "data.vocab=nosuch"], ["data.vocab='nosuch'", "choose one of shapes, emoji"]),
    Case(
        "caption-kind",
        [*T, "data.caption_kind=nosuch"],
        ["data.caption_kind='nosuch'", "choose one of alt_text"],
    ),
    Case(
        "text-encoder",
        [*T, "data.text_encoder=nosuch"],
        ["data.text_encoder='nosuch'", "choose one of gpt-oss"],
    ),
    Case(
        "world-kwargs", [*T, "data.world_kwargs.nosuch=1"], ["data.world_kwargs", "valid keys: min_objects"]
    ),
    Case("world-value", [*T, "data.world_kwargs.max_objects=99"], ["data.world_kwargs", "max_objects"]),
    Case("unknown-key", [*T, "optim.lrr=1"], ["unknown config key optim.lrr", "Did you mean optim.lr"]),
    Case("wrong-type", [*T, "optim.lr=fast"], ["optim.lr", "expected a number"]),
    Case("lr-nan", [*T, "optim.lr=nan"], ["optim.lr=nan is not a finite number", "give a real value"]),
    Case("mu-nan", [*T, "flow.mu=nan"], ["flow.mu=nan is not a finite number", "give a real value"]),
    Case("guidance-inf", [*T, "eval.guidance=inf"], ["eval.guidance=inf is not a finite number"]),
    Case("betas-nan", [*T, "optim.betas=[0.9,.nan]"], ["optim.betas[1]=nan is not a finite number"]),
    Case("patch-0", [*T, "data.patch=0"], ["data.patch must be > 0"]),
    Case("text-tokens-0", [*T, "data.max_text_tokens=0"], ["data.max_text_tokens must be > 0"]),
    Case("image-8", [*T, "data.image_size=8"], ["data.image_size=8", "vanish", "Use data.image_size >= "]),
    Case(
        "bucket-8",
        [
            *T,
            "data.patch=8",
            "data.buckets={bases: [16, 24], batches: [3, 2], multiple: 8}",
            "optim.global_batch=null",
        ],
        ["data.buckets has a bucket side of 8 px", "larger data.buckets.bases"],
    ),
    Case(
        "image-vs-patch",
        [*T, "data.patch=8", "data.image_size=60"],
        ["not divisible by data.patch=8", "multiples of the patch"],
    ),
    Case("steps-0", [*T, "run.steps=0"], ["run.steps must be > 0"]),
    Case(
        "batch", [*T, "optim.micro_batch=5"], ["not divisible by optim.micro_batch=5", "Choose a micro-batch"]
    ),
    Case(
        "name-dotdot",
        ["train", "--config", "cpu-tiny", "run.name=../../x"],
        ["run.name='../../x' must be a single folder name", "run.out_dir"],
    ),
    Case(
        "name-slash",
        ["train", "--config", "cpu-tiny", "run.name=a/b"],
        ["run.name='a/b'", "single folder name"],
    ),
    Case(
        "name-newline",
        ["train", "--config", "cpu-tiny", 'run.name="a\\nb"'],
        ["run.name='a\\nb'", "control characters"],
    ),
    Case(
        "resume-missing",
        [*T, "run.resume={ws}/nope"],
        ["run.resume={ws}/nope: no such folder", "run.resume=auto"],
    ),
    Case(
        "resume-not-checkpoint",
        [*T, "run.resume={ws}/empty"],
        ["has no trainer_state.json", "checkpoint folder"],
    ),
    Case(
        "out-dir-file",
        ["train", "--config", "cpu-tiny", "run.out_dir={ws}/afile"],
        ["run.out_dir={ws}/afile is a file", "Set run.out_dir to a folder"],
    ),
    Case(
        "out-dir-under-file",
        ["train", "--config", "cpu-tiny", "run.out_dir={ws}/afile/run"],
        ["cannot be created: {ws}/afile is a file"],
    ),
    Case(
        "init-from",
        [*T, "model.init_from={ws}/nope"],
        ["model.init_from={ws}/nope: no such folder", "transformer/"],
    ),
    Case(
        "hf-path",
        [*T, "data.source=hf", "data.path={ws}/nope"],
        ["data.path={ws}/nope: no such folder", "save_to_disk"],
    ),
    Case("features-no-path", [*T, "data.source=features"], ["data.source='features' needs data.path"]),
    Case("gpt-oss-path", [*T, "data.text_encoder=gpt-oss"], ["needs data.text_encoder_kwargs.path"]),
    Case("yaml-syntax", ["train", "--config", "{ws}/bad.yaml"], ["not valid YAML at line 3", "Fix the file"]),
    Case("yaml-folder", ["train", "--config", "{ws}/folder.yaml"], ["is not a file", "give a YAML file"]),
    Case("config-missing", ["train", "--config", "nosuch"], ["config 'nosuch' not found", "cpu-tiny"]),
    Case("override-form", [*T, "optim.lr"], ["must look like section.key=value"]),
    Case("nproc-negative", [*T, "--nproc-per-node", "-1"], ["--nproc-per-node -1", "omit the option"]),
    Case("nproc-zero", [*T, "--nproc-per-node", "0"], ["--nproc-per-node 0", "at least 1 process"]),
    Case("nproc-batch", [*T, "--nproc-per-node", "3"], ["not divisible by world size 3"]),
    Case(
        "nproc-not-a-number",
        [*T, "--nproc-per-node", "two"],
        ["invalid int value: 'two'", "lens train --help"],
    ),
    Case("unknown-option", [*T, "--bogus"], ["unrecognized arguments: --bogus", "lens train --help"]),
    # --- lens export ----------------------------------------------------------------------------------------
    Case("export-missing", ["export", "{ws}/nope", "{ws}/out"], ["{ws}/nope does not exist", "run folder"]),
    Case("export-file", ["export", "{ws}/afile", "{ws}/out"], ["{ws}/afile is a file", "checkpoint folder"]),
    Case(
        "export-not-a-run", ["export", "{ws}/empty", "{ws}/out"], ["neither a checkpoint folder", "give RUN"]
    ),
    Case("export-out-file", ["export", "{ws}/empty", "{ws}/afile"], ["output {ws}/afile", "is a file"]),
    # --- lens world -----------------------------------------------------------------------------------------
    Case(
        "make-shard-size",
        ["world", "make", "--n", "3", "--out", "{ws}/w", "--shards", "--shard-size", "0"],
        ["shard_size (--shard-size)", "positive number"],
    ),
    Case("make-n", ["world", "make", "--n", "0", "--out", "{ws}/w"], ["positive number of examples"]),
    Case(
        "make-size",
        ["world", "make", "--n", "2", "--size", "8", "--out", "{ws}/w"],
        ["size must be an integer >= 64"],
    ),
    Case(
        "make-out-file",
        ["world", "make", "--n", "2", "--out", "{ws}/afile"],
        ["{ws}/afile exists and is not a folder"],
    ),
    Case(
        "make-out-under-file",
        ["world", "make", "--n", "2", "--out", "{ws}/afile/w"],
        ["{ws}/afile is a file"],
    ),
    Case(
        "make-out-full", ["world", "make", "--n", "2", "--out", "{ws}/full"], ["is not empty", "--overwrite"]
    ),
    Case(
        "render-per-prompt",
        ["world", "render", "--metadata", str(SUITE), "--out", "{ws}/r", "--per-prompt", "-1"],
        ["per_prompt must be >= 1"],
    ),
    Case(
        "render-metadata",
        ["world", "render", "--metadata", "{ws}/nope.jsonl", "--out", "{ws}/r"],
        ["nope.jsonl"],
    ),
    # --- lens eval (a real image folder: refusals come before judging) --------------------------------------
    Case(
        "eval-out-file",
        ["eval", "--images", "{ws}/suite", "--out", "{ws}/afile"],
        ["--out {ws}/afile", "is a file", "give a folder"],
    ),
    Case(
        "eval-n-boot",
        ["eval", "--images", "{ws}/suite", "--n-boot", "0"],
        ["--n-boot 0", "at least 1 replicate"],
    ),
    Case(
        "eval-per-prompt",
        ["eval", "--images", "{ws}/suite", "--per-prompt", "-1"],
        ["--per-prompt -1", "positive number", "omit it"],
    ),
    Case("eval-size", ["eval", "--images", "{ws}/suite", "--size", "0"], ["--size 0", "positive number"]),
    Case("eval-images", ["eval", "--images", "{ws}/nope"], ["image folder {ws}/nope does not exist"]),
    Case("eval-empty", ["eval", "--images", "{ws}/empty"], ["holds no GenEval prompt folders"]),
    # --- lens record ----------------------------------------------------------------------------------------
    Case(
        "record-missing", ["record", "{ws}/nope", "{ws}/page.ipynb"], ["{ws}/nope does not exist", "RUN_DIR"]
    ),
    Case("record-file", ["record", "{ws}/afile", "{ws}/page.ipynb"], ["{ws}/afile is a file", "RUN_DIR"]),
    Case("record-not-a-run", ["record", "{ws}/empty", "{ws}/page.ipynb"], ["no run.json"]),
    Case("record-out-kind", ["record", "{ws}/rec", "{ws}/page.md"], ["must be an .ipynb file"]),
    Case("record-out-folder", ["record", "{ws}/rec", "{ws}/empty.ipynb"], ["is a folder", ".ipynb page"]),
    Case(
        "record-note",
        ["record", "{ws}/rec", "{ws}/page.ipynb", "--note", "{ws}/nope.md"],
        ["--note {ws}/nope.md: no such file"],
    ),
    # --- lens recaption / data ------------------------------------------------------------------------------
    Case(
        "recaption-missing",
        ["recaption", "--input", "{ws}/nope", "--output", "{ws}/o", "--captioner", "oracle:detailed"],
        ["no input shards match", "give a folder of images or shards"],
    ),
    Case(
        "recaption-kind",
        ["recaption", "--input", "{ws}/afile", "--output", "{ws}/o", "--captioner", "oracle:detailed"],
        ["unsupported shard type", ".tar, .parquet or .arrow"],
    ),
    Case(
        "recaption-output-file",
        ["recaption", "--input", "{ws}/imgs", "--output", "{ws}/afile", "--captioner", "oracle:detailed"],
        ["--output {ws}/afile", "is a file"],
    ),
    Case(
        "recaption-batch",
        [
            "recaption",
            "--input",
            "{ws}/imgs",
            "--output",
            "{ws}/o",
            "--captioner",
            "oracle:detailed",
            "--batch-size",
            "0",
        ],
        ["--batch-size 0", "positive number"],
    ),
    Case(
        "recaption-no-captioner",
        ["recaption", "--input", "{ws}/imgs", "--output", "{ws}/o"],
        ["give at least one --captioner"],
    ),
    Case(
        "cache-input",
        ["data", "cache", "--input", "{ws}/nope", "--output", "{ws}/c", "--text-encoder", "minilm"],
        ["is not a recaption output (no manifest.json)"],
    ),
    Case(
        "cache-encoder",
        ["data", "cache", "--input", "{ws}/recap", "--output", "{ws}/c", "--text-encoder", "nosuch"],
        ["--text-encoder 'nosuch'", "choose one of"],
    ),
    Case(
        "cache-codec",
        [
            "data",
            "cache",
            "--input",
            "{ws}/recap",
            "--output",
            "{ws}/c",
            "--text-encoder",
            "minilm",
            "--codec",
            "pixel:x",
        ],
        ["--codec 'pixel:x'", "e.g. pixel:2"],
    ),
    Case(
        "report-missing",
        ["data", "report", "{ws}/nope"],
        ["funnel.json not found", "run `lens recaption` first"],
    ),
    # --- lens run-notebook / submit -------------------------------------------------------------------------
    Case(
        "notebook-missing", ["run-notebook", "{ws}/nope.md", "{ws}/rn"], ["notebook {ws}/nope.md not found"]
    ),
    Case("notebook-kind", ["run-notebook", "{ws}/nb.txt", "{ws}/rn"], [".txt is not a notebook format"]),
    Case("notebook-corrupt", ["run-notebook", "{ws}/bad.ipynb", "{ws}/rn"], ["cannot be read as a notebook"]),
    Case("notebook-folder", ["run-notebook", "{ws}/empty", "{ws}/rn"], ["is a folder", "notebook file"]),
    Case("notebook-run-dir-file", ["run-notebook", str(NOTEBOOK), "{ws}/afile"], ["RUN_DIR", "is a file"]),
    Case("notebook-parameter", ["run-notebook", str(NOTEBOOK), "{ws}/rn", "-p", "nosuch", "1"], ["nosuch"]),
    Case(
        "sbatch-newline",
        [
            "submit",
            str(NOTEBOOK),
            "{ws}/sub",
            "--slurm",
            "--dry-run",
            "--sbatch-arg",
            "--exclusive\n#SBATCH --partition=other",
        ],
        ["contains a newline", "one option per --sbatch-arg"],
    ),
    Case(
        "sbatch-not-an-option",
        ["submit", str(NOTEBOOK), "{ws}/sub", "--slurm", "--dry-run", "--sbatch-arg", "x"],
        ["is not an option", "--exclusive"],
    ),
    Case("submit-no-scheduler", ["submit", str(NOTEBOOK), "{ws}/sub"], ["choose a scheduler (--slurm)"]),
    Case(
        "submit-time",
        ["submit", str(NOTEBOOK), "{ws}/sub", "--slurm", "--dry-run", "--time", "soon"],
        ["time='soon' is not a SLURM time", "D-HH:MM:SS"],
    ),
    # --- lens experiment / sample ---------------------------------------------------------------------------
    Case(
        "experiment-preset",
        ["experiment", "captions", "--preset", "nosuch", "--out", "{ws}/e"],
        ["preset 'nosuch'", "choose one of micro"],
    ),
    Case("experiment-n-boot", ["experiment", "captions", "--n-boot", "0", "--out", "{ws}/e"], ["--n-boot 0"]),
    Case(
        "experiment-override", ["experiment", "captions", "--out", "{ws}/e", "optim.lr=nan"], ["optim.lr=nan"]
    ),
    Case(
        "sample-model",
        ["sample", "--model", "{ws}/nope", "--prompt", "x", "--out", "{ws}/o.png"],
        ["is not a LensPipeline folder"],
    ),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Files the cases point at: a file, an empty folder, broken configs and notebooks, a judged-ready
    suite."""
    from lenslib.eval.geneval import render_suite

    ws = tmp_path_factory.mktemp("bad-inputs")
    (ws / "afile").write_text("not a folder")
    (ws / "empty").mkdir()
    (ws / "empty.ipynb").mkdir()
    (ws / "folder.yaml").mkdir()
    (ws / "bad.yaml").write_text("run:\n  steps: [1, 2\nmodel: {}\n")
    (ws / "nb.txt").write_text("print(1)\n")
    (ws / "bad.ipynb").write_text("{not json")
    (ws / "full").mkdir()
    (ws / "full" / "keep.txt").write_text("mine")
    (ws / "rec").mkdir()
    (ws / "rec" / "run.json").write_text(json.dumps({"record": "run.ipynb"}))
    (ws / "recap").mkdir()
    (ws / "recap" / "manifest.json").write_text(json.dumps({"shards": [], "config": {"captioners": []}}))
    (ws / "imgs").mkdir()
    shutil.copy(REPO / "data" / "geneval" / "LICENSE", ws / "imgs" / "not-an-image.txt")
    from PIL import Image

    Image.new("RGB", (8, 8)).save(ws / "imgs" / "a.png")
    meta = ws / "meta.jsonl"
    meta.write_text("".join(SUITE.read_text().splitlines(keepends=True)[:2]))
    render_suite(meta, ws / "suite", per_prompt=1, progress=False)
    return ws


def _owner(target: str):
    """``("pkg.module.Class.method")`` -> (the object holding the last name, that name)."""
    import importlib

    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:-1]:
            obj = getattr(obj, attr)
        return obj, parts[-1]
    raise ModuleNotFoundError(target)


def _snapshot(*roots: Path) -> dict:
    return {
        str(p): (p.is_dir(), p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
        for root in roots
        if root.exists()
        for p in [root, *root.rglob("*")]
    }


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case, inputs, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("LENS_CACHE", str(cache))
    command = case.argv[0]
    for target in [*EXPENSIVE.get(command, []), *case.uses]:
        owner, name = _owner(target)

        def started(*args, _what=target, **kwargs):
            raise AssertionError(f"{case.id}: {_what} ran before the bad input was refused")

        monkeypatch.setattr(owner, name, started)
    argv = [a.replace("{ws}", str(inputs)) for a in case.argv]
    before = _snapshot(inputs, cache)
    try:
        code = main(argv)
    except SystemExit as exit:  # usage errors, as argparse reports them
        code = exit.code
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code}; stderr: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    for fragment in case.says:
        assert fragment.replace("{ws}", str(inputs)) in lines[0], f"{fragment!r} not in: {lines[0]}"
    assert lines[0].startswith(f"lens {command}")
    assert "Traceback" not in out + err
    assert _snapshot(inputs, cache) == before, "the refused command wrote or removed files"


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    from lenslib.train.config import ConfigError

    monkeypatch.setenv("LENS_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match="optim.lr=nan"):
        main(["--debug", "train", "optim.lr=nan"])
    with pytest.raises(ConfigError, match="model.preset"):
        main(["train", "model.preset=nosuch", "--debug"])  # --debug may stand anywhere
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["export", str(tmp_path / "nope"), str(tmp_path / "out"), "--debug"])


def test_overrides_may_stand_before_between_and_after_options(capsys):
    import yaml

    from lenslib.train.cli import main_train

    for argv in (
        ["train", "--config", "cpu-tiny", "run.steps=300", "--print-config", "run.seed=7"],
        ["train", "run.steps=300", "run.seed=7", "--config", "cpu-tiny", "--print-config"],
        ["train", "--print-config", "run.steps=300", "--nproc-per-node", "1", "run.seed=7"],
    ):
        assert main(argv) == 0, argv
        cfg = yaml.safe_load(capsys.readouterr().out)
        assert (cfg["run"]["steps"], cfg["run"]["seed"]) == (300, 7), argv
    # the worker entry point (python -m lenslib.train, what torchrun starts) reads them the same way
    assert main_train(["run.steps=300", "--config", "cpu-tiny", "run.seed=7", "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert (cfg["run"]["steps"], cfg["run"]["seed"]) == (300, 7)
    # a later override wins, wherever it stands
    assert main(["train", "run.steps=300", "--print-config", "run.steps=400"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["run"]["steps"] == 400
