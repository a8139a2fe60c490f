"""Temporal rotary position embedding: every token is rotated by the time of the frame it came from.

WorldPack replaces NWM's learned per-slot position embedding with RoPE on the time axis, so a context frame is placed
by its frame-index offset from the target (recent frames at −1, −2, …; a retrieved memory at −300 sits just as
consistently), and attention between a target token and a context token depends only on their time difference.
Spatial position inside a frame is not rotated: it is added as a 2D sin-cos embedding (see packing.py), which lets
grids of different compression rates share one coordinate system.

Positions are real numbers in frames. Time is the frame index, not seconds: LoopNav's recorder compresses idle
stretches (one heartbeat frame per second), so frames are not evenly spaced in time there. The rotation uses the
whole head dimension by default, in rotate-half pairing. With `dims` < head_dim only each head's first `dims`
channels are rotated (their frequencies spanning θ^0 .. θ^-1 as over a whole head) and the rest pass unrotated:
partial RoPE (GPT-NeoX's rotary_pct), which keeps part of every head for content-only attention, alike at any lag.
"""

from __future__ import annotations

import torch


class TemporalRoPE:
    """cos/sin tables for positions, and their application to queries and keys of shape [B, heads, N, head_dim]."""

    def __init__(self, head_dim: int, theta: float = 10000.0, dims: int | None = None):
        dims = head_dim if dims is None else dims
        if dims % 2 or not 0 < dims <= head_dim:
            raise ValueError(f"RoPE rotates an even number of a head's {head_dim} dimensions, not {dims}")
        self.head_dim, self.theta, self.dims = head_dim, theta, dims

    def tables(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [B, N] (frames) -> cos, sin [B, 1, N, dims], ready to broadcast over heads."""
        half = self.dims // 2
        freqs = self.theta ** (-torch.arange(half, device=positions.device, dtype=torch.float32) / half)
        angles = positions.float()[..., None] * freqs
        angles = torch.cat([angles, angles], dim=-1)[:, None]
        return angles.cos(), angles.sin()

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [..., head_dim] rotated in its first cos.shape[-1] channels (the tables' `dims`); the rest unchanged."""
        dims = cos.shape[-1]
        if dims < x.shape[-1]:
            return torch.cat([TemporalRoPE.rotate(x[..., :dims], cos, sin), x[..., dims:]], dim=-1)
        first, second = x.chunk(2, dim=-1)
        rotated_half = torch.cat([-second, first], dim=-1)
        return (x.float() * cos + rotated_half.float() * sin).to(x.dtype)
