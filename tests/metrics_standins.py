"""Stand-in metric weight files: random values in the exact upstream file layouts, written into temporary caches.

Real pretrained weights cannot exist on a machine without internet, so the metric tests run loopnav's real loading
code against these. They never verify (their sha256 differs from upstream), so using them needs
LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS=1 and every number they give is marked unverified.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

LORA_SETTINGS = {"r": 16, "lora_alpha": 0.5, "lora_dropout": 0.3, "bias": "none", "target_modules": ["qkv"]}


def write_alexnet(torch_home: Path, seed: int = 0) -> Path:
    """torchvision's AlexNet state_dict at $TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth."""
    import torchvision

    torch.manual_seed(seed)
    path = torch_home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.alexnet().state_dict(), path)
    return path


class StandInI3D(torch.nn.Module):
    """Same call signature as the StyleGAN-V detector; its first features expose what it was given.

    Row layout: [min, max, T, H, W, rescale, resize, pooled projection ...] (400 in all). Without
    return_features it returns a differently shaped tensor, so a wrong call is caught.
    """

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 2 * 2 * 2, 400 - 7)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if not return_features:
            return x.new_zeros(x.shape[0], 7)
        batch = x.shape[0]
        pooled = F.adaptive_avg_pool3d(x, [2, 2, 2]).reshape(batch, -1)
        flat = x.reshape(batch, -1)
        probe = torch.stack([flat.min(dim=1).values, flat.max(dim=1).values,
                             x.new_full([batch], float(x.shape[2])), x.new_full([batch], float(x.shape[3])),
                             x.new_full([batch], float(x.shape[4])), x.new_full([batch], float(rescale)),
                             x.new_full([batch], float(resize))], dim=1)
        return torch.cat([probe, torch.tanh(self.proj(pooled)) * 10], dim=1)


def write_i3d(cache_dir: Path, seed: int = 0) -> Path:
    """A TorchScript module saved at $LOOPNAV_CACHE_DIR/fvd/i3d_torchscript.pt."""
    torch.manual_seed(seed)
    path = cache_dir / "fvd" / "i3d_torchscript.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(StandInI3D()), str(path))
    return path


def _clip_like(path: Path, patch: int) -> None:
    """`{'state_dict': ViT-B keys + pos_drop LayerNorm + 'proj'}`, DreamSim's CLIP/OpenCLIP-as-DINO layout."""
    from dreamsim.feature_extraction.vision_transformer import vit_base

    vit = vit_base(patch_size=patch)
    vit.pos_drop = torch.nn.LayerNorm(vit.embed_dim)
    state = {**vit.state_dict(), "proj": torch.randn(768, 512) * 0.03}
    torch.save({"state_dict": state}, path)


_HUBCONF = '''"""Stand-in for facebookresearch/dino hubconf.py: same entry point, checkpoint fetched the same way."""
import torch
from dreamsim.feature_extraction.vision_transformer import vit_base

dependencies = ["torch"]


def dino_vitb16(pretrained=True, **kwargs):
    model = vit_base(patch_size=16, num_classes=0, **kwargs)
    if pretrained:
        url = "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth"
        model.load_state_dict(torch.hub.load_state_dict_from_url(url=url, map_location="cpu"), strict=True)
    return model
'''


def _dino_files(root: Path) -> None:
    """DINO checkpoint (with the student head DreamSim reads), the hub checkpoint and a stand-in hub repo."""
    from dreamsim.feature_extraction.vision_transformer import DINOHead, vit_base

    head = DINOHead(768, 2048)
    student = {f"module.head.{k}": v for k, v in head.state_dict().items()}
    student["module.head.last_layer.weight"] = torch.randn(2048, 256) * 0.02
    torch.save({"student": student}, root / "dino_vitb16_pretrain.pth")
    (root / "checkpoints").mkdir(exist_ok=True)
    torch.save(vit_base(patch_size=16, num_classes=0).state_dict(),
               root / "checkpoints" / "dino_vitbase16_pretrain.pth")
    repo = root / "facebookresearch_dino_main"
    repo.mkdir(exist_ok=True)
    (repo / "hubconf.py").write_text(_HUBCONF)
    (repo / "vision_transformer.py").write_text('"""stand-in: the hubconf uses dreamsim\'s copy"""\n')
    (repo / "utils.py").write_text('"""stand-in"""\n')


def write_dreamsim_cache(root: Path, variant: str = "clip_vitb32", seed: int = 0) -> Path:
    """DreamSim's cache_dir for `variant` ("clip_vitb32" or "ensemble"), LoRA adapter saved by peft."""
    from dreamsim.config import dreamsim_args
    from dreamsim.model import PerceptualModel
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    if variant == "clip_vitb32":
        _clip_like(root / "clip_vitb32_pretrain.pth.tar", 32)
        lora_dir = root / "clip_vitb32_single_lora"
    elif variant == "ensemble":
        _dino_files(root)
        _clip_like(root / "clip_vitb16_pretrain.pth.tar", 16)
        _clip_like(root / "open_clip_vitb16_pretrain.pth.tar", 16)
        lora_dir = root / "ensemble_lora"
    else:
        raise ValueError(f"no stand-in for DreamSim variant {variant!r}")
    hub_dir = torch.hub.get_dir()
    try:
        base = PerceptualModel(**dreamsim_args["model_config"][variant], device="cpu", load_dir=str(root),
                               normalize_embeds=True)
    finally:
        torch.hub.set_dir(hub_dir)
    model = get_peft_model(base, LoraConfig(**LORA_SETTINGS))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero (a no-op adapter); make the adapter matter
                param.normal_(std=0.02)
    model.save_pretrained(str(lora_dir))
    return root


def isolate_caches(monkeypatch, root: Path) -> None:
    """Point every weight cache at empty folders under `root` and clear the opt-in and offline switches."""
    for name, sub in (("TORCH_HOME", "torch"), ("LOOPNAV_CACHE_DIR", "loopnav"), ("XDG_CACHE_HOME", "xdg")):
        monkeypatch.setenv(name, str(root / sub))
    for name in ("LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS", "LOOPNAV_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
