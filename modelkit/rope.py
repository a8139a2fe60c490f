"""Temporal rotary position embedding: every token is rotated by the time of the frame it came from.

WorldPack replaces NWM's learned per-slot position embedding with RoPE on the time axis, so a context frame is placed
by its frame-index offset from the target (recent frames at −1, −2, …; a retrieved memory at −300 sits just as
consistently), and attention between a target token and a context token depends only on their time difference.
Spatial position inside a frame is not rotated: it is added as a 2D sin-cos embedding (see packing.py), which lets
grids of different compression rates share one coordinate system.

Positions are real numbers in frames. Time is the frame index, not seconds: LoopNav's recorder compresses idle
stretches (one heartbeat frame per second), so frames are not evenly spaced in time there. The rotation uses the
whole head dimension, in rotate-half pairing.
"""

from __future__ import annotations

import torch


class TemporalRoPE:
    """cos/sin tables for positions, and their application to queries and keys of shape [B, heads, N, head_dim]."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
        self.head_dim, self.theta = head_dim, theta

    def tables(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [B, N] (frames) -> cos, sin [B, 1, N, head_dim], ready to broadcast over heads."""
        half = self.head_dim // 2
        freqs = self.theta ** (-torch.arange(half, device=positions.device, dtype=torch.float32) / half)
        angles = positions.float()[..., None] * freqs
        angles = torch.cat([angles, angles], dim=-1)[:, None]
        return angles.cos(), angles.sin()

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        first, second = x.chunk(2, dim=-1)
        rotated_half = torch.cat([-second, first], dim=-1)
        return (x.float() * cos + rotated_half.float() * sin).to(x.dtype)
