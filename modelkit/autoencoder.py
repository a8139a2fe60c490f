"""The latent space: a small convolutional autoencoder trained on our own frames, or a user's diffusers AutoencoderKL.

NWM diffuses in the latent space of the frozen SD VAE (stabilityai/sd-vae-ft-ema, latents × 0.18215). Nothing can be
downloaded here, so WorldPack ships `Autoencoder`: a residual conv encoder/decoder (downsampling 2^levels, 4 latent
channels), trained with L1 + MSE reconstruction by `loopnav train --model autoencoder` (the first stage of every
latent model's training when no `autoencoder=` model arg names one), sized by PRESETS. It keeps a running std of its
raw latents, and `encode` divides by it, so latents have about unit variance (the role of SD's 0.18215), matching
EDM's σ_data = 1.

`DiffusersAutoencoder` wraps a local diffusers AutoencoderKL directory (diffusers is an optional import, not a
dependency; files are never fetched from the Hub). Both expose encode(frames uint8 [N,H,W,3]) -> latents and
decode(latents) -> frames uint8, at the model's `image_size`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modelkit import checkpoint as ckpt
from modelkit.presets import Preset, get_preset


def frames_to_tensor(frames: np.ndarray | torch.Tensor, size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, size, size] in [-1, 1] (antialiased resize)."""
    x = torch.as_tensor(np.asarray(frames), device=device).permute(0, 3, 1, 2).float() / 127.5 - 1
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """float [N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3]."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


@dataclass(frozen=True)
class AutoencoderConfig:
    image_size: int = 32
    channels: tuple[int, ...] = (32, 64)   # one entry per 2× downsampling
    latent_channels: int = 4
    std_momentum: float = 0.01             # running latent std, for the unit-variance scaling

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** len(self.channels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AutoencoderConfig":
        return cls(**{**d, "channels": tuple(d["channels"])})


AUTOENCODER_FILE = "autoencoder.safetensors"  # our autoencoder's weights inside a latent model's checkpoint
AUTOENCODER_STAGE = "autoencoder"  # the folder of a latent model's run that its own autoencoder is trained into


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        groups = min(8, channels)
        self.body = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.GroupNorm(groups, channels), nn.SiLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Autoencoder(nn.Module):
    def __init__(self, config: AutoencoderConfig = AutoencoderConfig()):
        super().__init__()
        self.config = config
        widths = list(config.channels)
        encoder: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1)]
        for c_in, c_out in zip(widths, widths[1:] + widths[-1:]):
            encoder += [ResBlock(c_in), nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)]
        encoder += [ResBlock(widths[-1]), nn.GroupNorm(min(8, widths[-1]), widths[-1]), nn.SiLU(),
                    nn.Conv2d(widths[-1], config.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*encoder)
        decoder: list[nn.Module] = [nn.Conv2d(config.latent_channels, widths[-1], 3, padding=1), ResBlock(widths[-1])]
        for c_in, c_out in zip(widths[::-1], widths[::-1][1:] + widths[:1]):
            decoder += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1),
                        ResBlock(c_out)]
        decoder += [nn.GroupNorm(min(8, widths[0]), widths[0]), nn.SiLU(), nn.Conv2d(widths[0], 3, 3, padding=1)]
        self.decoder = nn.Sequential(*decoder)
        self.register_buffer("latent_std", torch.ones(()))

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x) / self.latent_std

    def decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z * self.latent_std)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = batch["images"]
        raw = self.encoder(x)
        if self.training:  # the scale the diffusion model will see; updated like BatchNorm running statistics
            with torch.no_grad():
                self.latent_std.lerp_(raw.float().std(), self.config.std_momentum)
        reconstruction = self.decoder(raw).float()
        return F.l1_loss(reconstruction, x) + F.mse_loss(reconstruction, x)

    @torch.no_grad()
    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        device = self.latent_std.device
        return self.encode_tensor(frames_to_tensor(frames, self.config.image_size, device))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        return tensor_to_frames(self.decode_tensor(latents))


@dataclass
class DiffusersAutoencoder:
    """A local diffusers AutoencoderKL (e.g. a copy of stabilityai/sd-vae-ft-ema), frozen, as NWM uses it."""

    path: str
    image_size: int = 224
    device: str = "cpu"
    vae: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            from diffusers import AutoencoderKL
        except ImportError as err:
            raise ImportError(f"{self.path}: loading an AutoencoderKL needs the optional package diffusers "
                              "(pip install diffusers)") from err
        if not (Path(self.path) / "config.json").exists():
            raise FileNotFoundError(f"{self.path}: not a local diffusers AutoencoderKL directory (no config.json)")
        if not (Path(self.path) / "diffusion_pytorch_model.safetensors").exists():  # never the .bin pickle
            raise FileNotFoundError(f"{self.path}: no diffusion_pytorch_model.safetensors (a .bin pickle is not read)")
        self.vae = AutoencoderKL.from_pretrained(self.path, local_files_only=True, use_safetensors=True)
        self.vae = self.vae.to(self.device).eval()
        self.scaling_factor = float(self.vae.config.scaling_factor)

    @torch.no_grad()
    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = frames_to_tensor(frames, self.image_size, self.device)
        return self.vae.encode(x).latent_dist.mode() * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        return tensor_to_frames(self.vae.decode(latents / self.scaling_factor).sample)

    def posterior(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the unscaled latent distribution of pixels [N, 3, H, W] in [-1, 1] (for a caller that
        samples it with its own noise, as NWM's inference does)."""
        dist = self.vae.encode(pixels).latent_dist
        return dist.mean, dist.std

    def decode_pixels(self, latents: torch.Tensor) -> torch.Tensor:
        """Unscaled latents -> pixels [N, 3, H, W], about [-1, 1], unclipped and unquantised."""
        return self.vae.decode(latents).sample


PRESETS: dict[str, Preset] = {
    "cpu": Preset(model={"image_size": 32, "channels": (16, 32), "latent_channels": 8}, steps=2500, batch_size=32,
                  lr=1e-3),
    "tiny": Preset(model={"image_size": 32, "channels": (16, 32), "latent_channels": 4}, steps=500, batch_size=16,
                   lr=1e-3),
    "small": Preset(model={"image_size": 64, "channels": (64, 128), "latent_channels": 4}, steps=20_000,
                    batch_size=64, lr=1e-3),
}


def preset_config(name: str) -> AutoencoderConfig:
    """The AutoencoderConfig of preset `name` (what a latent model's preset names as its latent space)."""
    return AutoencoderConfig.from_dict(get_preset(PRESETS, name, "autoencoder").model)


def load_autoencoder(path: Path, device: str | torch.device = "cpu") -> tuple[Autoencoder | DiffusersAutoencoder, dict]:
    """A trained autoencoder (run or step folder of `--model autoencoder`, or a latent model's checkpoint, whose
    autoencoder travels with it), or a local diffusers AutoencoderKL directory. Returns it and its spec for configs."""
    path = Path(path)
    config_file = path / ckpt.CONFIG
    if config_file.exists() and ckpt.read_config(path).get("_class_name") == "AutoencoderKL":
        codec = DiffusersAutoencoder(str(path), device=str(device))
        return codec, {"kind": "diffusers", "path": str(path), "image_size": codec.image_size}
    step_dir = ckpt.resolve(path)
    saved = ckpt.read_config(step_dir)
    if saved["model"] == "autoencoder":
        config, weights = saved["config"], ckpt.WEIGHTS
    elif "autoencoder" in saved and saved["autoencoder"]["kind"] == "ours":
        config, weights = saved["autoencoder"]["config"], AUTOENCODER_FILE
    elif "autoencoder" in saved:
        return load_autoencoder(Path(saved["autoencoder"]["path"]), device)
    else:
        raise ValueError(f"{step_dir / ckpt.CONFIG}: holds a {saved['model']!r} model, not an autoencoder")
    model = Autoencoder(AutoencoderConfig.from_dict(config))
    model.load_state_dict(ckpt.load_tensors(step_dir / weights))
    return model.to(device).eval(), {"kind": "ours", "config": config}
