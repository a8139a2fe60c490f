"""`loopnav weights download / check / convert` for the published models, against a fake Hugging Face Hub.

The fake replaces exactly what loopnav_bench/metrics/weights.py calls (huggingface_hub.get_hf_file_metadata and
hf_hub_download) with files served from memory, so no network is touched.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import httpx2
import huggingface_hub
import pytest
import torch
from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError
from metrics_standins import isolate_caches
from typer.testing import CliRunner

import published.weights  # noqa: F401  (registers the published models' files)
from loopnav.cli import app
from loopnav_bench.metrics import weights

runner = CliRunner()


@pytest.fixture(autouse=True)
def _caches(monkeypatch, tmp_path):
    isolate_caches(monkeypatch, tmp_path / "caches")


class FakeHub:
    """Repos as {repo: {file: bytes}}; `gated` repos refuse everyone; `lfs_sha256` overrides a file's ETag."""

    def __init__(self, repos: dict[str, dict[str, bytes]], gated: tuple[str, ...] = (),
                 lfs_sha256: dict[str, str] | None = None):
        self.repos, self.gated, self.lfs_sha256 = repos, gated, lfs_sha256 or {}
        self.downloads: list[tuple[str, str]] = []

    def _file(self, repo: str, name: str) -> bytes:
        url = f"https://huggingface.co/{repo}/resolve/main/{name}"
        response = httpx2.Response(403 if repo in self.gated else 404, request=httpx2.Request("GET", url))
        if repo in self.gated:
            raise GatedRepoError(f"{repo} is gated", response=response)
        if repo not in self.repos:
            raise RepositoryNotFoundError(f"{repo} not found", response=response)
        if name not in self.repos[repo]:
            raise EntryNotFoundError(f"{name} not in {repo}")
        return self.repos[repo][name]

    def get_hf_file_metadata(self, url: str, **kwargs):
        repo, name = url.removeprefix("https://huggingface.co/").split("/resolve/main/")
        data = self._file(repo, name)
        lfs = name.endswith((".safetensors", ".ckpt", ".tar"))  # small text files are plain git blobs (sha1 ETag)
        etag = self.lfs_sha256.get(name, hashlib.sha256(data).hexdigest()) if lfs else hashlib.sha1(data).hexdigest()
        return SimpleNamespace(etag=etag, size=len(data), commit_hash="c0ffee", location=url)

    def hf_hub_download(self, repo_id: str, filename: str, *, local_dir, **kwargs) -> str:
        data = self._file(repo_id, filename)
        self.downloads.append((repo_id, filename))
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return str(path)


@pytest.fixture
def hub(monkeypatch):
    def install(*args, **kwargs) -> FakeHub:
        fake = FakeHub(*args, **kwargs)
        monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", fake.get_hf_file_metadata)
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.hf_hub_download)
        return fake
    return install


def _pickled(tmp_path: Path, key: str) -> bytes:
    path = tmp_path / "made.pth.tar"
    torch.save({key: {"a.weight": torch.arange(6.0).view(2, 3), "b": torch.ones(2)}, "epoch": 3}, path)
    return path.read_bytes()


def test_oasis_downloads_verified_against_the_hub_and_records_it(hub):
    fake = hub({"Etched/oasis-500m": {"oasis500m.safetensors": b"dit", "vit-l-20.safetensors": b"vae"}})
    result = runner.invoke(app, ["weights", "download", "oasis"])
    assert result.exit_code == 0, result.output
    assert sorted(fake.downloads) == [("Etched/oasis-500m", "oasis500m.safetensors"),
                                      ("Etched/oasis-500m", "vit-l-20.safetensors")]
    entry = next(e for e in weights.REGISTRY if e.id == "oasis/dit")
    assert entry.path().read_bytes() == b"dit"
    record = json.loads(entry.record_path().read_text())
    assert record["sha256"] == hashlib.sha256(b"dit").hexdigest() == record["hub_sha256"] and record["verified"]
    check = runner.invoke(app, ["weights", "check", "oasis", "--json"])
    assert check.exit_code == 0 and json.loads(check.stdout)["overall"] == "verified"
    entry.path().write_bytes(b"changed")  # a file that no longer matches its record
    check = runner.invoke(app, ["weights", "check", "oasis", "--json"])
    assert check.exit_code == 1 and {r["id"]: r["status"] for r in json.loads(check.stdout)["files"]}["oasis/dit"] \
        == "mismatch"


def test_a_file_that_differs_from_the_hubs_sha256_is_refused(hub):
    hub({"Etched/oasis-500m": {"oasis500m.safetensors": b"dit", "vit-l-20.safetensors": b"vae"}},
        lfs_sha256={"oasis500m.safetensors": "0" * 64})
    result = runner.invoke(app, ["weights", "download", "oasis"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "is not the Hub's" in result.output
    assert not next(e for e in weights.REGISTRY if e.id == "oasis/dit").path().exists()


def test_gated_nwm_says_what_to_do(hub):
    hub({"stabilityai/sd-vae-ft-ema": {"config.json": b"{}", "diffusion_pytorch_model.safetensors": b"vae"}},
        gated=("facebook/nwm",))
    result = runner.invoke(app, ["weights", "download", "nwm"], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "--file NAME" in result.output  # upstream publishes no file name
    result = runner.invoke(app, ["weights", "download", "nwm", "--file", "cdit_xl.pth.tar"], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert "facebook/nwm is gated: request access at https://huggingface.co/facebook/nwm" in result.output
    assert "HF_TOKEN" in result.output


def test_missing_repo_and_file_and_offline_are_one_clear_line(hub, monkeypatch):
    hub({"Etched/oasis-500m": {"oasis500m.safetensors": b"dit"}})
    result = runner.invoke(app, ["weights", "download", "oasis"], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "has no file 'vit-l-20.safetensors'" in result.output
    hub({})
    result = runner.invoke(app, ["weights", "download", "worldmem"], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "zeqixiao/worldmem_checkpoints: no such repo" in result.output
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["weights", "download", "worldmem"], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "offline" in result.output


def test_worldmem_download_then_convert_once_to_safetensors(hub, tmp_path):
    from safetensors.torch import load_file

    payload = _pickled(tmp_path, "state_dict")
    hub({"zeqixiao/worldmem_checkpoints": {"diffusion_only.ckpt": payload, "vae_only.ckpt": payload}})
    assert runner.invoke(app, ["weights", "download", "worldmem"]).exit_code == 0
    result = runner.invoke(app, ["weights", "convert", "worldmem"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.output.count("warning: unpickling") == 2
    converted = next(e for e in weights.REGISTRY if e.id == "worldmem/diffusion-safetensors").path()
    tensors = load_file(str(converted))
    assert torch.equal(tensors["a.weight"], torch.arange(6.0).view(2, 3)) and set(tensors) == {"a.weight", "b"}
    rows = {r["id"]: r for r in weights.weights_status(["worldmem"]).values()}
    assert rows["worldmem/diffusion-safetensors"]["status"] == "verified"  # converted from a verified download
    assert rows["worldmem/diffusion-safetensors"]["record"]["source_sha256"] == hashlib.sha256(payload).hexdigest()


class Foreign:  # any class the restricted unpickler does not know: unpickling it could run its code
    pass


def test_convert_refuses_what_is_not_plain_tensors(tmp_path):
    import argparse

    foreign = tmp_path / "foreign.pth.tar"
    torch.save({"ema": {"w": torch.zeros(1)}, "extra": Foreign()}, foreign)
    result = runner.invoke(app, ["weights", "convert", "nwm", str(foreign)], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "not loadable as plain tensors" in result.output
    as_trained = tmp_path / "0100000.pth.tar"  # NWM's train.py layout: its argparse args beside the weights
    torch.save({"ema": {"w": torch.zeros(1)}, "model": {"w": torch.ones(1)}, "args": argparse.Namespace(lr=1),
                "epoch": 3}, as_trained)
    result = runner.invoke(app, ["weights", "convert", "nwm", str(as_trained)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    plain = tmp_path / "plain.pth.tar"
    torch.save({"model": {"w": torch.zeros(1)}}, plain)
    result = runner.invoke(app, ["weights", "convert", "nwm", str(plain)], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "has no 'ema' entry" in result.output
    good = tmp_path / "good.pth.tar"
    torch.save({"ema": {"w": torch.ones(2)}}, good)
    result = runner.invoke(app, ["weights", "convert", "nwm", str(good)], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    row = weights.weights_status(["nwm"])["nwm/cdit-safetensors"]
    assert row["status"] == "unverifiable"  # converted from a file loopnav did not download
    assert runner.invoke(app, ["weights", "convert", "oasis"]).exit_code == 2  # safetensors already


def test_models_lists_the_licences():
    result = runner.invoke(app, ["models"], env={"COLUMNS": "300"})
    assert result.exit_code == 0 and "CC-BY-NC-4.0" in result.output


def test_check_covers_the_models_only_when_named():
    everything = json.loads(runner.invoke(app, ["weights", "check", "--json"]).stdout)["files"]
    assert everything and not any(row["id"].startswith(("nwm/", "oasis/", "worldmem/")) for row in everything)
    named = runner.invoke(app, ["weights", "check", "nwm", "worldmem", "--json"])
    assert named.exit_code == 1  # nothing downloaded here
    assert {row["id"].split("/")[0] for row in json.loads(named.stdout)["files"]} == {"nwm", "worldmem"}
