"""Publish results to a Hugging Face Hub dataset repo in one commit, or write that exact commit to a folder.

Layout (as lm-eval and lighteval do it): `{model}/results_<ts>.json` and `{model}/samples_<ts>.jsonl`, plus a dataset
card whose YAML `configs` give one config per model, one split per run (its timestamp) and `latest`, so
`datasets.load_dataset(repo, model, split="latest")` returns the newest per-trajectory rows.

Everything goes in a single `create_commit` whose `parent_commit` is the head the card was built from: two people
pushing at once cannot silently drop each other's configs from the card; the second push fails instead.
The token is never handled here beyond asking `huggingface_hub.get_token()` whether one exists and refusing to
upload a file that contains it; `HfApi` resolves it itself. Errors are raised, never just logged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from leaderboard.results import Run
from loopnav_bench.contract import SAMPLES_PREFIX, model_dirname
from loopnav_bench.fileio import OwnedFolder

CARD_PATH = "README.md"
LATEST = "latest"


class PushError(RuntimeError):
    """The push was refused or failed; the message says why and what to do."""


@dataclass(frozen=True)
class CommitFile:
    path_in_repo: str
    content: bytes


def split_name(timestamp: str) -> str:
    """`datasets` split names must match \\w+(\\.\\w+)*; timestamps carry '-' and '+'."""
    return re.sub(r"\W", "_", timestamp)


def run_files(runs: list[Run], allow_partial: bool = False) -> list[CommitFile]:
    """The results and samples files of `runs`, at their paths in the repo; refuses incomplete runs."""
    partial = [r for r in runs if not r.complete]
    if partial and not allow_partial:
        listed = "; ".join(f"{r.results_path} ({r.n_trajectories['effective']} of "
                           f"{r.n_trajectories['original']} trajectories)" for r in partial)
        raise PushError(f"refusing to push incomplete runs: {listed}. Finish them (`loopnav evaluate` resumes) "
                        "or pass --allow-partial.")
    files: dict[str, CommitFile] = {}
    for run in runs:
        for path in (run.results_path, run.samples_path):
            target = f"{model_dirname(run.model)}/{path.name}"
            if target in files:
                raise PushError(f"two runs of {run.model} share timestamp {run.timestamp}; both would be "
                                f"{target} (see {path})")
            files[target] = CommitFile(target, path.read_bytes())
    return list(files.values())


REPORT_DIR = "report"  # where `leaderboard push --report` puts a `loopnav report` folder in the repo


def report_files(folder: Path) -> list[CommitFile]:
    """Every file of a folder written by `loopnav report` (index.html, plots, videos), under report/ in the repo."""
    folder = Path(folder)
    if not (folder / "index.html").is_file():
        raise PushError(f"--report {folder}: no index.html; pass a folder written by `loopnav report`")
    return [CommitFile(f"{REPORT_DIR}/{path.relative_to(folder).as_posix()}", path.read_bytes())
            for path in sorted(folder.rglob("*")) if path.is_file() and not path.name.startswith(".")]


def card_configs(sample_paths: Iterable[str]) -> list[dict[str, Any]]:
    """One config per model folder: a split per run timestamp plus `latest` (the newest)."""
    by_model: dict[str, list[str]] = {}
    for path in sorted(set(sample_paths)):
        folder, _, name = path.partition("/")
        if name.startswith(SAMPLES_PREFIX) and name.endswith(".jsonl") and "/" not in name:
            by_model.setdefault(folder, []).append(path)
    configs = []
    for folder, paths in sorted(by_model.items()):
        # file names differ only in the ISO timestamp, so sorted order is time order
        splits = [{"split": split_name(Path(p).stem[len(SAMPLES_PREFIX):]), "path": p} for p in paths]
        configs.append({"config_name": folder, "data_files": [*splits, {"split": LATEST, "path": paths[-1]}]})
    return configs


def dataset_card(repo_id: str, sample_paths: Iterable[str]) -> str:
    from huggingface_hub import DatasetCardData

    configs = card_configs(sample_paths)
    if not configs:
        raise PushError("nothing to describe: no samples files in the commit")
    runs = "\n".join(f"| `{c['config_name']}` | {len(c['data_files']) - 1} | "
                     f"`{c['data_files'][-1]['path']}` |" for c in configs)
    example = configs[0]["config_name"]
    return f"""---
{DatasetCardData(configs=configs, tags=["loopnav", "world-models", "evaluation"]).to_yaml()}
---

# LoopNav results

Results of video world models on the LoopNav loop-closure benchmark (does a model keep a place consistent when it
comes back to it?), written by `loopnav evaluate` and uploaded with `loopnav leaderboard push`.

Each model has a folder with `results_<ts>.json` (aggregates with stderr, metric settings and weight verification,
data manifest hash, evaluation size, config, seeds, environment) and `samples_<ts>.jsonl` (one row per trajectory:
id, split, task, range, lengths and per-frame metric series). Each model is a config; each run is a split named by
its timestamp, and `{LATEST}` is the newest run.

```python
from datasets import load_dataset

rows = load_dataset("{repo_id}", "{example}", split="{LATEST}")
```

Compare runs only when `data.manifest_hash`, `eval_size` and the split agree; `loopnav leaderboard` does
this grouping (and marks numbers computed with unverified metric weights) when pointed at a download of this repo.

| config | runs | latest samples |
|---|---:|---|
{runs}
"""


def build_commit(files: list[CommitFile], repo_id: str, existing_paths: Iterable[str] = ()) -> list[CommitFile]:
    """Every file of the commit: the runs' files and a card listing them together with `existing_paths` in the repo."""
    card = dataset_card(repo_id, [*existing_paths, *(f.path_in_repo for f in files)])
    return [*files, CommitFile(CARD_PATH, card.encode())]


def _refuse_token_leak(files: list[CommitFile]) -> None:
    from huggingface_hub import get_token

    token = get_token()
    if token and (leaks := [f.path_in_repo for f in files if token.encode() in f.content]):
        raise PushError(f"refusing to upload: {', '.join(leaks)} contain(s) your Hub token")


def write_tree(files: list[CommitFile], directory: Path) -> list[Path]:
    """The dry run: write the commit's files under `directory` exactly as they would be laid out in the repo, never
    over a file loopnav did not write (all are checked before the first is written)."""
    _refuse_token_leak(files)
    folder = OwnedFolder(directory, "loopnav leaderboard push --dry-run")
    folder.claim([f.path_in_repo for f in files])
    return [folder.write_bytes(f.path_in_repo, f.content) for f in files]


def push(runs: list[Run], repo_id: str, *, api: Any = None, private: bool = False, create_pr: bool = False,
         allow_partial: bool = False, extra: list[CommitFile] = ()) -> Any:
    """Create the dataset repo if needed and upload everything (and `extra` files, e.g. `report_files`) in one
    commit; returns the `CommitInfo`.

    `api` is an `HfApi` (tests inject a filesystem fake with the same methods). Raises `PushError` on any failure.
    """
    from huggingface_hub import CommitOperationAdd, HfApi, get_token, is_offline_mode

    files = [*run_files(runs, allow_partial), *extra]  # refuses incomplete runs before touching the network
    if is_offline_mode():
        raise PushError("HF_HUB_OFFLINE is set, so nothing can be pushed; unset it, or use --dry-run DIR to write "
                        "the commit to a folder")
    if get_token() is None:
        raise PushError("no Hugging Face token found: run `hf auth login` or set HF_TOKEN")
    api = api or HfApi()
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        head = api.repo_info(repo_id, repo_type="dataset").sha
        existing = api.list_repo_files(repo_id, repo_type="dataset", revision=head)
        files = build_commit(files, repo_id, existing)
        _refuse_token_leak(files)
        models = ", ".join(sorted({r.model for r in runs}))
        return api.create_commit(
            repo_id, repo_type="dataset", parent_commit=head, create_pr=create_pr,
            operations=[CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=f.content) for f in files],
            commit_message=f"Add LoopNav results: {models}",
            commit_description=f"{len(runs)} run(s) pushed with `loopnav leaderboard push`.")
    except PushError:
        raise
    # HTTP, transport (the hub's own HTTP client) and file errors all end the push the same way
    except Exception as err:
        raise PushError(f"push to dataset repo {repo_id} failed: {type(err).__name__}: {err}") from err
