"""Where every pretrained metric weight file lives, how it is verified, and how it is fetched.

Nothing here downloads at metric-load time: a metric asks `require(metric, variant)` for its files and gets either
verified paths or `MetricUnavailable` naming the missing file, where it belongs and the command that fetches it.
`loopnav weights download` is the only code path that touches the network.

Verification levels, per file:
- "sha256": the full upstream sha256 is known (the lpips wheel's linear heads, hashed from the published wheel).
- "sha256-prefix": only the 8-hex prefix torchvision puts in the file name is known; torch.hub checks exactly this
  prefix on download, so loopnav checks the same.
- "none": no upstream hash is established (DreamSim release zips, the DINO checkpoint and hub repo, the StyleGAN-V I3D
  detector). Such a file is "unverifiable": loopnav cannot tell it from a stand-in, so it is used only with
  LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS=1 and every number computed with it is marked unverified. No hash is invented.
- "recorded": a file fetched from a Hugging Face repo (`hub_repo`), or converted from one, whose sha256 was recorded
  in a `<file>.sha256.json` beside it when it was written. A Hub download is checked against the sha256 the Hub
  publishes for LFS files (its ETag) and the record says so; the file is "verified" while its bytes still match a
  record that was itself verified, "mismatch" when they changed, "unverifiable" without a record.

Other packages add their files with `register` (the published models' checkpoints: published/weights.py), so that
`loopnav weights check / download` cover them through the same rows.

A file whose hash does not match is refused unless LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS=1, and then marked unverified.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from loopnav_bench.console import ProgressFn
from loopnav_bench.fileio import (
    atomic_path,
    loopnav_cache_dir,
    read_json,
    resolve_within,
    sha256_file,
    write_json_atomic,
    xdg_cache,
)
from loopnav_bench.metrics.specs import METRICS

ALLOW_UNVERIFIED_ENV = "LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS"
OFFLINE_ENVS = ("LOOPNAV_OFFLINE", "HF_HUB_OFFLINE")


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed here; `.reason` says which file is missing or unverified and how to get it, `.code`
    says why in one word (a key of SHORT_REASONS) for tables and CSV."""

    def __init__(self, reason: str, code: str = "unavailable"):
        super().__init__(reason)
        self.reason, self.code = reason, code


# What a table says for an unavailable metric; the full reason (paths, URLs) stays in the results and `weights check`.
SHORT_REASONS = {
    "weights-missing": "weights missing; see `loopnav weights check`",
    "weights-unverified": "weights unverified; see `loopnav weights check`",
    "weights-invalid": "weights do not load; see `loopnav weights check`",
}


def short_reason(code: str | None, reason: str | None) -> str:
    """One line for a table: the known code's text, else the reason's first line."""
    if code in SHORT_REASONS:
        return SHORT_REASONS[code]
    return (reason or "not computed").strip().splitlines()[0].rstrip(":")


class WeightsDownloadError(RuntimeError):
    """`loopnav weights download` could not fetch or verify a file."""


# ---- roots -----------------------------------------------------------------------------------------------------------

def torch_hub_checkpoints_dir() -> Path:
    """$TORCH_HOME/hub/checkpoints, computed from the environment like torch does.

    Computed here rather than via `torch.hub.get_dir()` because DreamSim calls `torch.hub.set_dir()`, which would
    otherwise redirect later lookups into the DreamSim cache for the rest of the process.
    """
    return Path(os.environ.get("TORCH_HOME") or xdg_cache() / "torch").expanduser() / "hub" / "checkpoints"


def dreamsim_cache_dir() -> Path:
    return loopnav_cache_dir() / "dreamsim"


def _lpips_package_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        raise MetricUnavailable("the lpips package is not installed: pip install lpips==0.1.4", "package-missing")
    return Path(spec.origin).parent


ROOTS = {
    "torch_hub": torch_hub_checkpoints_dir,
    "lpips_package": _lpips_package_dir,
    "dreamsim": dreamsim_cache_dir,
    "loopnav": loopnav_cache_dir,
}
ROOT_HINTS = {
    "torch_hub": "$TORCH_HOME/hub/checkpoints (TORCH_HOME defaults to ~/.cache/torch)",
    "lpips_package": "the installed lpips package (ships in its wheel)",
    "dreamsim": "$LOOPNAV_CACHE_DIR/dreamsim (LOOPNAV_CACHE_DIR defaults to ~/.cache/loopnav)",
    "loopnav": "$LOOPNAV_CACHE_DIR (defaults to ~/.cache/loopnav)",
}


# ---- registry --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WeightFile:
    """One file a metric needs. `candidates`: relative paths under the root, the first one present is used."""

    id: str
    metric: str
    variants: tuple[str, ...]     # metric variants that need this file
    root: str                     # a key of ROOTS
    candidates: tuple[str, ...]
    url: str                      # upstream location (the archive, when `archive_member` is set)
    archive_member: Optional[str] = None  # path inside the zip at `url`; "*/x" strips the zip's top folder
    sha256: Optional[str] = None
    sha256_prefix: Optional[str] = None
    size: Optional[int] = None    # exact bytes, only where established
    approx_mb: Optional[float] = None  # MiB, for display (torchvision meta "_file_size")
    note: str = ""
    hub_repo: Optional[str] = None  # a Hugging Face model repo the file is fetched from (huggingface_hub)
    hub_file: Optional[str] = None  # its name there; None where upstream publishes no name (download --file)
    licence: str = ""
    converted_from: Optional[str] = None  # id of the pickled file this safetensors copy is made from (convert)

    @property
    def check(self) -> str:
        if self.sha256:
            return "sha256"
        if self.sha256_prefix:
            return "sha256-prefix"
        return "recorded" if self.hub_repo or self.converted_from else "none"

    def record_path(self) -> Path:
        path = self.path()
        return path.with_name(path.name + ".sha256.json")

    def directory(self) -> Path:
        return ROOTS[self.root]()

    def path(self) -> Path:
        """The first candidate that exists, else the first candidate (where the file should go)."""
        base = self.directory()
        for relative in self.candidates:
            if (base / relative).is_file():
                return base / relative
        return base / self.candidates[0]


_DREAMSIM_RELEASE = "https://github.com/ssundaram21/dreamsim/releases/download/v0.2.0-checkpoints"
_DREAMSIM_NOTE = "from the DreamSim v0.2.0 release zip; no upstream sha256 is published"


def _dreamsim_files(variant: str, backbones: tuple[str, ...], lora_dir: str) -> list[WeightFile]:
    url = f"{_DREAMSIM_RELEASE}/dreamsim_{variant}_checkpoint.zip"
    files = [WeightFile(f"dreamsim/{variant}/{name}", "dreamsim", (variant,), "dreamsim", (name,), url, name,
                        note=_DREAMSIM_NOTE) for name in backbones]
    files.append(WeightFile(f"dreamsim/{variant}/lora-config", "dreamsim", (variant,), "dreamsim",
                            (f"{lora_dir}/adapter_config.json",), url, f"{lora_dir}/adapter_config.json",
                            note=_DREAMSIM_NOTE))
    # The adapter weights are stored by whichever peft version wrote the release: accept either format.
    files.append(WeightFile(f"dreamsim/{variant}/lora-weights", "dreamsim", (variant,), "dreamsim",
                            (f"{lora_dir}/adapter_model.safetensors", f"{lora_dir}/adapter_model.bin"), url,
                            f"{lora_dir}/adapter_model.*", note=_DREAMSIM_NOTE))
    return files


_DINO_REPO_ZIP = "https://github.com/facebookresearch/dino/zipball/main"
_DINO_VARIANTS = ("ensemble", "dino_vitb16")

REGISTRY: tuple[WeightFile, ...] = (
    WeightFile("lpips/alexnet", "lpips", ("alex",), "torch_hub", ("alexnet-owt-7be5be79.pth",),
               "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", sha256_prefix="7be5be79",
               approx_mb=233.1, note="torchvision AlexNet_Weights.IMAGENET1K_V1 (the LPIPS trunk)"),
    WeightFile("lpips/linear-alex", "lpips", ("alex",), "lpips_package", ("weights/v0.1/alex.pth",),
               "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
               sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0", size=6009,
               note="LPIPS v0.1 linear heads, shipped in the lpips 0.1.4 wheel (sha256 of that wheel's file)"),
    *_dreamsim_files("ensemble", ("dino_vitb16_pretrain.pth", "clip_vitb16_pretrain.pth.tar",
                                  "open_clip_vitb16_pretrain.pth.tar"), "ensemble_lora"),
    *_dreamsim_files("dino_vitb16", ("dino_vitb16_pretrain.pth",), "dino_vitb16_single_lora"),
    *_dreamsim_files("clip_vitb32", ("clip_vitb32_pretrain.pth.tar",), "clip_vitb32_single_lora"),
    *_dreamsim_files("open_clip_vitb32", ("open_clip_vitb32_pretrain.pth.tar",), "open_clip_vitb32_single_lora"),
    # DreamSim builds DINO through torch.hub.load('facebookresearch/dino:main'), which needs the hub repo and its
    # checkpoint in the DreamSim cache dir (DreamSim points torch.hub there).
    *(WeightFile(f"dreamsim/dino-hub/{name}", "dreamsim", _DINO_VARIANTS, "dreamsim",
                 (f"facebookresearch_dino_main/{name}",), _DINO_REPO_ZIP, f"*/{name}",
                 note="facebookresearch/dino hub repo (main branch); no pinned hash")
      for name in ("hubconf.py", "vision_transformer.py", "utils.py")),
    WeightFile("dreamsim/dino-hub/checkpoint", "dreamsim", _DINO_VARIANTS, "dreamsim",
               ("checkpoints/dino_vitbase16_pretrain.pth",),
               "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth",
               note="DINO ViT-B/16 backbone loaded by the dino hubconf; no upstream sha256 is published"),
    WeightFile("fvd/i3d", "fvd", ("styleganv",), "loopnav", ("fvd/i3d_torchscript.pt",),
               "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
               note="StyleGAN-V TorchScript I3D (Kinetics-400, TF-Hub port); no upstream sha256 is published. "
                    "Loaded with torch.jit.load, which runs the archive's code: only use a file you trust."),
)

DEFAULT_VARIANTS = {name: spec.default_variant for name, spec in METRICS.items() if spec.default_variant}


def register(files: Iterable[WeightFile]) -> None:
    """Add files of another package to the registry (again: replaced by id)."""
    global REGISTRY
    new = {f.id: f for f in files}
    REGISTRY = tuple(f for f in REGISTRY if f.id not in new) + tuple(new.values())


def files_for(metric: str, variant: Optional[str] = None) -> list[WeightFile]:
    """The files `metric` (or a registered owner such as a published model) needs in `variant`; without a variant
    and without a default one, all of its files."""
    variant = variant or DEFAULT_VARIANTS.get(metric)
    found = [f for f in REGISTRY if f.metric == metric and (variant is None or variant in f.variants)]
    if not found:
        known = sorted({v for f in REGISTRY if f.metric == metric for v in f.variants})
        raise ValueError(f"no weights registered for metric {metric!r} variant {variant!r}; known variants: {known}")
    return found


def metric_names() -> list[str]:
    return list(dict.fromkeys(f.metric for f in REGISTRY))


# ---- verification ----------------------------------------------------------------------------------------------------

def allow_unverified() -> bool:
    return os.environ.get(ALLOW_UNVERIFIED_ENV, "").strip().lower() in ("1", "true", "yes")


_hash_cache: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) for this process: weight files are hundreds of MB and
    are looked at again after loading (results record weights_status)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _hash_cache:
        _hash_cache[key] = sha256_file(path)
    return _hash_cache[key]


def file_status(entry: WeightFile) -> dict:
    """Look at one file: exists, size, sha256, and a status of verified / unverifiable / mismatch / missing."""
    path = entry.path()
    row = {"id": entry.id, "metric": entry.metric, "variants": list(entry.variants), "path": str(path),
           "url": entry.url, "check": entry.check, "sha256_expected": entry.sha256 or entry.sha256_prefix,
           "exists": path.is_file(), "size": None, "sha256": None, "verified": False, "note": entry.note}
    if not row["exists"]:
        return {**row, "status": "missing"}
    row["size"] = path.stat().st_size
    row["sha256"] = _sha256(path)
    if entry.sha256:
        ok = row["sha256"] == entry.sha256 and (entry.size is None or row["size"] == entry.size)
    elif entry.sha256_prefix:
        ok = row["sha256"].startswith(entry.sha256_prefix)
    elif entry.check == "recorded" and entry.record_path().is_file():
        record = read_json(entry.record_path())
        row["sha256_expected"], row["record"] = record.get("sha256"), record
        if row["sha256"] != record.get("sha256"):
            return {**row, "status": "mismatch"}
        ok = bool(record.get("verified"))
        if not ok:
            return {**row, "status": "unverifiable"}
    else:
        return {**row, "status": "unverifiable"}
    return {**row, "status": "verified" if ok else "mismatch", "verified": ok}


def _needed(entry: WeightFile, all_variants: bool) -> bool:
    default = DEFAULT_VARIANTS.get(entry.metric)
    return all_variants or default is None or default in entry.variants


def weights_status(metrics: Optional[Iterable[str]] = None, all_variants: bool = False) -> dict:
    """Status of the files the default metric variants need (every variant's with all_variants), keyed by file id;
    `metrics` limits it to those metrics."""
    wanted = set(metrics) if metrics else None
    return {f.id: file_status(f) for f in REGISTRY
            if (wanted is None or f.metric in wanted) and _needed(f, all_variants)}


def download_command(metric: str, variant: Optional[str] = None) -> str:
    default = DEFAULT_VARIANTS.get(metric)
    return f"loopnav weights download {metric}" + (f" --variant {variant}" if variant and variant != default else "")


def _problem(row: dict, entry: WeightFile, command: str) -> str:
    where = f"{row['path']}  (root: {ROOT_HINTS[entry.root]})"
    if row["status"] == "missing":
        if entry.root == "lpips_package":
            return f"{entry.id}: missing {where}; reinstall lpips: pip install --force-reinstall lpips==0.1.4"
        return f"{entry.id}: missing {where}; get it with `{command}` on a machine with internet, " \
               f"or place {entry.url}" \
               f"{' (member ' + entry.archive_member + ')' if entry.archive_member else ''} there"
    if row["status"] == "mismatch":
        return f"{entry.id}: {row['path']} has sha256 {row['sha256'][:16]}…, expected {row['sha256_expected']}; " \
               f"replace it with `{command}`, or set {ALLOW_UNVERIFIED_ENV}=1 to use it (results marked unverified)"
    return f"{entry.id}: {row['path']} cannot be verified (no upstream sha256 is established); if it came from " \
           f"{entry.url}, set {ALLOW_UNVERIFIED_ENV}=1 to use it (results marked unverified)"


def require(metric: str, variant: Optional[str] = None) -> tuple[dict[str, Path], dict]:
    """Verified paths of a metric's files (by file id) and an info block for results; raises MetricUnavailable.

    Missing files always raise. Mismatched or unverifiable files raise unless LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS=1;
    then they are used and the info says `"verified": False`.
    """
    variant = variant or DEFAULT_VARIANTS.get(metric)
    entries = files_for(metric, variant)
    rows = [file_status(e) for e in entries]
    command = download_command(metric, variant)
    missing = [_problem(r, e, command) for r, e in zip(rows, entries) if r["status"] == "missing"]
    if missing:
        raise MetricUnavailable(f"{metric} ({variant}) needs weight files that are not here:\n  "
                                + "\n  ".join(missing), "weights-missing")
    unverified = [_problem(r, e, command) for r, e in zip(rows, entries) if not r["verified"]]
    if unverified and not allow_unverified():
        raise MetricUnavailable(f"{metric} ({variant}) refuses weight files it cannot verify:\n  "
                                + "\n  ".join(unverified), "weights-unverified")
    info = {"variant": variant, "verified": not unverified,
            "weights": [{k: r[k] for k in ("id", "path", "size", "sha256", "check", "status")} for r in rows]}
    if unverified:
        info["unverified_reason"] = f"{ALLOW_UNVERIFIED_ENV}=1 was set; " + "; ".join(
            f"{r['id']}: {r['status']}" for r in rows if not r["verified"])
    return {e.id: Path(r["path"]) for e, r in zip(entries, rows)}, info


# ---- download --------------------------------------------------------------------------------------------------------

def _offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes") for name in OFFLINE_ENVS)


def _fetch(url: str, dest: Path, progress: Optional[ProgressFn], label: str, timeout: float = 30.0) -> None:
    """Stream `url` into `dest` atomically (a half-finished download never appears under its final name)."""
    request = urllib.request.Request(url, headers={"User-Agent": "loopnav-weights"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise WeightsDownloadError(f"cannot download {url}: {getattr(err, 'reason', err)} (offline? place the file "
                                   f"by hand; `loopnav weights path` shows where)") from None
    total = int(response.headers.get("Content-Length") or 0)
    done = 0
    with response, atomic_path(dest) as tmp, open(tmp, "wb") as out:
        while block := response.read(1 << 20):
            out.write(block)
            done += len(block)
            if progress:
                progress(label, done, total or done)


def _member_matches(name: str, pattern: str) -> bool:
    """fnmatch, where a leading "*/" stands for exactly one top folder (GitHub zipballs wrap the repo in one)."""
    if pattern.startswith("*/"):
        if "/" not in name:
            return False
        name, pattern = name.split("/", 1)[1], pattern[2:]
    return fnmatch.fnmatchcase(name, pattern)


def _extract(archive: Path, entries: list[WeightFile]) -> None:
    """Copy each entry's member out of the zip, refusing members whose path would leave the target directory."""
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        for entry in entries:
            pattern = entry.archive_member
            matches = [n for n in names if _member_matches(n, pattern)]
            if not matches:
                raise WeightsDownloadError(f"{entry.url}: archive has no member {pattern!r} (needed for {entry.id})")
            member = matches[0]
            relative = Path(entry.candidates[0]).parent / Path(member).name
            target = resolve_within(entry.directory(), relative, what="archive member")
            with zf.open(member) as src, atomic_path(target) as tmp, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _fetch_hub(entry: WeightFile, hub_file: str, progress: Optional[ProgressFn]) -> None:
    """Fetch `hub_file` of entry.hub_repo (HF_TOKEN or a `huggingface-cli login` authenticates) to entry.path(),
    check it against the sha256 the Hub publishes for LFS files, and record what was fetched beside it."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    repo, page = entry.hub_repo, f"https://huggingface.co/{entry.hub_repo}"
    dest = entry.directory() / entry.candidates[0]
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        meta = huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(repo, hub_file))
        if progress:
            progress(f"download {entry.id}", 0, meta.size or 1)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:  # same disk: the rename below is atomic
            Path(huggingface_hub.hf_hub_download(repo, hub_file, local_dir=tmp)).replace(dest)
    except GatedRepoError:
        raise WeightsDownloadError(f"{repo} is gated: request access at {page} (approved by hand), then set HF_TOKEN "
                                   "(or run `huggingface-cli login`) and download again") from None
    except RepositoryNotFoundError:
        raise WeightsDownloadError(f"{repo}: no such repo, or a private one: check {page}, and set HF_TOKEN if "
                                   "you have access") from None
    except EntryNotFoundError:
        raise WeightsDownloadError(f"{repo} has no file {hub_file!r}: see {page}/tree/main") from None
    except (HfHubHTTPError, OSError) as err:
        raise WeightsDownloadError(f"cannot download {hub_file} from {repo}: {err} (offline? place the file by "
                                   "hand; `loopnav weights path` shows where)") from None
    sha256 = sha256_file(dest)
    hub_sha256 = meta.etag if meta.etag and len(meta.etag) == 64 else None  # an LFS file's ETag is its sha256
    if hub_sha256 and hub_sha256 != sha256:
        dest.unlink()
        raise WeightsDownloadError(f"{repo}/{hub_file}: fetched sha256 {sha256[:16]}… is not the Hub's {hub_sha256}")
    write_json_atomic(entry.record_path(), {
        "sha256": sha256, "size": dest.stat().st_size, "repo": repo, "file": hub_file, "revision": meta.commit_hash,
        "hub_sha256": hub_sha256, "verified": hub_sha256 is not None,
        "how": "checked against the Hub's LFS sha256" if hub_sha256 else "the Hub publishes no sha256 for it"})
    if progress:
        progress(f"download {entry.id}", meta.size or 1, meta.size or 1)


def convert(entry_id: str, source: Optional[Path] = None, key: Optional[str] = None) -> Path:
    """Unpickle a downloaded checkpoint ONCE and write the tensors under `key` (e.g. "ema") as the safetensors
    entry `entry_id` (whose converted_from names the pickled entry). torch.load runs with weights_only=True, its
    restricted unpickler, which here also accepts argparse.Namespace (plain attributes: training scripts such as
    NWM's train.py save their args); a checkpoint that needs anything else is refused. Records the sha256 of the
    source and the result."""
    import argparse

    import torch
    from safetensors.torch import save_file

    entry = next((e for e in REGISTRY if e.id == entry_id), None)
    if entry is None or entry.converted_from is None:
        raise ValueError(f"{entry_id!r} is not a converted weight file")
    pickled = next(e for e in REGISTRY if e.id == entry.converted_from)
    source = Path(source) if source else pickled.path()
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such checkpoint; get it with `{download_command(pickled.metric)}`")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:  # the restricted unpickler's refusals come as several error types
        raise ValueError(f"{source}: not loadable as plain tensors ({str(err).splitlines()[0]})") from None
    if key is not None:
        if not isinstance(state, dict) or key not in state:
            found = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{source}: has no {key!r} entry (found: {found})")
        state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: {key or 'the checkpoint'} is not a dict of tensors")
    dest = entry.path()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:  # clone: safetensors refuses tensors that share memory (tied weights)
        save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(tmp))
    source_record = pickled.record_path()
    source_sha256 = sha256_file(source)
    verified = source == pickled.path() and source_record.is_file() and \
        read_json(source_record).get("sha256") == source_sha256 and bool(read_json(source_record).get("verified"))
    write_json_atomic(entry.record_path(), {
        "sha256": sha256_file(dest), "size": dest.stat().st_size, "converted_from": str(source), "key": key,
        "source_sha256": source_sha256, "verified": verified,
        "how": "converted from a download verified against the Hub" if verified else "converted from a file "
               "loopnav did not download"})
    return dest


def download(metric: str, variant: Optional[str] = None, progress: Optional[ProgressFn] = None,
             force: bool = False, hub_file: Optional[str] = None) -> dict:
    """Fetch a metric's (or registered owner's) missing (or, with force, all) files from their upstream URLs or Hub
    repos, then verify them. `hub_file` names the file of an entry whose upstream publishes no name.

    Returns the weights_status rows of the metric's files. Raises WeightsDownloadError when offline, when a URL
    cannot be fetched, or when a fetched file fails its hash.
    """
    entries = files_for(metric, variant)
    todo = [e for e in entries if e.root != "lpips_package" and e.converted_from is None
            and (force or not e.path().is_file())]
    if todo and _offline():
        raise WeightsDownloadError(f"offline ({' or '.join(OFFLINE_ENVS)} is set): cannot fetch "
                                   + ", ".join(sorted({e.url for e in todo})))
    for entry in [e for e in todo if e.hub_repo]:
        name = entry.hub_file or hub_file
        if name is None:
            raise WeightsDownloadError(f"{entry.hub_repo} publishes no fixed file name for {entry.id}: pick the "
                                       f"checkpoint at https://huggingface.co/{entry.hub_repo}/tree/main and pass "
                                       "--file NAME")
        _fetch_hub(entry, name, progress)
    by_url: dict[str, list[WeightFile]] = {}
    for entry in [e for e in todo if not e.hub_repo]:
        by_url.setdefault(entry.url, []).append(entry)
    for url, group in by_url.items():
        label = f"download {group[0].id if len(group) == 1 else url.rsplit('/', 1)[-1]}"
        if group[0].archive_member is None:
            _fetch(url, group[0].directory() / group[0].candidates[0], progress, label)
            continue
        scratch = loopnav_cache_dir()
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=scratch) as tmp:  # same disk as the targets, cleaned up on any error
            archive = Path(tmp) / "archive.zip"
            _fetch(url, archive, progress, label)
            _extract(archive, group)
    rows = [file_status(e) for e in entries]
    converted = {e.id for e in entries if e.converted_from}  # made by `loopnav weights convert`, not downloaded
    if bad := [r for r in rows if r["status"] in ("mismatch", "missing") and r["id"] not in converted]:
        raise WeightsDownloadError("after download: "
                                   + "; ".join(f"{r['id']} {r['status']} at {r['path']}" for r in bad))
    return {r["id"]: r for r in rows}


def overall(rows: Iterable[dict]) -> str:
    """One word for a set of status rows: "verified", "unverifiable" (present, some not checkable) or "incomplete"."""
    statuses = {row["status"] for row in rows}
    if statuses & {"missing", "mismatch"}:
        return "incomplete"
    return "unverifiable" if "unverifiable" in statuses else "verified"
