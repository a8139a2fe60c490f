"""Fine-tuning a WorldPack from a trained one (`--model-args init=PATH|NAME`), as the paper trains its variants from
a trained base.

The new model starts from the init model's EMA weights: every tensor with the same name and shape is copied, the
per-level embedding row by row; packing projections for levels the init model lacks start from its base kernel
(`PackedPatchEmbed.init_from_base`); any other tensor it lacks (a new module) keeps its fresh initialisation. The
optimizer starts fresh. Both models must share one latent space, so the init run's autoencoder is the one to train
in; the checkpoint config records where it started (what `start_from` returns).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from loopnav_bench.fileio import sha256_file, sha256_json
from modelkit import checkpoint as ckpt
from modelkit.train_autoencoder import latent_space
from worldpack.model import WorldPack, WorldPackConfig
from worldpack.world_model import WorldPackModel

OPTION = "--model-args init="
# settings that change what the weights compute but no tensor's shape: copied across a difference in one of them, the
# weights would start from a network other than the one trained
SAME_FUNCTION = ("heads", "rope_theta", "rope_fraction")


def init_checkpoint(init: str, network: dict[str, Any]) -> Path:
    """The step folder `init` names: a worldpack run (its latest step), a step folder or a shipped checkpoint's name,
    resolved as `--checkpoint` is; refused where `network` (the new run's network fields) sets a SAME_FUNCTION
    setting otherwise than the init was trained with."""
    step_dir = ckpt.resolve(WorldPackModel.locate(init, OPTION))
    saved = ckpt.read_config(step_dir)
    if saved.get("model") != "worldpack":
        raise ValueError(f"{OPTION}{init}: {step_dir} holds a {saved.get('model')!r} model, not a worldpack to "
                         "fine-tune")
    defaults = {f.name: f.default for f in fields(WorldPackConfig)}
    for key in SAME_FUNCTION:
        theirs, ours = saved["config"].get(key, defaults[key]), network.get(key, defaults[key])
        if theirs != ours:
            raise ValueError(f"{OPTION}{init}: trained with {key}={theirs}, this run has {key}={ours}; its weights "
                             f"would compute something else (set {key}={theirs}, or train from scratch)")
    return step_dir


def check_latent_space(autoencoder: str, step_dir: Path) -> None:
    """Refuse an `autoencoder=` other than the one the init model was trained with: its weights read those latents."""
    if latent_space(Path(autoencoder)) != latent_space(step_dir):
        raise ValueError(f"--model-args autoencoder={autoencoder}: not the latent space of init {step_dir} (another "
                         "autoencoder or other weights); leave autoencoder= out to train in the init's own")


def start_from(model: WorldPack, step_dir: Path) -> dict[str, Any]:
    """Load the init checkpoint's weights into a freshly built `model`; returns what the run config records."""
    tensors = ckpt.load_tensors(step_dir / ckpt.WEIGHTS)
    missing = ckpt.copy_matching(model, tensors, step_dir / ckpt.WEIGHTS, per_row=("embed.level_embed",))
    new_levels = [level for level in range(1, len(model.embed.kernels)) if f"embed.proj.{level}.weight" in missing]
    model.embed.init_from_base(new_levels)
    from_base = {f"embed.proj.{level}.{part}" for level in new_levels for part in ("weight", "bias")}
    saved = ckpt.read_config(step_dir)
    return {"path": str(step_dir.resolve()), "step": saved["step"], "variant": saved["config"].get("variant"),
            "config_sha256": sha256_json(saved["config"]), "weights_sha256": sha256_file(step_dir / ckpt.WEIGHTS),
            "levels_from_base_kernel": new_levels, "fresh": [n for n in missing if n not in from_base]}
