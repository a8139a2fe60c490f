"""How fast `datasets` loads a prepared folder: through its dataset card (declared features) against the plain
webdataset builder (features inferred, frames turned into nested Python lists). Both read every trajectory's frames.

    python benchmarks/bench_datasets_load.py runs/demo/data     # a folder written by `loopnav prepare`
"""

from __future__ import annotations

import glob
import sys
import tempfile
import time

import datasets


def main() -> None:
    datasets.disable_progress_bars()
    folder = sys.argv[1]
    start = time.time()
    rows = datasets.load_dataset(folder, split="test", cache_dir=tempfile.mkdtemp()).with_format("numpy", dtype=None)
    frames = [row["frames.npy"] for row in rows]
    card = time.time() - start
    print(f"card:     {card:.1f} s for {len(rows)} trajectories, frames {frames[0].dtype} {frames[0].shape}")
    start = time.time()
    rows = datasets.load_dataset("webdataset", data_files={"test": sorted(glob.glob(f"{folder}/test/*.tar"))},
                                 split="test", cache_dir=tempfile.mkdtemp())
    frames = [row["frames.npy"] for row in rows]
    inferred = time.time() - start
    print(f"inferred: {inferred:.1f} s, frames as {type(frames[0]).__name__}; card is {inferred / card:.1f}x faster")


if __name__ == "__main__":
    main()
