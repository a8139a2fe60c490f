"""Pose-based memory retrieval (WorldPack §4.2): which past frames look at the place the current frame looks at.

For the current pose, position p = (x, y, 0) and view direction d = (cos φ cos θ, cos φ sin θ, sin φ) from yaw θ and
pitch φ. For each past frame i, with p_i = (x_i, y_i, 0) and its own direction d_i:

    s_i = (p_i − p)ᵀ d                       distance along the current line of sight
    ℓ_i = ‖(p_i − p) − s_i d‖                distance off that line
    cos Δθ_i = d_iᵀ d
    score_i = w_c · max(cos Δθ_i, 0)  · exp(−s_i² / 2σ_s²)        · exp(−ℓ_i² / 2σ_ℓ²)     (co-directional)
            + w_a · max(−cos Δθ_i, 0) · exp(−(s_i − μ_s)² / 2σ_s²) · exp(−ℓ_i² / 2σ_ℓ²)     (anti-directional)

Co-directional: the same spot, seen the same way; anti-directional: the spot μ_s ahead, looking back.

Heights are dropped (p has z = 0), as in the paper. The paper's parameters are in Minecraft blocks: σ_ℓ = 10, μ_s = 1,
σ_s = 0.01, w_c = w_a = 1. Lengths are scaled to a source's units by meta['units_per_block'] (32 for ViZDoom).

σ_s = 0.01 block makes the score almost a delta in s: a frame 0.1 block ahead of or behind the current depth along the
line of sight already scores e^-50 ≈ 2e-22, and beyond ~0.39 block the value underflows to 0 in float64. Only frames
lying almost exactly at the current depth (or exactly μ_s ahead, facing back) count, with ℓ (σ_ℓ = 10) nearly free.
Ranking therefore uses log-scores (`retrieval_log_scores`), which keep the paper's order where the score itself
underflows; `retrieval_scores` returns the paper's values. For ViZDoom, where the agent moves up to ~14 Doom units
(0.44 block) per frame, a frame rarely lands within 0.01 block of the current depth, so VIZDOOM_PARAMS widens σ_s to
0.5 block, about one frame of travel at full speed, keeping the paper's σ_ℓ, μ_s and weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class RetrievalParams:
    """Score parameters in Minecraft blocks, plus the exclusion window (frames) and how many frames to pick."""

    sigma_l: float = 10.0
    mu_s: float = 1.0
    sigma_s: float = 0.01
    w_c: float = 1.0
    w_a: float = 1.0
    exclusion: int = 20

    def score_kwargs(self, units_per_block: float = 1.0) -> dict[str, float]:
        """The keyword arguments of `retrieval_scores`, with lengths converted from blocks to source units."""
        return {"sigma_l": self.sigma_l * units_per_block, "mu_s": self.mu_s * units_per_block,
                "sigma_s": self.sigma_s * units_per_block, "w_c": self.w_c, "w_a": self.w_a}

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


PAPER_PARAMS = RetrievalParams()
VIZDOOM_PARAMS = RetrievalParams(sigma_s=4.0, sigma_l=3.0, w_a=0.1)  # chosen on data: benchmarks/choose_retrieval.py
RETRIEVAL_PRESETS = {"paper": PAPER_PARAMS, "vizdoom": VIZDOOM_PARAMS}


def view_direction(poses: np.ndarray) -> np.ndarray:
    """Unit view vectors [..., 3] from poses [..., 5] in the schema's (x, y, z, yaw, pitch) order."""
    yaw, pitch = poses[..., 3], poses[..., 4]
    return np.stack([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)], axis=-1)


def retrieval_log_scores(past_poses: np.ndarray, current_pose: np.ndarray, *, sigma_l: float = 10.0, mu_s: float = 1.0,
                         sigma_s: float = 0.01, w_c: float = 1.0, w_a: float = 1.0) -> np.ndarray:
    """log(score_i) for every past frame, computed without underflow; -inf where neither term applies."""
    past_poses = np.asarray(past_poses, dtype=np.float64).reshape(-1, 5)
    current_pose = np.asarray(current_pose, dtype=np.float64).reshape(5)
    d = view_direction(current_pose)
    offsets = np.zeros((len(past_poses), 3))
    offsets[:, :2] = past_poses[:, :2] - current_pose[:2]  # p = (x, y, 0): heights are dropped
    s = offsets @ d
    ell = np.linalg.norm(offsets - s[:, None] * d, axis=1)
    cos_dtheta = view_direction(past_poses) @ d
    lateral = -ell**2 / (2 * sigma_l**2)
    with np.errstate(divide="ignore"):  # log(0) = -inf is the intended "term absent"
        co = np.log(w_c * np.maximum(cos_dtheta, 0.0)) - s**2 / (2 * sigma_s**2) + lateral
        anti = np.log(w_a * np.maximum(-cos_dtheta, 0.0)) - (s - mu_s) ** 2 / (2 * sigma_s**2) + lateral
    return np.logaddexp(co, anti)


def retrieval_scores(past_poses: np.ndarray, current_pose: np.ndarray, *, sigma_l: float = 10.0, mu_s: float = 1.0,
                     sigma_s: float = 0.01, w_c: float = 1.0, w_a: float = 1.0) -> np.ndarray:
    """The paper's score, one per past frame. Defaults are the paper's parameters in Minecraft blocks."""
    return np.exp(retrieval_log_scores(past_poses, current_pose, sigma_l=sigma_l, mu_s=mu_s, sigma_s=sigma_s,
                                       w_c=w_c, w_a=w_a))


def retrieve(poses: np.ndarray, current: int, count: int, params: RetrievalParams = PAPER_PARAMS,
             units_per_block: float = 1.0, exclude: frozenset[int] | set[int] = frozenset(),
             prefer_before: int | None = None) -> list[int]:
    """Indices of up to `count` past frames with the highest scores for frame `current`, best first.

    Candidates are frames [0, current − exclusion): the `exclusion` frames just before the current one are left to
    the recent-context slots. Frames in `exclude` and frames whose score is exactly zero (no directional agreement)
    are never picked, so fewer than `count` may come back. With `prefer_before` (a rollout's first generated frame),
    every scoring frame before it ranks above every frame after it: real memories before generated ones.
    """
    last = current - params.exclusion
    if count <= 0 or last <= 0:
        return []
    log_scores = retrieval_log_scores(poses[:last], poses[current], **params.score_kwargs(units_per_block))
    generated = np.arange(last) >= (last if prefer_before is None else prefer_before)
    order = np.lexsort((-log_scores, generated))  # by generated-or-not, then by score; stable
    picked = [int(i) for i in order if np.isfinite(log_scores[i]) and int(i) not in exclude]
    return picked[:count]
