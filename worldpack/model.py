"""WorldPack (Oshima et al.): a CDiT world model whose context is packed and partly retrieved from memory.

Predicting one frame: the target latent (noisy, at the base patch size) is the token sequence that the CDiT blocks
update; the context is the layout's slots (recent frames at decreasing resolution, then retrieved memories), each
patchified with its level's kernel (packing.py), given its 2D spatial embedding, its level embedding and an embedding
of its pose relative to the target, and placed in time by temporal RoPE at its real frame offset (target at 0).
Conditioning c = noise level + action (any layout width) + pose delta + time shift, through adaLN-Zero.
The model is trained and sampled with EDM (diffusion.py).

Options, each off by default so that a config without them (a checkpoint written before them) means what it did:
- `reliability`: "example" tells the model one context-noise std per example, added to c (with
  `context_noise_max` > 0); "slot" gives each context slot its own reliability level (`context_level`, see
  context.slot_conditioning), embedded and added to that slot's tokens: the std of its training corruption, or in a
  rollout `generated_level` for a generated frame and 0 for a real one. The level embedding's output layer starts
  at zero, so a fresh model is unaffected by it.
- `cross_bias_kv`: a learned null key and value in every cross-attention (NWM's `add_bias_kv`), so attention may
  take nothing from the context.
- `rope_fraction`: the share of each head's dimensions that temporal RoPE rotates (rope.py); the rest attend by
  content alone, alike at every lag.
- `edm.schedule_rate`: the share of training noise levels drawn from the sampler's own σ values (diffusion.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from modelkit.cdit import CDiT, CDiTConfig, TimestepEmbedder, VectorEmbedder
from modelkit.diffusion import EDM, EDMConfig
from worldpack.context import VARIANTS, ContextLayout
from worldpack.packing import PackedPatchEmbed, effective_context
from worldpack.retrieval import RETRIEVAL_PRESETS, RetrievalParams

RELIABILITY = ("example", "slot")
LEVEL_SCALE = 1000  # noise stds ~0.1 -> DiT's timestep range, for the level embedders


@dataclass(frozen=True)
class WorldPackConfig(CDiTConfig):
    action_dim: int = 4
    variant: str = "full"                 # the layout's name when trained: a label for tables and describe()
    layout: Optional[ContextLayout] = None  # the slots the network reads, stored in every checkpoint; None: the
                                            # named variant's, fixed at construction so later edits of VARIANTS
                                            # never change what a saved checkpoint means
    retrieval: RetrievalParams = field(default_factory=lambda: RETRIEVAL_PRESETS["paper"])
    edm: EDMConfig = field(default_factory=EDMConfig)
    max_time_shift: int = 4
    rope_theta: float = 10000.0
    context_noise_max: float = 0.0  # training noise on context latents (std up to this); > 0 adds its level embedding
    reliability: str = "example"    # "example": one context-noise level per example, on every slot; "slot": levels
                                    # per slot, on the slots a rollout generates (module docstring)
    generated_level: float = 0.0    # reliability="slot": the level a rollout announces for its generated frames
    cross_bias_kv: bool = False     # a learned null key/value in the cross-attentions
    rope_fraction: float = 1.0      # share of each head's dimensions that temporal RoPE rotates

    def __post_init__(self) -> None:
        if self.layout is None:
            if self.variant not in VARIANTS:
                raise ValueError(f"unknown variant {self.variant!r}; choose from {', '.join(VARIANTS)}")
            object.__setattr__(self, "layout", VARIANTS[self.variant])
        if self.reliability not in RELIABILITY:
            raise ValueError(f"reliability={self.reliability!r}: choose {' or '.join(RELIABILITY)}")
        if self.reliability == "slot" and self.context_noise_max <= 0:
            raise ValueError("reliability='slot' trains its levels from the corruption: it needs context_noise_max > 0")
        if self.generated_level < 0:
            raise ValueError(f"generated_level={self.generated_level} is a noise std: it cannot be negative")
        if not 0 < self.rope_dims <= self.hidden // self.heads:
            raise ValueError(f"rope_fraction={self.rope_fraction} of a {self.hidden // self.heads}-dimension head "
                             "leaves no pair of dimensions to rotate (or is above 1)")

    @property
    def rope_dims(self) -> int:
        """Rotated dimensions per head: rope_fraction of the head, rounded to a whole number of pairs."""
        return 2 * round(self.hidden // self.heads * self.rope_fraction / 2)

    @property
    def kernels(self) -> tuple[int, ...]:
        return tuple(self.patch * 2**level for level in self.layout.levels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WorldPackConfig":
        if "layout" not in d:
            raise ValueError(f"the worldpack config (variant {d.get('variant')!r}) records no context layout; add "
                             "\"layout\": {\"recent\": [...], \"retrieved\": [...]} with the packing level of each "
                             "slot it was trained with")
        layout = ContextLayout(**{k: tuple(v) for k, v in d["layout"].items()})
        return cls(**{**d, "layout": layout, "retrieval": RetrievalParams(**d["retrieval"]),
                      "edm": EDMConfig(**d["edm"])})


class WorldPack(nn.Module):
    def __init__(self, config: WorldPackConfig):
        super().__init__()
        self.config = config
        D, C, p = config.hidden, config.latent_channels, config.patch
        latent_hw = (config.latent_size, config.latent_size)
        self.embed = PackedPatchEmbed(C, D, p, levels=max(config.layout.levels) + 1, latent_hw=latent_hw)
        self.noise_embed, self.shift_embed = TimestepEmbedder(D), TimestepEmbedder(D)
        self.action_embed, self.pose_delta_embed = VectorEmbedder(config.action_dim, D), VectorEmbedder(5, D)
        self.context_pose_embed = VectorEmbedder(5, D)
        # GameNGen's noise augmentation: the model is told how noisy its context is, per example or per slot
        per_example = config.context_noise_max > 0 and config.reliability == "example"
        self.context_noise_embed = TimestepEmbedder(D) if per_example else None
        self.context_level_embed = TimestepEmbedder(D) if config.reliability == "slot" else None
        for embedder in (self.noise_embed, self.shift_embed, self.action_embed, self.pose_delta_embed,
                         self.context_pose_embed,
                         *(e for e in (self.context_noise_embed, self.context_level_embed) if e is not None)):
            for layer in embedder.mlp[::2]:
                nn.init.normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        if self.context_level_embed is not None:  # starts as no change to the context tokens
            nn.init.zeros_(self.context_level_embed.mlp[-1].weight)
        self.cdit = CDiT(D, config.depth, config.heads, p * p * C, config.mlp_ratio, config.rope_theta,
                         config.cross_bias_kv, config.rope_dims)
        self.edm = EDM(config.edm)
        # slots that share a packing level are patchified together
        levels = config.layout.levels
        self.slot_groups = [(level, [i for i, lv in enumerate(levels) if lv == level]) for level in sorted(set(levels))]

    def effective_context(self) -> float:
        size = self.config.latent_size
        return effective_context((size, size), self.config.kernels, self.config.patch)

    def context_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Packed context tokens [B, M, D] with their times [B, M] and validity [B, M]."""
        tokens, times, valid = [], [], []
        per_slot = self.context_pose_embed(batch["context_pose"])  # [B, S, D]
        if self.context_level_embed is not None:  # each slot's reliability level, on all of its tokens
            slot_level = batch["context_level"]  # [B, S]
            embedded = self.context_level_embed(slot_level.flatten() * LEVEL_SCALE)
            per_slot = per_slot + embedded.unflatten(0, slot_level.shape)
        for level, slots in self.slot_groups:
            kernel = self.embed.kernels[level]
            group = self.embed(batch["context"][:, slots], kernel)  # [B, n·tpf, D]
            per_frame = group.shape[1] // len(slots)
            tokens.append(group + per_slot[:, slots].repeat_interleave(per_frame, dim=1))
            times.append(batch["context_time"][:, slots].repeat_interleave(per_frame, dim=1))
            valid.append(batch["context_valid"][:, slots].repeat_interleave(per_frame, dim=1))
        return torch.cat(tokens, 1), torch.cat(times, 1), torch.cat(valid, 1)

    def denoiser(self, x_in: torch.Tensor, c_noise: torch.Tensor, batch: dict[str, torch.Tensor],
                 packed_context: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """EDM's F: preconditioned noisy target latent [B, C, h, w] -> network output of the same shape.
        `packed_context` (from context_tokens) may be passed in: it does not depend on the noise."""
        B, C, h, w = x_in.shape
        p = self.config.patch
        x = self.embed(x_in[:, None], p)
        context, context_time, context_valid = packed_context or self.context_tokens(batch)
        c = (self.noise_embed(c_noise) + self.shift_embed(batch["time_shift"]) + self.action_embed(batch["action"])
             + self.pose_delta_embed(batch["pose_delta"]))
        if self.context_noise_embed is not None:
            c = c + self.context_noise_embed(batch["context_noise"] * LEVEL_SCALE)
        x_time = torch.zeros(x.shape[:2], device=x.device)
        out = self.cdit(x, context, c, x_time, context_time, context_valid)
        # unpatchify [B, (h/p)(w/p), p·p·C] -> [B, C, h, w]
        out = out.view(B, h // p, w // p, p, p, C).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(B, C, h, w)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.edm.loss(self.denoiser, batch["target"], batch)

    def sample(self, batch: dict[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        """Next latents [B, C, h, w] for a batch of contexts (build_example + collate), from standard-normal noise of
        that shape (see `noise_shape`)."""
        packed_context = self.context_tokens(batch)  # embedded once for all sampler steps
        return self.edm.sample(lambda x, c, b: self.denoiser(x, c, b, packed_context), noise, batch)

    def noise_shape(self, batch_size: int) -> tuple[int, int, int, int]:
        size = self.config.latent_size
        return (batch_size, self.config.latent_channels, size, size)
