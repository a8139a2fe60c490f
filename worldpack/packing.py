"""Trajectory packing (WorldPack §4.3, after FramePack): older context frames are patchified with larger kernels.

A frame's latent (C × h × w) is cut into k × k patches; the base kernel is the model's patch size p, and each packing
level multiplies the side by λ = 2 (kernels p, 2p, 4p), so a frame costs 1, 1/4 or 1/16 of the base token count.
Latents are replicate-padded to a multiple of the kernel (as FramePack does), so a grid of h/k tokens per side is
rounded up: tokens(k) = ⌈h/k⌉·⌈w/k⌉.

The paper's layout sees 19 past frames: 1 at the base rate, 2 at 4× and 16 at 16× compression, the last 8 of them
retrieved memories. Its effective context is Σ tokens / base tokens = 1 + 2/4 + 16/16 = 2.5 frames whenever the grid
divides by 4p. The paper quotes 2.84: a 28 × 28 SD-VAE latent (224 px) with p = 2 gives 196 base tokens, 49 at 4× and
⌈3.5⌉² = 16 at 16×, i.e. 1 + 98/196 + 256/196 = 2.806; the remaining gap to 2.84 is not explained by the paper.
There every memory keeps 16 tokens. On the `cpu` preset's 8×8 latent (p = 2) a frame is 16 base tokens, 4 at 4× and
1 at 16×: a memory at the paper's level would be a single token. Our `full` layout (context.py) therefore keeps its
best 4 memories at 4× (4 tokens each) and the next 4 at 16×: 1 + 2/4 + 8/16 + (4·4 + 4·1)/16 = 3.25 frames.

Each kernel has its own input projection. The larger ones are initialised from the base one like FramePack: the base
kernel is repeated (nearest-neighbour upsampled) to the larger size and divided by the repeat volume, with the bias
copied, so a constant latent maps to the same token at every rate and a new level starts as an average-pooled base
embedding.

Spatial position is a 2D sin-cos embedding at each patch's centre, in latent-pixel coordinates, so tokens of every
grid share one coordinate system; a learned per-level embedding tells the levels apart.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def tokens_per_frame(latent_hw: tuple[int, int], kernel: int) -> int:
    h, w = latent_hw
    return math.ceil(h / kernel) * math.ceil(w / kernel)


def effective_context(latent_hw: tuple[int, int], kernels: list[int] | tuple[int, ...], base_kernel: int) -> float:
    """Context tokens of a slot layout (one kernel per context frame), in units of one base-rate frame."""
    return sum(tokens_per_frame(latent_hw, k) for k in kernels) / tokens_per_frame(latent_hw, base_kernel)


def sincos_2d(hidden: int, centres_y: np.ndarray, centres_x: np.ndarray) -> np.ndarray:
    """[len(y)·len(x), hidden] sin-cos embedding of a grid of (y, x) positions (half the channels per axis)."""
    quarter = hidden // 4
    freqs = 1.0 / 10000 ** (np.arange(quarter) / quarter)
    yy, xx = np.meshgrid(centres_y, centres_x, indexing="ij")
    parts = [np.sin(a[..., None] * freqs) for a in (yy, xx)] + [np.cos(a[..., None] * freqs) for a in (yy, xx)]
    emb = np.concatenate(parts, axis=-1).reshape(-1, 4 * quarter)
    return np.pad(emb, ((0, 0), (0, hidden - 4 * quarter)))


class PackedPatchEmbed(nn.Module):
    """One patchify projection per kernel, plus fixed spatial embeddings per grid and a learned per-level embedding."""

    def __init__(self, channels: int, hidden: int, base_kernel: int, levels: int, latent_hw: tuple[int, int]):
        super().__init__()
        self.base_kernel, self.latent_hw = base_kernel, latent_hw
        self.kernels = [base_kernel * 2**level for level in range(levels)]
        self.proj = nn.ModuleList(nn.Conv2d(channels, hidden, k, stride=k) for k in self.kernels)
        self.level_embed = nn.Parameter(torch.zeros(levels, hidden))
        for level, k in enumerate(self.kernels):
            gh, gw = (math.ceil(s / k) for s in latent_hw)
            centres = [(np.arange(g) + 0.5) * k for g in (gh, gw)]  # patch centres in latent pixels
            self.register_buffer(f"pos_{level}", torch.from_numpy(sincos_2d(hidden, *centres)).float(),
                                 persistent=False)
        base = self.proj[0]
        w = base.weight.data.view(base.out_channels, -1)
        nn.init.xavier_uniform_(w)  # a conv initialised like a linear, as in DiT
        nn.init.zeros_(base.bias)
        self.init_from_base()

    @torch.no_grad()
    def init_from_base(self, levels: list[int] | None = None) -> None:
        """Larger kernels = the base kernel repeated to their size, divided by the repeat volume; biases copied.
        `levels` picks which (default: every level above 0), e.g. those a fine-tuned model adds to its init's."""
        base = self.proj[0]
        for level in range(1, len(self.kernels)) if levels is None else levels:
            conv, r = self.proj[level], self.kernels[level] // self.base_kernel
            conv.weight.copy_(base.weight.repeat_interleave(r, dim=2).repeat_interleave(r, dim=3) / (r * r))
            conv.bias.copy_(base.bias)

    def level(self, kernel: int) -> int:
        if kernel not in self.kernels:
            raise ValueError(f"kernel {kernel} is not one of this model's packing kernels {self.kernels}")
        return self.kernels.index(kernel)

    def project(self, latents: torch.Tensor, kernel: int) -> torch.Tensor:
        """latents [N, C, h, w] -> patch tokens [N, tokens_per_frame, hidden], before any position embedding."""
        pad_h, pad_w = (-s % kernel for s in latents.shape[-2:])
        if pad_h or pad_w:
            latents = F.pad(latents, (0, pad_w, 0, pad_h), mode="replicate")
        return self.proj[self.level(kernel)](latents).flatten(2).transpose(1, 2)

    def forward(self, latents: torch.Tensor, kernel: int) -> torch.Tensor:
        """latents [B, F, C, h, w] -> tokens [B, F·tokens_per_frame, hidden], with spatial and level embeddings."""
        B, n_frames = latents.shape[:2]
        level = self.level(kernel)
        tokens = self.project(latents.flatten(0, 1), kernel) + getattr(self, f"pos_{level}") + self.level_embed[level]
        return tokens.reshape(B, n_frames * tokens.shape[1], -1)
