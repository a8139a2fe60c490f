"""The published models' official weight files: where `loopnav weights download oasis|worldmem|nwm` fetches them
from, where they go, how they are converted from pickles, and their licences. They join the one weights registry
(loopnav_bench/metrics/weights.py) through `register`, so `loopnav weights check / list / path` cover them.

Hub file names are upstream's: Etched/oasis-500m (open-oasis README), zeqixiao/worldmem_checkpoints (WorldMem
configurations/huggingface.yaml), stabilityai/sd-vae-ft-ema (what NWM's isolated_nwm_infer.py loads). facebook/nwm
is gated and its file names are not published outside it, so its download takes `--file NAME`. No upstream publishes
sha256 sums beside its files; the Hub's LFS sha256 is checked at download and recorded (weights.py, "recorded").
"""

from __future__ import annotations

from pathlib import Path

from loopnav_bench.metrics.weights import WeightFile, register
from published.licences import LICENCES

CONVERT_KEYS = {"nwm/cdit": "ema", "worldmem/diffusion": "state_dict", "worldmem/vae": "state_dict"}


def _hub(id: str, owner: str, repo: str, file: str | None, place: str, licence: str, note: str = "") -> WeightFile:
    url = f"https://huggingface.co/{repo}" + (f"/resolve/main/{file}" if file else "")
    return WeightFile(id, owner, ("official",), "loopnav", (f"published/{place}",), url, hub_repo=repo, hub_file=file,
                      licence=licence, note=note)


def _converted(id: str, owner: str, place: str, licence: str, source_url: str) -> WeightFile:
    return WeightFile(f"{id}-safetensors", owner, ("official",), "loopnav", (f"published/{place}",),
                      source_url, licence=licence, converted_from=id,
                      note=f"the tensors under {CONVERT_KEYS[id]!r} of {id}, written by `loopnav weights convert`")


FILES: tuple[WeightFile, ...] = (
    _hub("oasis/dit", "oasis", "Etched/oasis-500m", "oasis500m.safetensors", "oasis/oasis500m.safetensors",
         LICENCES["oasis"], "Oasis-500M DiT-S/2"),
    _hub("oasis/vae", "oasis", "Etched/oasis-500m", "vit-l-20.safetensors", "oasis/vit-l-20.safetensors",
         LICENCES["oasis"], "ViT-L/20 VAE"),
    _hub("worldmem/diffusion", "worldmem", "zeqixiao/worldmem_checkpoints", "diffusion_only.ckpt",
         "worldmem/diffusion_only.ckpt", LICENCES["worldmem"], "pickled Lightning checkpoint; convert it once"),
    _converted("worldmem/diffusion", "worldmem", "worldmem/diffusion_only.safetensors", LICENCES["worldmem"],
               "https://huggingface.co/zeqixiao/worldmem_checkpoints/resolve/main/diffusion_only.ckpt"),
    _hub("worldmem/vae", "worldmem", "zeqixiao/worldmem_checkpoints", "vae_only.ckpt", "worldmem/vae_only.ckpt",
         LICENCES["worldmem"], "pickled Lightning checkpoint; convert it once"),
    _converted("worldmem/vae", "worldmem", "worldmem/vae_only.safetensors", LICENCES["worldmem"],
               "https://huggingface.co/zeqixiao/worldmem_checkpoints/resolve/main/vae_only.ckpt"),
    _hub("nwm/cdit", "nwm", "facebook/nwm", None, "nwm/cdit.pth.tar", LICENCES["nwm"],
         "gated (access approved by hand); pass --file with the CDiT-XL checkpoint's name in the repo"),
    _converted("nwm/cdit", "nwm", "nwm/cdit.safetensors", LICENCES["nwm"], "https://huggingface.co/facebook/nwm"),
    _hub("nwm/sd-vae-config", "nwm", "stabilityai/sd-vae-ft-ema", "config.json", "nwm/sd-vae-ft-ema/config.json",
         "MIT (stabilityai/sd-vae-ft-ema)", "the SD VAE NWM encodes and decodes with"),
    _hub("nwm/sd-vae", "nwm", "stabilityai/sd-vae-ft-ema", "diffusion_pytorch_model.safetensors",
         "nwm/sd-vae-ft-ema/diffusion_pytorch_model.safetensors", "MIT (stabilityai/sd-vae-ft-ema)"),
)
register(FILES)


def _placed(id: str) -> Path:
    return next(f for f in FILES if f.id == id).path()


def default_nwm_checkpoint() -> Path:
    """The converted official CDiT `loopnav weights download nwm` + `convert` leave in the cache."""
    path = _placed("nwm/cdit-safetensors")
    if not path.is_file():
        raise FileNotFoundError(f"no official NWM checkpoint at {path}: `loopnav weights download nwm --file NAME` "
                                "(gated: request access at https://huggingface.co/facebook/nwm), then "
                                "`loopnav weights convert nwm`, or pass --checkpoint")
    return path


def sd_vae_folder() -> Path:
    return _placed("nwm/sd-vae-config").parent

