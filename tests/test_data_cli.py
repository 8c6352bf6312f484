"""`lens recaption` and `lens data ...` through the real CLI entry point."""

import json

from data_inputs import EXPECTED, make_inputs

from lenslib.cli import main
from lenslib.recaption.local_server import LocalChatServer


def test_lens_recaption_and_report(tmp_path, monkeypatch, capsys):
    make_inputs(tmp_path / "in")
    monkeypatch.setenv("MY_KEY", "abc")
    with LocalChatServer(api_key="abc") as srv:
        rc = main(
            [
                "recaption",
                "--input",
                str(tmp_path / "in"),
                "--output",
                str(tmp_path / "out"),
                "--captioner",
                "openai:gpt-4.1",
                "--captioner",
                "brief=openai:gpt-4.1-mini",
                "--base-url",
                srv.base_url,
                "--api-key-env",
                "MY_KEY",
                "--price-in",
                "2",
                "--price-out",
                "8",
                "--quiet",
            ]
        )
    assert rc == 0
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["n_out"] == EXPECTED["n_out"] and m["caption_kinds"] == ["alt_text", "brief", "detailed"]
    assert srv.n_requests == 2 * EXPECTED["n_out"]
    out = capsys.readouterr().out
    assert "near_dup" in out and f"{EXPECTED['n_out']} of {EXPECTED['n_in']} images kept" in out
    assert main(["data", "report", str(tmp_path / "out")]) == 0
    assert "SKIPPED" in capsys.readouterr().out
    assert (
        main(
            [
                "data",
                "cache",
                "--input",
                str(tmp_path / "out"),
                "--output",
                str(tmp_path / "cache"),
                "--text-encoder",
                "tiny-gpt-oss",
                "--codec",
                "pixel:16",
                "--kinds",
                "detailed,brief",
            ]
        )
        == 0
    )
    from lenslib.data.feature_cache import FeatureCache

    cache = FeatureCache(tmp_path / "cache", codec="pixel:p16")
    assert len(cache) == EXPECTED["n_out"] and cache[0]["latent"].shape == (32 * 32, 3 * 16 * 16)
    assert cache.doc["captioners"] == ["openai:gpt-4.1", "brief=openai:gpt-4.1-mini"]
    assert (
        main(
            [
                "data",
                "cache",
                "--input",
                str(tmp_path / "out"),
                "--output",
                str(tmp_path / "cache32"),
                "--text-encoder",
                "tiny-gpt-oss",
                "--codec",
                "pixel:8",
                "--square",
                "32",
            ]
        )
        == 0
    )
    assert FeatureCache(tmp_path / "cache32")[0]["latent"].shape == (16, 3 * 8 * 8)


def test_lens_data_buckets_and_errors(tmp_path, capsys):
    assert main(["data", "buckets"]) == 0
    out = capsys.readouterr().out
    assert "352     704" in out and "1472     736" in out and len(out.strip().splitlines()) == 28
    assert main(["recaption", "--input", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert main(["data", "report", str(tmp_path / "nothing")]) == 2
