"""ViZDoom source speed: frames per second written into shards, next to the simulator's raw stepping speed.

    python benchmarks/bench_vizdoom.py [--per-cell 2] [--out runs/bench/vizdoom.json]
    python benchmarks/bench_vizdoom.py --survey  # loops per map: how the MAPS lists in sources/vizdoom.py were chosen

Prepare speed is `shards.prepare` end to end (process start, map geometry, planning, walking, resizing, tar writing)
divided into the frames written. Raw speed is the simulator alone on exactly those frames: the recorded buttons of
every prepared loop replayed from its start, timing only `make_action` + `get_state` (160x120), with as many
processes as workers. Both at 64² and 128², with 1 and 2 workers, in one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from loopnav_bench.fileio import write_json_atomic
from loopnav_bench.shards import prepare, read_trajectories
from loopnav_bench.sources.vizdoom import BUTTONS, FRAME_SKIP, MAPS, DoomSession, LoopFailure, VizDoomSource, walk_loop


def replay_steps_per_second(loops: list[dict]) -> tuple[int, float]:
    """Replay recorded loops' buttons from their start: (frames, seconds in make_action + get_state only)."""
    session, frames, seconds = DoomSession(), 0, 0.0
    for loop in loops:
        game, _ = session.start(loop["map"], loop["seed"])
        game.send_game_command("warp {:.0f} {:.0f}".format(*loop["start"]))
        game.make_action([0.0] * len(BUTTONS), FRAME_SKIP)
        start = time.perf_counter()
        for buttons in loop["buttons"][1:]:
            game.make_action(buttons, FRAME_SKIP)
            game.get_state()
        seconds += time.perf_counter() - start
        frames += len(loop["buttons"]) - 1
    return frames, seconds


def raw_speed(root: Path, workers: int) -> float:
    """The simulator alone on exactly the prepared frames: total frames/s of `workers` processes replaying them."""
    loops = [{"map": t.meta["location"], "seed": t.meta["original_ids"]["seed"], "start": t.meta["waypoints"]["A"],
              "buttons": t.raw_actions} for t in read_trajectories(root)]
    if workers == 1:
        frames, seconds = replay_steps_per_second(loops)
        return frames / seconds
    pool = multiprocessing.get_context("spawn").Pool(workers)
    try:
        parts = pool.map(replay_steps_per_second, [loops[i::workers] for i in range(workers)])
    finally:  # close + join, not terminate: workers then close their simulators on the way out
        pool.close()
        pool.join()
    return sum(frames / seconds for frames, seconds in parts)


def bench(per_cell: int, size: int, workers: int) -> dict:
    """Prepare a test set end to end, then replay its buttons for the raw reference, in the same run."""
    source = VizDoomSource(per_cell=per_cell, size=size, splits=["test"], ranges=[5, 15, 30, 50])
    out = Path(tempfile.mkdtemp(prefix="bench-vizdoom-"))
    try:
        start = time.perf_counter()
        manifest = prepare(source, out / "set", workers=workers)
        seconds = time.perf_counter() - start
        raw = raw_speed(out / "set", workers)
    finally:
        shutil.rmtree(out)
    frames = manifest["summary"]["frames"]
    return {"size": size, "workers": workers, "trajectories": manifest["n"], "frames": frames,
            "seconds": round(seconds, 2), "frames_per_s": round(frames / seconds, 1),
            "raw_frames_per_s": round(raw, 1), "ratio_to_raw": round(frames / seconds / raw, 3),
            "summary": manifest["summary"]}


def survey(loops_per_map: int) -> list[dict]:
    """Walk a few loops on every Freedoom map; the split lists keep maps where (nearly) all succeed."""
    maps = [f"MAP{i:02d}" for i in range(1, 33)] + [f"E{e}M{m}" for e in range(1, 5) for m in range(1, 10)]
    cells = [(task, rng) for rng in (50, 30, 15, 5) for task in ("ABA", "ABCA")]
    session, rows = DoomSession(), []
    for map_name in maps:
        outcomes, errors, frames, start = Counter(), [], 0, time.perf_counter()
        for index in range(loops_per_map):
            task, rng = cells[index % len(cells)]
            spec = {"map": map_name, "seed": index, "task": task, "range": rng, "split": "train", "index": index}
            try:
                record = walk_loop(session, spec, attempt=0)
            except LoopFailure as err:
                outcomes[str(err).split(":")[0]] += 1
                continue
            outcomes["ok"] += 1
            errors.append(record["return_error"])
            frames += len(record["screens"])
        row = {"map": map_name, "outcomes": dict(outcomes),
               "median_return_error": float(np.median(errors)) if errors else None,
               "frames_per_s": round(frames / (time.perf_counter() - start), 1),
               "split": next((s for s, names in MAPS.items() if map_name in names), None)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-cell", type=int, default=4, help="test loops per task and range in each prepare run")
    parser.add_argument("--survey", type=int, nargs="?", const=8, default=0, metavar="LOOPS",
                        help="instead: walk LOOPS loops (default 8) on every map and report the outcomes")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/vizdoom.json"))
    args = parser.parse_args()
    machine = {"platform": platform.platform(), "processor": platform.processor(), "cpus": multiprocessing.cpu_count()}
    if args.survey:
        write_json_atomic(args.out.with_name("survey_vizdoom.json"), {"machine": machine, "maps": survey(args.survey)})
        return
    rows = []
    for workers in (1, 2):
        for size in (64, 128):
            row = bench(args.per_cell, size, workers)
            rows.append(row)
            print(f"{size:>4}²  workers={workers}  prepare {row['frames_per_s']:>7.0f} frames/s   raw "
                  f"{row['raw_frames_per_s']:>7.0f} frames/s   ratio {row['ratio_to_raw']:.2f}   "
                  f"({row['frames']} frames, {row['trajectories']} loops, {row['seconds']} s)", flush=True)
    write_json_atomic(args.out, {"machine": machine, "per_cell": args.per_cell, "runs": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
