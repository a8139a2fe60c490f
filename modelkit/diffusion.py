"""The diffusion objective and sampler shared by WorldPack, NWM and DIAMOND: EDM (Karras et al. 2022).

Why EDM rather than NWM's 1000-step DDPM (ε-prediction, learned variance, 250 ancestral steps at inference):
- the same objective for all three models keeps the WorldPack / NWM / DIAMOND comparison about context, not about the
  noise schedule; DIAMOND already uses EDM and samples well in 3 Euler steps, while NWM's 250 DDPM steps per frame make
  long LoopNav rollouts (hundreds of frames) impractical on one GPU, let alone a CPU;
- preconditioning (c_in, c_skip, c_out, c_noise) keeps the network's inputs and targets at unit variance at every σ,
  which trains robustly at small scale.

A denoiser network is any callable `net(x_in, c_noise, cond) -> F` where x_in = c_in·x_noisy and cond is whatever the
model needs (its batch). The denoised estimate is D(x; σ) = c_skip·x + c_out·F(c_in·x, c_noise).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

DenoiserNet = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


SOLVERS = ("heun", "euler")


@dataclass(frozen=True)
class EDMConfig:
    sigma_data: float = 1.0   # latents are scaled to unit std by the autoencoder
    p_mean: float = -0.4      # training log σ ~ N(p_mean, p_std²) (DIAMOND's Atari values)
    p_std: float = 1.2
    sigma_min: float = 2e-3   # sampling schedule (DIAMOND: 2e-3 .. 5, ρ = 7)
    sigma_max: float = 5.0
    rho: float = 7.0
    steps: int = 4
    solver: str = "heun"      # "heun" (2nd order, 2 evaluations per step but the last) or "euler"
    # DIAMOND's additions (off by default): training σ clipped to this range, and offset noise, a per-channel constant
    # of this std added to the noise, which the preconditioning counts as noise (σ_eff = sqrt(σ² + offset²))
    train_sigma_range: tuple[float, float] | None = None
    offset_noise: float = 0.0
    # training where the sampler works: this share of training σ is drawn uniformly from the sampling schedule's own
    # values (`sigmas()` without its final 0), the rest log-normal as above; 0 (the default) draws no extra numbers
    schedule_rate: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EDM:
    def __init__(self, config: EDMConfig = EDMConfig()):
        if config.solver not in SOLVERS:
            raise ValueError(f"unknown EDM solver {config.solver!r}: use 'heun' or 'euler'")
        if not 0 <= config.schedule_rate <= 1:
            raise ValueError(f"EDM schedule_rate {config.schedule_rate} is not a share in [0, 1]")
        self.config = config

    def preconditioning(self, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """c_in, c_skip, c_out, c_noise for noise levels sigma [B]."""
        sd = self.config.sigma_data
        sigma = (sigma**2 + self.config.offset_noise**2).sqrt()
        c_in = 1 / (sigma**2 + sd**2).sqrt()
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_noise = sigma.log() / 4
        return c_in, c_skip, c_out, c_noise

    def _broadcast(self, sigma: torch.Tensor, ndim: int) -> tuple[torch.Tensor, ...]:
        """The preconditioning with c_in, c_skip, c_out shaped to broadcast over samples of `ndim` dimensions."""
        c_in, c_skip, c_out, c_noise = self.preconditioning(sigma)
        shape = (-1,) + (1,) * (ndim - 1)
        return c_in.view(shape), c_skip.view(shape), c_out.view(shape), c_noise

    def denoise(self, net: DenoiserNet, x_noisy: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        c_in, c_skip, c_out, c_noise = self._broadcast(sigma, x_noisy.ndim)
        return c_skip * x_noisy + c_out * net(c_in * x_noisy, c_noise, cond).float()

    def training_sigmas(self, batch: int, device: torch.device | str) -> torch.Tensor:
        """log σ ~ N(p_mean, p_std²), or with probability schedule_rate one of the sampler's σ values (uniformly);
        clipped to train_sigma_range when set."""
        sigma = (torch.randn(batch, device=device) * self.config.p_std + self.config.p_mean).exp()
        if self.config.schedule_rate > 0:
            schedule = self.sigmas(device)[:-1]
            on_schedule = torch.rand(batch, device=device) < self.config.schedule_rate
            sigma = torch.where(on_schedule, schedule[torch.randint(len(schedule), (batch,), device=device)], sigma)
        return sigma if self.config.train_sigma_range is None else sigma.clip(*self.config.train_sigma_range)

    def add_noise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x [B, C, ...] + σ-scaled Gaussian noise + offset noise (one constant per sample and channel)."""
        offset = self.config.offset_noise * torch.randn(*x.shape[:2], *[1] * (x.ndim - 2), device=x.device)
        return x + offset + torch.randn_like(x) * sigma.view(-1, *[1] * (x.ndim - 1))

    def loss(self, net: DenoiserNet, x0: torch.Tensor, cond: Any) -> torch.Tensor:
        """EDM's weighted denoising loss, written as MSE between F and its effective target (as DIAMOND does)."""
        sigma = self.training_sigmas(x0.shape[0], x0.device)
        x_noisy = self.add_noise(x0, sigma)
        c_in, c_skip, c_out, c_noise = self._broadcast(sigma, x0.ndim)
        target = (x0 - c_skip * x_noisy) / c_out
        prediction = net(c_in * x_noisy, c_noise, cond).float()
        return ((prediction - target) ** 2).mean()

    def sigmas(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Karras schedule σ_max → σ_min in `steps` values, then 0."""
        cfg = self.config
        ramp = torch.linspace(0, 1, cfg.steps, device=device, dtype=torch.float64)
        inv_rho = 1 / cfg.rho
        sig = (cfg.sigma_max**inv_rho + ramp * (cfg.sigma_min**inv_rho - cfg.sigma_max**inv_rho)) ** cfg.rho
        return torch.cat([sig, sig.new_zeros(1)]).float()

    @torch.no_grad()
    def sample(self, net: DenoiserNet, noise: torch.Tensor, cond: Any,
               project: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Deterministic Euler/Heun integration of the probability-flow ODE from `noise` (standard normal, the
        shape of the result): the caller draws it, e.g. from a per-trajectory generator, so results do not depend on
        how samples are batched. `project` maps every denoised estimate onto the data's values (DIAMOND quantises
        it to 8 bits at each step)."""
        sigmas = self.sigmas(noise.device)
        x = noise * sigmas[0]
        batch = noise.shape[0]

        def denoised(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            d = self.denoise(net, x, sigma.expand(batch), cond)
            return d if project is None else project(d)

        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            slope = (x - denoised(x, sigma)) / sigma
            x_next = x + (sigma_next - sigma) * slope
            if self.config.solver == "heun" and sigma_next > 0:
                slope_next = (x_next - denoised(x_next, sigma_next)) / sigma_next
                x_next = x + (sigma_next - sigma) * (slope + slope_next) / 2
            x = x_next
        return x
