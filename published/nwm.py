"""NWM's official CDiT (Bar et al. 2025; facebookresearch/nwm at 3f6cd8e), loaded from its own checkpoints.

What runs here is loopnav's code, checked against golden outputs of upstream's (`loopnav models check-upstream nwm`):
  - the network: modelkit's CDiT blocks (cross-attention with a learned bias key/value, adaLN chunk order of
    upstream's CDiTBlock), NWM's learned per-slot positions, c = noise-level + time-shift (rel_t) + action embedding,
    2C output channels (eps, then the variance interpolation v); upstream checkpoints load through `from_official`;
  - the sampler: upstream's `create_diffusion('250')`, a linear-β DDPM (1000 steps) respaced to 250 with
    LEARNED_RANGE variance, the schedule in float64 and every coefficient cast to float32 when used
    (diffusion/gaussian_diffusion.py, respace.py);
  - one prediction as `isolated_nwm_infer.model_forward_wrapper` makes it: SD-VAE latent *sample* × 0.18215 of every
    context frame, 250 ancestral steps from N(0, 1) with clip_denoised False, decode(x / 0.18215), clip to [-1, 1];
  - the action: NWM's datasets.py preprocessing of poses (`waypoints`, `eval_deltas`, `training_goal`) and
    isolated_nwm_infer's use of it (`time_actions`, `rollout_actions`).
docs/models/nwm-official.md maps each part to its upstream source.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from loopnav_bench.models import RolloutRequest, WorldModel
from modelkit.autoencoder import DiffusersAutoencoder
from modelkit.cdit import ACTION_MAX, ACTION_MIN, TIME_SCALE, ActionEmbedder, CDiT, TimestepEmbedder
from published.upstream_check import FixtureResult

UPSTREAM = "facebookresearch/nwm@3f6cd8e70d6f2d1e2b9684acff510710135f0f41"
LATENT_SCALE = 0.18215            # SD VAE latent scaling (isolated_nwm_infer.py)
WAYPOINT_SPACING = {"recon": 0.25}   # metres per frame: data_config.yaml metric_waypoint_spacing
INPUT_FPS = 4                     # isolated_nwm_infer --input_fps
TIME_SECONDS = (1, 2, 4, 8, 16)   # generate_time: 2**i for i < --num_sec_eval (5)
RESPACING = "250"                 # create_diffusion(str(250))
VAE_DOWNSAMPLE = 8                # latent_size = image_size // 8


# ---- the network -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CDiTSize:
    """models.CDiT's constructor arguments (same names, so a fixture's recorded kwargs build it)."""

    input_size: int = 28      # latent side (image 224 / 8)
    context_size: int = 4
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    learn_sigma: bool = True


SIZES = {"tiny": CDiTSize(input_size=8, hidden_size=48, depth=2, num_heads=4),  # the fixtures' size
         "cdit-xl": CDiTSize()}                                                  # CDiT-XL/2, the released model
HEADS_BY_WIDTH = {1152: 16, 1024: 16, 768: 12, 384: 6}  # CDiT_models XL, L, B, S (heads are not in the weights)


class OfficialCDiT(nn.Module):
    """models.CDiT: forward(x [B,C,h,w], t [B] on the 0..999 scale, y [B,3], x_cond [B,ctx,C,h,w], rel_t [B])
    -> [B, 2C, h, w] (eps, then v)."""

    def __init__(self, size: CDiTSize):
        super().__init__()
        self.size = size
        D, C, p = size.hidden_size, size.in_channels, size.patch_size
        if size.input_size % p:
            raise ValueError(f"latent size {size.input_size} is not divisible by patch {p}")
        self.out_channels = 2 * C if size.learn_sigma else C
        self.patch_embed = nn.Conv2d(C, D, kernel_size=p, stride=p)
        self.pos_embed = nn.Parameter(torch.zeros(size.context_size + 1, (size.input_size // p) ** 2, D))
        self.noise_embed, self.time_embed = TimestepEmbedder(D), TimestepEmbedder(D)
        self.action_embed = ActionEmbedder(D)
        self.cdit = CDiT(D, size.depth, size.num_heads, p * p * self.out_channels, size.mlp_ratio, cross_bias_kv=True)

    def _tokens(self, latents: torch.Tensor, slots: slice) -> torch.Tensor:
        """[B, F, C, h, w] in frame slots `slots` -> [B, F·patches, D], frame-major, with the slots' positions."""
        B, F = latents.shape[:2]
        tokens = self.patch_embed(latents.flatten(0, 1)).flatten(2).transpose(1, 2)
        return (tokens.view(B, F, *tokens.shape[1:]) + self.pos_embed[slots]).flatten(1, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, x_cond: torch.Tensor,
                rel_t: torch.Tensor) -> torch.Tensor:
        B, _, h, w = x.shape
        K, p = self.size.context_size, self.size.patch_size
        target = self._tokens(x[:, None], slice(K, K + 1))
        context = self._tokens(x_cond, slice(0, K))
        c = self.noise_embed(t) + self.time_embed(rel_t) + self.action_embed(y)
        # no RoPE in NWM: every token at time 0, where the shared blocks' rotation is the identity
        out = self.cdit(target, context, c, target.new_zeros(target.shape[:2]), context.new_zeros(context.shape[:2]))
        out = out.view(B, h // p, w // p, p, p, self.out_channels).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(B, self.out_channels, h, w)


_RENAMES = [  # upstream models.CDiT key -> OfficialCDiT key (the packed q/k/v and bias_k/v are split in from_official)
    (r"x_embedder\.proj\.", "patch_embed."),
    (r"t_embedder\.", "noise_embed."),
    (r"time_embedder\.", "time_embed."),
    (r"y_embedder\.x_emb\.", "action_embed.embedders.0."),
    (r"y_embedder\.y_emb\.", "action_embed.embedders.1."),
    (r"y_embedder\.angle_emb\.", "action_embed.embedders.2."),
    (r"blocks\.(\d+)\.attn\.proj\.", r"cdit.blocks.\1.self_attn.out."),
    (r"blocks\.(\d+)\.cttn\.out_proj\.", r"cdit.blocks.\1.cross_attn.out."),
    (r"blocks\.(\d+)\.adaLN_modulation\.1\.", r"cdit.blocks.\1.ada_ln.1."),
    (r"blocks\.(\d+)\.mlp\.fc1\.", r"cdit.blocks.\1.mlp.0."),
    (r"blocks\.(\d+)\.mlp\.fc2\.", r"cdit.blocks.\1.mlp.2."),
    (r"final_layer\.linear\.", "cdit.final.linear."),
    (r"final_layer\.adaLN_modulation\.1\.", "cdit.final.ada_ln.1."),
]
_PACKED = re.compile(r"blocks\.(\d+)\.(attn\.qkv\.|cttn\.in_proj_)(weight|bias)$")
_BIAS_KV = re.compile(r"blocks\.(\d+)\.cttn\.bias_([kv])$")


def from_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An upstream CDiT state dict (checkpoint['ema']) -> OfficialCDiT's. Packed q/k/v rows are in q, k, v order."""
    out: dict[str, torch.Tensor] = {}
    bias_kv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if match := _PACKED.match(key):
            block, kind, param = match.groups()
            attn = "self_attn" if kind.startswith("attn") else "cross_attn"
            D = value.shape[0] // 3
            out[f"cdit.blocks.{block}.{attn}.q.{param}"] = value[:D]
            out[f"cdit.blocks.{block}.{attn}.kv.{param}"] = value[D:]
        elif match := _BIAS_KV.match(key):
            bias_kv.setdefault(match.group(1), {})[match.group(2)] = value
        elif key == "pos_embed":
            out[key] = value
        else:
            renamed = next((re.sub(f"^{pattern}", repl, key) for pattern, repl in _RENAMES if re.match(pattern, key)),
                           None)
            if renamed is None:
                raise ValueError(f"{key!r} is not a key of NWM's CDiT")
            out[renamed] = value
    for block, kv in bias_kv.items():
        if set(kv) != {"k", "v"}:
            raise ValueError(f"blocks.{block}.cttn has bias_{''.join(kv)} without its pair")
        out[f"cdit.blocks.{block}.cross_attn.bias_kv"] = torch.stack([kv["k"], kv["v"]])
    return out


def to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of from_official: OfficialCDiT's state dict in upstream's key layout (a checkpoint's 'ema')."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if match := re.fullmatch(r"cdit\.blocks\.(\d+)\.(self|cross)_attn\.q\.(weight|bias)", key):
            block, kind, param = match.groups()
            kv = state[f"cdit.blocks.{block}.{kind}_attn.kv.{param}"]
            packed = f"blocks.{block}.attn.qkv.{param}" if kind == "self" else f"blocks.{block}.cttn.in_proj_{param}"
            out[packed] = torch.cat([value, kv])
        elif match := re.fullmatch(r"cdit\.blocks\.(\d+)\.cross_attn\.bias_kv", key):
            out[f"blocks.{match.group(1)}.cttn.bias_k"], out[f"blocks.{match.group(1)}.cttn.bias_v"] = value
        elif not re.search(r"_attn\.kv\.", key):
            out[next((_unrename(pattern, repl, key) for pattern, repl in _RENAMES
                      if _unrename(pattern, repl, key) is not None), key)] = value
    return out


def _unrename(pattern: str, repl: str, key: str) -> str | None:
    """Undo one of _RENAMES on `key`, or None when it does not apply."""
    back = re.escape(repl).replace(r"\\1", r"(\d+)")
    if not (match := re.match(back, key)):
        return None
    source = pattern.replace(r"(\d+)", match.group(1) if match.groups() else "").replace("\\", "")
    return source + key[match.end():]


def size_from_state(state: dict[str, torch.Tensor], num_heads: int | None = None) -> CDiTSize:
    """The CDiTSize an upstream state dict was built with; heads from the CDiT_models table unless given."""
    try:
        slots, patches, hidden = state["pos_embed"].shape
        _, channels, patch, _ = state["x_embedder.proj.weight"].shape
        out_features = state["final_layer.linear.weight"].shape[0]
    except (KeyError, ValueError) as err:
        raise ValueError(f"not NWM's CDiT state dict (missing or odd {err})") from None
    depth = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("blocks.")), default=-1)
    heads = num_heads or HEADS_BY_WIDTH.get(hidden)
    if heads is None:
        raise ValueError(f"hidden width {hidden} is none of CDiT_models' ({sorted(HEADS_BY_WIDTH)}): give num_heads")
    side = math.isqrt(patches) * patch
    return CDiTSize(input_size=side, context_size=slots - 1, patch_size=patch, in_channels=channels,
                    hidden_size=hidden, depth=depth, num_heads=heads,
                    mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / hidden if depth else 4.0,
                    learn_sigma=out_features == 2 * channels * patch * patch)


def build(size: str | CDiTSize) -> OfficialCDiT:
    """The official architecture at a named size ("tiny", "cdit-xl") with random weights (benchmarks, tests)."""
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"unknown NWM size {size!r}; choose from {', '.join(SIZES)}")
        size = SIZES[size]
    return OfficialCDiT(size)


SD_VAE_LAYOUTS = {  # AutoencoderKL widths: stabilityai/sd-vae-ft-ema's, and a tiny one with its 8x downsampling
    "tiny": {"block_out_channels": (8, 8, 8, 8), "layers_per_block": 1, "norm_num_groups": 4},
    "cdit-xl": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "norm_num_groups": 32},
}


def build_vae(size: str):
    """A diffusers AutoencoderKL in the SD VAE's layout with random weights (benchmarks, tests)."""
    from diffusers.models import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, **SD_VAE_LAYOUTS[size])


# ---- the respaced DDPM -----------------------------------------------------------------------------------------------

def space_timesteps(num_timesteps: int, respacing: str) -> list[int]:
    """respace.space_timesteps for comma-separated section counts: each equal section of the original steps is
    strided by the float (size - 1) / (count - 1), accumulated and rounded (Python's round, as upstream)."""
    try:
        counts = [int(x) for x in respacing.split(",")]
    except ValueError:
        raise ValueError(f"respacing {respacing!r}: comma-separated step counts, e.g. '250'") from None
    size_per, extra = divmod(num_timesteps, len(counts))
    start, steps = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if not 1 <= count <= size:
            raise ValueError(f"respacing {respacing!r}: cannot take {count} steps from a section of {size}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            steps.append(start + round(position))
            position += stride
        start += size
    return sorted(set(steps))


class RespacedDDPM:
    """create_diffusion(respacing): linear βs 1e-4..0.02 over 1000 steps, eps prediction, LEARNED_RANGE variance,
    sampled on the respaced steps. The network sees the ORIGINAL step timestep_map[i]."""

    def __init__(self, respacing: str = RESPACING, num_timesteps: int = 1000):
        scale = 1000 / num_timesteps
        base = np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
        base_cumprod = np.cumprod(1.0 - base)
        self.timestep_map = space_timesteps(num_timesteps, respacing)
        previous, betas = 1.0, []
        for step in self.timestep_map:
            betas.append(1 - base_cumprod[step] / previous)
            previous = base_cumprod[step]
        self.betas = np.array(betas, dtype=np.float64)
        self.alphas_cumprod = np.cumprod(1.0 - self.betas)
        cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        posterior_variance = self.betas * (1.0 - cumprod_prev) / (1.0 - self.alphas_cumprod)
        table = {  # float64, each cast to float32 on use as upstream's _extract_into_tensor does
            "sqrt_recip": np.sqrt(1.0 / self.alphas_cumprod),
            "sqrt_recipm1": np.sqrt(1.0 / self.alphas_cumprod - 1),
            "min_log": np.log(np.append(posterior_variance[1], posterior_variance[1:])),  # posterior, clipped at 0
            "max_log": np.log(self.betas),
            "coef1": self.betas * np.sqrt(cumprod_prev) / (1.0 - self.alphas_cumprod),
            "coef2": (1.0 - cumprod_prev) * np.sqrt(1.0 - self.betas) / (1.0 - self.alphas_cumprod),
        }
        self._table = {name: torch.from_numpy(values).float() for name, values in table.items()}
        self._map = torch.tensor(self.timestep_map)

    @property
    def num_steps(self) -> int:
        return len(self.timestep_map)

    def _at(self, name: str, index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self._table[name].to(x.device)[index.to(x.device)].view(-1, *[1] * (x.dim() - 1))

    def p_mean_variance(self, model: Callable[..., torch.Tensor], x: torch.Tensor, index: torch.Tensor,
                        **cond: torch.Tensor) -> dict[str, torch.Tensor]:
        """mean, log_variance and pred_xstart of p(x_{i-1} | x_i), clip_denoised False."""
        output = model(x, self._map.to(x.device)[index.to(x.device)], **cond).float()
        eps, v = output.split(x.shape[1], dim=1)
        frac = (v + 1) / 2
        log_variance = frac * self._at("max_log", index, x) + (1 - frac) * self._at("min_log", index, x)
        pred_xstart = self._at("sqrt_recip", index, x) * x - self._at("sqrt_recipm1", index, x) * eps
        mean = self._at("coef1", index, x) * pred_xstart + self._at("coef2", index, x) * x
        return {"mean": mean, "log_variance": log_variance, "pred_xstart": pred_xstart}

    def p_sample(self, model: Callable[..., torch.Tensor], x: torch.Tensor, index: torch.Tensor, noise: torch.Tensor,
                 **cond: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.p_mean_variance(model, x, index, **cond)
        keep = (index != 0).float().to(x.device).view(-1, *[1] * (x.dim() - 1))  # no noise at the last step
        return {**out, "sample": out["mean"] + keep * torch.exp(0.5 * out["log_variance"]) * noise}

    def sample_steps(self, model: Callable[..., torch.Tensor], z: torch.Tensor,
                     step_noise: Callable[[int], torch.Tensor], **cond: torch.Tensor) -> Iterator[torch.Tensor]:
        """p_sample_loop_progressive: x after each step, from index num_steps-1 down to 0; step_noise(k) is the
        noise of the k-th step."""
        x = z
        for k, i in enumerate(reversed(range(self.num_steps))):
            x = self.p_sample(model, x, torch.full((len(z),), i, dtype=torch.long), step_noise(k), **cond)["sample"]
            yield x

    def sample(self, model: Callable[..., torch.Tensor], z: torch.Tensor, step_noise: Callable[[int], torch.Tensor],
               on_step: Callable[[torch.Tensor], Any] | None = None, **cond: torch.Tensor) -> torch.Tensor:
        for x in self.sample_steps(model, z, step_noise, **cond):
            if on_step is not None:
                on_step(x)
        return x


# ---- one prediction, as isolated_nwm_infer.model_forward_wrapper --------------------------------------------------

@torch.no_grad()
def predict(model: Callable[..., torch.Tensor], diffusion: RespacedDDPM,
            encode: Callable[[torch.Tensor], torch.Tensor], decode: Callable[[torch.Tensor], torch.Tensor],
            obs: torch.Tensor, delta: torch.Tensor, num_timesteps: int, z: torch.Tensor,
            step_noise: Callable[[int], torch.Tensor], num_cond: int,
            on_step: Callable[[torch.Tensor], Any] | None = None) -> torch.Tensor:
    """obs [B, T, 3, H, W] in [-1, 1] (the context frames, oldest first), delta [B, 1, 3], z [B, 4, h, w] ->
    the predicted frame [B, 3, H, W] in [-1, 1], `num_timesteps` frames after the last context frame.
    encode returns a VAE latent sample, decode takes a latent: the 0.18215 scaling is applied here, as upstream."""
    B, T = obs.shape[:2]
    rel_t = torch.ones(B, device=obs.device) * (1.0 / TIME_SCALE) * num_timesteps
    latents = (encode(obs.flatten(0, 1)) * LATENT_SCALE).unflatten(0, (B, T))
    samples = diffusion.sample(model, z, step_noise, on_step, y=delta.flatten(0, 1), x_cond=latents[:, :num_cond],
                               rel_t=rel_t)
    return torch.clip(decode(samples / LATENT_SCALE), -1.0, 1.0)


# ---- actions: NWM's pose preprocessing (datasets.py, misc.py) -------------------------------------------------------

def angle_difference(theta1: np.ndarray | float, theta2: np.ndarray | float) -> np.ndarray:
    """theta2 - theta1 wrapped to [-π, π) with the floor formula (misc.angle_difference)."""
    delta = np.asarray(theta2, np.float64) - theta1
    return delta - 2 * np.pi * np.floor((delta + np.pi) / (2 * np.pi))


def to_local(positions: np.ndarray, origin: np.ndarray, yaw: float) -> np.ndarray:
    """(p - p0)·R(yaw0), i.e. p - p0 rotated by -yaw0: x forward, y left of the pose at p0 (misc.to_local_coords)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return (np.asarray(positions, np.float64) - origin).dot(np.array([[c, -s], [s, c]]))


def waypoints(position: np.ndarray, yaw: np.ndarray, curr_time: int, count: int, spacing: float) -> np.ndarray:
    """_compute_actions' actions: frames curr_time+1 .. curr_time+count as (x / spacing, y / spacing, dyaw) in the
    pose of frame curr_time. float64 [count, 3]."""
    end = curr_time + count + 1
    if curr_time < 0 or end > len(position):
        raise ValueError(f"waypoints {curr_time + 1}..{end - 1} are outside a trajectory of {len(position)} poses")
    local = to_local(position[curr_time:end], position[curr_time], yaw[curr_time])
    actions = np.concatenate([local, angle_difference(yaw[curr_time], yaw[curr_time:end])[:, None]], axis=-1)[1:]
    actions[:, :2] /= spacing
    return actions


def normalise_xy(actions: np.ndarray, low: np.ndarray = ACTION_MIN, high: np.ndarray = ACTION_MAX) -> np.ndarray:
    """x, y min-max mapped to [-1, 1] and NOT clipped (misc.normalize_data); yaw untouched."""
    out = np.array(actions, np.float64)
    out[..., :2] = (out[..., :2] - low) / (high - low) * 2 - 1
    return out


def eval_deltas(position: np.ndarray, yaw: np.ndarray, curr_time: int, count: int, spacing: float,
                low: np.ndarray = ACTION_MIN, high: np.ndarray = ACTION_MAX) -> np.ndarray:
    """EvalDataset's delta: differences of the normalised waypoints with a zero row prepended (misc.get_delta_np),
    so the first carries the normalisation offset and summing k of them gives waypoint k's normalised pose.
    float32 [count, 3]."""
    normalised = normalise_xy(waypoints(position, yaw, curr_time, count, spacing), low, high)
    return np.diff(normalised, axis=0, prepend=np.zeros((1, 3))).astype(np.float32)


def rollout_actions(delta: np.ndarray, rollout_fps: int, input_fps: int = INPUT_FPS) -> tuple[np.ndarray, int]:
    """generate_rollout: the y of each call ([calls, 3], deltas summed in groups of input_fps // rollout_fps, in
    float32 as upstream's torch sum) and its num_timesteps (the group size; rel_t = num_timesteps / 128)."""
    stride = input_fps // rollout_fps
    summed = torch.from_numpy(np.asarray(delta, np.float32)).unflatten(0, (-1, stride)).sum(1)
    return summed.numpy(), stride


def time_actions(delta: np.ndarray, seconds: tuple[int, ...] = TIME_SECONDS,
                 input_fps: int = INPUT_FPS) -> tuple[np.ndarray, list[int]]:
    """generate_time: for each horizon of `seconds`, the sum of its first sec·fps deltas ([len(seconds), 3] float32)
    and its num_timesteps (sec·fps)."""
    tensor = torch.from_numpy(np.asarray(delta, np.float32))
    steps = [sec * input_fps for sec in seconds]
    return torch.stack([tensor[:n].sum(0) for n in steps]).numpy(), steps


def training_goal(position: np.ndarray, yaw: np.ndarray, curr_time: int, goal_offsets: np.ndarray, spacing: float,
                  low: np.ndarray = ACTION_MIN,
                  high: np.ndarray = ACTION_MAX) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TrainingDataset's conditioning for goals `goal_offsets` frames from curr_time (past ones included): y
    (float32 [G, 3], x and y normalised), rel_t (float32, offset / 128) and the pose before normalisation (float64)."""
    goals = curr_time + np.asarray(goal_offsets, dtype=int)
    local = to_local(position[goals], position[curr_time], yaw[curr_time]) / spacing
    raw = np.concatenate([local, angle_difference(yaw[curr_time], yaw[goals])[:, None]], axis=-1)
    rel_t = (np.asarray(goal_offsets).astype(float) / TIME_SCALE).astype(np.float32)
    return normalise_xy(raw, low, high).astype(np.float32), rel_t, raw


# ---- check against upstream's golden outputs ------------------------------------------------------------------------

def load_official(path: Path, num_heads: int | None = None) -> OfficialCDiT:
    """An OfficialCDiT from a safetensors copy of an upstream checkpoint's 'ema' state dict (never a pickle)."""
    from modelkit.checkpoint import load_tensors

    state = load_tensors(path)
    try:
        model = OfficialCDiT(size_from_state(state, num_heads))
        model.load_state_dict(from_official(state))
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{path}: not NWM's CDiT weights ({str(err).splitlines()[0]})") from None
    return model.eval()


def _error(got: torch.Tensor | np.ndarray, want: torch.Tensor, relative: str = "") -> float:
    """max |got - want|; relative "elementwise": each difference over max(1, |want|) (the sample loop's rule);
    "scale": over max(1, max |want|), for pred_xstart, whose eps error is amplified by 1/sqrt(alphas_cumprod)."""
    got, want = torch.as_tensor(got).double(), want.double()
    if got.shape != want.shape:
        return math.inf
    diff = (got - want).abs()
    if relative == "elementwise":
        diff = diff / want.abs().clamp(min=1)
    elif relative == "scale":
        diff = diff / want.abs().max().clamp(min=1)
    return float(diff.max())


def check_upstream(fixture_dir: Path) -> list[FixtureResult]:
    """Replay NWM's fixture folder (layout of ../shared/fixtures/upstream/nwm) through this module."""
    from safetensors.torch import load_file

    fixture_dir = Path(fixture_dir)
    meta = json.loads((fixture_dir / "fixture.json").read_text())
    tolerance = meta["suggested_tolerance"]
    step_tol, loop_rtol = tolerance["forward_and_single_step_abs"], 1e-4
    weights = next(name for name in meta["weights"] if name.endswith(".safetensors"))
    kwargs = {k: v for k, v in meta["weights"]["kwargs"].items() if k in {f.name for f in fields(CDiTSize)}}
    model = OfficialCDiT(CDiTSize(**kwargs))
    model.load_state_dict(from_official(load_file(str(fixture_dir / weights))))
    model.eval()
    results: list[FixtureResult] = []

    def add(name: str, got, want: torch.Tensor, tol: float, relative: str = "") -> None:
        results.append(FixtureResult(name, _error(got, want, relative), tol, bool(relative)))

    with torch.no_grad():
        f = load_file(str(fixture_dir / "cdit_forward.safetensors"))
        add("cdit_forward.safetensors:output", model(f["x"], f["t"], f["y"], f["x_cond"], f["rel_t"]), f["output"],
            step_tol)

        p = load_file(str(fixture_dir / "p_sample.safetensors"))
        diffusion = RespacedDDPM(RESPACING)
        add("p_sample.safetensors:timestep_map_250", torch.tensor(diffusion.timestep_map), p["timestep_map_250"], 0)
        add("p_sample.safetensors:betas_250", torch.from_numpy(diffusion.betas), p["betas_250"], 1e-12)
        add("p_sample.safetensors:alphas_cumprod_250", torch.from_numpy(diffusion.alphas_cumprod),
            p["alphas_cumprod_250"], 1e-12)
        cond = {"y": p["y"], "x_cond": p["x_cond"], "rel_t": p["rel_t"]}
        cases = sorted({int(k[4:].split("_")[0]) for k in p if k.startswith("case")})
        for k in cases:
            out = diffusion.p_sample(model, p[f"case{k}_x_t"], p[f"case{k}_t_index"], p[f"case{k}_noise"], **cond)
            for name in ("sample", "mean", "log_variance"):
                add(f"p_sample.safetensors:case{k}_{name}", out[name], p[f"case{k}_{name}"], step_tol)
            add(f"p_sample.safetensors:case{k}_pred_xstart (relative to its scale)", out["pred_xstart"],
                p[f"case{k}_pred_xstart"], step_tol, relative="scale")

        s = load_file(str(fixture_dir / "sample_loop_250.safetensors"))
        call = meta["files"]["sample_loop_250.safetensors"]["call"]
        num_timesteps = int(re.search(r"num_timesteps=(\d+)", call).group(1))
        num_cond = int(re.search(r"num_cond=(\d+)", call).group(1))
        steps: list[torch.Tensor] = []
        decoded: list[torch.Tensor] = []

        def identity_decode(x: torch.Tensor) -> torch.Tensor:  # the fixture's VAE stub, keeping what it was given
            decoded.append(x)
            return x

        output = predict(model, diffusion, lambda x: x, identity_decode, s["curr_obs"], s["curr_delta"],
                         num_timesteps, s["z"], lambda k: s["step_noises"][k], num_cond, on_step=steps.append)
        add("sample_loop_250.safetensors:x_after_step", torch.stack(steps), s["x_after_step"], loop_rtol,
            "elementwise")
        add("sample_loop_250.safetensors:decoder_input", decoded[0], s["decoder_input"], loop_rtol, "elementwise")
        add("sample_loop_250.safetensors:output_clipped", output, s["output_clipped"], loop_rtol, "elementwise")

    results += _check_actions(fixture_dir, meta, tolerance["actions_float64"], tolerance["actions_float32"])
    return results


def _check_actions(fixture_dir: Path, meta: dict[str, Any], tol64: float, tol32: float) -> list[FixtureResult]:
    from safetensors.torch import load_file

    a = load_file(str(fixture_dir / "actions.safetensors"))
    spec = meta["files"]["actions.safetensors"]
    config = spec["data_config"]
    spacing = config["recon.metric_waypoint_spacing"]
    low, high = np.array(config["action_stats.min"], float), np.array(config["action_stats.max"], float)
    position, yaw = a["position"].numpy(), a["yaw"].numpy()
    results = []

    def add(name: str, got, tol: float) -> None:
        results.append(FixtureResult(f"actions.safetensors:{name}", _error(got, a[name]), tol))

    for i, item in enumerate(spec["eval_dataset"]["items"]):
        count = len(a[f"eval{i}_delta"])
        add(f"eval{i}_actions_metric_over_spacing", waypoints(position, yaw, item["curr_time"], count, spacing), tol64)
        delta = eval_deltas(position, yaw, item["curr_time"], count, spacing, low, high)
        add(f"eval{i}_delta", delta, tol32)
        y, steps = time_actions(delta)
        add(f"eval{i}_time_y", y[None], tol32)
        add(f"eval{i}_time_num_timesteps", torch.tensor(steps), 0)
        for fps in sorted({int(m.group(1)) for k in a if (m := re.fullmatch(rf"eval{i}_rollout(\d+)fps_y", k))}):
            y, stride = rollout_actions(delta, fps)
            add(f"eval{i}_rollout{fps}fps_y", y[None], tol32)
            add(f"eval{i}_rollout{fps}fps_num_timesteps", torch.full((len(y),), stride), 0)
    for item in spec["training_dataset"]["items"]:
        y, rel_t, raw = training_goal(position, yaw, item["curr_time"], np.array(item["goal_offset"]), spacing,
                                      low, high)
        index = item["index"]
        add(f"train{index}_y", y, tol32)
        add(f"train{index}_rel_t", rel_t, tol32)
        add(f"train{index}_goal_pos_before_minmax", raw, tol64)
    return results


# ---- NWM behind the WorldModel API ----------------------------------------------------------------------------------

CHECKPOINT_HINT = ("an official NWM checkpoint: the safetensors conversion of cdit_*.pth.tar "
                   "(`loopnav weights convert nwm FILE`), or a folder holding one")
VAE_FOLDER = "sd-vae-ft-ema"  # an official checkpoint folder may carry the VAE in this subfolder (diffusers layout)


def find_official_checkpoint(path: Path) -> Path:
    """The CDiT safetensors file `path` names: the file itself, or the one *.safetensors at the top of a folder."""
    if path.suffix == ".tar" or path.name.endswith((".pth", ".pt", ".ckpt")):
        raise ValueError(f"--checkpoint {path}: a pickled checkpoint, which evaluation never unpickles; convert it "
                         f"once with `loopnav weights convert nwm {path}`")
    if path.is_file():
        return path
    found = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if len(found) != 1:
        raise ValueError(f"--checkpoint {path}: expected {CHECKPOINT_HINT}; found "
                         f"{len(found) or 'no'} .safetensors files at its top level")
    return found[0]


def load_sd_vae(folder: Path, image_size: int, device: str) -> DiffusersAutoencoder:
    """The SD VAE (stabilityai/sd-vae-ft-ema) from a local folder in its Hub layout, through diffusers."""
    try:
        return DiffusersAutoencoder(str(folder), image_size=image_size, device=device)
    except ImportError:
        raise ValueError("NWM's official weights encode and decode through diffusers' AutoencoderKL: "
                         "pip install 'loopnav[published]'") from None
    except FileNotFoundError:
        raise ValueError(f"{folder}: no SD VAE here (config.json + diffusion_pytorch_model.safetensors); get it with "
                         "`loopnav weights download nwm` or give --model-args vae=FOLDER") from None


def folder_sha256(folder: Path) -> dict[str, str]:
    """sha256 of each file of a diffusers folder (results record what produced them)."""
    from loopnav_bench.fileio import sha256_file

    return {p.name: sha256_file(p) for p in sorted(Path(folder).iterdir()) if p.is_file()}


def to_model_pixels(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> [N, 3, size, size] in [-1, 1]: centre crop to 4:3 (width over height), resize, scale;
    misc.transform's CenterCropAR + Resize + Normalize(0.5, 0.5), with torch's antialiased bilinear resize standing
    in for PIL's."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255
    h, w = x.shape[2:]
    if w > h:
        crop_h, crop_w = h, min(w, int(h * 4 / 3))
    else:
        crop_h, crop_w = min(h, int(w / (4 / 3))), w
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    x = x[:, :, top:top + crop_h, left:left + crop_w]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1) * 2 - 1


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3], truncating as upstream's save_image ((x + 1) / 2 · 255, byte)."""
    return ((pixels.float().cpu() + 1) / 2 * 255).byte().permute(0, 2, 3, 1).numpy()


class OfficialNWMModel(WorldModel):
    """NWM's released CDiT behind the WorldModel API (`--model nwm --checkpoint <official>`, or `nwm-official`).

    Each target frame is one model_forward_wrapper call at 4 fps, as generate_rollout at --rollout_fps 4: the last
    4 frames (real, then predicted) re-encoded as context, y the next eval delta, rel_t = 1/128, 250 respaced DDPM
    steps. Model args: sampler_steps (the respacing, default 250), vae (an SD VAE folder), num_heads (for widths
    outside CDiT_models). bf16 autocast on CUDA, as upstream; float32 on CPU."""

    name = "nwm"

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0,
                 sampler_steps: int | None = None, vae: str | None = None, num_heads: int | None = None):
        super().__init__(checkpoint, device, seed, sampler_steps=sampler_steps, vae=vae, num_heads=num_heads)
        if sampler_steps is not None and (type(sampler_steps) is not int or not 1 <= sampler_steps <= 1000):
            raise ValueError(f"--model-args sampler_steps={sampler_steps!r}: a whole number of respaced DDPM steps "
                             "in 1..1000 (upstream: 250)")
        from published.weights import default_nwm_checkpoint, sd_vae_folder

        given = Path(checkpoint) if checkpoint else default_nwm_checkpoint()
        self.weights_path = find_official_checkpoint(given)
        self.checkpoint = str(self.weights_path)  # what was loaded: evaluate hashes it
        self.network = load_official(self.weights_path, num_heads).to(device)
        self.diffusion = RespacedDDPM(str(sampler_steps or int(RESPACING)))
        beside = self.weights_path.parent / VAE_FOLDER
        self.vae_folder = Path(vae) if vae else beside if beside.is_dir() else sd_vae_folder()
        self.image_size = self.network.size.input_size * VAE_DOWNSAMPLE
        self.codec = load_sd_vae(self.vae_folder, self.image_size, device)
        self.bf16 = str(device).startswith("cuda")

    def _check(self, request: RolloutRequest) -> None:
        layout, fps = request.meta.get("action_layout"), request.meta.get("fps")
        if layout != "recon-v1":
            raise ValueError(f"trajectory {request.id}: NWM's official weights take RECON poses (recon-v1, metres "
                             f"at {INPUT_FPS} fps), not {layout!r}")
        if fps != INPUT_FPS:
            raise ValueError(f"trajectory {request.id}: NWM's official weights run at {INPUT_FPS} fps, "
                             f"the trajectory at {fps}")

    def rollout(self, request: RolloutRequest) -> np.ndarray:
        return self.rollout_batch([request])[0]

    @torch.no_grad()
    def rollout_batch(self, requests: list[RolloutRequest]) -> list[np.ndarray]:
        """Trajectories advance together, one frame per step, each drawing its noise from its own generator;
        calls are padded to LANES rows so that a trajectory's frames do not depend on its batch."""
        from modelkit.adapter import LANES

        for request in requests:
            self._check(request)
        out: list[np.ndarray] = []
        for start in range(0, len(requests), LANES):
            out += self._rollout_lanes(requests[start:start + LANES], LANES)
        return out

    def _rollout_lanes(self, requests: list[RolloutRequest], lanes: int) -> list[np.ndarray]:
        K, S = self.network.size.context_size, self.network.size.input_size
        spacing = WAYPOINT_SPACING["recon"]
        generators = [torch.Generator().manual_seed(r.seed) for r in requests]
        frames, deltas = [], []
        for r in requests:
            context = to_model_pixels(r.context_frames, self.image_size)
            # fewer than K context frames: the first one repeats, as a trajectory's start would
            frames.append(list(torch.cat([context[:1].expand(max(0, K - len(context)), -1, -1, -1), context])[-K:]))
            poses = np.concatenate([r.context_poses, r.target_poses])
            deltas.append(eval_deltas(poses[:, :2], poses[:, 3], len(r.context_poses) - 1, r.horizon, spacing))
        predicted: list[list[torch.Tensor]] = [[] for _ in requests]
        for step in range(max(r.horizon for r in requests)):
            active = [i for i, r in enumerate(requests) if step < r.horizon]
            rows = active + active[:1] * (lanes - len(active))  # padding rows repeat the first; dropped below

            def draw(shape: tuple[int, ...]) -> torch.Tensor:  # one draw per active trajectory, from its generator
                noise = torch.stack([torch.randn(shape, generator=generators[i]) for i in active])
                return torch.cat([noise, noise[:1].expand(lanes - len(active), *shape)]).to(self.device)

            obs = torch.stack([torch.stack(frames[i][-K:]) for i in rows]).to(self.device)
            delta = torch.stack([torch.from_numpy(deltas[i][step:step + 1]) for i in rows]).to(self.device)
            latent_noise = draw((K, 4, S, S))

            def encode(pixels: torch.Tensor) -> torch.Tensor:  # latent_dist.sample(), with our noise
                mean, std = self.codec.posterior(pixels)
                return mean + std * latent_noise.flatten(0, 1).to(mean.dtype)

            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16):
                frame = predict(self.network, self.diffusion, encode, self.codec.decode_pixels, obs, delta, 1,
                                draw((4, S, S)), lambda k: draw((4, S, S)), K)
            for row, i in enumerate(active):
                predicted[i].append(frame[row].float().cpu())
                frames[i].append(predicted[i][-1])
        return [to_uint8(torch.stack(p)) for p in predicted]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "weights": "official", "upstream": UPSTREAM, "licence": "CC-BY-NC-4.0",
                "architecture": asdict(self.network.size), "sampler": f"DDPM respaced to {self.diffusion.num_steps}",
                "vae": str(self.vae_folder), "vae_sha256": folder_sha256(self.vae_folder),
                "context_frames": self.network.size.context_size,
                "image_size": self.image_size, "autocast": "bf16" if self.bf16 else "float32"}


def frame_workload(size: str, batch: int, device: str,
                   steps: int | None = None) -> tuple[Callable[[], torch.Tensor], dict[str, Any]]:
    """One generated frame at `batch` with random weights and inputs, as the adapter makes it: encode the context
    frames with the SD VAE (when diffusers is installed), `steps` respaced DDPM steps (upstream: 250), decode.
    Returns the call and what it ran (benchmarks/bench_published.py)."""
    network = build(size).to(device).eval()
    K, S = network.size.context_size, network.size.input_size
    try:
        vae = build_vae(size).to(device).eval()
    except ImportError:
        vae = None
    diffusion = RespacedDDPM(str(steps or int(RESPACING)))
    obs = torch.rand(batch, K, 3, S * VAE_DOWNSAMPLE, S * VAE_DOWNSAMPLE, device=device) * 2 - 1
    delta, z = torch.randn(batch, 1, 3, device=device), torch.randn(batch, 4, S, S, device=device)
    if vae is not None:
        encode, decode = (lambda x: vae.encode(x).latent_dist.mean), (lambda z: vae.decode(z).sample)
    else:  # the CDiT's work alone
        encode, decode = (lambda x: x.new_zeros(len(x), 4, S, S)), (lambda z: z)

    @torch.no_grad()
    def run() -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=str(device).startswith("cuda")):
            return predict(network, diffusion, encode, decode, obs, delta, 1, z, lambda k: torch.randn_like(z), K)

    parameters = sum(p.numel() for p in network.parameters())
    return run, {"architecture": asdict(network.size), "parameters": parameters, "sampler_steps": diffusion.num_steps,
                 "vae": "SD VAE layout (diffusers AutoencoderKL), random" if vae else "skipped: no diffusers",
                 "vae_parameters": sum(p.numel() for p in vae.parameters()) if vae else 0}
