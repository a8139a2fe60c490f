"""Oasis-500M (Decart & Etched, etched-ai/open-oasis f59deef): a spatio-temporal DiT over the latents of a ViT VAE,
sampled frame by frame with v-prediction DDIM, conditioned on Minecraft's 25-dim VPT action vector. Written from
reading upstream's dit.py, attention.py, vae.py, utils.py and generate.py; checked against golden outputs of that code
(`check_upstream`, docs/models/oasis.md).

What is reproduced, with where it lives upstream:
  - DiT blocks (dit.py `SpatioTemporalDiTBlock`): a spatial sub-block (full attention inside a frame) then a temporal
    one (causal attention along time, per patch position), each adaLN-Zero modulated by timestep + action embedding;
  - rotary embeddings (rotary_embedding_torch.py): adjacent channel pairs rotate together; spatial RoPE is axial with
    "pixel" frequencies over linspace(-1, 1) positions (H channels first), temporal RoPE has "lang" frequencies at
    integer positions restarting at 0 in the sliding window;
  - the ViT VAE (vae.py): posterior MEAN × 0.07843137255, RoPE on half of each head, decoder tokens laid out (c, p, p);
  - the sampler (generate.py `main`): noise clamped to ±20, context frames fed clean at stabilization_level − 1,
    noise levels linspace(−1, 999, steps + 1) truncated to int64, the sigmoid β schedule cast to float32 BEFORE its
    cumprod, eta-0 v-prediction DDIM writing back only the last frame, window start max(0, i + 1 − max_frames).
"""

from __future__ import annotations

import json
import math
from abc import abstractmethod
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from loopnav_bench.metrics.pixel import resize_frames
from loopnav_bench.models import RolloutRequest, WorldModel
from modelkit.adapter import lockstep_rollout
from published.upstream_check import FixtureResult

# utils.py ACTION_KEYS: the order of the action vector (not alphabetical)
ACTION_KEYS = ("inventory", "ESC", "hotbar.1", "hotbar.2", "hotbar.3", "hotbar.4", "hotbar.5", "hotbar.6", "hotbar.7",
               "hotbar.8", "hotbar.9", "forward", "back", "left", "right", "cameraX", "cameraY", "jump", "sneak",
               "sprint", "swapHands", "attack", "use", "pickItem", "drop")
CAMERA_CENTRE_BIN = 40          # VPT camera bins 0..80 of 0.5°, 40 = no motion (utils.py max_val 20, bin_size 0.5)
CAMERA_DEGREES_PER_BIN = 0.5
LATENT_SCALE = 0.07843137255    # generate.py scaling_factor (= 1/12.75), not the SD VAE's 0.18215
MAX_NOISE_LEVEL = 1000
NOISE_ABS_MAX = 20.0
STABILIZATION_LEVEL = 15
DIT_FILE, VAE_FILE = "oasis500m.safetensors", "vit-l-20.safetensors"  # Etched/oasis-500m on the Hub


# ---------------------------------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class DiTSize:
    input_h: int = 18
    input_w: int = 32
    patch_size: int = 2
    in_channels: int = 16
    hidden_size: int = 1024
    depth: int = 16
    num_heads: int = 16
    mlp_ratio: float = 4.0
    external_cond_dim: int = 25
    max_frames: int = 32


@dataclass(frozen=True)
class VAESize:
    latent_dim: int = 16
    input_height: int = 360
    input_width: int = 640
    patch_size: int = 20
    enc_dim: int = 1024
    enc_depth: int = 6
    enc_heads: int = 16
    dec_dim: int = 1024
    dec_depth: int = 12
    dec_heads: int = 16
    mlp_ratio: float = 4.0


SIZES: dict[str, tuple[DiTSize, VAESize]] = {
    # dit.py DiT_S_2 and vae.py ViT_L_20_Shallow_Encoder
    "oasis-500m": (DiTSize(), VAESize()),
    # the upstream fixtures' tiny instance: 80x160 frames, 4x8 latents
    "tiny": (DiTSize(input_h=4, input_w=8, hidden_size=64, depth=2, num_heads=4, max_frames=4),
             VAESize(input_height=80, input_width=160, enc_dim=64, enc_depth=1, enc_heads=4, dec_dim=64, dec_depth=2,
                     dec_heads=4)),
}


# ---------------------------------------------------------------------------------------------------- rotary


def pixel_freqs(dim: int, max_freq: float) -> torch.Tensor:
    """RotaryEmbedding(dim, freqs_for="pixel", max_freq): linspace(1, max_freq/2, dim/2)·π."""
    return torch.linspace(1.0, max_freq / 2, dim // 2) * math.pi


def lang_freqs(dim: int, theta: float = 10000.0) -> torch.Tensor:
    """RotaryEmbedding(dim) ("lang"): theta^(−2k/dim)."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))


def pair_angles(positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """positions [...] × freqs [F] -> angles [..., 2F], each frequency repeated for its channel pair."""
    return (positions.to(freqs.dtype)[..., None] * freqs).repeat_interleave(2, dim=-1)


def axial_angles(height: int, width: int, freqs: torch.Tensor) -> torch.Tensor:
    """Axial pixel RoPE angles [H, W, 4F] over linspace(−1, 1) positions: the H-axis channels first."""
    rows = pair_angles(torch.linspace(-1, 1, height), freqs)[:, None].expand(height, width, -1)
    cols = pair_angles(torch.linspace(-1, 1, width), freqs)[None].expand(height, width, -1)
    return torch.cat([rows, cols], dim=-1)


def rotate_pairs(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate the first angles.shape[-1] channels of x, adjacent channels (2k, 2k+1) as one pair; the rest pass."""
    n = angles.shape[-1]
    head, tail = x[..., :n], x[..., n:]
    pairs = head.unflatten(-1, (-1, 2))
    swapped = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return torch.cat((head * angles.cos() + swapped * angles.sin(), tail), dim=-1).to(x.dtype)


# ---------------------------------------------------------------------------------------------------- shared layers


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """The DiT blocks' LayerNorm: no affine parameters, eps 1e-6."""
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


def frame_modulation(adaln: nn.Module, c: torch.Tensor, chunks: int) -> list[torch.Tensor]:
    """adaLN of a per-frame condition c [B, T, D] -> `chunks` tensors [B, T, 1, 1, D] that broadcast over a frame."""
    return [m[:, :, None, None] for m in adaln(c).chunk(chunks, dim=-1)]


class PatchEmbed(nn.Module):
    """A stride-p convolution (timm-style `proj`)."""

    def __init__(self, patch_size: int, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # [N, C, H, W] -> [N, h, w, D]


class Mlp(nn.Module):
    """timm's Mlp: fc1, activation, fc2."""

    def __init__(self, dim: int, hidden: int, approximate: str):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class TimestepEmbedder(nn.Module):
    """DiT's sinusoidal embedding (cos before sin, 256 frequencies, max period 10000) followed by an MLP."""

    def __init__(self, dim: int, frequencies: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.frequencies = frequencies

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequencies // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half).to(t.device)
        args = t.reshape(-1).float()[:, None] * freqs
        embedding = torch.cat([args.cos(), args.sin()], dim=-1)
        return self.mlp(embedding.to(self.mlp[0].weight.dtype)).reshape(*t.shape, -1)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.unflatten(-1, (heads, -1))


class SpatialAttention(nn.Module):
    """Full attention among the patches of each frame, with axial pixel RoPE on queries and keys."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.register_buffer("freqs", pixel_freqs(dim // heads // 2, 256), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, H, W, D = x.shape
        angles = axial_angles(H, W, self.freqs).to(x.device)
        q, k, v = (split_heads(p, self.heads) for p in self.to_qkv(x).chunk(3, dim=-1))  # [B, T, H, W, h, d]
        q, k = (rotate_pairs(p.movedim(-2, 2), angles).flatten(3, 4) for p in (q, k))      # [B, T, h, HW, d]
        v = v.movedim(-2, 2).flatten(3, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.unflatten(3, (H, W)).movedim(2, -2).flatten(-2))


class TemporalAttention(nn.Module):
    """Attention along time at each patch position, with "lang" RoPE at positions 0..T−1. `mask` [T, T] (True =
    attend) replaces the default causal mask (the diagonal included)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.register_buffer("freqs", lang_freqs(dim // heads), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        T = x.shape[1]
        angles = pair_angles(torch.arange(T, device=x.device), self.freqs)  # [T, d]
        q, k, v = (split_heads(p, self.heads).permute(0, 2, 3, 4, 1, 5) for p in self.to_qkv(x).chunk(3, dim=-1))
        q, k = rotate_pairs(q, angles), rotate_pairs(k, angles)                   # [B, H, W, h, T, d]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.to_out(out.permute(0, 4, 1, 2, 3, 5).flatten(-2))


def adaln_sub_block(x: torch.Tensor, c: torch.Tensor, adaln: nn.Module, attention: Callable[[torch.Tensor], Any],
                    mlp: nn.Module) -> torch.Tensor:
    """x + gate·attention(modulate(LN x)), then x + gate·mlp(modulate(LN x)), modulated per frame by c [B, T, D]."""
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = frame_modulation(adaln, c, 6)
    x = x + gate_a * attention(modulate(layer_norm(x), shift_a, scale_a))
    return x + gate_m * mlp(modulate(layer_norm(x), shift_m, scale_m))


def adaln_linear(dim: int, chunks: int) -> nn.Sequential:
    return nn.Sequential(nn.SiLU(), nn.Linear(dim, chunks * dim))


class SpatioTemporalBlock(nn.Module):
    """A spatial then a temporal adaLN-Zero sub-block (tanh-GELU MLPs). The temporal one is modulated by
    `c_temporal` where given (WorldMem: timestep + action there, timestep alone elsewhere), else by c."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.s_attn, self.t_attn = SpatialAttention(dim, heads), TemporalAttention(dim, heads)
        self.s_mlp, self.t_mlp = Mlp(dim, hidden, "tanh"), Mlp(dim, hidden, "tanh")
        self.s_adaLN_modulation, self.t_adaLN_modulation = adaln_linear(dim, 6), adaln_linear(dim, 6)

    def forward(self, x: torch.Tensor, c: torch.Tensor, c_temporal: torch.Tensor | None = None,
                temporal_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = adaln_sub_block(x, c, self.s_adaLN_modulation, self.s_attn, self.s_mlp)
        return adaln_sub_block(x, c if c_temporal is None else c_temporal, self.t_adaLN_modulation,
                               partial(self.t_attn, mask=temporal_mask), self.t_mlp)


class FinalLayer(nn.Module):
    def __init__(self, dim: int, patch_size: int, out_channels: int):
        super().__init__()
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = adaln_linear(dim, 2)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = frame_modulation(self.adaLN_modulation, c, 2)
        return self.linear(modulate(layer_norm(x), shift, scale))


def unpatchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, T, h, w, p·p·C] with each token laid out (p, q, c) -> [B, T, C, h·p, w·p]."""
    B, T, h, w, _ = x.shape
    x = x.reshape(B, T, h, w, patch_size, patch_size, -1)
    return x.permute(0, 1, 6, 2, 4, 3, 5).reshape(B, T, -1, h * patch_size, w * patch_size)


# ---------------------------------------------------------------------------------------------------- the DiT


class OasisDiT(nn.Module):
    """dit.py `DiT`: forward(x [B,T,C,H,W], t [B,T] int noise levels, external_cond [B,T,25] or None) -> v."""

    def __init__(self, size: DiTSize):
        super().__init__()
        self.size = size
        D = size.hidden_size
        self.x_embedder = PatchEmbed(size.patch_size, size.in_channels, D)
        self.t_embedder = TimestepEmbedder(D)
        self.external_cond = nn.Linear(size.external_cond_dim, D)
        self.blocks = nn.ModuleList(SpatioTemporalBlock(D, size.num_heads, size.mlp_ratio) for _ in range(size.depth))
        self.final_layer = FinalLayer(D, size.patch_size, size.in_channels)

    @property
    def max_frames(self) -> int:
        return self.size.max_frames

    def forward(self, x: torch.Tensor, t: torch.Tensor, external_cond: torch.Tensor | None = None) -> torch.Tensor:
        B, T = x.shape[:2]
        h = self.x_embedder(x.flatten(0, 1)).unflatten(0, (B, T))
        c = self.t_embedder(t)
        if external_cond is not None:
            c = c + self.external_cond(external_cond)
        for block in self.blocks:
            h = block(h, c)
        return unpatchify(self.final_layer(h, c), self.size.patch_size)


# ---------------------------------------------------------------------------------------------------- the VAE


class VAEAttention(nn.Module):
    """vae.py `Attention`: qkv with bias; RoPE with pixel frequencies up to seq_h·seq_w/2 on half of each head."""

    def __init__(self, dim: int, heads: int, grid: tuple[int, int]):
        super().__init__()
        self.heads, self.grid = heads, grid
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        freqs = pixel_freqs(dim // heads // 4, grid[0] * grid[1])
        self.register_buffer("angles", axial_angles(*grid, freqs).flatten(0, 1), persistent=False)  # [N, d/2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (split_heads(p, self.heads).transpose(1, 2) for p in self.qkv(x).chunk(3, dim=-1))  # [B,h,N,d]
        q, k = rotate_pairs(q, self.angles), rotate_pairs(k, self.angles)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(-2))


class VAEBlock(nn.Module):
    """Pre-norm ViT block: affine LayerNorms (eps 1e-6), exact-GELU MLP."""

    def __init__(self, dim: int, heads: int, grid: tuple[int, int], mlp_ratio: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = VAEAttention(dim, heads, grid)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), "none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class OasisVAE(nn.Module):
    """vae.py `AutoencoderKL`: images in [−1, 1] -> (posterior mean, clamped logvar) per patch token, and back."""

    def __init__(self, size: VAESize):
        super().__init__()
        self.size = size
        p = size.patch_size
        self.grid = (size.input_height // p, size.input_width // p)
        self.patch_embed = PatchEmbed(p, 3, size.enc_dim)
        self.encoder = nn.ModuleList(VAEBlock(size.enc_dim, size.enc_heads, self.grid, size.mlp_ratio)
                                     for _ in range(size.enc_depth))
        self.enc_norm = nn.LayerNorm(size.enc_dim, eps=1e-6)
        self.quant_conv = nn.Linear(size.enc_dim, 2 * size.latent_dim)
        self.post_quant_conv = nn.Linear(size.latent_dim, size.dec_dim)
        self.decoder = nn.ModuleList(VAEBlock(size.dec_dim, size.dec_heads, self.grid, size.mlp_ratio)
                                     for _ in range(size.dec_depth))
        self.dec_norm = nn.LayerNorm(size.dec_dim, eps=1e-6)
        self.predictor = nn.Linear(size.dec_dim, 3 * p * p)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [N, 3, H, W] in [−1, 1] -> posterior mean and logvar clamped to [−30, 20], each [N, h·w, latent]."""
        x = self.patch_embed(images).flatten(1, 2)
        for block in self.encoder:
            x = block(x)
        mean, logvar = self.quant_conv(self.enc_norm(x)).chunk(2, dim=-1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [N, h·w, latent] -> images [N, 3, H, W], about [−1, 1]; each token's pixels laid out (c, p, p)."""
        x = self.post_quant_conv(tokens)
        for block in self.decoder:
            x = block(x)
        x = self.predictor(self.dec_norm(x))
        (h, w), p = self.grid, self.size.patch_size
        x = x.reshape(len(x), h, w, 3, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(len(x), 3, h * p, w * p)


def encode_frames(vae: OasisVAE, frames01: torch.Tensor) -> torch.Tensor:
    """Frames [N, 3, H, W] in [0, 1] -> scaled latents [N, C, h, w] (generate.py: mean × LATENT_SCALE)."""
    mean, _ = vae.encode(frames01 * 2 - 1)
    h, w = vae.grid
    return (mean * LATENT_SCALE).transpose(1, 2).unflatten(-1, (h, w))


def latents_to_tokens(latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents [N, C, h, w] -> the decoder's tokens [N, h·w, C] (undoing the scale)."""
    return latents.flatten(2).transpose(1, 2) / LATENT_SCALE


def decode_levels(vae: OasisVAE, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents [N, C, h, w] -> float grey levels [N, H, W, 3]: (x+1)/2 clamped to [0, 1], times 255."""
    images = ((vae.decode(latents_to_tokens(latents)) + 1) / 2).clamp(0, 1)
    return images.permute(0, 2, 3, 1) * 255


def decode_frames(vae: OasisVAE, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> uint8 frames [N, H, W, 3], cast as generate.py does ((x·255).byte() truncates)."""
    return decode_levels(vae, latents).byte()


# ---------------------------------------------------------------------------------------------------- actions


def one_hot_actions(actions: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    """utils.py `one_hot_actions`: VPT action dicts -> [N, 25]. cameraX = camera[0], cameraY = camera[1], each bin
    mapped by (bin − 40)/40; every other key copied as 0/1. Every key must be present."""
    rows = np.zeros((len(actions), len(ACTION_KEYS)), np.float64)
    for i, action in enumerate(actions):
        for j, key in enumerate(ACTION_KEYS):
            if key in ("cameraX", "cameraY"):
                value = (action["camera"][key == "cameraY"] - CAMERA_CENTRE_BIN) / CAMERA_CENTRE_BIN
                if not -1 - 1e-3 <= value <= 1 + 1e-3:
                    raise ValueError(f"action {i}: camera bin {action['camera']} outside 0..80")
            else:
                value = action[key]
                if not 0 <= value <= 1:
                    raise ValueError(f"action {i}: {key}={value} is not in [0, 1]")
            rows[i, j] = value
    return torch.from_numpy(rows).float()


LOOPNAV_KEYS = ("forward", "back", "left", "right", "jump", "sprint", "sneak")  # loopnav-v1 columns 0..6


def loopnav_to_oasis(actions: np.ndarray) -> np.ndarray:
    """loopnav-v1 actions [T, 9] -> Oasis action vectors [T, 25], row for row.

    Alignment: loopnav's actions[i] is the control that produced frames[i]. Oasis conditions frame t on the recorded
    VPT action t−1 (utils.py load_actions prepends a zero row), which is also the control that produced frame t; so
    row i maps to row i, and no shift is left to make here.
    Keys: the seven movement keys are copied (the other 18 Oasis keys stay 0). Camera: VPT's camera is
    [pitch, yaw] in degrees, pitch positive looking down and yaw positive turning right (Minecraft's own sense), in bins
    of 0.5° around 40; loopnav's camera_dyaw (counter-clockwise) and camera_dpitch (up) are radians per tick, so both
    change sign: cameraX = −dpitch°/20, cameraY = −dyaw°/20, clipped to [−1, 1] (the ±20° that 80 bins span).
    """
    actions = np.asarray(actions, np.float64)
    out = np.zeros((len(actions), len(ACTION_KEYS)), np.float32)
    for column, key in enumerate(LOOPNAV_KEYS):
        out[:, ACTION_KEYS.index(key)] = actions[:, column] > 0.5
    span = CAMERA_CENTRE_BIN * CAMERA_DEGREES_PER_BIN
    out[:, ACTION_KEYS.index("cameraX")] = np.clip(-np.degrees(actions[:, 8]) / span, -1, 1)
    out[:, ACTION_KEYS.index("cameraY")] = np.clip(-np.degrees(actions[:, 7]) / span, -1, 1)
    return out


def zero_first_action(actions: np.ndarray) -> np.ndarray:
    """Both upstreams give the first frame of a clip no action: Oasis's load_actions prepends a zero row, WorldMem's
    _preprocess_batch zeroes row 0. The adapters do the same to the first context frame they keep."""
    actions = actions.copy()
    actions[:1] = 0
    return actions


# ---------------------------------------------------------------------------------------------------- the sampler


def sigmoid_betas(timesteps: int = MAX_NOISE_LEVEL, start: float = -3, end: float = 3, tau: float = 1) -> torch.Tensor:
    """utils.py `sigmoid_beta_schedule` (float64), clipped to [0, 0.999]."""
    t = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64) / timesteps
    v_start, v_end = torch.tensor(start / tau).sigmoid(), torch.tensor(end / tau).sigmoid()
    alphas_cumprod = (-((t * (end - start) + start) / tau).sigmoid() + v_end) / (v_end - v_start)
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    return torch.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, 0.999)


def oasis_alphas_cumprod() -> torch.Tensor:
    """generate.py casts the betas to float32 BEFORE the cumprod (unlike WorldMem's float64 cumprod)."""
    return torch.cumprod(1.0 - sigmoid_betas().float(), dim=0)


def noise_levels(steps: int) -> list[int]:
    """linspace(−1, 999, steps + 1) in float32, truncated to int64: 3 steps give −1, 332, 665, 999."""
    return torch.linspace(-1, MAX_NOISE_LEVEL - 1, steps + 1).long().tolist()


StepHook = Callable[[dict[str, torch.Tensor]], None]


def denoise_next_frame(dit: OasisDiT, window: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor,
                       alphas_cumprod: torch.Tensor, steps: int, on_step: StepHook | None = None) -> torch.Tensor:
    """generate.py's inner loop for one new frame. window [B, W, C, h, w]: the clean frames the model sees (already
    cut to max_frames − 1); actions [B, W + 1, 25] the window's and the new frame's; noise [B, C, h, w] before
    the ±20 clamp. Returns the new frame's latents [B, C, h, w]. `on_step` sees every step's tensors."""
    B, W = window.shape[:2]
    x = torch.cat([window, noise.clamp(-NOISE_ABS_MAX, NOISE_ABS_MAX)[:, None].to(window.dtype)], dim=1)
    levels = noise_levels(steps)
    a = alphas_cumprod.to(x.device)
    for k in reversed(range(1, steps + 1)):
        t = torch.full((B, W + 1), STABILIZATION_LEVEL - 1, dtype=torch.long, device=x.device)
        t_next = t.clone()
        t[:, -1] = levels[k]
        t_next[:, -1] = levels[k - 1] if levels[k - 1] >= 0 else levels[k]
        v = dit(x, t, actions).float()
        a_t = a[t][..., None, None, None]
        x_start = a_t.sqrt() * x - (1 - a_t).sqrt() * v
        x_noise = ((1 / a_t).sqrt() * x - x_start) / (1 / a_t - 1).sqrt()
        alpha_next = a[t_next]
        alpha_next[:, :-1] = 1.0  # context frames: their prediction is discarded anyway
        if k == 1:
            alpha_next[:, -1] = 1.0
        an = alpha_next[..., None, None, None]
        x_pred = an.sqrt() * x_start + x_noise * (1 - an).sqrt()
        if on_step is not None:
            on_step({"x_curr": x.clone(), "t": t, "t_next": t_next, "actions": actions, "v": v,
                     "x_start": x_start, "x_noise": x_noise, "alpha_next": alpha_next, "x_pred": x_pred})
        x = x.clone()
        x[:, -1] = x_pred[:, -1].to(x.dtype)  # only the new frame is written back
    return x[:, -1]


def window_start(frame: int, max_frames: int) -> int:
    """generate.py's sliding window: the first frame the model sees when generating `frame`."""
    return max(0, frame + 1 - max_frames)


def generate(dit: OasisDiT, prompt: torch.Tensor, actions: torch.Tensor, total_frames: int, steps: int,
             noise: Callable[[int], torch.Tensor], on_step: StepHook | None = None) -> torch.Tensor:
    """generate.py `main`'s sampling loop: prompt latents [B, P, C, h, w] and per-frame actions [B, ≥total, 25]
    (row t conditions frame t) -> latents [B, total_frames, C, h, w]. noise(i) gives frame i's pre-clamp draw."""
    x = prompt
    alphas_cumprod = oasis_alphas_cumprod()
    for i in range(prompt.shape[1], total_frames):
        start = window_start(i, dit.max_frames)

        def record(step: dict[str, torch.Tensor]) -> None:  # adds the full sequence after the write-back
            on_step({**step, "x_after": torch.cat([x, step["x_pred"][:, -1:]], dim=1)})

        frame = denoise_next_frame(dit, x[:, start:], actions[:, start:i + 1], noise(i), alphas_cumprod, steps,
                                   None if on_step is None else record)
        x = torch.cat([x, frame[:, None]], dim=1)
    return x


# ---------------------------------------------------------------------------------------------------- weights


def load_weights(module: nn.Module, path: Path, prefix: str = "", unused: tuple[str, ...] = ()) -> None:
    """Load an official-layout safetensors file into `module`: the tensors under `prefix` (stripped), less the
    rotary `freqs` tables (fixed functions of the architecture, never trained, rebuilt here) and any key containing
    one of `unused`; what remains must match exactly."""
    skipped = ("rotary_emb.freqs", *unused)
    tensors = {k[len(prefix):]: v for k, v in load_file(str(path)).items()
               if k.startswith(prefix) and not any(s in k for s in skipped)}
    try:
        module.load_state_dict(tensors)
    except RuntimeError as err:  # missing, unexpected or mis-shaped tensors
        raise ValueError(f"{path}: does not fit the {type(module).__name__} of this size "
                         f"({str(err).splitlines()[1].strip()})") from None


def checkpoint_files(checkpoint: str | Path) -> tuple[Path, Path]:
    """The DiT and VAE files of a checkpoint: a folder holding both (as Etched/oasis-500m), or the DiT file with
    the VAE file beside it."""
    path = Path(checkpoint)
    folder = path if path.is_dir() else path.parent
    dit = path if path.is_file() else folder / DIT_FILE
    vae = folder / VAE_FILE
    for file in (dit, vae):
        if not file.is_file():
            raise FileNotFoundError(f"--checkpoint {checkpoint}: no {file.name} (Oasis needs {DIT_FILE} and "
                                    f"{VAE_FILE} side by side; `loopnav weights download oasis`)")
    return dit, vae


def build(size: str) -> tuple[OasisDiT, OasisVAE]:
    """The Oasis DiT and VAE at a named size ("tiny" or "oasis-500m"), with PyTorch's default random weights."""
    if size not in SIZES:
        raise ValueError(f"unknown Oasis size {size!r}; known: {', '.join(SIZES)}")
    dit_size, vae_size = SIZES[size]
    return OasisDiT(dit_size), OasisVAE(vae_size)


def save_official(dit: nn.Module, vae: nn.Module, folder: Path) -> None:
    """Write a DiT and VAE in Etched/oasis-500m's layout (two safetensors files named as upstream's)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in dit.state_dict().items()}, str(folder / DIT_FILE))
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(folder / VAE_FILE))


# ---------------------------------------------------------------------------------------------------- the adapter


def autocast(device: torch.device):
    """bf16 autocast on CUDA (upstream runs the DiT and the VAE encoder under fp16 autocast there); off on the CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


class MinecraftLatentModel(WorldModel):
    """What the Oasis and WorldMem adapters share: loopnav-v1 trajectories only, frames encoded with the ViT VAE at
    its native resolution (resized in with loopnav's resize_frames; out at that resolution, the harness resizes),
    trajectories grouped so that a group's network calls have one shape (`group_key`) and rolled out by
    modelkit's lockstep_rollout, which seeds every draw from the request."""

    vae: OasisVAE
    batch: int
    torch_device: torch.device
    licence: str
    weight_files: tuple[Path, ...]  # what was loaded, recorded in the results

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "licence": self.licence, "resolution": list(self.resolution),
                "weights": [str(p) for p in self.weight_files]}

    @property
    def resolution(self) -> tuple[int, int]:
        return self.vae.size.input_height, self.vae.size.input_width

    @torch.no_grad()
    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [N, H, W, 3] at any size -> latents [N, C, h, w] on the CPU, `batch` frames per VAE call."""
        frames = resize_frames(frames, self.resolution)
        out = []
        for chunk in np.array_split(frames, max(1, math.ceil(len(frames) / self.batch))):
            images = torch.from_numpy(chunk).to(self.torch_device).permute(0, 3, 1, 2).float() / 255.0
            with autocast(self.torch_device):
                out.append(encode_frames(self.vae, images).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        return torch.cat([decode_frames(self.vae, chunk.to(self.torch_device).float()).cpu()
                          for chunk in latents.split(self.batch)]).numpy()

    def rollout(self, request: RolloutRequest) -> np.ndarray:
        return self.rollout_batch([request])[0]

    def rollout_batch(self, requests: list[RolloutRequest]) -> list[np.ndarray]:
        for request in requests:
            layout = request.meta.get("action_layout")
            if layout != "loopnav-v1":
                raise ValueError(f"trajectory {request.id!r}: {self.name} maps only loopnav-v1 (Minecraft) actions "
                                 f"and poses, not {layout!r}")
            if len(request.context_frames) < 1:
                raise ValueError(f"trajectory {request.id!r}: {self.name} needs at least one context frame")
        groups: dict[int, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(self.group_key(request), []).append(i)
        results: dict[int, np.ndarray] = {}
        for key, members in groups.items():
            for i, predicted in zip(members, self.rollout_group([requests[i] for i in members], key)):
                results[i] = predicted
        return [results[i] for i in range(len(requests))]

    @abstractmethod
    def group_key(self, request: RolloutRequest) -> int:
        """Requests with equal keys have network inputs of equal shapes at every step."""

    @abstractmethod
    def rollout_group(self, requests: list[RolloutRequest], key: int) -> list[np.ndarray]:
        """The predicted frames of requests sharing one group key."""


class OasisModel(MinecraftLatentModel):
    """Oasis-500M on loopnav's protocol: the last `context` frames (upstream LoopNav evaluation: 32) are encoded,
    then the return leg is generated one frame at a time with upstream's sampler at its native resolution
    (360x640; tiny: 80x160). Model args: size (oasis-500m | tiny), context, ddim_steps (upstream default 10),
    batch (VAE frames per call)."""

    name = "oasis"
    description = "Oasis-500M (Etched): DiT over a ViT VAE latent, official weights, Minecraft"
    licence = "MIT"  # etched-ai/open-oasis LICENSE, weights Etched/oasis-500m

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0, size: str = "oasis-500m",
                 context: int = 32, ddim_steps: int = 10, batch: int = 8):
        super().__init__(checkpoint, device, seed, size=size, context=context, ddim_steps=ddim_steps, batch=batch)
        if checkpoint is None:
            raise ValueError("oasis needs --checkpoint: a folder with oasis500m.safetensors and vit-l-20.safetensors "
                             "(`loopnav weights download oasis`)")
        for arg, value in (("context", context), ("ddim_steps", ddim_steps), ("batch", batch)):
            if value < 1:
                raise ValueError(f"--model-args {arg}={value}: must be at least 1")
        self.context, self.steps, self.batch = context, ddim_steps, batch
        self.dit, self.vae = build(size)
        dit_file, vae_file = self.weight_files = checkpoint_files(checkpoint)
        load_weights(self.dit, dit_file)
        load_weights(self.vae, vae_file)
        self.torch_device = torch.device(device)
        self.dit.to(self.torch_device).eval()
        self.vae.to(self.torch_device).eval()
        self.alphas_cumprod = oasis_alphas_cumprod()

    def group_key(self, request: RolloutRequest) -> int:
        return min(self.context, len(request.context_frames))  # the context frames kept

    def rollout_group(self, requests: list[RolloutRequest], n_context: int) -> list[np.ndarray]:
        buffers, actions = [], []
        for r in requests:
            context = self.encode(r.context_frames[-n_context:])
            buffers.append(torch.cat([context, context.new_zeros((r.horizon, *context.shape[1:]))]))
            loopnav = np.concatenate([r.context_actions[-n_context:], r.target_actions])
            actions.append(torch.from_numpy(zero_first_action(loopnav_to_oasis(loopnav))))
        max_frames = self.dit.max_frames

        def conditioning(i: int, t: int) -> dict[str, torch.Tensor]:
            start = window_start(t, max_frames)
            return {"window": buffers[i][start:t], "actions": actions[i][start:t + 1]}

        def sample(batch: dict[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
            with autocast(self.torch_device):
                return denoise_next_frame(self.dit, batch["window"].float(), batch["actions"], noise,
                                          self.alphas_cumprod, self.steps)

        predicted = lockstep_rollout(buffers, [n_context] * len(requests), [r.seed for r in requests], conditioning,
                                     sample, self.torch_device)
        return [self.decode(latents) for latents in predicted]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "context_frames": self.context, "ddim_steps": self.steps,
                "max_frames": self.dit.max_frames}


# ---------------------------------------------------------------------------------------------------- upstream check


def max_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    if ours.shape != theirs.shape:
        raise ValueError(f"shape {list(ours.shape)} against upstream's {list(theirs.shape)}")
    return float((ours.double() - theirs.double()).abs().max()) if ours.numel() else 0.0


FLOAT_TOL = 1e-5        # README: single forward passes and single sampling steps
FINAL_LATENT_TOL = 1e-4  # README: final_latents after the chained sampler
BOUNDARY = 1e-3          # of a grey level: where float32 noise may round a pixel either way


def video_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """README: uint8 frames exact, or ±1 where a value lands on a 1/255 boundary. ours: our pixels ×255 BEFORE the
    byte cast; a pixel within BOUNDARY of a whole level may differ by 1, any other must match. Returns the worst
    excess (0 = the rule holds)."""
    diff = (ours.byte().int() - theirs.int()).abs()
    on_boundary = (ours - ours.round()).abs() < BOUNDARY
    return float(torch.where(on_boundary, (diff - 1).clamp(min=0), diff).max())


def load_fixture_models(fixture_dir: Path, size: str = "tiny") -> tuple[OasisDiT, OasisVAE]:
    dit, vae = build(size)
    load_weights(dit, fixture_dir / "dit_weights.safetensors")
    load_weights(vae, fixture_dir / "vae_weights.safetensors")
    return dit.eval(), vae.eval()


@torch.no_grad()
def check_upstream(fixture_dir: Path) -> list[FixtureResult]:
    """Replay every saved input of an Oasis fixture folder (layout of ../shared/fixtures/upstream/oasis) through
    this module and compare each saved output; weights come from its .safetensors files only."""
    fixture_dir = Path(fixture_dir)
    config = json.loads((fixture_dir / "fixture.json").read_text())
    if config["weights"]["dit_weights.safetensors"]["kwargs"] != {k: v for k, v in vars(SIZES["tiny"][0]).items()}:
        raise ValueError(f"{fixture_dir}: its DiT constructor arguments are not the tiny size this check builds")
    dit, vae = load_fixture_models(fixture_dir)
    results: list[FixtureResult] = []

    def compare(name: str, ours: torch.Tensor, theirs: torch.Tensor, tolerance: float = FLOAT_TOL) -> None:
        results.append(FixtureResult(name, max_error(ours, theirs), tolerance))

    saved = load_file(str(fixture_dir / "dit_forward.safetensors"))
    compare("dit_forward:output", dit(saved["x"], saved["t"], saved["external_cond"]), saved["output"])
    compare("dit_forward:nocond_output", dit(saved["nocond_x"], saved["nocond_t"], None), saved["nocond_output"])

    saved = load_file(str(fixture_dir / "vae.safetensors"))
    images = saved["image_uint8"].float() / 255.0
    mean, logvar = vae.encode(images * 2 - 1)
    compare("vae:posterior_mean", mean, saved["posterior_mean"])
    compare("vae:posterior_logvar_clamped", logvar, saved["posterior_logvar_clamped"])
    compare("vae:latent_scaled", encode_frames(vae, images)[None], saved["latent_scaled"])
    tokens = latents_to_tokens(saved["latent_scaled"][0])
    compare("vae:decoder_input_tokens", tokens, saved["decoder_input_tokens"])
    compare("vae:decode_raw", vae.decode(saved["decoder_input_tokens"]), saved["decode_raw"])

    examples = json.loads((fixture_dir / "actions_examples.json").read_text())["examples"]
    saved = load_file(str(fixture_dir / "actions.safetensors"))
    compare("actions:one_hot_actions", one_hot_actions(examples), saved["one_hot_actions"], 0.0)

    results += check_sampling(dit, vae, fixture_dir, config["files"]["sampling.safetensors"]["args"])
    return results


def check_sampling(dit: OasisDiT, vae: OasisVAE, fixture_dir: Path, args: dict[str, Any]) -> list[FixtureResult]:
    """generate.py end to end: encode the prompt, sample with the saved noise, decode; every model call compared."""
    saved = load_file(str(fixture_dir / "sampling.safetensors"))
    results = [FixtureResult("sampling:alphas_cumprod", max_error(oasis_alphas_cumprod(), saved["alphas_cumprod"]),
                             FLOAT_TOL)]
    prompt = saved["prompt_uint8"]
    B, P = prompt.shape[:2]
    latents = encode_frames(vae, prompt.flatten(0, 1).float() / 255.0).unflatten(0, (B, P))
    results.append(FixtureResult("sampling:prompt_latents", max_error(latents, saved["prompt_latents"]), FLOAT_TOL))
    steps: list[dict[str, torch.Tensor]] = []
    total = args["num_frames"]
    final = generate(dit, latents, saved["actions_used"], total, args["ddim_steps"],
                     lambda i: saved[f"noise_frame{i}"][:, 0], steps.append)
    for k, step in enumerate(steps):
        for key, ours in step.items():
            results.append(FixtureResult(f"sampling:step{k:02d}_{key}", max_error(ours, saved[f"step{k:02d}_{key}"]),
                                         FLOAT_TOL))
    results.append(FixtureResult("sampling:final_latents", max_error(final, saved["final_latents"]), FINAL_LATENT_TOL))
    levels = decode_levels(vae, final.flatten(0, 1))
    results.append(FixtureResult("sampling:video_uint8", video_error(levels, saved["video_uint8"]), 0.0))
    return results
