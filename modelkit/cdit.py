"""CDiT, the conditional diffusion transformer of NWM (Bar et al. 2025), with temporal RoPE in its attentions.

In every block the target frame's tokens self-attend among themselves, cross-attend to the context tokens, then pass
an MLP; the conditioning vector c (diffusion noise level + action + pose delta + time shift) drives each sub-layer
through adaLN-Zero. Context tokens are embedded once and never updated; each block only re-modulates them with its own
shift/scale, so the cost is linear in the number of context tokens. These blocks are shared by WorldPack and the NWM
baseline: a model supplies target tokens, context tokens (with a validity mask) and the times of both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modelkit.rope import TemporalRoPE

# NWM's action conditioning (facebookresearch/nwm config/data_config.yaml action_stats): (dx, dy) in waypoint spacings,
# min-max mapped to [-1, 1] by these bounds and not clipped; a time shift enters as frames / TIME_SCALE. loopnav's NWM
# and the official-weights model both condition this way.
ACTION_MIN = np.array([-2.5, -4.0])
ACTION_MAX = np.array([5.0, 4.0])
TIME_SCALE = 128.0


@dataclass(frozen=True)
class CDiTConfig:
    """The sizes of a CDiT world model on latents (WorldPack, NWM extend it with their own fields)."""

    latent_channels: int = 4
    latent_size: int = 8
    patch: int = 2
    hidden: int = 96
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class TimestepEmbedder(nn.Module):
    """A scalar per sample (noise level, time shift) -> sinusoidal features -> MLP, as in DiT."""

    def __init__(self, hidden: int, frequencies: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.frequencies, self.max_period = frequencies, max_period
        self.mlp = nn.Sequential(nn.Linear(frequencies, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequencies // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1))


class VectorEmbedder(nn.Module):
    """Any fixed-width vector (an action of any layout, a relative pose) -> hidden."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.mlp(v)


class ActionEmbedder(nn.Module):
    """NWM's action embedder: (dx, dy, dyaw) -> hidden, one sinusoidal embedder per component (widths D//3, D//3 and
    D - 2·(D//3)), concatenated. Raw floats go through the same 10000-period sinusoid as the noise level."""

    def __init__(self, hidden: int):
        super().__init__()
        third = hidden // 3
        self.embedders = nn.ModuleList(TimestepEmbedder(width) for width in (third, third, hidden - 2 * third))

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        return torch.cat([embed(action[:, i]) for i, embed in enumerate(self.embedders)], dim=-1)


class Attention(nn.Module):
    """Multi-head attention from queries x to keys/values y, with temporal RoPE on q and k and an optional key mask.

    With `bias_kv`, one learned key and value are appended after the projections (torch's `add_bias_kv`, which NWM's
    cross-attention uses): a slot every query may attend to, so attention can also take nothing from the context.
    """

    def __init__(self, hidden: int, heads: int, bias_kv: bool = False):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden {hidden} is not divisible by heads {heads}")
        self.heads = heads
        self.q, self.kv, self.out = nn.Linear(hidden, hidden), nn.Linear(hidden, 2 * hidden), nn.Linear(hidden, hidden)
        self.bias_kv = nn.Parameter(torch.empty(2, 1, 1, hidden)) if bias_kv else None

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        B, N, D = t.shape
        return t.view(B, N, self.heads, D // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor, rope_q: tuple[torch.Tensor, torch.Tensor],
                rope_k: tuple[torch.Tensor, torch.Tensor], key_mask: torch.Tensor | None = None) -> torch.Tensor:
        q = TemporalRoPE.rotate(self._split(self.q(x)), *rope_q)
        k, v = self.kv(y).chunk(2, dim=-1)
        k = TemporalRoPE.rotate(self._split(k), *rope_k)
        v = self._split(v)
        if self.bias_kv is not None:  # appended after RoPE: the bias slot has no time
            k_bias, v_bias = (self._split(b.expand(len(y), 1, -1)) for b in self.bias_kv)
            k, v = torch.cat([k, k_bias], dim=2), torch.cat([v, v_bias], dim=2)
            if key_mask is not None:
                key_mask = torch.cat([key_mask, key_mask.new_ones(len(y), 1)], dim=1)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(out.transpose(1, 2).reshape(x.shape))


class CDiTBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_ratio: float = 4.0, cross_bias_kv: bool = False):
        super().__init__()
        norm = lambda: nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)  # noqa: E731
        self.norm_self, self.norm_cross, self.norm_mlp = norm(), norm(), norm()
        self.self_attn, self.cross_attn = Attention(hidden, heads), Attention(hidden, heads, cross_bias_kv)
        width = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, width), nn.GELU(approximate="tanh"), nn.Linear(width, hidden))
        # shift/scale/gate for self-attention, shift/scale for the context, shift/scale/gate for cross-attention and MLP
        self.ada_ln = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 11 * hidden))

    def forward(self, x: torch.Tensor, context: torch.Tensor, c: torch.Tensor, rope_x, rope_context,
                context_mask: torch.Tensor | None) -> torch.Tensor:
        """`context` comes layer-normalised (CDiT does it once: it is the same in every block)."""
        (shift_sa, scale_sa, gate_sa, shift_ctx, scale_ctx, shift_ca, scale_ca, gate_ca,
         shift_mlp, scale_mlp, gate_mlp) = self.ada_ln(c).chunk(11, dim=-1)
        h = modulate(self.norm_self(x), shift_sa, scale_sa)
        x = x + gate_sa[:, None] * self.self_attn(h, h, rope_x, rope_x)
        kv = modulate(context, shift_ctx, scale_ctx)
        h = modulate(self.norm_cross(x), shift_ca, scale_ca)
        x = x + gate_ca[:, None] * self.cross_attn(h, kv, rope_x, rope_context, context_mask)
        return x + gate_mlp[:, None] * self.mlp(modulate(self.norm_mlp(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, out_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.ada_ln = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.linear = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada_ln(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class CDiT(nn.Module):
    """A stack of CDiT blocks and the final adaLN layer: tokens in, per-token outputs out.

    forward(x [B,N,D], context [B,M,D], c [B,D], x_time [B,N], context_time [B,M], context_mask [B,M] bool or None).
    `cross_bias_kv` gives the cross-attentions a learned bias key and value (NWM); `rope_dims` rotates only that many
    of each head's dimensions (partial RoPE; None: all of them).
    """

    def __init__(self, hidden: int, depth: int, heads: int, out_features: int, mlp_ratio: float = 4.0,
                 rope_theta: float = 10000.0, cross_bias_kv: bool = False, rope_dims: int | None = None):
        super().__init__()
        self.rope = TemporalRoPE(hidden // heads, rope_theta, rope_dims)
        self.blocks = nn.ModuleList(CDiTBlock(hidden, heads, mlp_ratio, cross_bias_kv) for _ in range(depth))
        self.norm_context = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)  # no weights: shared by blocks
        self.final = FinalLayer(hidden, out_features)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier on all linears, then adaLN-Zero: every block starts as the identity and the output as zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, Attention) and module.bias_kv is not None:
                for bias in module.bias_kv:  # as torch's MultiheadAttention initialises bias_k and bias_v
                    nn.init.xavier_normal_(bias)
        for block in self.blocks:
            nn.init.zeros_(block.ada_ln[-1].weight)
            nn.init.zeros_(block.ada_ln[-1].bias)
        for layer in (self.final.ada_ln[-1], self.final.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, c: torch.Tensor, x_time: torch.Tensor,
                context_time: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        rope_x, rope_context = self.rope.tables(x_time), self.rope.tables(context_time)
        context = self.norm_context(context)
        for block in self.blocks:
            x = block(x, context, c, rope_x, rope_context, context_mask)
        return self.final(x, c)
