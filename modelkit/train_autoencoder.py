"""The latent stage every latent model starts from: the autoencoder trainer (`loopnav train --model autoencoder`),
and the train split encoded with a trained (or given) autoencoder."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_tensors_bytes

from loopnav_bench.console import ProgressFn
from loopnav_bench.contract import data_identity
from loopnav_bench.distributed import DistContext
from loopnav_bench.fileio import loopnav_cache_dir, sha256_json
from loopnav_bench.schema import Trajectory
from loopnav_bench.train import TrainOptions
from modelkit import checkpoint as ckpt
from modelkit.autoencoder import (
    AUTOENCODER_FILE,
    AUTOENCODER_STAGE,
    PRESETS,
    Autoencoder,
    load_autoencoder,
    preset_config,
)
from modelkit.presets import get_preset
from modelkit.train import fit, loop_config
from modelkit.train_data import EncodedTrajectory, ImageBatches, encode_trajectories, load_split, with_latents


def train_autoencoder(options: TrainOptions, progress: ProgressFn | None = None,
                      trajectories: list[Trajectory] | None = None) -> Path:
    """L1 + MSE reconstruction of train-split frames at the preset's image size."""
    if options.model_args:
        raise ValueError(f"the autoencoder takes no model args, got {sorted(options.model_args)}")
    preset, config = get_preset(PRESETS, options.preset, "autoencoder"), preset_config(options.preset)
    trajectories = trajectories or load_split(options.data, progress=progress)
    torch.manual_seed(options.seed)  # initialisation; every training step reseeds itself
    model = Autoencoder(config)
    run_config = {"model": "autoencoder", "config": config.to_dict(), "preset": options.preset,
                  "data": data_identity(options.data, "train")}
    return fit(model, ImageBatches(trajectories, config.image_size), loop_config(options, preset), options.output_dir,
               run_config, device=options.device, resume=options.resume,
               allow_changed_settings=options.allow_changed_settings, progress=progress, description="autoencoder")


@dataclass
class LatentArgs:
    """The model args every latent model's trainer takes (`--model-args autoencoder=PATH,autoencoder_steps=N`)."""

    autoencoder: str | None = None       # a trained autoencoder run, a latent model's checkpoint (its autoencoder
                                         # travels with it) or a local diffusers AutoencoderKL folder
    autoencoder_steps: int | None = None  # steps of the autoencoder stage when none is given


@dataclass
class LatentData:
    """The train split in a model's latent space: where every latent model's trainer (WorldPack, NWM) starts."""

    trajectories: list[Trajectory]
    encoded: list[EncodedTrajectory]
    codec_spec: dict[str, Any]                   # recorded in the run config: which latent space
    extra_files: dict[str, dict[str, torch.Tensor]]  # our autoencoder's weights travel inside every checkpoint
    identity: dict[str, Any]                     # data identity of the train split


def latent_data(options: TrainOptions, autoencoder_preset: str, args: LatentArgs,
                progress: ProgressFn | None = None) -> LatentData:
    """The autoencoder of preset `autoencoder_preset` trained first (into output_dir/autoencoder) unless
    `args.autoencoder` names one, then the train split encoded with it on the training device."""
    trajectories = load_split(options.data, progress=progress)
    ae_path = Path(args.autoencoder) if args.autoencoder else None
    if ae_path is None:
        ckpt.run_folder(options.output_dir).claim([AUTOENCODER_STAGE])  # the run's folder owns its first stage
        stage = replace(options, output_dir=options.output_dir / AUTOENCODER_STAGE, preset=autoencoder_preset,
                        steps=args.autoencoder_steps, batch_size=None, lr=None, model_args={})
        ae_path = train_autoencoder(stage, progress, trajectories)
    codec, codec_spec = load_autoencoder(ae_path, DistContext.for_device(options.device).device(options.device))
    identity = data_identity(options.data, "train")
    latents = cached_latents(trajectories, codec, codec_spec, identity, progress)
    extra = {AUTOENCODER_FILE: codec.state_dict()} if codec_spec["kind"] == "ours" else {}
    return LatentData(trajectories, with_latents(trajectories, latents), codec_spec, extra, identity)


def weights_sha256(codec: Any, codec_spec: dict[str, Any]) -> str:
    """A hash of our autoencoder's weights (their safetensors bytes: keys sorted, deterministic); a diffusers one is
    named by its spec's path alone."""
    state = ({k: v.detach().cpu().contiguous() for k, v in codec.state_dict().items()}
             if codec_spec["kind"] == "ours" else {})
    return hashlib.sha256(save_tensors_bytes(state)).hexdigest()


def latent_space(path: Path) -> str:
    """One hash per latent space: the spec and weights of the autoencoder at `path` (an autoencoder run, a latent
    model's checkpoint, or a diffusers folder); two models can share latents only when theirs are equal."""
    codec, spec = load_autoencoder(path)
    return sha256_json([spec, weights_sha256(codec, spec)])


def cached_latents(trajectories: list[Trajectory], codec: Any, codec_spec: dict[str, Any], identity: dict[str, Any],
                   progress: ProgressFn | None = None) -> list[torch.Tensor]:
    """The split's latents, encoded once per (data set, autoencoder): cached under $LOOPNAV_CACHE_DIR/latents, keyed
    by the manifest hash, the split and a hash of the autoencoder's spec and weights."""
    weights = weights_sha256(codec, codec_spec)
    key = sha256_json([identity["manifest_hash"], identity["split"], codec_spec, weights])[:24]
    path = loopnav_cache_dir() / "latents" / f"{key}.safetensors"
    lengths = [len(t) for t in trajectories]
    if path.exists():
        stored = ckpt.load_tensors(path)
        if stored["lengths"].tolist() == lengths:
            return list(stored["latents"].split(lengths))
    latents = encode_trajectories(trajectories, codec.encode, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt.save_tensors(path, {"latents": torch.cat(latents), "lengths": torch.tensor(lengths)})
    return latents
