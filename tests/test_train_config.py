"""The typed run config: shipped configs carry the paper's values; bad input is named before any work."""

from __future__ import annotations

import pytest
import yaml

from lenslib.train.config import (
    ConfigError,
    TrainConfig,
    available_configs,
    bucket_batch,
    bucket_table,
    from_dict,
    load_config,
    to_dict,
    to_yaml,
)


def test_shipped_configs_load_by_name():
    assert {"cpu-tiny", "lens-toy", "lens-stage1", "lens-stage2"} <= set(available_configs())
    for name in available_configs():
        cfg = load_config(name)
        assert isinstance(cfg, TrainConfig) and cfg.run.name == name


def test_stage1_is_the_paper_recipe():
    c = load_config("lens-stage1", world_size=128)  # the paper's 128 A100s
    assert c.run.steps == 400_000
    assert c.data.image_size == 512 and c.data.codec == "latent"
    assert c.optim.lr == 2e-4 and c.optim.betas == (0.9, 0.999) and c.optim.grad_clip == 1.0
    assert c.optim.global_batch == 3072 and c.grad_accum(128) == 1
    assert c.flow.mu_schedule == "constant" and c.flow.mu == 1.06
    assert c.dist.precision == "bf16" and c.model.activation_checkpointing and c.model.preset == "lens"


def test_stage2_is_the_paper_recipe():
    c = load_config("lens-stage2", world_size=128)
    assert c.run.steps == 400_000 and c.optim.lr == 1e-4 and c.optim.global_batch is None
    assert c.flow.mu_schedule == "tokens"
    table = bucket_table(c)
    assert len(table) == 27  # 3 base areas x 9 aspect ratios
    assert {(b.width, b.height) for b in table} >= {
        (352, 704),
        (704, 352),
        (544, 1088),
        (736, 1472),
        (1472, 736),
    }
    assert {bucket_batch(c, b) for b in table if b.base == 512} == {24}
    assert {bucket_batch(c, b) for b in table if b.base == 768} == {10}
    assert {bucket_batch(c, b) for b in table if b.base == 1024} == {6}
    # inherited unchanged from stage 1
    assert c.optim.betas == (0.9, 0.999) and c.optim.grad_clip == 1.0 and c.dist.precision == "bf16"


def test_dotted_overrides_are_typed():
    c = load_config(
        "cpu-tiny",
        [
            "optim.lr=3e-4",
            "run.steps=7",
            "model.kwargs.num_layers=2",
            "ema.enabled=false",
            "optim.betas=[0.8, 0.95]",
            "run.out_dir=/tmp/x",
        ],
    )
    assert c.optim.lr == pytest.approx(3e-4) and isinstance(c.optim.lr, float)
    assert c.run.steps == 7 and c.model.kwargs == {
        "num_attention_heads": 2,
        "inner_dim": 64,
        "pixel_stem": 16,
        "pixel_head": 32,
        "num_layers": 2,
    }
    assert c.ema.enabled is False
    assert c.optim.betas == (0.8, 0.95) and c.run.out_dir == "/tmp/x"


def test_yaml_round_trip(tmp_path):
    c = load_config("lens-stage2")
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(c))
    assert load_config(str(path)) == c
    assert from_dict(TrainConfig, yaml.safe_load(to_yaml(c))) == c
    assert to_dict(c)["data"]["buckets"]["batches"] == [24, 10, 6]


def test_unknown_key_names_it_and_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"optim\.lrr.*Did you mean optim\.lr"):
        load_config("cpu-tiny", ["optim.lrr=1e-3"])
    with pytest.raises(ConfigError, match=r"unknown config key optimizer"):
        load_config("cpu-tiny", ["optimizer.lr=1e-3"])


@pytest.mark.parametrize(
    "item,key",
    [
        ("run.steps=abc", "run.steps"),
        ("optim.lr=fast", "optim.lr"),
        ("ema.enabled=maybe", "ema.enabled"),
        ("optim.betas=[0.9]", "optim.betas"),
        ("data.buckets=5", "data.buckets"),
    ],
)
def test_wrong_types_name_the_key(item, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("cpu-tiny", [item])


def test_batch_arithmetic_is_checked_against_the_world_size():
    load_config("cpu-tiny", ["optim.global_batch=32", "optim.micro_batch=8"], world_size=2)  # 32 = 2 x 8 x 2
    with pytest.raises(
        ConfigError, match=r"optim\.global_batch=30 is not divisible by world size 4 × optim\.micro_batch=5"
    ):
        load_config("cpu-tiny", ["optim.global_batch=30", "optim.micro_batch=5"], world_size=4)
    with pytest.raises(ConfigError, match=r"not divisible by optim\.micro_batch"):
        load_config("cpu-tiny", ["optim.global_batch=30", "optim.micro_batch=4"])


@pytest.mark.parametrize(
    "items,pattern",
    [
        (["data.buckets={bases: [32], batches: [4]}"], r"data\.buckets and optim\.global_batch are both set"),
        (["data.buckets={bases: [32, 48], batches: [4]}", "optim.global_batch=null"], r"equal length"),
        (["data.image_size=30"], r"not divisible by data\.patch=4"),
        (["flow.caption_dropout=1.0"], r"flow\.caption_dropout"),
        (["dist.strategy=zero3"], r"dist\.strategy='zero3' is not one of"),
        (["flow.prediction=epsilon"], r"flow\.prediction='epsilon' is not one of"),
        (["optim.lr=0"], r"optim\.lr must be > 0"),
        (["data.num_workers=-1"], r"data\.num_workers must be >= 0"),
        (["optim.global_batch=null"], r"optim\.global_batch is null"),
        (["optim.decay_ratio=1.5"], r"optim\.decay_ratio and optim\.min_lr_factor are fractions"),
        (["optim.decay_type=step"], r"optim\.decay_type='step' is not one of"),
    ],
)
def test_impossible_combinations(items, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config("cpu-tiny", items)


def test_inputs_are_required_for_training_only():
    from lenslib.train.config import validate

    cfg = load_config("lens-stage1")  # loads: the paths are the user's to fill in
    with pytest.raises(ConfigError, match=r"data\.path"):
        validate(cfg, for_training=True)
    cfg = load_config("lens-stage1", ["data.path=/x/{0..9}.tar"])
    with pytest.raises(ConfigError, match=r"data\.vae"):
        validate(cfg, for_training=True)
    cfg = load_config("lens-stage1", ["data.path=/x/{0..9}.tar", "data.vae=/lens/vae"])
    with pytest.raises(ConfigError, match=r"text_encoder_kwargs\.path"):
        validate(cfg, for_training=True)


def test_strategy_none_with_many_processes():
    with pytest.raises(ConfigError, match=r"dist\.strategy='none' but the job has 4 processes"):
        load_config(
            "cpu-tiny", ["dist.strategy=none", "optim.global_batch=64", "optim.micro_batch=16"], world_size=4
        )


def test_missing_config_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="cpu-tiny"):
        load_config("no-such-config")


def test_cli_reports_config_errors_with_exit_code_2(capsys):
    from lenslib.cli import main

    assert main(["train", "--config", "cpu-tiny", "optim.lr=fast"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr" in err and "expected a number" in err
    assert main(["train", "--config", "cpu-tiny", "--print-config", "optim.lr=0.01"]) == 0
    assert "lr: 0.01" in capsys.readouterr().out


def test_bad_model_keys_fail_before_data_and_encoders_load(tmp_path):
    from lenslib.train import train

    with pytest.raises(
        ConfigError, match=r"model\.preset / model\.kwargs: unknown config keys \['num_blocks'\]"
    ):
        train("cpu-tiny", ["model.kwargs.num_blocks=2", f"run.out_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"unknown model preset 'cpu-huge'"):
        train("cpu-tiny", ["model.preset=cpu-huge", f"run.out_dir={tmp_path}"])


@pytest.mark.parametrize("kind,mid", [("linear", 0.5), ("sqrt", 1 - 0.5**0.5), ("cosine", 0.5)])
def test_lr_schedule_warmup_stable_decay(kind, mid):
    from lenslib.train.trainer import lr_at

    cfg = load_config(
        "cpu-tiny",
        [
            "run.steps=100",
            "optim.lr=1.0",
            "optim.warmup_steps=10",
            "optim.decay_ratio=0.2",
            f"optim.decay_type={kind}",
            "optim.min_lr_factor=0.1",
        ],
    )
    lrs = [lr_at(cfg, s) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(
        1.0
    )  # warmup reaches the LR at its last step
    assert lrs[10:80] == [1.0] * 70  # stable: the paper's constant LR
    assert lrs[89] == pytest.approx(0.1 + 0.9 * mid)  # half-way through the 20 decay steps
    assert lrs[99] == pytest.approx(0.1)  # ends at min_lr_factor
    assert all(a >= b for a, b in zip(lrs[80:], lrs[81:]))
    short = load_config(
        "cpu-tiny",
        [
            "run.steps=10",
            "optim.lr=1.0",
            "optim.warmup_steps=6",
            "optim.decay_ratio=0.8",
            "optim.min_lr_factor=0.0",
            "optim.decay_type=linear",
        ],
    )
    assert [lr_at(short, s) for s in range(10)] == pytest.approx(
        [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1, 0.75, 0.5, 0.25, 0]
    )
    constant = load_config(
        "cpu-tiny", ["run.steps=100", "optim.lr=1.0", "optim.warmup_steps=0", "optim.decay_ratio=0"]
    )
    assert [lr_at(constant, s) for s in range(100)] == [1.0] * 100
