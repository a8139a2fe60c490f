"""`loopnav train --model worldpack`: the latent stage (modelkit.train_autoencoder), then the diffusion model on
random (trajectory, target frame, time shift) examples built exactly as a rollout builds them (`build_example`).

Model args (`--model-args k=v,...`): `variant` (full, base, pack-only, retrieval-only, fine-memory), `retrieval` (a
named set of retrieval parameters: paper, vizdoom), the recipe's rates, the network options of `NetworkArgs`
(reliability, generated_level, context_noise_max, cross_bias_kv, rope_fraction, sampler_sigma_rate; unset, the
preset's value), `autoencoder` (a trained autoencoder run or a local diffusers AutoencoderKL folder, instead of
training one first), `autoencoder_steps`, `init` (a trained worldpack run, step folder or shipped checkpoint name to
fine-tune from, in its latent space: finetune.py). The checkpoint stores the layout and the retrieval parameters
themselves, not only their names, and where it started (`init`).

Context corruption (`corrupt_context`, the one place that defines it): Gaussian noise of a given std on a slot's
latent. With reliability="example" every slot of an example gets one std σ ~ U(0, context_noise_max), told to the
model as `context_noise`; with reliability="slot" only the slots a rollout would have generated (frames at or after
the trajectory's offset: recent slots on a return leg) get it, σ drawn per example, and the builder announces it on
exactly those slots (`context_level`), as a rollout announces `generated_level` there. Real memories stay clean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from loopnav_bench.console import ProgressFn
from loopnav_bench.models import bind_args
from loopnav_bench.train import TrainOptions
from modelkit.diffusion import EDMConfig
from modelkit.presets import get_preset
from modelkit.train import fit, loop_config
from modelkit.train_autoencoder import LatentArgs, latent_data
from modelkit.train_data import DeviceBatches, EncodedTrajectory, trajectory_starts
from worldpack.context import cumulative_actions, select_context, slot_conditioning
from worldpack.finetune import check_latent_space, init_checkpoint, start_from
from worldpack.model import WorldPack, WorldPackConfig
from worldpack.presets import PRESETS
from worldpack.retrieval import RETRIEVAL_PRESETS


@dataclass
class Recipe:
    """How training examples are drawn, aimed at what evaluation asks (recorded in every checkpoint)."""

    return_leg_rate: float = 0.5   # share of targets drawn from return legs [offset, T), where memory is informative;
                                   # the rest uniformly over all frames
    shift_one_rate: float = 0.8    # share with time shift 1, the only one a rollout uses; the rest 2..max_time_shift
    drop_recent_rate: float = 0.1  # share whose recent slots are all hidden (when a memory exists): memory alone
                                   # must carry the prediction
    drop_recent_return_rate: float | None = None  # that share for return-leg targets (frames at or after the
                                                  # offset), where a rollout's recent frames are its own; None: as
                                                  # drop_recent_rate
    # context latents are corrupted as config.reliability says (corrupt_context, module docstring)

    @property
    def return_drop_rate(self) -> float:
        return self.drop_recent_rate if self.drop_recent_return_rate is None else self.drop_recent_return_rate


@dataclass
class NetworkArgs:
    """WorldPackConfig options settable as model args; None keeps the preset's value (else the config's default)."""

    reliability: str | None = None         # example, slot
    generated_level: float | None = None   # the level a rollout announces for generated frames (reliability=slot)
    context_noise_max: float | None = None
    cross_bias_kv: bool | None = None
    rope_fraction: float | None = None
    sampler_sigma_rate: float | None = None  # the EDM config's schedule_rate: training σ on the sampler's values

    def network_config(self, preset_model: dict) -> dict:
        """The preset's network fields with these options applied."""
        model = {**preset_model, **{f.name: getattr(self, f.name) for f in fields(NetworkArgs)
                                    if f.name != "sampler_sigma_rate" and getattr(self, f.name) is not None}}
        if self.sampler_sigma_rate is not None:
            model["edm"] = replace(model.get("edm", EDMConfig()), schedule_rate=self.sampler_sigma_rate)
        return model


@dataclass
class WorldPackArgs(Recipe, NetworkArgs, LatentArgs):
    """`loopnav train --model worldpack --model-args ...`: the variant, the recipe's rates, the network's options,
    the latent stage's args."""

    variant: str = "full"      # the context layout: full, base, pack-only, retrieval-only, fine-memory
    retrieval: str = "paper"   # retrieval parameters (RETRIEVAL_PRESETS): paper (Minecraft blocks), vizdoom
    init: str | None = None    # a trained worldpack to fine-tune from (finetune.py); None: from scratch


class MemoryBatches(DeviceBatches):
    """WorldPack training examples, gathered as whole batches with array operations.

    Every trajectory's latents sit in one tensor (on the training device after `to`); each frame's retrieved memories
    are computed once from the ground-truth poses with the rollout's slot and memory-pool rule (`select_context`),
    and the conditioning comes from the rollout's builder (`slot_conditioning`), so a batch is index arithmetic on the
    host and two gathers on the device. `example(...)` equals a rollout's `build_example` for the same frame and time
    shift (tested).
    """

    def __init__(self, encoded: list[EncodedTrajectory], config: WorldPackConfig, recipe: Recipe = Recipe(),
                 progress: ProgressFn | None = None):
        layout, params = config.layout, config.retrieval
        if layout.retrieved and len(layout.recent) + config.max_time_shift > params.exclusion + 1:
            raise ValueError("recent slots reach into the retrieval window: precomputed memories would differ")
        self.config, self.recipe, self.layout = config, recipe, layout
        lengths = np.array([len(e.latents) for e in encoded])
        self.starts = trajectory_starts(lengths)
        self.latents = torch.cat([e.latents for e in encoded])
        self.poses = np.concatenate([e.poses for e in encoded])
        self.units = np.repeat([e.units_per_block for e in encoded], lengths)
        self.cum_actions = np.concatenate([cumulative_actions(e.actions) for e in encoded])
        self.first = np.repeat(self.starts, lengths)  # each frame's trajectory start
        self.split = np.repeat(self.starts + [e.offset for e in encoded], lengths)  # ... and its first target frame
        self.memories = np.full((len(self.latents), len(layout.retrieved)), -1, np.int64)
        for n, (e, start) in enumerate(zip(encoded, self.starts)):
            for t in range(1, len(e.latents)) if layout.retrieved else ():
                # the memories of target t with time shift 1; longer shifts keep them (the recent slots stay inside
                # the exclusion window, checked above)
                slots = select_context(e.poses, t, t - 1, layout, params, e.units_per_block, split=e.offset)
                found = slots[len(layout.recent):]
                self.memories[start + t] = np.where(found >= 0, found + start, -1)
            if progress:
                progress("retrieve memories", n + 1, len(encoded))
        targets = np.concatenate([np.arange(s + 1, s + n) for s, n in zip(self.starts, lengths)])
        returns = np.concatenate([np.arange(s + max(e.offset, 1), s + n)
                                  for s, n, e in zip(self.starts, lengths, encoded)])
        if not len(targets):
            raise ValueError("no trajectory has two frames or more")
        self.targets, self.returns = targets, returns if len(returns) else targets

    def example(self, current: np.ndarray, last_seen: np.ndarray,
                level: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """The conditioning of targets `current` given frames up to `last_seen` (global frame indices [B]), the slots
        holding frames at or after the offset announced at `level` [B] (default 0; see `slot_conditioning`)."""
        recent = last_seen[:, None] - np.arange(len(self.layout.recent))
        recent = np.where(recent >= self.first[current][:, None], recent, -1)
        slots = np.concatenate([recent, self.memories[current]], axis=1)
        level = np.zeros(len(current), np.float32) if level is None else level
        safe, arrays = slot_conditioning(self.poses, self.cum_actions, self.units[current], current, last_seen, slots,
                                         self.split[current], level)
        return {"context": self.gather(self.latents, safe), **{k: self.put(v) for k, v in arrays.items()}}

    def __call__(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        recipe, config, n_recent = self.recipe, self.config, len(self.layout.recent)
        from_returns = rng.random(batch_size) < recipe.return_leg_rate
        current = np.where(from_returns, rng.choice(self.returns, batch_size), rng.choice(self.targets, batch_size))
        longer = rng.integers(2, max(config.max_time_shift, 2) + 1, batch_size)
        shift = np.where(rng.random(batch_size) < recipe.shift_one_rate, 1, longer)
        last_seen = np.maximum(current - shift, self.first[current])
        has_memory = (self.memories[current] >= 0).any(axis=1)  # the memory slots' context_valid
        drop_rate = np.where(current >= self.split[current], recipe.return_drop_rate, recipe.drop_recent_rate)
        drop = self.put((rng.random(batch_size) < drop_rate) & has_memory)
        sigma = rng.uniform(0, config.context_noise_max, batch_size) if config.context_noise_max > 0 else None
        per_slot = sigma is not None and config.reliability == "slot"
        batch = self.example(current, last_seen, sigma if per_slot else None)
        batch["context_valid"][:, :n_recent] &= ~drop[:, None]
        if per_slot:  # only the slots a rollout generates, at the level the builder announced on them
            batch["context"] = corrupt_context(batch["context"], batch["context_level"])
        elif sigma is not None:  # every slot, at one level per example, told to the model through c
            batch["context_noise"] = self.put(sigma).float()
            batch["context"] = corrupt_context(batch["context"],
                                               batch["context_noise"][:, None].expand(batch["context"].shape[:2]))
        batch["target"] = self.gather(self.latents, current)
        return batch


def corrupt_context(context: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Context latents [B, S, C, h, w] with N(0, std²) noise, std [B, S] per slot (0: left exactly as is). The one
    definition of training's context corruption: a rollout's generated frames differ from real ones by the model's
    error, which Gaussian noise at an announced level stands in for (GameNGen's noise augmentation)."""
    return context + std[..., None, None, None] * torch.randn_like(context)


def train_worldpack(options: TrainOptions, progress: ProgressFn | None = None) -> Path:
    args = bind_args(WorldPackArgs, options.model_args, "worldpack")
    if args.retrieval not in RETRIEVAL_PRESETS:
        raise ValueError(f"--model-args retrieval={args.retrieval!r}: choose one of {', '.join(RETRIEVAL_PRESETS)}")
    preset = get_preset(PRESETS, options.preset, "worldpack")
    network = args.network_config(preset.model)
    init = init_checkpoint(args.init, network) if args.init else None
    if init and args.autoencoder:
        check_latent_space(args.autoencoder, init)
    autoencoder = args.autoencoder or (str(init) if init else None)  # the init's latent space by default
    data = latent_data(options, preset.autoencoder, replace(args, autoencoder=autoencoder), progress)
    latent, first = data.encoded[0].latents.shape, data.trajectories[0]
    config = WorldPackConfig(latent_channels=latent[1], latent_size=latent[-1], action_dim=first.actions.shape[1],
                             variant=args.variant, retrieval=RETRIEVAL_PRESETS[args.retrieval],
                             **network)
    torch.manual_seed(options.seed)
    model = WorldPack(config)
    started = start_from(model, init) if init else None  # resume then loads the run's own checkpoint over it
    recipe = Recipe(**{f.name: getattr(args, f.name) for f in fields(Recipe)})
    batches = MemoryBatches(data.encoded, config, recipe, progress)
    run_config = {"model": "worldpack", "config": config.to_dict(), "recipe": asdict(recipe), "preset": options.preset,
                  "autoencoder": data.codec_spec, "action_layout": first.meta["action_layout"], "data": data.identity,
                  **({"init": started} if started else {})}
    return fit(model, batches, loop_config(options, preset), options.output_dir, run_config, device=options.device,
               resume=options.resume,
               allow_changed_settings=options.allow_changed_settings, extra_files=data.extra_files, progress=progress,
               description=f"worldpack ({args.variant})")
