"""`loopnav leaderboard push`: one commit to a Hub dataset repo, checked against a filesystem-backed fake `HfApi`.

The fake implements exactly the methods `leaderboard.hub.push` calls (create_repo, repo_info, list_repo_files,
create_commit) and applies `CommitOperationAdd`s to a folder, so the resulting repo can be loaded back with
`datasets` through the card's configs. No network is used anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
from huggingface_hub import CommitOperationAdd
from test_leaderboard import results_tree, write_run
from typer.testing import CliRunner

from leaderboard.hub import PushError, push, report_files
from leaderboard.results import load_runs
from loopnav.cli import app
from loopnav_bench.fileio import OWNED

FAKE_TOKEN = "hf_FAKEtokenNEVERtoBEwritten0123456789"
REPO = "loopnav-org/loopnav-results"


class FakeHfApi:
    """A Hub with one dataset repo per folder under `root`; every commit bumps a counter used as the head sha."""

    def __init__(self, root: Path, fail_commit: Exception | None = None):
        self.root, self.fail_commit = root, fail_commit
        self.heads: dict[str, int] = {}
        self.calls: list[tuple[str, dict]] = []

    def repo_dir(self, repo_id: str) -> Path:
        return self.root / repo_id

    def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False, **kwargs):
        self.calls.append(("create_repo", {"repo_type": repo_type, "private": private, "exist_ok": exist_ok}))
        assert repo_type == "dataset"
        if repo_id in self.heads and not exist_ok:
            raise FileExistsError(repo_id)
        self.heads.setdefault(repo_id, 0)
        self.repo_dir(repo_id).mkdir(parents=True, exist_ok=True)
        return f"https://huggingface.co/datasets/{repo_id}"

    def repo_info(self, repo_id, *, repo_type=None, **kwargs):
        return SimpleNamespace(sha=f"sha{self.heads[repo_id]}")

    def list_repo_files(self, repo_id, *, repo_type=None, revision=None, **kwargs):
        assert revision == f"sha{self.heads[repo_id]}"
        base = self.repo_dir(repo_id)
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())

    def create_commit(self, repo_id, operations, *, commit_message, repo_type=None, parent_commit=None,
                      create_pr=None, **kwargs):
        self.calls.append(("create_commit", {"n": len(operations), "create_pr": create_pr, "message": commit_message}))
        if self.fail_commit is not None:
            raise self.fail_commit
        if parent_commit != f"sha{self.heads[repo_id]}":
            raise RuntimeError("parent commit is not the head")
        for op in operations:
            assert isinstance(op, CommitOperationAdd)
            target = self.repo_dir(repo_id) / op.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(op.path_or_fileobj)
        self.heads[repo_id] += 1
        url = f"https://huggingface.co/datasets/{repo_id}/commit/sha{self.heads[repo_id]}"
        return SimpleNamespace(commit_url=url, pr_url=f"{url}/pr" if create_pr else None)


@pytest.fixture
def token(monkeypatch) -> str:
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    return FAKE_TOKEN


def _files(root: Path) -> dict[str, bytes]:
    """Every file under root but a dry run's ownership record (beside the tree: what loopnav wrote there)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p != root / OWNED}


def _load(repo_dir: Path, config: str, split: str, cache: Path):
    return datasets.load_dataset(str(repo_dir), config, split=split, cache_dir=str(cache))


def test_push_is_one_commit_that_loads_back_with_datasets(tmp_path, token):
    runs = load_runs(results_tree(tmp_path / "results"))
    api = FakeHfApi(tmp_path / "hub")
    info = push(runs, REPO, api=api, private=True)
    assert [name for name, _ in api.calls] == ["create_repo", "create_commit"]
    assert api.calls[0][1] == {"repo_type": "dataset", "private": True, "exist_ok": True}
    assert info.commit_url.endswith("sha1") and info.pr_url is None
    repo = api.repo_dir(REPO)
    files = _files(repo)
    assert sorted(files) == sorted(["README.md", *(f"{r.model}/{p.name}" for r in runs
                                                   for p in (r.results_path, r.samples_path))])
    latest = _load(repo, "alpha", "latest", tmp_path / "cache")
    newest_alpha = [r for r in runs if r.model == "alpha"][-1]
    assert sorted(latest["id"]) == sorted(row["id"] for row in newest_alpha.rows)
    older = _load(repo, "alpha", "2026_01_01T09_00_00_000001", tmp_path / "cache")
    assert older["metrics"][0]["ssim"] != latest["metrics"][0]["ssim"]
    # the per-trajectory rows also load as plain JSON files
    rows = datasets.load_dataset("json", data_files=str(repo / "beta" / newest_alpha.samples_path.name.replace(
        newest_alpha.timestamp, runs[-2].timestamp)), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(rows) == len(runs[-2].rows) and rows[0]["metrics"]["lpips"]
    assert all(FAKE_TOKEN.encode() not in content for content in files.values())


def test_second_push_keeps_existing_configs_in_the_card(tmp_path, token):
    api = FakeHfApi(tmp_path / "hub")
    first, second = tmp_path / "first", tmp_path / "second"
    write_run(first, "beta", "2026-01-02T11-00-00.000001", 0.9)
    write_run(second, "alpha", "2026-01-03T10-00-00.000001", 0.7)
    push(load_runs(first), REPO, api=api)
    push(load_runs(second), REPO, api=api, create_pr=True)
    card = (api.repo_dir(REPO) / "README.md").read_text()
    assert "config_name: alpha" in card and "config_name: beta" in card
    assert len(_load(api.repo_dir(REPO), "beta", "latest", tmp_path / "cache")) == 16


def test_incomplete_runs_are_refused_before_touching_the_hub(tmp_path, token):
    write_run(tmp_path / "results", "alpha", "2026-01-02T10-00-00", 0.7, effective=10)
    runs = load_runs(tmp_path / "results")
    api = FakeHfApi(tmp_path / "hub")
    with pytest.raises(PushError, match="incomplete runs.*10 of 16 trajectories.*--allow-partial"):
        push(runs, REPO, api=api)
    assert api.calls == []
    push(runs, REPO, api=api, allow_partial=True)
    assert api.calls[-1][0] == "create_commit"


def test_push_errors_are_raised_not_logged(tmp_path, token):
    results = results_tree(tmp_path / "results")
    api = FakeHfApi(tmp_path / "hub", fail_commit=ConnectionError("connection reset by peer"))
    with pytest.raises(PushError, match=f"push to dataset repo {REPO} failed: ConnectionError: connection reset"):
        push(load_runs(results), REPO, api=api)
    second = FakeHfApi(tmp_path / "hub2")
    second.heads[REPO] = 0
    second.repo_info = lambda *a, **k: SimpleNamespace(sha="stale")  # someone else committed in between
    second.list_repo_files = lambda *a, **k: []
    with pytest.raises(PushError, match="parent commit is not the head"):
        push(load_runs(results), REPO, api=second)


def test_files_containing_the_token_are_never_uploaded(tmp_path, token):
    path = write_run(tmp_path / "results", "alpha", "2026-01-02T10-00-00", 0.7)
    document = json.loads(path.read_text())
    document["env"]["HF_TOKEN"] = FAKE_TOKEN  # as a careless env dump would
    path.write_text(json.dumps(document))
    api = FakeHfApi(tmp_path / "hub")
    with pytest.raises(PushError, match="results_2026-01-02T10-00-00.json contain"):
        push(load_runs(tmp_path / "results"), REPO, api=api)
    assert not any(name == "create_commit" for name, _ in api.calls)


def test_missing_token_is_a_clear_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))  # no `hf auth login` file either
    runs = load_runs(results_tree(tmp_path / "results"))
    with pytest.raises(PushError, match="hf auth login"):
        push(runs, REPO, api=FakeHfApi(tmp_path / "hub"))


def test_cli_dry_run_writes_the_commit_tree_without_the_token(tmp_path, token):
    results = results_tree(tmp_path / "results")
    out = tmp_path / "dry"
    result = CliRunner().invoke(app, ["leaderboard", "push", "--results", str(results), "--repo-id", REPO,
                                      "--dry-run", str(out)])
    assert result.exit_code == 0, result.output
    assert FAKE_TOKEN not in result.output
    api = FakeHfApi(tmp_path / "hub")
    push(load_runs(results), REPO, api=api)
    assert _files(out) == _files(api.repo_dir(REPO))  # the dry run is exactly the commit
    assert len(_load(out, "gamma", "latest", tmp_path / "cache")) == 16
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "cache" not in p.parts]
    assert written and all(FAKE_TOKEN.encode() not in p.read_bytes() for p in written)


@pytest.mark.slow  # starts loopnav in another interpreter
def test_hf_hub_offline_gives_a_clear_error(tmp_path):
    """HF_HUB_OFFLINE is read when huggingface_hub is imported, so it is set in a fresh process."""
    results = results_tree(tmp_path / "results")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_TOKEN": FAKE_TOKEN, "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "loopnav", "leaderboard", "push", "--results", str(results),
                           "--repo-id", REPO], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "HF_HUB_OFFLINE is set" in proc.stderr and "--dry-run" in proc.stderr
    assert FAKE_TOKEN not in proc.stdout + proc.stderr


def test_push_can_include_a_report_folder(tmp_path, token):
    results = results_tree(tmp_path / "results")
    report = tmp_path / "report"
    (report / "videos" / "g").mkdir(parents=True)
    (report / "index.html").write_text("<!doctype html><title>r</title>")
    (report / "videos" / "g" / "ABA_5_best.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    out = tmp_path / "dry"
    result = CliRunner().invoke(app, ["leaderboard", "push", "--results", str(results), "--repo-id", REPO,
                                      "--dry-run", str(out), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert (out / "report" / "index.html").read_text() == "<!doctype html><title>r</title>"
    assert (out / "report" / "videos" / "g" / "ABA_5_best.mp4").read_bytes().endswith(b"ftypmp42")
    api = FakeHfApi(tmp_path / "hub")
    push(load_runs(results), REPO, api=api, extra=report_files(report))
    assert _files(out) == _files(api.repo_dir(REPO))  # the dry run is exactly the commit, report included
    (report / "index.html").unlink()
    result = CliRunner().invoke(app, ["leaderboard", "push", "--results", str(results), "--repo-id", REPO,
                                      "--dry-run", str(tmp_path / "dry2"), "--report", str(report)])
    assert result.exit_code == 2 and "no index.html" in " ".join(result.output.split())
    assert not (tmp_path / "dry2").exists()
