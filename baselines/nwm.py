"""NWM, the Navigation World Model of Bar et al. 2025 (facebookresearch/nwm), as a LoopNav baseline.

A CDiT (modelkit/cdit.py, the blocks WorldPack also uses) predicts the latent of a goal frame from the latents of
the 4 frames that end at the current one. What is NWM's own and kept here:
  - positions: one learned embedding per frame slot and per patch, `pos_embed [context + 1, patches, D]`
    (N(0, 0.02)); the context slots come first, the goal slot last. NWM has no RoPE: the shared blocks' temporal
    RoPE is given time 0 for every token, where it is the identity;
  - conditioning c = noise-level embedding + time-shift embedding (rel_t = goal offset / 128) + action embedding;
  - the action is the goal frame's pose in the current frame's coordinates, (dx, dy, dyaw): dx forward, dy left,
    divided by the data's waypoint spacing (mean distance walked per frame, measured on the training split, NWM's
    `metric_waypoint_spacing`), then min-max normalised with NWM's action stats (min (-2.5, -4), max (5, 4)) to
    [-1, 1]; dyaw in radians, wrapped, not normalised. Each of dx, dy, dyaw has its own sinusoidal embedder, of
    widths D//3, D//3 and D - 2·(D//3), concatenated (NWM's ActionEmbedder). NWM's poses are planar: height and
    pitch are not part of the action;
  - cross-attention with a learned bias key and value (NWM's `nn.MultiheadAttention(..., add_bias_kv=True)`);
  - training examples: 4 context frames and `goals_per_context` goals drawn at offsets in `goal_offsets` around the
    current frame (NWM: 4 goals at offsets in [-64, 64], 0 included: the goal may be the current frame), clipped to
    the trajectory;
  - rollout: one frame at a time (offset +1, rel_t = 1/128), the context a sliding window over real and predicted
    frames, the action the known pose of the next frame relative to the last one.

Substituted: the diffusion is the shared few-step EDM (modelkit/diffusion.py, sampled with 3 Euler steps) instead
of NWM's 1000-step DDPM with learned variance and 250 sampling steps; the latent space is a small autoencoder
trained on our frames (modelkit/autoencoder.py) instead of the SD VAE; sizes are `tiny` (tests), `cpu` and
`small` (WorldPack's width and depth at each, so the two differ only in context; under 16 MB shipped in fp16). Unlike
WorldPack's recipe, NWM's has no context-noise augmentation and no preference for a time shift of 1: it is trained as
upstream, and the README says so where the two are compared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from loopnav_bench.models import SHIPPED_DIR, RolloutRequest, load_model
from loopnav_bench.schema import units_per_block, wrap_angle
from modelkit import checkpoint as ckpt
from modelkit.adapter import CheckpointedModel, lockstep_rollout, rollout_buffer
from modelkit.autoencoder import load_autoencoder
from modelkit.cdit import ACTION_MAX, ACTION_MIN, TIME_SCALE, ActionEmbedder, CDiT, CDiTConfig, TimestepEmbedder
from modelkit.diffusion import EDM, EDMConfig
from modelkit.presets import Preset

OFFICIAL = "nwm-official"            # the registered model that loads NWM's released weights


@dataclass(frozen=True)
class NWMConfig(CDiTConfig):
    context: int = 4                          # NWM's context_size
    goal_offsets: tuple[int, int] = (1, 4)    # range of the goal offsets drawn in training, in frames
    goals_per_context: int = 4                # NWM's goals_per_obs
    waypoint_spacing: float = 1.0             # blocks walked per frame on the training split
    # DIAMOND's sampler (3 Euler steps): on the tiny checkpoint its next latents have 2.3x less squared error than
    # with the shared default of 4 Heun steps, whose corrections at the smallest σ amplify an undertrained denoiser
    edm: EDMConfig = field(default_factory=lambda: EDMConfig(steps=3, solver="euler"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NWMConfig":
        return cls(**{**d, "goal_offsets": tuple(d["goal_offsets"]), "edm": EDMConfig(**d["edm"])})


PRESETS: dict[str, Preset] = {
    # trains on a CPU in minutes; a rollout only ever asks for the next frame, so goals stay close
    "tiny": Preset(model={"hidden": 96, "depth": 4, "heads": 4, "goal_offsets": (1, 4)}, steps=2500, batch_size=16,
                   lr=3e-4, ema_decay=0.99, autoencoder="tiny"),
    # WorldPack's cpu preset: its width, depth, latent space and budget (steps x batch, lr, EMA); goals within 4
    # frames ahead, the current frame included as NWM allows; 2 Euler steps beat 3 on val (README)
    "cpu": Preset(model={"hidden": 96, "depth": 5, "heads": 4, "patch": 2, "goal_offsets": (0, 4),
                         "edm": EDMConfig(steps=2, solver="euler")},
                  steps=6000, batch_size=32, lr=5e-4, ema_decay=0.998, autoencoder="cpu"),
    # WorldPack's small width and depth; NWM's offsets of ±64 frames, past included
    "small": Preset(model={"hidden": 160, "depth": 8, "heads": 5, "goal_offsets": (-64, 64)}, steps=100_000,
                    batch_size=64, lr=1e-4, ema_decay=0.9999, autoencoder="small"),
}


def goal_action(current: np.ndarray, goal: np.ndarray, units_per_block: float | np.ndarray,
                spacing: float) -> np.ndarray:
    """NWM's action: the goal pose [..., 5] seen from the current pose [5] (or poses [..., 5] and units [...]
    broadcasting with the goals), as normalised (dx, dy, dyaw) float32."""
    units = np.asarray(units_per_block)[..., None]
    delta = (np.asarray(goal[..., :2], np.float64) - current[..., :2]) / units / spacing
    c, s = np.cos(current[..., 3]), np.sin(current[..., 3])
    local = np.stack([c * delta[..., 0] + s * delta[..., 1], -s * delta[..., 0] + c * delta[..., 1]], axis=-1)
    normalised = 2 * (local - ACTION_MIN) / (ACTION_MAX - ACTION_MIN) - 1
    dyaw = wrap_angle(np.asarray(goal[..., 3], np.float64) - current[..., 3])
    return np.concatenate([normalised, np.asarray(dyaw)[..., None]], axis=-1).astype(np.float32)


class NWM(nn.Module):
    def __init__(self, config: NWMConfig):
        super().__init__()
        self.config = config
        D, C, p = config.hidden, config.latent_channels, config.patch
        if config.latent_size % p:
            raise ValueError(f"latent size {config.latent_size} is not divisible by patch {p}")
        patches = (config.latent_size // p) ** 2
        self.patch_embed = nn.Conv2d(C, D, kernel_size=p, stride=p)
        self.pos_embed = nn.Parameter(torch.zeros(config.context + 1, patches, D))
        self.noise_embed, self.time_embed = TimestepEmbedder(D), TimestepEmbedder(D)
        self.action_embed = ActionEmbedder(D)
        self.cdit = CDiT(D, config.depth, config.heads, p * p * C, config.mlp_ratio, cross_bias_kv=True)
        self.edm = EDM(config.edm)
        # NWM's initialisation: learned positions and embedder MLPs N(0, 0.02), the patch embedding like a Linear
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.xavier_uniform_(self.patch_embed.weight.view(D, -1))
        nn.init.zeros_(self.patch_embed.bias)
        for embedder in (self.noise_embed, self.time_embed, *self.action_embed.embedders):
            for layer in embedder.mlp[::2]:
                nn.init.normal_(layer.weight, std=0.02)

    def _tokens(self, latents: torch.Tensor, slots: slice) -> torch.Tensor:
        """latents [B, F, C, h, w] in frame slots `slots` -> tokens [B, F·patches, D] with their positions."""
        B, F = latents.shape[:2]
        tokens = self.patch_embed(latents.flatten(0, 1)).flatten(2).transpose(1, 2)
        return (tokens.view(B, F, *tokens.shape[1:]) + self.pos_embed[slots]).flatten(1, 2)

    def denoiser(self, x_in: torch.Tensor, c_noise: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """EDM's F: preconditioned noisy goal latent [B, C, h, w] -> network output of the same shape."""
        B, C, h, w = x_in.shape
        p, K = self.config.patch, self.config.context
        x = self._tokens(x_in[:, None], slice(K, K + 1))
        context = self._tokens(batch["context"], slice(0, K))
        c = self.noise_embed(c_noise) + self.time_embed(batch["rel_t"]) + self.action_embed(batch["action"])
        out = self.cdit(x, context, c, x.new_zeros(x.shape[:2]), x.new_zeros(context.shape[:2]))
        out = out.view(B, h // p, w // p, p, p, C).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(B, C, h, w)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.edm.loss(self.denoiser, batch["target"], batch)

    def sample(self, batch: dict[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        """Goal latents [B, C, h, w] from standard-normal noise of that shape."""
        return self.edm.sample(self.denoiser, noise, batch)


def context_window(current: int | np.ndarray, context: int) -> np.ndarray:
    """The `context` frame indices ending at `current` ([B, context] for currents [B]); before the first frame, the
    first frame repeats."""
    return np.maximum(np.asarray(current)[..., None] + np.arange(1 - context, 1), 0)


class NWMModel(CheckpointedModel):
    """NWM behind the WorldModel API (registered as "nwm"). Without --checkpoint the shipped `cpu` checkpoint
    (baselines/checkpoints/nwm) is used. Model args: `sampler_steps=N`, `solver=euler|heun`.

    A --checkpoint that exists but is not in loopnav's layout is NWM's official release: the model registered as
    "nwm-official" (published/nwm.py) is built instead, so `--model nwm` serves both (docs/models/nwm-official.md)."""

    name = "nwm"
    description = "NWM (Bar et al.): CDiT over the last 4 frames"
    shipped_dir = Path(__file__).parent / SHIPPED_DIR
    config_class, network_class, default_checkpoint = NWMConfig, NWM, "nwm"

    def __new__(cls, checkpoint: str | None = None, *args: Any, **kwargs: Any):
        if checkpoint is not None and Path(checkpoint).exists() and not ckpt.is_checkpoint(checkpoint):
            return load_model(OFFICIAL, checkpoint, *args, **kwargs)  # not an NWMModel: __init__ is not rerun
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.codec, _ = load_autoencoder(self.step_dir, self.device)  # travels inside the checkpoint

    def rollout_batch(self, requests: list[RolloutRequest]) -> list[np.ndarray]:
        """One frame per step, the goal always the next frame; see `lockstep_rollout`."""
        latents = [rollout_buffer(self.codec.encode, r) for r in requests]
        poses = [np.concatenate([r.context_poses, r.target_poses]) for r in requests]
        units = [units_per_block(r.meta) for r in requests]

        def conditioning(i: int, goal: int) -> dict[str, torch.Tensor]:
            action = goal_action(poses[i][goal - 1], poses[i][goal], units[i], self.config.waypoint_spacing)
            return {"context": latents[i][context_window(goal - 1, self.config.context)],
                    "action": torch.from_numpy(action), "rel_t": torch.tensor(1 / TIME_SCALE)}

        predicted = lockstep_rollout(latents, [len(r.context_frames) for r in requests], [r.seed for r in requests],
                                     conditioning, self.model.sample, self.device)
        return [self.codec.decode(p.to(self.device)) for p in predicted]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "weights": "loopnav (CPU-trained re-implementation)",
                "context_frames": self.config.context, "image_size": self.codec.image_size,
                "autoencoder": self.saved["autoencoder"]}
