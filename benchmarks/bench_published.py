"""Time and peak memory per generated frame of the published models' official architectures, with random weights.

Each model's module in published/ builds its architecture at a named size (`build(size)`) and exposes
`frame_workload(size, batch, device, steps)`: one generated frame at that batch, as its adapter makes it (NWM: SD-VAE
encode of the 4 context frames, 250 respaced DDPM steps of the CDiT, decode). A model whose module is not in this
loopnav, or has no frame_workload, is skipped with a line. Full sizes are for a GPU (`--size full`, the default on
CUDA); on a CPU the tiny sizes run (`--size tiny`, the default there), which checks the script, not the speed.

Time: on a GPU, synchronised wall time with bf16 autocast as upstream; on a CPU, process CPU time with one intra-op
thread. Memory: on a GPU, torch.cuda.max_memory_allocated during the frame, weights included; on a CPU, the growth of
the child process's peak RSS over the frame (each (model, batch) runs in its own process).

    .venv/bin/python benchmarks/bench_published.py --device cuda --out runs/bench_published.json     # GPU, full size
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_published.py --device cpu                     # dry run
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from loopnav_bench.fileio import write_json_atomic

MODELS = ("oasis", "worldmem", "nwm")
FULL_SIZES = {"oasis": "oasis-500m", "worldmem": "worldmem", "nwm": "cdit-xl"}  # each module's name for its release


def workload(model: str):
    """The model's frame_workload, or None with the reason it is skipped."""
    try:
        module = importlib.import_module(f"published.{model}")
    except ModuleNotFoundError as err:
        if err.name != f"published.{model}":
            raise
        return None, f"published.{model} is not part of this loopnav"
    if not hasattr(module, "frame_workload"):
        return None, f"published.{model} has no frame_workload"
    return module.frame_workload, ""


def measure(model: str, size: str, batch: int, device: str, steps: int | None, repeats: int) -> dict:
    dev = torch.device(device)
    if dev.type == "cpu":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    frame_workload, _ = workload(model)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run, info = frame_workload(size, batch, device, steps)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    clock = time.perf_counter if dev.type == "cuda" else time.process_time
    run()  # warm-up
    times = []
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = clock()
        run()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(clock() - start)
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    call = statistics.median(times)
    return {"model": model, "size": size, "batch": batch, **info, "seconds_per_call": call,
            "seconds_per_frame": call / batch, "peak_memory_mb": peak / 2**20, "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=("tiny", "full"), default=None,
                        help="tiny (default on CPU) or each model's released size (default on CUDA)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps per frame (default: upstream's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: "model,size,batch", JSON out
    args = parser.parse_args()
    if args.one:
        model, size, batch = args.one.split(",")
        print(json.dumps(measure(model, size, int(batch), args.device, args.steps, args.repeats)))
        return
    size = args.size or ("full" if args.device.startswith("cuda") else "tiny")
    rows = []
    for model in args.models.split(","):
        if (found := workload(model))[0] is None:
            print(f"skipped {model}: {found[1]}")
            continue
        model_size = FULL_SIZES[model] if size == "full" else "tiny"
        for batch in map(int, args.batches.split(",")):  # one process each, so peak RSS is per configuration
            command = [sys.executable, __file__, "--one", f"{model},{model_size},{batch}", "--device", args.device,
                       "--repeats", str(args.repeats), *(["--steps", str(args.steps)] if args.steps else [])]
            row = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            rows.append(row)
            print(f"{model:9} {model_size:10} batch {batch:>2}  {row['sampler_steps']:>4} steps  "
                  f"{row['seconds_per_frame']:9.3f} s/frame  {row['peak_memory_mb']:9.1f} MB peak  "
                  f"{row['parameters'] / 1e6:8.2f} M params")
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu, 1 thread, process CPU time"
    if args.out:
        write_json_atomic(args.out, {"device": device, "torch": torch.__version__, "rows": rows})


if __name__ == "__main__":
    main()
