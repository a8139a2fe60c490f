"""Does a WorldPack checkpoint use its memory? Teacher-forced next-frame PSNR on return-leg frames, three ways.

    python benchmarks/probe_memory.py --data runs/full --split val [--checkpoint NAME|PATH] [--frames 96]
                                      [--recent shown|hidden] [--by-range]

For `--frames` return-leg frames per task (evenly spread over the split's loops), the model predicts frame t from the
ground-truth frames before it (teacher forcing, time shift 1), with its retrieved memories
  - on: as in a rollout;
  - masked: the retrieved slots left empty (`--model-args memory=off` does this in `loopnav evaluate`);
  - shuffled: the retrieved slots filled with random earlier frames of the same loop (memory from the wrong places).
Memories are retrieved with the rollout's slot and memory-pool rule (`select_context`: frames before the offset
first). With `--recent hidden` every recent slot is left empty in all three conditions, so the memories alone must
carry the prediction: "can the network read a far memory at all?" The noise is the same in all three. The target is
the autoencoder's reconstruction of frame t, so the numbers measure the diffusion model, not the autoencoder. It prints
the mean PSNR per task and condition and the paired difference to "on" with a 95% interval (1.96 standard errors); a
model that uses its memory loses PSNR when it is masked. With `--by-range` each task and range is a row of its own
(`--frames` frames each): does a far memory, hundreds of frames back at range 50, carry as much as a near one?
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from loopnav_bench.fileio import write_json_atomic
from loopnav_bench.metrics import psnr
from loopnav_bench.models import load_model
from loopnav_bench.schema import units_per_block
from loopnav_bench.shards import read_trajectories
from modelkit.adapter import collate
from worldpack.context import cumulative_actions, example_from_slots, select_context

CONDITIONS = ("on", "masked", "shuffled")


def probe(data: Path, split: str, checkpoint: str | None, frames: int, batch: int, seed: int,
          recent_hidden: bool = False, by_range: bool = False) -> dict:
    model = load_model("worldpack", checkpoint=checkpoint, sampler_steps=None)
    network, codec, config = model.model, model.codec, model.config
    recent = len(config.layout.recent)
    loops = list(read_trajectories(data, split=split))
    rng = np.random.default_rng(seed)
    results: dict[str, dict[str, list[float]]] = {}

    def group(traj) -> tuple:  # a row: its task, and with by_range its range
        return (traj.meta["task"], traj.meta["range"]) if by_range else (traj.meta["task"],)

    for key in sorted({group(t) for t in loops}):
        name, chosen = " ".join(map(str, key)), [t for t in loops if group(t) == key]
        per_loop = -(-frames // len(chosen))
        items = []  # (conditions' examples, target frame) per probed frame
        for traj in chosen:
            latents = codec.encode(traj.frames).cpu()
            units, cum_actions = units_per_block(traj.meta), cumulative_actions(traj.actions)
            for t in np.linspace(traj.offset, len(traj) - 1, per_loop).round().astype(int):
                slots = select_context(traj.poses, t, t - 1, config.layout, config.retrieval, units, traj.offset)
                if recent_hidden:
                    slots[:recent] = -1
                masked, shuffled = slots.copy(), slots.copy()
                masked[recent:] = -1
                pool = max(t - config.retrieval.exclusion, 1)
                shuffled[recent:] = np.where(slots[recent:] >= 0, rng.integers(0, pool, len(slots) - recent), -1)
                # teacher forcing: every context frame is real, so no slot is announced as generated (level 0)
                examples = [example_from_slots(latents, traj.poses, cum_actions, t, t - 1, s, units, traj.offset)
                            for s in (slots, masked, shuffled)]
                items.append((examples, latents[t]))
        items = items[:frames]
        scores = {c: [] for c in CONDITIONS}
        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            target = codec.decode(torch.stack([z for _, z in chunk]).to(model.device))
            noise = torch.randn(len(chunk), *chunk[0][1].shape, generator=torch.Generator().manual_seed(seed + start))
            for k, condition in enumerate(CONDITIONS):
                batch_tensors = {key: v.to(model.device) for key, v in collate([e[k] for e, _ in chunk]).items()}
                with torch.no_grad():
                    predicted = codec.decode(network.sample(batch_tensors, noise.to(model.device)))
                scores[condition] += psnr(predicted, target).tolist()
        results[name] = scores
    return results


def summary(results: dict) -> dict:
    out = {}
    for name, scores in results.items():
        on = np.array(scores["on"])
        out[name] = {"frames": len(on)}
        for condition in CONDITIONS:
            values = np.array(scores[condition])
            diff = values - on
            out[name][condition] = {"psnr": float(values.mean()), "minus_on": float(diff.mean()),
                                    "ci95": (float(1.96 * diff.std(ddof=1) / np.sqrt(len(diff)))
                                             if len(diff) > 1 else 0.0)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--checkpoint", default=None,
                        help="a path or a shipped checkpoint's name (default: the shipped default)")
    parser.add_argument("--frames", type=int, default=96, help="return-leg frames per task")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--recent", choices=("shown", "hidden"), default="shown",
                        help="hidden: every recent slot empty, so memory alone carries the prediction")
    parser.add_argument("--by-range", action="store_true", help="a row per task and range")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    table_data = summary(probe(args.data, args.split, args.checkpoint, args.frames, args.batch, args.seed,
                               recent_hidden=args.recent == "hidden", by_range=args.by_range))
    table = Table(title=f"teacher-forced next-frame PSNR on {args.split} return legs ({args.checkpoint or 'default'}, "
                        f"recent frames {args.recent})")
    first = "task range" if args.by_range else "task"
    for column in (first, "frames", *CONDITIONS, "masked − on [95% CI]", "shuffled − on [95% CI]"):
        table.add_column(column, justify="left" if column == first else "right")
    for name, row in table_data.items():
        table.add_row(name, str(row["frames"]), *(f"{row[c]['psnr']:.2f}" for c in CONDITIONS),
                      *(f"{row[c]['minus_on']:+.2f} ±{row[c]['ci95']:.2f}" for c in ("masked", "shuffled")))
    Console().print(table)
    if args.out:
        write_json_atomic(args.out, {"data": str(args.data), "split": args.split, "checkpoint": args.checkpoint,
                                     "frames": args.frames, "seed": args.seed, "recent": args.recent,
                                     "by_range": args.by_range,
                                     "results": table_data})


if __name__ == "__main__":
    main()
