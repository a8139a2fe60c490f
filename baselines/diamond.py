"""DIAMOND (Alonso et al. 2024, eloialonso/diamond) as a LoopNav baseline: an EDM denoiser UNet in pixel space.

What is DIAMOND's own and kept here: the next frame is denoised by a UNet whose input is the last 4 frames
channel-concatenated with the (preconditioned) noisy frame; the conditioning vector is
cond_proj(FourierFeatures(c_noise) + action embedding) and enters every residual block through adaptive group norm;
each of the 4 steps' multi-hot actions is embedded (a bias-free linear map, which is DIAMOND's `act @
Embedding.weight`) to cond/4 channels and the four are concatenated; EDM preconditioning with σ_data = 0.5 on pixels
in [-1, 1], training log σ ~ N(-0.4, 1.2²), sampling with 3 Euler steps (2 in the `cpu` preset, chosen on val) on
the Karras schedule (σ 5 → 2e-3, ρ 7), and every generated frame quantised to 8 bits before it becomes context; the
context frames divided by σ_data before they enter the network. With `context_noise` (DIAMOND's CS:GO recipe,
`noise_previous_obs`), training also noises the context frames at a σ_cond drawn like the target's and gives the
network c_noise_cond = log(σ_cond)/4 through a second Fourier embedding; the `cpu` and `small` presets use it with
the CS:GO values: training σ clipped to [2e-3, 20], offset noise 0.1, and every denoised estimate quantised to 8
bits at each sampling step. At inference the context is clean and is announced as σ_cond = σ_min (upstream's default
sampler gives c_noise_cond = 0, i.e. σ_cond = 1).
It works on pixels, with no autoencoder: `small` at the data's resolution (64×64 for ViZDoom), `cpu` and `tiny` at
32×32, the image size of the WorldPack and NWM autoencoders at those presets. The EDM code is the one shared with
WorldPack and NWM (modelkit/diffusion.py).

Pairing: actions[i] is the control that produced frame i (schema, all sources). To predict frame t from frames
t-4 … t-1, the actions are those that produced frames t-3 … t: DIAMOND's act[t-4 … t-1], each taken after its
frame.

Actions: DIAMOND takes only 0/1 (multi-hot) actions, so every action layout has a mapping (ACTION_MAPPINGS):
keys become hot bits and camera turns become one-hots over μ-law bins (VPT's camera quantiser: clip to ±maxval,
x ← maxval·sign(x)·log(1 + μ|x|/maxval)/log(1 + μ), bin = round((x + maxval)/binsize)).
  loopnav-v1 (29): forward, back, left, right, jump, sprint, sneak, then yaw and pitch one-hots of 11 bins each with
              LoopNav's own settings (maxval 0.1 rad, bin 0.02, μ 5). LoopNav's DIAMOND used 24 dims: forward, jump,
              yaw, pitch, the only keys its bot presses; the five other keys are kept, and stay 0 on such data.
  vizdoom-v1 (26): forward / back (sign of move_forward), left / right (sign of move_left), then turn_ccw and
              look_up one-hots of 11 bins with maxval 0.2 rad, bin 0.04, μ 5: the walker turns 2°, 5° or 10° and
              looks 4° per frame, and LoopNav's maxval 0.1 rad (5.7°) would put 5° and 10° in one bin.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from loopnav_bench.models import SHIPPED_DIR, RolloutRequest
from loopnav_bench.schema import ACTION_LAYOUTS
from modelkit.adapter import CheckpointedModel, lockstep_rollout, rollout_buffer
from modelkit.autoencoder import frames_to_tensor, tensor_to_frames
from modelkit.diffusion import EDM, EDMConfig
from modelkit.presets import Preset

# ------------------------------------------------------------------------------------------------ actions


@dataclass(frozen=True)
class MuLawBins:
    maxval: float
    binsize: float
    mu: float

    @property
    def count(self) -> int:
        return round(2 * self.maxval / self.binsize) + 1

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Values -> bin indices in [0, count)."""
        x = np.clip(np.asarray(x, np.float64), -self.maxval, self.maxval) / self.maxval
        encoded = self.maxval * np.sign(x) * np.log1p(self.mu * np.abs(x)) / math.log1p(self.mu)
        return np.round((encoded + self.maxval) / self.binsize).astype(np.int64)


@dataclass(frozen=True)
class ActionMapping:
    """A layout's float actions -> DIAMOND's multi-hot vector: key bits first, then one one-hot per camera axis."""

    layout: str
    keys: tuple[tuple[str, str, float], ...]      # (bit name, layout component, sign): on when sign·value > 0
    cameras: tuple[tuple[str, MuLawBins], ...]    # (layout component, its bins)

    @property
    def width(self) -> int:
        return len(self.keys) + sum(bins.count for _, bins in self.cameras)

    def names(self) -> list[str]:
        return [name for name, _, _ in self.keys] + [f"{component}_bin{i}" for component, bins in self.cameras
                                                       for i in range(bins.count)]

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        """float [T, len(layout)] -> float32 multi-hot [T, width]."""
        components = ACTION_LAYOUTS[self.layout]
        column = {name: np.asarray(actions, np.float64)[:, i] for i, name in enumerate(components)}
        parts = [(sign * column[component] > 0)[:, None] for _, component, sign in self.keys]
        parts += [np.eye(bins.count, dtype=bool)[bins(column[component])] for component, bins in self.cameras]
        return np.concatenate(parts, axis=1).astype(np.float32)


LOOPNAV_KEYS = ("forward", "back", "left", "right", "jump", "sprint", "sneak")
LOOPNAV_CAMERA = MuLawBins(maxval=0.1, binsize=0.02, mu=5.0)
VIZDOOM_CAMERA = MuLawBins(maxval=0.2, binsize=0.04, mu=5.0)
ACTION_MAPPINGS: dict[str, ActionMapping] = {
    "loopnav-v1": ActionMapping("loopnav-v1",
                                keys=tuple((k, k, 1.0) for k in LOOPNAV_KEYS),
                                cameras=(("camera_dyaw", LOOPNAV_CAMERA), ("camera_dpitch", LOOPNAV_CAMERA))),
    "vizdoom-v1": ActionMapping("vizdoom-v1",
                                keys=(("forward", "move_forward", 1.0), ("back", "move_forward", -1.0),
                                      ("left", "move_left", 1.0), ("right", "move_left", -1.0)),
                                cameras=(("turn_ccw", VIZDOOM_CAMERA), ("look_up", VIZDOOM_CAMERA))),
}


def action_mapping(layout: str) -> ActionMapping:
    if layout not in ACTION_MAPPINGS:
        raise ValueError(f"DIAMOND has no multi-hot mapping for action layout {layout!r} "
                         f"(mapped: {', '.join(ACTION_MAPPINGS)}); add one to baselines/diamond.py ACTION_MAPPINGS")
    return ACTION_MAPPINGS[layout]

# ------------------------------------------------------------------------------------------------ the denoiser


@dataclass(frozen=True)
class DiamondConfig:
    image_size: int = 64
    context: int = 4                                  # DIAMOND's num_steps_conditioning
    channels: tuple[int, ...] = (32, 64, 64)          # one UNet level each
    depths: tuple[int, ...] = (1, 1, 1)               # residual blocks per level
    attention: tuple[bool, ...] = (False, False, False)
    cond_channels: int = 128
    action_layout: str = "vizdoom-v1"
    context_noise: bool = False                       # DIAMOND's noise_previous_obs (CS:GO)
    edm: EDMConfig = field(default_factory=lambda: EDMConfig(sigma_data=0.5, p_mean=-0.4, p_std=1.2, steps=3,
                                                             solver="euler"))

    def __post_init__(self) -> None:
        if not len(self.channels) == len(self.depths) == len(self.attention):
            raise ValueError("channels, depths and attention need one entry per UNet level")
        if self.cond_channels % self.context:
            raise ValueError(f"cond_channels {self.cond_channels} must divide over the {self.context} action steps")
        if self.image_size % 2 ** (len(self.channels) - 1):
            raise ValueError(f"image size {self.image_size} does not halve {len(self.channels) - 1} times")
        action_mapping(self.action_layout)

    @property
    def action_dim(self) -> int:
        return action_mapping(self.action_layout).width

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DiamondConfig":
        return cls(**{**d, "channels": tuple(d["channels"]), "depths": tuple(d["depths"]),
                      "attention": tuple(d["attention"]), "edm": EDMConfig(**d["edm"])})


# DIAMOND's CS:GO recipe: the context noised in training, training σ clipped to [2e-3, 20], offset noise 0.1
CSGO_RECIPE = {"context_noise": True,
               "edm": EDMConfig(sigma_data=0.5, p_mean=-0.4, p_std=1.2, steps=3, solver="euler",
                                train_sigma_range=(2e-3, 20.0), offset_noise=0.1)}
PRESETS: dict[str, Preset] = {
    # 32 px, the resolution of the tiny WorldPack / NWM autoencoder, so that a CPU trains it in minutes
    "tiny": Preset(model={"image_size": 32, "channels": (32, 64, 64), "depths": (1, 1, 1),
                          "attention": (False, False, False), "cond_channels": 128},
                   steps=2000, batch_size=16, lr=5e-4, ema_decay=0.995),
    # 32 px like WorldPack's and NWM's cpu autoencoder, tiny's UNet (pixels cost ~10x a latent model's sample on a
    # CPU: it gets fewer steps than the others in the same wall time; README); lr and EMA of WorldPack's cpu preset
    # sampled with 2 Euler steps: on val they beat DIAMOND's 3 in SSIM and tied in PSNR (README)
    "cpu": Preset(model={"image_size": 32, "channels": (32, 64, 64), "depths": (1, 1, 1),
                         "attention": (False, False, False), "cond_channels": 128,
                         **CSGO_RECIPE, "edm": replace(CSGO_RECIPE["edm"], steps=2)},
                  steps=6000, batch_size=32, lr=5e-4, ema_decay=0.998),
    # DIAMOND's Atari denoiser (4 levels of 64 channels, 2 blocks each, cond 256) at the data's resolution
    "small": Preset(model={"channels": (64, 64, 64, 64), "depths": (2, 2, 2, 2), "attention": (False,) * 4,
                           "cond_channels": 256, **CSGO_RECIPE}, steps=100_000, batch_size=32, lr=1e-4,
                    ema_decay=0.9999),
}


class FourierFeatures(nn.Module):
    """c_noise -> [cos, sin] of random frequencies (fixed at construction, saved with the weights)."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("weight", torch.randn(1, channels // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * x.float()[:, None] @ self.weight
        return torch.cat([angles.cos(), angles.sin()], dim=-1)


def _groups(channels: int) -> int:
    return max(1, channels // 32)  # DIAMOND's group size of 32 channels


class AdaGroupNorm(nn.Module):
    """Group norm without affine parameters, then a scale and shift computed from the conditioning vector."""

    def __init__(self, channels: int, cond_channels: int):
        super().__init__()
        self.groups = _groups(channels)
        self.linear = nn.Linear(cond_channels, 2 * channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(cond)[:, :, None, None].chunk(2, dim=1)
        return F.group_norm(x, self.groups) * (1 + scale) + shift


class SelfAttention2d(nn.Module):
    def __init__(self, channels: int, cond_channels: int, head_dim: int = 8):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = AdaGroupNorm(channels, cond_channels)
        self.qkv, self.out = nn.Conv2d(channels, 3 * channels, 1), nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x, cond)).view(B, 3, self.heads, C // self.heads, H * W)
        q, k, v = qkv.transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, HW, C/heads]
        return x + self.out(out.transpose(-1, -2).reshape(B, C, H, W))


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, cond_channels: int, attention: bool):
        super().__init__()
        self.norm1, self.norm2 = AdaGroupNorm(c_in, cond_channels), AdaGroupNorm(c_out, cond_channels)
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.attention = SelfAttention2d(c_out, cond_channels) if attention else None
        nn.init.zeros_(self.conv2.weight)  # every block starts as (a projection of) the identity
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x, cond)))
        x = self.skip(x) + self.conv2(F.silu(self.norm2(h, cond)))
        return x if self.attention is None else self.attention(x, cond)


class UNet(nn.Module):
    """Levels of residual blocks, halving the resolution between levels; the way up concatenates the skips."""

    def __init__(self, channels: tuple[int, ...], depths: tuple[int, ...], attention: tuple[bool, ...],
                 cond_channels: int):
        super().__init__()
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        skips, width = [], channels[0]
        for c, depth, attn in zip(channels, depths, attention):
            blocks = []
            for _ in range(depth):
                blocks.append(ResBlock(width, c, cond_channels, attn))
                width = c
                skips.append(width)
            self.down.append(nn.ModuleList(blocks))
        self.middle = nn.ModuleList(ResBlock(width, width, cond_channels, attn) for attn in (True, False))
        for c, depth, attn in reversed(list(zip(channels, depths, attention))):
            blocks = []
            for _ in range(depth):
                blocks.append(ResBlock(width + skips.pop(), c, cond_channels, attn))
                width = c
            self.up.append(nn.ModuleList(blocks))
        self.downsample = nn.ModuleList(nn.Conv2d(c, c, 3, stride=2, padding=1) for c in channels[:-1])
        self.upsample = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for c in reversed(channels[1:]))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, blocks in enumerate(self.down):
            if level:
                x = self.downsample[level - 1](x)
            for block in blocks:
                x = block(x, cond)
                skips.append(x)
        for block in self.middle:
            x = block(x, cond)
        for level, blocks in enumerate(self.up):
            if level:
                x = self.upsample[level - 1](F.interpolate(x, scale_factor=2.0, mode="nearest"))
            for block in blocks:
                x = block(torch.cat([x, skips.pop()], dim=1), cond)
        return x


class Diamond(nn.Module):
    def __init__(self, config: DiamondConfig):
        super().__init__()
        self.config = config
        cond, first = config.cond_channels, config.channels[0]
        self.noise_embed = FourierFeatures(cond)
        self.context_noise_embed = FourierFeatures(cond) if config.context_noise else None
        self.action_embed = nn.Linear(config.action_dim, cond // config.context, bias=False)
        self.cond_proj = nn.Sequential(nn.Linear(cond, cond), nn.SiLU(), nn.Linear(cond, cond))
        self.conv_in = nn.Conv2d(3 * (config.context + 1), first, 3, padding=1)
        self.unet = UNet(config.channels, config.depths, config.attention, cond)
        self.norm_out = nn.GroupNorm(_groups(first), first)
        self.conv_out = nn.Conv2d(first, 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.edm = EDM(config.edm)

    def denoiser(self, x_in: torch.Tensor, c_noise: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """EDM's F: preconditioned noisy frame [B, 3, H, W] -> network output of the same shape.
        batch: "context" [B, K, 3, H, W] in [-1, 1], "actions" [B, K, action_dim] multi-hot, and with context_noise
        "context_sigma" [B], the noise level of the context."""
        cond = self.noise_embed(c_noise) + self.action_embed(batch["actions"]).flatten(1)
        if self.context_noise_embed is not None:
            cond = cond + self.context_noise_embed(batch["context_sigma"].log() / 4)
        context = batch["context"].flatten(1, 2) / self.config.edm.sigma_data
        x = self.conv_in(torch.cat([context, x_in], dim=1))
        return self.conv_out(F.silu(self.norm_out(self.unet(x, self.cond_proj(cond)))))

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.context_noise_embed is not None:
            context = batch["context"]
            sigma = self.edm.training_sigmas(len(context), context.device)
            noisy = self.edm.add_noise(context.flatten(1, 2), sigma).view_as(context)
            batch = {**batch, "context": noisy, "context_sigma": sigma}
        return self.edm.loss(self.denoiser, batch["target"], batch)

    def sample(self, batch: dict[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        """Next frames [B, 3, H, W] in [-1, 1], quantised to 8 bits, from standard-normal noise of that shape."""
        if self.context_noise_embed is not None:  # the context is clean: announced at the schedule's lowest σ
            batch = {**batch, "context_sigma": noise.new_full((len(noise),), self.config.edm.sigma_min)}
        return self.edm.sample(self.denoiser, noise, batch, project=lambda d: quantise(d.clamp(-1, 1)))


def quantise(frames: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats rounded to the nearest of the 256 values uint8 pixels can take."""
    return ((frames + 1) * 127.5).round() / 127.5 - 1

def step_window(t: int | np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices t-K … t-1 and action indices t-K+1 … t for predicting frame t (clamped at the first frame);
    for an array of targets t [B], both are [B, K]."""
    frames = np.maximum(np.asarray(t)[..., None] + np.arange(-context, 0), 0)
    return frames, frames + 1


class DiamondModel(CheckpointedModel):
    """DIAMOND behind the WorldModel API (registered as "diamond"). Without --checkpoint the shipped `cpu`
    checkpoint (baselines/checkpoints/diamond) is used. Model args: `sampler_steps=N`, `solver=euler|heun`."""

    name = "diamond"
    description = "DIAMOND (Alonso et al.): pixel-space diffusion over the last 4 frames"
    shipped_dir = Path(__file__).parent / SHIPPED_DIR
    config_class, network_class, default_checkpoint = DiamondConfig, Diamond, "diamond"

    @property
    def mapping(self) -> ActionMapping:
        return action_mapping(self.config.action_layout)

    def rollout_batch(self, requests: list[RolloutRequest]) -> list[np.ndarray]:
        """One frame per step from the last 4 frames, real or predicted; see `lockstep_rollout`."""
        for r in requests:
            if r.meta.get("action_layout") != self.config.action_layout:
                raise ValueError(f"trajectory {r.id!r}: action layout {r.meta.get('action_layout')!r}, but "
                                 f"{self.step_dir} was trained on {self.config.action_layout!r}")
        frames = [rollout_buffer(self._to_model, r) for r in requests]
        actions = [torch.from_numpy(self.mapping(np.concatenate([r.context_actions, r.target_actions])))
                   for r in requests]

        def conditioning(i: int, target: int) -> dict[str, torch.Tensor]:
            frame_index, action_index = step_window(target, self.config.context)
            return {"context": frames[i][frame_index], "actions": actions[i][action_index]}

        predicted = lockstep_rollout(frames, [len(r.context_frames) for r in requests], [r.seed for r in requests],
                                     conditioning, self.model.sample, self.device)
        return [tensor_to_frames(p) for p in predicted]

    def _to_model(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 frames at the model's size, as 8-bit values in [-1, 1] (what its predictions are too)."""
        return quantise(frames_to_tensor(frames, self.config.image_size))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "context_frames": self.config.context, "image_size": self.config.image_size,
                "action_layout": self.config.action_layout,
                "action_bits": self.mapping.names()}
