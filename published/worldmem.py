"""WorldMem (Xiao et al. 2025, xizaoqu/WorldMem c1cc91b): Oasis's spatio-temporal DiT plus a memory block that
attends to past frames retrieved by field-of-view overlap, each placed by its camera pose (Plücker rays) and its
frame offset. Written from reading upstream's df_video.py, models/{dit,attention,diffusion,cameractrl_module}.py;
checked against golden outputs of that code (`check_upstream`, docs/models/worldmem.md).

Shared with Oasis (published/oasis.py, same math): patch embedding, timestep embedder, the spatial and temporal
sub-blocks with their RoPE, the final layer, the ViT VAE and its latent scale, the int64 noise-level grid.
WorldMem's own, each reproduced:
  - conditioning: actions modulate ONLY the temporal sub-block; spatial, memory and final layers see the timestep;
  - temporal mask: causal over the window, memory frames see only themselves;
  - memory block: for window frame i a group [frame i, R memory frames] with the memory poses expressed in frame
    i's camera; pose embedding (Plücker at every 40th pixel -> MLP, plus a timestamp embedding of the frame offset)
    added, through each block's pose_cond_mlp, to queries and keys only; frame i queries the group's memory frames,
    and only the last group's memory frames are queries too;
  - DDIM: context and memory frames at level −1 are fed as √ᾱ₁₄·x (q_sample without noise) at level 14, frames whose
    level does not change get their original x back; the schedule is a float64 cumprod cast to float32;
  - retrieval: the last R frames while fewer exist, then greedy FOV overlap over 10000 random points within 30 blocks,
    minus 0.2·(curr − frame index)/curr, removing covered points after each pick.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from loopnav_bench.models import RolloutRequest
from modelkit.adapter import lockstep_rollout
from published.oasis import (
    ACTION_KEYS,
    NOISE_ABS_MAX,
    STABILIZATION_LEVEL,
    FinalLayer,
    MinecraftLatentModel,
    OasisVAE,
    PatchEmbed,
    SpatioTemporalBlock,
    TimestepEmbedder,
    VAESize,
    autocast,
    encode_frames,
    frame_modulation,
    latents_to_tokens,
    layer_norm,
    load_weights,
    max_error,
    modulate,
    noise_levels,
    sigmoid_betas,
    split_heads,
    unpatchify,
    zero_first_action,
)
from published.upstream_check import FixtureResult

POSE_STRIDE = 40  # DiT.forward reads pose_cond[:, :, ::40, ::40]: one ray per token (VAE patch 20 × DiT patch 2)
FOV_DEGREES = (105.0, 75.0)  # horizontal, vertical, of the retrieval's visibility test
SPHERE_POINTS, SPHERE_RADIUS = 10000, 30.0
RECENCY_WEIGHT = 0.2
DIFFUSION_FILE, VAE_FILE = "diffusion_only.safetensors", "vae_only.safetensors"  # zeqixiao/worldmem_checkpoints


# ---------------------------------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class WorldMemSize:
    input_h: int = 18
    input_w: int = 32
    patch_size: int = 2
    in_channels: int = 16
    hidden_size: int = 1024
    depth: int = 16
    num_heads: int = 16
    mlp_ratio: float = 4.0
    action_cond_dim: int = 25
    memory_frames: int = 8   # memory_condition_length (the DiT's reference_length)
    window: int = 3          # n_tokens: frames in the sliding window, the new one included
    focal_length: float = 0.35


@dataclass(frozen=True)
class Sizes:
    dit: WorldMemSize
    vae: VAESize = field(default_factory=VAESize)


SIZES: dict[str, Sizes] = {
    "worldmem": Sizes(WorldMemSize()),  # configurations/huggingface.yaml with DiT-S/2 and vit-l-20-shallow-encoder
    "tiny": Sizes(WorldMemSize(input_h=4, input_w=8, hidden_size=48, depth=2, num_heads=4, memory_frames=4),
                  VAESize(input_height=80, input_width=160, enc_dim=32, enc_depth=1, enc_heads=2, dec_dim=32,
                          dec_depth=1, dec_heads=2)),
}


# ---------------------------------------------------------------------------------------------------- poses


def euler_to_c2w(poses: torch.Tensor) -> torch.Tensor:
    """(x, y, z, pitch°, yaw°) [..., 5] -> camera-to-world [..., 4, 4]: R = R_yaw (about y) · R_pitch (about x),
    translation (x, y, z). Minecraft axes: y up; the camera looks along +z, pitch positive looking down."""
    pitch, yaw = torch.deg2rad(poses[..., 3]), torch.deg2rad(poses[..., 4])
    one, zero = torch.ones_like(pitch), torch.zeros_like(pitch)
    cp, sp, cy, sy = pitch.cos(), pitch.sin(), yaw.cos(), yaw.sin()
    r_pitch = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).unflatten(-1, (3, 3))
    r_yaw = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).unflatten(-1, (3, 3))
    c2w = torch.eye(4, dtype=poses.dtype).repeat(*poses.shape[:-1], 1, 1)
    c2w[..., :3, :3] = r_yaw @ r_pitch
    c2w[..., :3, 3] = poses[..., :3]
    return c2w


def world_to_camera(c2w: torch.Tensor) -> torch.Tensor:
    """The inverse of a rigid [..., 4, 4]: (Rᵀ, −Rᵀt)."""
    rotation_t = c2w[..., :3, :3].transpose(-1, -2)
    w2c = torch.eye(4, dtype=c2w.dtype).repeat(*c2w.shape[:-2], 1, 1)
    w2c[..., :3, :3] = rotation_t
    w2c[..., :3, 3] = -(rotation_t @ c2w[..., :3, 3:]).squeeze(-1)
    return w2c


def relative_to(c2w: torch.Tensor, reference: int) -> torch.Tensor:
    """Poses [F, ..., 4, 4] in the camera of pose `reference` (get_relative_pose): w2c[reference] @ c2w[f]."""
    return world_to_camera(c2w[reference]) @ c2w


def plucker_rays(intrinsics: torch.Tensor, c2w: torch.Tensor, height: int, width: int, stride: int = 1) -> torch.Tensor:
    """ray_condition: intrinsics (fx, fy, cx, cy) [..., 4] and c2w [..., 4, 4] -> (o × d, d) [..., H/s, W/s, 6] at
    every `stride`-th pixel centre (+0.5). Direction (−(u − cx)/fx, −(v − cy)/fy, 1), normalised, rotated by R."""
    v = torch.arange(0, height, stride, dtype=c2w.dtype) + 0.5
    u = torch.arange(0, width, stride, dtype=c2w.dtype) + 0.5
    v, u = (g.reshape(-1) for g in torch.meshgrid(v, u, indexing="ij"))
    fx, fy, cx, cy = (k[..., None] for k in intrinsics.unbind(-1))
    xs, ys = -(u - cx) / fx, -(v - cy) / fy
    directions = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    rays_d = directions @ c2w[..., :3, :3].transpose(-1, -2)
    rays_o = c2w[..., None, :3, 3].expand_as(rays_d)
    plucker = torch.cat([torch.linalg.cross(rays_o, rays_d), rays_d], dim=-1)
    return plucker.unflatten(-2, (len(range(0, height, stride)), len(range(0, width, stride))))


def intrinsics(focal: float, height: int, width: int) -> torch.Tensor:
    """convert_to_plucker's K: fx = focal·W, fy = focal·H, cx = W/2, cy = H/2 (float32)."""
    return torch.from_numpy(np.asarray([focal * width, focal * height, 0.5 * width, 0.5 * height], np.float32))


def plucker(c2w: torch.Tensor, height: int, width: int, focal: float, stride: int = 1) -> torch.Tensor:
    """convert_to_plucker(c2w, 0, ...): poses [F, B, 4, 4] relative to pose 0 -> rays [F, B, H/s, W/s, 6]."""
    return plucker_rays(intrinsics(focal, height, width).to(c2w.dtype), relative_to(c2w, 0), height, width, stride)


def inside_fov(points: torch.Tensor, center: torch.Tensor, pitch: torch.Tensor, yaw: torch.Tensor,
               half_h: float, half_v: float) -> torch.Tensor:
    """is_inside_fov_3d_hv: points [N, B, 3] seen from center [B, 3] looking at (pitch°, yaw°) [B]: azimuth
    atan2(x, z), elevation atan2(y, √(x²+z²)), each within its half-FOV after wrapping the difference. (Here pitch
    counts as positive upward, the opposite of the camera's rays: upstream's own inconsistency, reproduced.)"""
    vectors = points - center
    x, y, z = vectors.unbind(-1)
    azimuth = torch.atan2(x, z) * (180 / math.pi)
    elevation = torch.atan2(y, torch.sqrt(x ** 2 + z ** 2)) * (180 / math.pi)
    d_azimuth = (azimuth - yaw).abs() % 360
    d_elevation = (elevation - pitch).abs() % 360
    d_azimuth = torch.where(d_azimuth > 180, 360 - d_azimuth, d_azimuth)
    d_elevation = torch.where(d_elevation > 180, 360 - d_elevation, d_elevation)
    return (d_azimuth < half_h) & (d_elevation < half_v)


def sphere_points(generator: torch.Generator, n: int = SPHERE_POINTS, radius: float = SPHERE_RADIUS) -> torch.Tensor:
    """generate_points_in_sphere: n points uniform in a ball (cube-root radius, uniform cos θ)."""
    r = radius * torch.rand(n, generator=generator).pow(1 / 3)
    phi = 2 * math.pi * torch.rand(n, generator=generator)
    theta = torch.acos(1 - 2 * torch.rand(n, generator=generator))
    return torch.stack([r * theta.sin() * phi.cos(), r * theta.sin() * phi.sin(), r * theta.cos()], dim=1)


def retrieve_memory(curr: int, memory_frames: int, poses: torch.Tensor, frame_index: torch.Tensor, horizon: int,
                    points: torch.Tensor) -> torch.Tensor:
    """_generate_condition_indices: the R past frames [R, B] conditioning frames curr .. curr+horizon−1.
    poses [T, B, 5] (x, y, z, pitch°, yaw°), frame_index [T, B], points [N, 3] around the origin.

    Fewer than R past frames: 0 .. curr−1 then 0s. Otherwise greedy: score = share of the target's visible points
    also visible from the frame − 0.2·(curr − frame_index)/curr, take the best, drop the points it covers, repeat.
    Upstream's batch quirks are kept (one trajectory per call makes them moot): the share's denominator sums over
    the whole batch, and a frame picked for one trajectory is excluded for all."""
    batch = poses.shape[1]
    if curr < memory_frames:
        return torch.tensor(list(range(curr)) + [0] * (memory_frames - curr))[:, None].repeat(1, batch)
    half_h, half_v = FOV_DEGREES[0] / 2, FOV_DEGREES[1] / 2
    points = points[:, None].repeat(1, batch, 1) + poses[curr, :, :3][None]

    def visible(pose: torch.Tensor) -> torch.Tensor:
        return inside_fov(points, pose[:, :3], pose[:, -2], pose[:, -1], half_h, half_v)

    target = torch.stack([visible(p) for p in poses[curr:curr + horizon]]).sum(0) > 0
    seen = torch.stack([visible(p) for p in poses[:curr]])  # [curr, N, B]
    recency = (curr - frame_index[:curr]) / curr * (-RECENCY_WEIGHT)
    picked: list[torch.Tensor] = []
    for _ in range(memory_frames):
        confidence = (target & seen).sum(1) / target.sum() + recency
        if picked:
            confidence[torch.cat(picked)] = -1e10
        best = torch.topk(confidence, k=1, dim=0).indices[0]  # [B]
        picked.append(best)
        target = target & ~seen[best, :, torch.arange(batch)].T
    return torch.stack(picked)


def group_conditions(window: range, c2w: torch.Tensor, frame_index: torch.Tensor, memory: torch.Tensor,
                     image_hw: tuple[int, int], focal: float) -> tuple[torch.Tensor, torch.Tensor]:
    """_prepare_conditions (relative embedding): for each window frame i, the group [i, memory frames] with poses
    relative to frame i and frame offsets relative to i. Time-first in and out: c2w [T, B, 4, 4], frame_index
    [T, B], memory [R, B] -> Plücker grid [W·(1+R), B, H/40, W/40, 6] and offsets [W·(1+R), B]."""
    batch = torch.arange(c2w.shape[1])
    rays, offsets = [], []
    for i in window:
        group = torch.cat([c2w[i:i + 1], c2w[memory, batch]])
        rays.append(plucker(group, *image_hw, focal, POSE_STRIDE))
        offsets.append(torch.cat([frame_index[i:i + 1] - frame_index[i:i + 1],
                                  frame_index[memory, batch] - frame_index[i]]))
    return torch.cat(rays), torch.cat(offsets)


# ---------------------------------------------------------------------------------------------------- the model


class MemoryAttention(nn.Module):
    """MemFullAttention with relative embedding and queries/keys-only pose conditioning. Input: groups of 1 + R
    frames [B, W·(1+R), h, w, D]; output one frame per window frame plus the R memory frames [B, W + R, h, w, D]."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, pose: torch.Tensor, memory_frames: int) -> torch.Tensor:
        B, G, H, W, D = x.shape
        q, k, _ = self.to_qkv(x + pose).chunk(3, dim=-1)
        v = self.to_qkv(x).chunk(3, dim=-1)[2]
        length = memory_frames + 1
        groups = G // length

        def tokens(t: torch.Tensor) -> torch.Tensor:  # [B, n, h, w, D] -> [B, heads, n·h·w, d]
            return split_heads(t.flatten(1, 3), self.heads).transpose(1, 2)

        out = []
        for i in range(groups):
            first = i * length
            queries = q[:, first:first + length] if i == groups - 1 else q[:, first:first + 1]
            keys, values = k[:, first + 1:first + length], v[:, first + 1:first + length]
            attended = F.scaled_dot_product_attention(tokens(queries), tokens(keys), tokens(values))
            out.append(attended.transpose(1, 2).flatten(-2).unflatten(1, (queries.shape[1], H, W)))
        return self.to_out(torch.cat(out, dim=1))


class WorldMemBlock(SpatioTemporalBlock):
    """Oasis's spatial and temporal sub-blocks, then the memory sub-block (adaLN-Zero, timestep-modulated)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__(dim, heads, mlp_ratio)
        self.r_attn = MemoryAttention(dim, heads)
        self.r_mlp = type(self.s_mlp)(dim, int(dim * mlp_ratio), "tanh")
        self.r_adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.pose_cond_mlp = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor, c_action: torch.Tensor, temporal_mask: torch.Tensor,
                pose: torch.Tensor, memory_frames: int) -> torch.Tensor:
        x = super().forward(x, c, c_action, temporal_mask)
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = frame_modulation(self.r_adaLN_modulation, c, 6)
        window = x.shape[1] - memory_frames
        memory = list(range(window, x.shape[1]))
        groups = torch.tensor([j for i in range(window) for j in [i, *memory]], device=x.device)
        grouped = modulate(layer_norm(x[:, groups]), shift_a[:, groups], scale_a[:, groups])
        x = x + gate_a * self.r_attn(grouped, self.pose_cond_mlp(pose), memory_frames)
        return x + gate_m * self.r_mlp(modulate(layer_norm(x), shift_m, scale_m))


class PoseEncoder(nn.Module):
    """cameractrl_module.SimpleCameraPoseEncoder: Linear 6→128, ReLU, Linear 128→D per ray."""

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, rays: torch.Tensor) -> torch.Tensor:
        return self.model(rays)


def temporal_mask(frames: int, memory_frames: int, device: torch.device) -> torch.Tensor:
    """[T, T], True = attend: causal over the window; memory frames (the last R) attend only to themselves."""
    allowed = torch.ones(frames, frames, dtype=torch.bool, device=device).tril()
    allowed[frames - memory_frames:] = False
    return allowed | torch.eye(frames, dtype=torch.bool, device=device)


class WorldMemDiT(nn.Module):
    """models/dit.py `DiT` as configured by huggingface.yaml (Plücker, relative embedding, pose on q/k only, memory
    attention, timestamp embedding). forward(x [B, W+R, C, h, w], t [B, W+R] noise levels, actions [B, W+R, 25],
    rays [B, W·(1+R), h', w', 6] (one per token), offsets [B, W·(1+R)]) -> v. Upstream hands rays and offsets over
    TIME-first (model_predictions' permute of the 5-D tensor raises and is swallowed) and the DiT permutes them to
    batch-first; here they arrive batch-first."""

    def __init__(self, size: WorldMemSize):
        super().__init__()
        self.size = size
        D = size.hidden_size
        self.x_embedder = PatchEmbed(size.patch_size, size.in_channels, D)
        self.t_embedder = TimestepEmbedder(D)
        self.timestamp_embedding = TimestepEmbedder(D)
        self.external_cond = nn.Linear(size.action_cond_dim, D)
        self.pose_embedder = PoseEncoder(D)
        self.blocks = nn.ModuleList(WorldMemBlock(D, size.num_heads, size.mlp_ratio) for _ in range(size.depth))
        self.final_layer = FinalLayer(D, size.patch_size, size.in_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, actions: torch.Tensor, rays: torch.Tensor,
                offsets: torch.Tensor) -> torch.Tensor:
        B, T = x.shape[:2]
        h = self.x_embedder(x.flatten(0, 1)).unflatten(0, (B, T))
        c = self.t_embedder(t)
        c_action = c + self.external_cond(actions)
        pose = self.pose_embedder(rays) + self.timestamp_embedding(offsets)[:, :, None, None]
        mask = temporal_mask(T, self.size.memory_frames, x.device)
        for block in self.blocks:
            h = block(h, c, c_action, mask, pose, self.size.memory_frames)
        return unpatchify(self.final_layer(h, c), self.size.patch_size)


# ---------------------------------------------------------------------------------------------------- the sampler


@dataclass(frozen=True)
class Schedule:
    """diffusion.py's buffers: a float64 sigmoid schedule and cumprod, each derived quantity cast to float32."""

    alphas_cumprod: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor

    @classmethod
    def sigmoid(cls) -> "Schedule":
        a = torch.cumprod(1.0 - sigmoid_betas(), dim=0)
        return cls(*(v.float() for v in (a, a.sqrt(), (1 - a).sqrt(), (1 / a).sqrt(), (1 / a - 1).sqrt())))

    def to(self, device: torch.device) -> "Schedule":
        return Schedule(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def ddim_step(dit: WorldMemDiT, schedule: Schedule, x: torch.Tensor, actions: torch.Tensor, rays: torch.Tensor,
              offsets: torch.Tensor, level_from: torch.Tensor, level_to: torch.Tensor, steps: int) -> torch.Tensor:
    """Diffusion.sample_step with eta 0: x [B, T, C, h, w], level_from/to [B, T] indices into the noise-level grid
    noise_levels(steps). Frames at level −1 are fed as √ᾱ₁₄·x at level 14; frames whose level does not change are
    returned as they came."""
    grid = torch.tensor(noise_levels(steps), device=x.device)
    current, following = grid[level_from], grid[level_to]
    clipped = torch.where(current < 0, STABILIZATION_LEVEL - 1, current)

    def at(buffer: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        return buffer[levels][..., None, None, None]

    stabilised = at(schedule.sqrt_alphas_cumprod, clipped) * x
    x_in = torch.where((current < 0)[..., None, None, None], stabilised, x)
    v = dit(x_in, clipped, actions, rays, offsets).float()
    x_start = at(schedule.sqrt_alphas_cumprod, clipped) * x_in - at(schedule.sqrt_one_minus_alphas_cumprod, clipped) * v
    noise = (at(schedule.sqrt_recip_alphas_cumprod, clipped) * x_in - x_start) / \
        at(schedule.sqrt_recipm1_alphas_cumprod, clipped)
    alpha_next = torch.where(following < 0, 1.0, schedule.alphas_cumprod[following.clamp(min=0)])[..., None, None, None]
    x_next = x_start * alpha_next.sqrt() + noise * (1 - alpha_next).sqrt()
    return torch.where((current == following)[..., None, None, None], x, x_next)


CallHook = Callable[[dict[str, torch.Tensor]], None]


def denoise_next_frame(dit: WorldMemDiT, schedule: Schedule, window: torch.Tensor, noise: torch.Tensor,
                       memory: torch.Tensor, actions: torch.Tensor, rays: torch.Tensor, offsets: torch.Tensor,
                       steps: int, on_call: CallHook | None = None) -> torch.Tensor:
    """validation_step's loop for one new frame (chunk_size 1, full_sequence schedule: the new frame goes from
    level index `steps` to 0, everything else stays at index 0 = level −1). window [B, W−1, C, h, w] the previous
    frames, noise [B, C, h, w] before the ±20 clamp, memory [B, R, C, h, w]; actions [B, W+R, 25] (memory rows
    zero). Returns the new frame [B, C, h, w]."""
    new = window.shape[1]
    x = torch.cat([window, noise.clamp(-NOISE_ABS_MAX, NOISE_ABS_MAX)[:, None].to(window.dtype), memory], dim=1)
    for m in range(steps):
        level_from = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
        level_to = level_from.clone()
        level_from[:, new], level_to[:, new] = steps - m, steps - m - 1
        out = ddim_step(dit, schedule, x, actions, rays, offsets, level_from, level_to, steps)
        if on_call is not None:
            on_call({"x": x, "from": level_from, "to": level_to, "out": out})
        x = out
    return x[:, new]


# ---------------------------------------------------------------------------------------------------- loopnav mapping


def loopnav_to_worldmem_poses(poses: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """loopnav poses [T, 5] (x east, y north, z up; yaw counter-clockwise from +x, pitch up; radians) -> WorldMem's
    (x, y, z, pitch°, yaw°): Minecraft axes (x east, y up, z south), relative to `origin` (loopnav x, y, z; the
    dataset subtracts each clip's first position), pitch positive looking down, and yaw such that the view
    direction is (sin yaw, cos yaw) in (x, z): the dataset's negated Minecraft yaw, which is loopnav yaw + 90°.
    Angles modulo 360 as the dataset leaves them."""
    poses = np.asarray(poses, np.float64)
    d = poses[:, :3] - origin
    out = np.stack([d[:, 0], d[:, 2], -d[:, 1], -np.degrees(poses[:, 4]), np.degrees(poses[:, 3]) + 90.0], axis=1)
    out[:, 3:] %= 360
    return out.astype(np.float32)


CAMERA_STEP_DEGREES = 15.0  # MineDojo's camera bin, which WorldMem's ±1 camera actions stand for


def loopnav_to_worldmem_actions(actions: np.ndarray) -> np.ndarray:
    """loopnav-v1 [T, 9] -> WorldMem's 25-dim vectors, row for row (both: actions[i] produced frame i).

    datasets/video/minecraft_video_dataset.py `convert_action_space` fills forward, back, left, right, the camera
    (its own key order puts cameraY at 15 and cameraX at 16: index 15 = pitch, +1 looking down; index 16 = yaw, +1
    turning right, each ±1 = one 15° MineDojo step) and nothing else (no jump, sprint or sneak). loopnav's camera
    (radians per tick, counter-clockwise / up positive) is scaled to that step and clipped to [−1, 1]."""
    actions = np.asarray(actions, np.float64)
    out = np.zeros((len(actions), len(ACTION_KEYS)), np.float32)
    for column, key in enumerate(("forward", "back", "left", "right")):
        out[:, ACTION_KEYS.index(key)] = actions[:, column] > 0.5
    out[:, 15] = np.clip(-np.degrees(actions[:, 8]) / CAMERA_STEP_DEGREES, -1, 1)
    out[:, 16] = np.clip(-np.degrees(actions[:, 7]) / CAMERA_STEP_DEGREES, -1, 1)
    return out


# ---------------------------------------------------------------------------------------------------- weights


SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2", "clipped_snr", "snr")


def load_diffusion(dit: WorldMemDiT, path: Path) -> None:
    """A Diffusion state dict (`model.*` + the schedule buffers, which are rebuilt); temporal_pose_cond_mlp is in
    every block's weights but never used upstream."""
    load_weights(dit, path, prefix="model.", unused=("temporal_pose_cond_mlp.",))


def build(size: str) -> tuple[WorldMemDiT, OasisVAE]:
    """WorldMem's DiT and VAE at a named size ("tiny" or "worldmem"), with PyTorch's default random weights."""
    if size not in SIZES:
        raise ValueError(f"unknown WorldMem size {size!r}; known: {', '.join(SIZES)}")
    return WorldMemDiT(SIZES[size].dit), OasisVAE(SIZES[size].vae)


def save_official_worldmem(dit: WorldMemDiT, vae: OasisVAE, folder: Path) -> None:
    """Write weights in the converted zeqixiao/worldmem_checkpoints layout (diffusion `model.*` keys; VAE plain)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({f"model.{k}": v.contiguous() for k, v in dit.state_dict().items()}, str(folder / DIFFUSION_FILE))
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(folder / VAE_FILE))


def checkpoint_files(checkpoint: str | Path) -> tuple[Path, Path]:
    """The diffusion and VAE files of a checkpoint folder (zeqixiao/worldmem_checkpoints, converted to safetensors
    by `loopnav weights convert`)."""
    folder = Path(checkpoint)
    files = (folder / DIFFUSION_FILE, folder / VAE_FILE)
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"--checkpoint {checkpoint}: no {file.name} (WorldMem needs {DIFFUSION_FILE} and "
                                    f"{VAE_FILE} in one folder; `loopnav weights download worldmem` then "
                                    f"`loopnav weights convert worldmem`)")
    return files


# ---------------------------------------------------------------------------------------------------- the adapter


class WorldMemModel(MinecraftLatentModel):
    """WorldMem on loopnav's protocol. The context frames (all, or the last `context`) are encoded; each return-leg
    frame is then generated from the previous window − 1 frames (real or generated) and R memory frames retrieved
    among ALL earlier frames by FOV overlap of the known poses, with upstream's 20-step DDIM at the native
    resolution (360x640; tiny: 80x160). Model args: size (worldmem | tiny), context (0 = all), sampling_steps
    (upstream 20), batch (VAE frames per call)."""

    name = "worldmem"
    description = "WorldMem (Xiao et al.): Oasis with pose-retrieved memory frames, official weights, Minecraft"
    licence = "S-Lab License 1.0 (non-commercial)"  # xizaoqu/WorldMem LICENSE.md, weights zeqixiao/worldmem_checkpoints

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0, size: str = "worldmem",
                 context: int = 0, sampling_steps: int = 20, batch: int = 8):
        super().__init__(checkpoint, device, seed, size=size, context=context, sampling_steps=sampling_steps,
                         batch=batch)
        if checkpoint is None:
            raise ValueError(f"worldmem needs --checkpoint: a folder with {DIFFUSION_FILE} and {VAE_FILE}")
        for arg, value, least in (("context", context, 0), ("sampling_steps", sampling_steps, 1), ("batch", batch, 1)):
            if value < least:
                raise ValueError(f"--model-args {arg}={value}: must be at least {least}")
        self.context, self.steps, self.batch = context, sampling_steps, batch
        self.dit, self.vae = build(size)
        diffusion_file, vae_file = self.weight_files = checkpoint_files(checkpoint)
        load_diffusion(self.dit, diffusion_file)
        load_weights(self.vae, vae_file)
        self.torch_device = torch.device(device)
        self.dit.to(self.torch_device).eval()
        self.vae.to(self.torch_device).eval()
        self.schedule = Schedule.sigmoid().to(self.torch_device)

    def group_key(self, request: RolloutRequest) -> int:
        return min(self.dit.size.window - 1, self.kept(request))  # the window's previous frames at the first step

    def kept(self, request: RolloutRequest) -> int:
        """The context frames kept: all, or the last `context`."""
        n = len(request.context_frames)
        return min(n, self.context) if self.context else n

    def rollout_group(self, requests: list[RolloutRequest], key: int) -> list[np.ndarray]:
        size = self.dit.size
        buffers, tracks, offsets = [], [], []
        for r in requests:
            kept = self.kept(r)
            context = self.encode(r.context_frames[-kept:])
            buffers.append(torch.cat([context, context.new_zeros((r.horizon, *context.shape[1:]))]))
            poses = np.concatenate([r.context_poses[-kept:], r.target_poses])
            actions = np.concatenate([r.context_actions[-kept:], r.target_actions])
            wm_poses = torch.from_numpy(loopnav_to_worldmem_poses(poses, poses[0, :3]))[:, None]  # [T, 1, 5]
            tracks.append({"poses": wm_poses, "c2w": euler_to_c2w(wm_poses),
                           "actions": torch.from_numpy(zero_first_action(loopnav_to_worldmem_actions(actions))),
                           "frame_index": torch.arange(len(poses))[:, None],
                           "points": torch.Generator().manual_seed(r.seed ^ 0x5EED)})
            offsets.append(kept)

        def conditioning(i: int, t: int) -> dict[str, torch.Tensor]:
            track, window = tracks[i], range(max(0, t + 1 - size.window), t + 1)
            memory = retrieve_memory(t, size.memory_frames, track["poses"], track["frame_index"], 1,
                                     sphere_points(track["points"]))
            rays, frame_offsets = group_conditions(window, track["c2w"], track["frame_index"], memory, self.resolution,
                                                   size.focal_length)
            actions = track["actions"][window.start:t + 1]
            actions = torch.cat([actions, actions.new_zeros(size.memory_frames, actions.shape[1])])  # memory: none
            return {"window": buffers[i][window.start:t], "memory": buffers[i][memory[:, 0]], "actions": actions,
                    "rays": rays[:, 0], "offsets": frame_offsets[:, 0]}

        def sample(batch: dict[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
            with autocast(self.torch_device):
                return denoise_next_frame(self.dit, self.schedule, batch["window"].float(), noise,
                                          batch["memory"].float(), batch["actions"], batch["rays"], batch["offsets"],
                                          self.steps)

        predicted = lockstep_rollout(buffers, offsets, [r.seed for r in requests], conditioning, sample,
                                     self.torch_device)
        return [self.decode(latents) for latents in predicted]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "context_frames": self.context or "all",
                "memory_frames": self.dit.size.memory_frames, "window": self.dit.size.window,
                "sampling_steps": self.steps}


# ---------------------------------------------------------------------------------------------------- upstream check


FLOAT_TOL = 1e-5    # README: forward passes, poses and single sampling calls
ROLLOUT_TOL = 1e-4  # README: the validation rollout (20 chained DDIM steps per frame, 5 frames)


@torch.no_grad()
def check_upstream(fixture_dir: Path) -> list[FixtureResult]:
    """Replay every saved input of a WorldMem fixture folder (layout of ../shared/fixtures/upstream/worldmem) through
    this module and compare each saved output; weights come from its .safetensors files only."""
    fixture_dir = Path(fixture_dir)
    config = json.loads((fixture_dir / "fixture.json").read_text())
    size = SIZES["tiny"]
    expected = {"hidden_size": size.dit.hidden_size, "depth": size.dit.depth, "num_heads": size.dit.num_heads,
                "reference_length": size.dit.memory_frames}
    if any(config["dit_kwargs"][k] != v for k, v in expected.items()) or \
            config["algo_cfg"]["n_tokens"] != size.dit.window:
        raise ValueError(f"{fixture_dir}: its constructor arguments are not the tiny size this check builds")
    dit, vae = build("tiny")
    load_diffusion(dit, fixture_dir / "diffusion_model.safetensors")
    load_weights(vae, fixture_dir / "vae.safetensors")
    dit.eval(), vae.eval()
    results: list[FixtureResult] = []

    def compare(name: str, ours: torch.Tensor, theirs: torch.Tensor, tolerance: float = FLOAT_TOL) -> None:
        results.append(FixtureResult(name, max_error(ours, theirs), tolerance))

    schedule = Schedule.sigmoid()
    buffers = load_file(str(fixture_dir / "diffusion_model.safetensors"))
    for name in Schedule.__dataclass_fields__:
        compare(f"diffusion_model:{name}", getattr(schedule, name), buffers[name])

    saved = load_file(str(fixture_dir / "dit_forward.safetensors"))
    output = dit(saved["x"], saved["t"], saved["action_cond"], saved["pose_cond_sub40"].transpose(0, 1),
                 saved["frame_idx"].T)
    compare("dit_forward:output", output, saved["output"])

    saved = load_file(str(fixture_dir / "pose.safetensors"))
    c2w = euler_to_c2w(saved["poses_FB5"])
    compare("pose:c2w", c2w, saved["c2w"])
    compare("pose:w2c", world_to_camera(c2w), saved["w2c"])
    compare("pose:relative_to_frame2", relative_to(c2w, 2), saved["relative_to_frame2"])
    compare("pose:plucker_12x20", plucker(c2w, 12, 20, size.dit.focal_length), saved["plucker_12x20"])
    for h, w in ((80, 160), (360, 640)):
        compare(f"pose:plucker_{h}x{w}_sub40", plucker(c2w, h, w, size.dit.focal_length, POSE_STRIDE),
                saved[f"plucker_{h}x{w}_sub40"])
    compare("pose:ray_condition_12x20", plucker_rays(saved["ray_condition_K"], c2w.transpose(0, 1), 12, 20),
            saved["ray_condition_12x20"])
    centre = saved["poses_FB5"][2]
    inside = inside_fov(saved["fov_points"], centre[:, :3], centre[:, 3], centre[:, 4], *(d / 2 for d in FOV_DEGREES))
    compare("pose:fov_inside", inside, saved["fov_inside"], 0.0)

    results += check_validation(dit, vae, schedule, fixture_dir, config)
    return results


def check_validation(dit: WorldMemDiT, vae: OasisVAE, schedule: Schedule, fixture_dir: Path,
                     config: dict[str, Any]) -> list[FixtureResult]:
    """WorldMemMinecraft.validation_step end to end (the batch of 2 retrieved together, as upstream), then every
    saved sampling call replayed alone from its saved input."""
    saved = load_file(str(fixture_dir / "validation_rollout.safetensors"))
    size, steps = dit.size, config["diffusion_kwargs"]["cfg"]["sampling_timesteps"]
    n_context, R = config["algo_cfg"]["context_frames"], size.memory_frames
    results: list[FixtureResult] = []

    def compare(name: str, ours: torch.Tensor, theirs: torch.Tensor, tolerance: float = FLOAT_TOL) -> None:
        results.append(FixtureResult(f"validation_rollout:{name}", max_error(ours, theirs), tolerance))

    frames = saved["xs_uint8"]  # [B, T, 3, H, W]
    B, T = frames.shape[:2]
    latents = encode_frames(vae, frames.flatten(0, 1).float() / 255.0).unflatten(0, (B, T))
    compare("encoded_latents", latents.transpose(0, 1), saved["encoded_latents"])
    actions = zero_first_action(saved["actions"].transpose(0, 1).numpy())  # time-first; row 0 zeroed
    actions = torch.from_numpy(actions)
    poses, frame_index = saved["poses"].transpose(0, 1), saved["frame_index"].T
    c2w = euler_to_c2w(poses)
    image_hw = tuple(frames.shape[-2:])
    sequence = latents[:, :n_context]  # batch-first
    calls: list[dict[str, torch.Tensor]] = []
    for curr in range(n_context, T):
        window = range(max(0, curr + 1 - size.window), curr + 1)
        memory = retrieve_memory(curr, R, poses, frame_index, 1, saved["sphere_points"])
        compare(f"frame{curr}_random_idx", memory, saved[f"frame{curr}_random_idx"], 0.0)
        conditions = torch.cat([actions[window.start:curr + 1], actions.new_zeros(R, B, actions.shape[-1])])
        compare(f"frame{curr}_input_condition", conditions, saved[f"frame{curr}_input_condition"])
        rays, offsets = group_conditions(window, c2w, frame_index, memory, image_hw, size.focal_length)
        compare(f"frame{curr}_pose_sub", rays, saved[f"frame{curr}_pose_sub"])
        compare(f"frame{curr}_frame_idx_list", offsets, saved[f"frame{curr}_frame_idx_list"], 0.0)
        noise = saved[f"chunk_noise_frame{curr}"][0]
        remembered = sequence[torch.arange(B)[:, None], memory.T]  # [B, R, ...]
        new = denoise_next_frame(dit, schedule, sequence[:, window.start:curr], noise, remembered,
                                 conditions.transpose(0, 1), rays.transpose(0, 1), offsets.T, steps, calls.append)
        sequence = torch.cat([sequence, new[:, None]], dim=1)
    predicted = sequence[:, n_context:].transpose(0, 1)
    compare("pred_latents", predicted, saved["pred_latents"], ROLLOUT_TOL)
    last = (vae.decode(latents_to_tokens(predicted[-1])) + 1) / 2
    compare("decoded_pred_last_frame", last[None], saved["decoded_pred_last_frame"], ROLLOUT_TOL)

    for key in sorted(k for k in saved if k.startswith("call") and k.endswith("_x")):
        n = int(key[4:-2])
        curr, chained = n // steps + n_context, calls[n]
        for part in ("x", "from", "to"):  # the chained run reached the same inputs
            compare(f"call{n:03d}_{part}", chained[part].transpose(0, 1), saved[f"call{n:03d}_{part}"],
                    ROLLOUT_TOL if part == "x" else 0.0)
        out = ddim_step(dit, schedule, saved[key].transpose(0, 1),
                        saved[f"frame{curr}_input_condition"].transpose(0, 1),
                        saved[f"frame{curr}_pose_sub"].transpose(0, 1), saved[f"frame{curr}_frame_idx_list"].T,
                        saved[f"call{n:03d}_from"].T, saved[f"call{n:03d}_to"].T, steps)
        compare(f"call{n:03d}_out", out.transpose(0, 1), saved[f"call{n:03d}_out"])
    return results
