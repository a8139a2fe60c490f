"""The weights registry: locating, hashing, refusing, downloading (from file:// URLs) and the `loopnav weights` CLI."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from metrics_standins import isolate_caches
from typer.testing import CliRunner

import published.weights  # noqa: F401  (the published models' files are in the registry, as the CLI has them)
from loopnav.cli import app
from loopnav_bench.metrics import FVD, MetricUnavailable, load_frame_metric, weights, weights_status
from loopnav_bench.metrics.weights import WeightFile, WeightsDownloadError

runner = CliRunner()


@pytest.fixture(autouse=True)
def _caches(monkeypatch, tmp_path):
    isolate_caches(monkeypatch, tmp_path / "caches")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _entry(name: str, **fields) -> WeightFile:
    base = dict(id=f"toy/{name}", metric="toy", variants=("v",), root="loopnav", candidates=(f"toy/{name}",),
                url="file:///nonexistent")
    return WeightFile(**{**base, **fields})


def test_missing_weights_name_the_file_the_place_and_the_command(tmp_path):
    with pytest.raises(MetricUnavailable) as lpips_err:
        load_frame_metric("lpips")
    assert str(tmp_path / "caches/torch/hub/checkpoints/alexnet-owt-7be5be79.pth") in lpips_err.value.reason
    assert "loopnav weights download lpips" in lpips_err.value.reason
    with pytest.raises(MetricUnavailable) as fvd_err:
        FVD()
    assert str(tmp_path / "caches/loopnav/fvd/i3d_torchscript.pt") in fvd_err.value.reason
    assert "loopnav weights download fvd" in fvd_err.value.reason
    with pytest.raises(MetricUnavailable) as dreamsim_err:
        load_frame_metric("dreamsim")
    for needed in ("dino_vitb16_pretrain.pth", "ensemble_lora/adapter_config.json",
                   "facebookresearch_dino_main/hubconf.py", "checkpoints/dino_vitbase16_pretrain.pth"):
        assert needed in dreamsim_err.value.reason


def test_status_of_the_real_registry_before_anything_is_placed():
    status = weights_status()
    assert status["lpips/alexnet"]["status"] == "missing" and status["fvd/i3d"]["status"] == "missing"
    # the linear heads ship in the lpips wheel and their sha256 is pinned: verified without any download
    assert status["lpips/linear-alex"]["status"] == "verified" and status["lpips/linear-alex"]["verified"]
    assert {row["check"] for row in status.values()} == {"sha256", "sha256-prefix", "none", "recorded"}
    assert all(row["status"] == "missing" for row in status.values() if row["check"] == "recorded")
    assert weights.overall(status.values()) == "incomplete"
    # by default only what the default variants need; every variant on request
    assert "dreamsim/ensemble/lora-config" in status and "dreamsim/clip_vitb32/lora-config" not in status
    assert "dreamsim/clip_vitb32/lora-config" in weights_status(["dreamsim"], all_variants=True)


def test_verification_levels_and_the_opt_in(monkeypatch, tmp_path):
    good, bad = b"real weights", b"something else"
    root = tmp_path / "caches/loopnav/toy"
    root.mkdir(parents=True)
    for name, data in (("good", good), ("bad", bad), ("prefixed", good), ("unpinned", bad)):
        (root / name).write_bytes(data)
    entries = (_entry("good", sha256=_sha(good), size=len(good)), _entry("bad", sha256=_sha(good)),
               _entry("prefixed", sha256_prefix=_sha(good)[:8]), _entry("unpinned"))
    monkeypatch.setattr(weights, "REGISTRY", entries)
    status = weights_status()
    assert [status[e.id]["status"] for e in entries] == ["verified", "mismatch", "verified", "unverifiable"]
    assert status["toy/bad"]["sha256"] == _sha(bad)

    with pytest.raises(MetricUnavailable) as err:
        weights.require("toy", "v")
    assert "toy/bad" in err.value.reason and "LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS=1" in err.value.reason
    assert "no upstream sha256" in err.value.reason and "toy/good" not in err.value.reason

    monkeypatch.setenv("LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS", "1")
    paths, info = weights.require("toy", "v")
    assert paths["toy/good"] == root / "good" and info["verified"] is False
    assert ("toy/bad: mismatch" in info["unverified_reason"]
            and "toy/unpinned: unverifiable" in info["unverified_reason"])

    monkeypatch.setattr(weights, "REGISTRY", entries[:1] + entries[2:3])
    monkeypatch.delenv("LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS")
    assert weights.require("toy", "v")[1]["verified"] is True


def test_download_fetches_files_and_archive_members_atomically_and_verifies(monkeypatch, tmp_path):
    source = tmp_path / "upstream"
    source.mkdir()
    direct = b"direct file contents"
    (source / "direct.bin").write_bytes(direct)
    with zipfile.ZipFile(source / "repo.zip", "w") as zf:  # a GitHub zipball wraps the repo in one top folder
        zf.writestr("owner-repo-abc123/hubconf.py", "hub = 1\n")
        zf.writestr("owner-repo-abc123/lora/adapter_model.bin", b"lora")
        zf.writestr("../../escape.txt", "never extracted")
    entries = (
        _entry("direct", url=(source / "direct.bin").as_uri(), sha256=_sha(direct)),
        _entry("hubconf", candidates=("repo/hubconf.py",), url=(source / "repo.zip").as_uri(),
               archive_member="*/hubconf.py"),
        _entry("adapter", candidates=("lora/adapter_model.safetensors", "lora/adapter_model.bin"),
               url=(source / "repo.zip").as_uri(), archive_member="*/lora/adapter_model.*"),
    )
    monkeypatch.setattr(weights, "REGISTRY", entries)
    seen = []
    rows = weights.download("toy", "v", progress=lambda label, done, total: seen.append((label, done, total)))
    cache = tmp_path / "caches/loopnav"
    assert (cache / "toy/direct").read_bytes() == direct and rows["toy/direct"]["status"] == "verified"
    assert (cache / "repo/hubconf.py").read_text() == "hub = 1\n"
    assert ((cache / "lora/adapter_model.bin").read_bytes() == b"lora"
            and rows["toy/adapter"]["status"] == "unverifiable")
    assert not list(tmp_path.rglob("escape.txt")) and not list(cache.rglob("*.tmp"))
    assert seen and seen[-1][1] == seen[-1][2]

    (source / "direct.bin").write_bytes(b"tampered upstream")
    with pytest.raises(WeightsDownloadError, match="toy/direct mismatch"):
        weights.download("toy", "v", force=True)


def test_download_offline_fails_at_once(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("must not touch the network when offline")

    monkeypatch.setattr(weights.urllib.request, "urlopen", no_network)
    monkeypatch.setenv("LOOPNAV_OFFLINE", "1")
    with pytest.raises(WeightsDownloadError, match="offline.*download.pytorch.org"):
        weights.download("lpips")
    result = runner.invoke(app, ["weights", "download", "fvd"])
    assert result.exit_code == 2 and "offline" in result.output


def test_download_unreachable_url_names_it(monkeypatch, tmp_path):
    monkeypatch.setattr(weights, "REGISTRY", (_entry("gone", url=(tmp_path / "missing.bin").as_uri()),))
    with pytest.raises(WeightsDownloadError, match="cannot download file://.*missing.bin"):
        weights.download("toy", "v")
    assert not (tmp_path / "caches/loopnav/toy/gone").exists()


def test_cli_check_exit_codes_and_json(monkeypatch, tmp_path):
    result = runner.invoke(app, ["weights", "check", "lpips"])
    assert result.exit_code == 1 and "missing" in result.output and "verified" in result.output
    data = b"x"
    (tmp_path / "caches/loopnav/toy").mkdir(parents=True)
    (tmp_path / "caches/loopnav/toy/a").write_bytes(data)
    (tmp_path / "caches/loopnav/toy/b").write_bytes(data)
    monkeypatch.setattr(weights, "REGISTRY", (_entry("a", sha256=_sha(data)),))
    assert runner.invoke(app, ["weights", "check"]).exit_code == 0
    monkeypatch.setattr(weights, "REGISTRY", (_entry("a", sha256=_sha(data)), _entry("b")))
    result = runner.invoke(app, ["weights", "check", "--json"])
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert (report["overall"] == "unverifiable"
            and [r["status"] for r in report["files"]] == ["verified", "unverifiable"])
    assert runner.invoke(app, ["weights", "check", "nope"]).exit_code == 2


def test_cli_path_and_list(tmp_path):
    result = runner.invoke(app, ["weights", "path", "fvd"])
    assert result.exit_code == 0 and result.stdout.strip() == str(tmp_path / "caches/loopnav/fvd/i3d_torchscript.pt")
    listing = runner.invoke(app, ["weights", "list"], env={"COLUMNS": "400"})
    assert (listing.exit_code == 0 and "alexnet-owt-7be5be79.pth" in listing.output
            and "not established" in listing.output)


def test_registry_entries_are_consistent():
    ids = [entry.id for entry in weights.REGISTRY]
    assert len(ids) == len(set(ids))
    for entry in weights.REGISTRY:
        assert entry.root in weights.ROOTS and entry.url.startswith("https://")
        assert not (entry.sha256 and entry.sha256_prefix)
        assert entry.sha256 is None or len(entry.sha256) == 64
        assert all(not Path(c).is_absolute() and ".." not in Path(c).parts for c in entry.candidates)
    for metric, variant in weights.DEFAULT_VARIANTS.items():
        assert weights.files_for(metric, variant)
    with pytest.raises(ValueError, match="known variants"):
        weights.files_for("dreamsim", "no-such-variant")
