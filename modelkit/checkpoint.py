"""Checkpoints: safetensors for every tensor (weights, EMA, optimizer state), JSON for everything else. No pickle.

A training run's output directory holds one folder per saved step and a `latest` file naming the newest:

    out/latest                    "step-0002000"
    out/step-0002000/config.json  model name and config, training options, data identity, step, loss history
                     model.safetensors      the weights inference loads (the EMA weights)
                     train.safetensors      raw weights ("raw.*") and AdamW moments ("opt.<i>.exp_avg", ...)
                     <extra>.safetensors    trainer-specific parts (e.g. the autoencoder inside a WorldPack checkpoint)

A step folder is written under a temporary name and renamed into place, then `latest` is replaced atomically, so an
interrupted save never leaves a half-written checkpoint behind; older step folders are removed after that.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from loopnav_bench.fileio import atomic_path, read_json, write_bytes_atomic, write_json_atomic

LATEST = "latest"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TRAIN_STATE = "train.safetensors"


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None


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


def write_step(output_dir: Path, step: int, config: dict[str, Any], files: dict[str, dict[str, torch.Tensor]]) -> Path:
    """Write one step folder (config.json + `name.safetensors` per entry of `files`), point `latest` at it, and
    remove older step folders."""
    output_dir.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=output_dir))
    staging.chmod(0o755)  # mkdtemp makes it private; a checkpoint is meant to be shared
    for file_name, tensors in files.items():
        save_tensors(staging / file_name, tensors)
    write_json_atomic(staging / CONFIG, config)
    final = output_dir / name
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    write_bytes_atomic(output_dir / LATEST, name.encode())
    for old in output_dir.glob("step-*"):
        if old != final and old.is_dir():
            shutil.rmtree(old)
    return final


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` is in loopnav's checkpoint layout (a step folder or a training run), not another format."""
    return (Path(path) / CONFIG).exists() or (Path(path) / LATEST).exists()


def resolve(path: str | Path) -> Path:
    """A step folder, given it or a run directory with a `latest` file."""
    path = Path(path)
    if (path / CONFIG).exists():
        return path
    if (path / LATEST).exists():
        step_dir = path / (path / LATEST).read_text().strip()
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
    for path in step_dir.glob("*.safetensors"):
        if path.name != TRAIN_STATE:
            tensors = load_tensors(path)
            save_tensors(dest / path.name, {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()})
    write_json_atomic(dest / CONFIG, read_config(step_dir))
    return dest
