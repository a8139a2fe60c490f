"""Checkpoints: safetensors for every tensor (weights, EMA, optimizer state), JSON for everything else. No pickle.

A training run's output directory holds one folder per saved step and a `latest` file naming the newest:

    out/latest                    "step-0002000"
    out/step-0002000/config.json  model name and config, training options, data identity, step, loss history
                     model.safetensors      the weights inference loads (the EMA weights)
                     train.safetensors      raw weights ("raw.*") and AdamW moments ("opt.<i>.exp_avg", ...)
                     <extra>.safetensors    trainer-specific parts (e.g. the autoencoder inside a WorldPack checkpoint)

A step folder is written under a temporary name and renamed into place, then `latest` is replaced atomically, so an
interrupted save never leaves a half-written checkpoint behind; older step folders are removed after that, but only
those the folder's ownership record lists (`OwnedFolder`): a user's `step-notes/` is never touched. config.json
records the sha256 of every safetensors file beside it ("files"), checked before a file is loaded, and loading refuses
a non-finite tensor by name.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from loopnav_bench.fileio import (
    OWNED,
    OwnedFolder,
    atomic_path,
    read_json,
    resolve_within,
    sha256_file,
    write_json_atomic,
)

LATEST = "latest"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TRAIN_STATE = "train.safetensors"
FILES = "files"  # config.json's {file name: sha256} of the step folder's safetensors files
STEP_NAME = re.compile(r"step-\d{7}")
WRITER = "loopnav train"


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, after its sha256 is checked against config.json beside it (when that records
    one) and before any non-finite value can reach a model: either is an error naming the file (and tensor)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    config = path.parent / CONFIG
    expected = read_json(config).get(FILES, {}).get(path.name) if config.exists() else None
    if expected and (found := sha256_file(path)) != expected:
        raise ValueError(f"{path}: sha256 {found[:12]}… differs from the {expected[:12]}… {config} records "
                         f"(damaged or changed since it was saved)")
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{path}: tensor {name!r} holds non-finite values (NaN or inf)")
    return tensors


@torch.no_grad()
def copy_matching(model: nn.Module, tensors: dict[str, torch.Tensor], source: Path,
                  per_row: tuple[str, ...] = ()) -> list[str]:
    """Start `model` from another model's weights (fine-tuning): every tensor of the model that `tensors` holds under
    the same name and shape is copied; for names in `per_row` (one row per packing level, say) the rows both have
    are. A name with another shape is an error naming it and `source`, raised before anything is copied. Returns the
    names of the model's tensors that `tensors` lacks, left at their fresh initialisation."""
    state = model.state_dict()
    for name, value in tensors.items():
        if name in state and value.shape != state[name].shape and (
                name not in per_row or value.shape[1:] != state[name].shape[1:]):
            raise ValueError(f"{source}: tensor {name!r} has shape {tuple(value.shape)}, this model's "
                             f"{tuple(state[name].shape)}: fine-tuning needs the same sizes (preset, latent, "
                             "action width)")
    for name, value in tensors.items():
        if name in per_row and name in state:
            rows = min(len(value), len(state[name]))
            state[name][:rows].copy_(value[:rows])
        elif name in state:
            state[name].copy_(value)
    return [name for name in state if name not in tensors]


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """AdamW state as flat tensors keyed by parameter index; hyperparameters live in the optimizer's param_groups."""
    out: dict[str, torch.Tensor] = {}
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            out[f"opt.{index}.{name}"] = torch.as_tensor(value)
    return out


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state_dict = optimizer.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    state_dict["state"] = state
    optimizer.load_state_dict(state_dict)


def run_folder(output_dir: Path) -> OwnedFolder:
    """A training run's output folder, which refuses to touch what train did not write. A run saved before ownership
    records were kept proves `latest` and the step folder it names."""
    proven = []
    if (output_dir / LATEST).is_file() and not (output_dir / OWNED).exists():
        proven = [LATEST, _latest_name(output_dir)]
    return OwnedFolder(output_dir, WRITER, proven)


def write_step(output_dir: Path, step: int, config: dict[str, Any], files: dict[str, dict[str, torch.Tensor]]) -> Path:
    """Write one step folder (config.json + `name.safetensors` per entry of `files`, their sha256 in config.json),
    point `latest` at it, and remove the older step folders this run wrote."""
    folder = run_folder(output_dir)
    name = f"step-{step:07d}"
    folder.claim([name, LATEST])
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=output_dir))
    staging.chmod(0o755)  # mkdtemp makes it private; a checkpoint is meant to be shared
    try:
        for file_name, tensors in files.items():
            save_tensors(staging / file_name, tensors)
        write_json_atomic(staging / CONFIG, {**config, FILES: {f: sha256_file(staging / f) for f in files}})
        final = output_dir / name
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    folder.write_bytes(LATEST, name.encode())
    for old in sorted(folder.owned):
        if old != name and STEP_NAME.fullmatch(old):
            folder.remove(old)
    return final


def _latest_name(output_dir: Path) -> str:
    """The step folder `latest` names, which must be one of this folder's own (never a path out of it)."""
    name = (output_dir / LATEST).read_text().strip()
    if not STEP_NAME.fullmatch(name):
        raise ValueError(f"{output_dir / LATEST}: names {name!r}, not a step folder of {output_dir} "
                         f"(step-NNNNNNN)")
    return name


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` is in loopnav's checkpoint layout (a step folder or a training run), not another format."""
    return (Path(path) / CONFIG).exists() or (Path(path) / LATEST).exists()


def resolve(path: str | Path) -> Path:
    """A step folder, given it or a run directory with a `latest` file."""
    path = Path(path)
    if (path / CONFIG).exists():
        return path
    if (path / LATEST).exists():
        step_dir = resolve_within(path, _latest_name(path), f"{path / LATEST}: step folder")
        if (step_dir / CONFIG).exists():
            return step_dir
        raise FileNotFoundError(f"{path / LATEST}: names {step_dir.name}, which has no {CONFIG}")
    raise FileNotFoundError(f"{path}: not a checkpoint (no {CONFIG}) nor a training run (no {LATEST} file)")


def read_config(step_dir: Path) -> dict[str, Any]:
    return read_json(step_dir / CONFIG)


def export(step_dir: str | Path, dest: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Copy what inference needs (config.json and every safetensors file but the training state) to `dest`, with
    floating-point tensors stored as `dtype` (loading casts them back to the model's dtype): a small checkpoint to
    ship, as worldpack/checkpoints/fine-memory."""
    step_dir, dest = resolve(step_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for path in step_dir.glob("*.safetensors"):
        if path.name != TRAIN_STATE:
            tensors = load_tensors(path)
            save_tensors(dest / path.name, {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()})
            hashes[path.name] = sha256_file(dest / path.name)
    write_json_atomic(dest / CONFIG, {**read_config(step_dir), FILES: hashes})
    return dest
