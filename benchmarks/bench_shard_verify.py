"""What checking shards against the manifest costs when evaluation reads them.

`evaluate` (and `read_trajectories` on a directory) reads each shard once, hashes it with sha256 and parses the tar
from memory. This times that verified pass against an unverified one (tar parsed straight from the file), both
decoding every trajectory, alternating the two so that the page cache treats them alike.

    python benchmarks/bench_shard_verify.py runs/demo/data [--split test] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import time

from loopnav_bench.shards import decode_sample, iter_tar_samples, iter_verified_samples, manifest_shards


def one_pass(shards: list, verified: bool) -> float:
    start = time.perf_counter()
    for path, sha256 in shards:
        samples = iter_verified_samples(path, sha256) if verified else iter_tar_samples(path)
        for sample in samples:
            decode_sample(sample, where=str(path))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--split", default="test")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    shards = manifest_shards(args.data, args.split)
    megabytes = sum(path.stat().st_size for path, _ in shards) / 2**20
    one_pass(shards, verified=False)  # warm the page cache
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for verified in (False, True):
            times[verified].append(one_pass(shards, verified))
    plain, checked = min(times[False]), min(times[True])
    print(f"{platform.processor() or platform.machine()}, {len(shards)} shards, {megabytes:.1f} MiB, "
          f"best of {args.repeats}")
    print(f"read + decode:           {plain:.3f} s ({megabytes / plain:.0f} MiB/s)")
    print(f"read + sha256 + decode:  {checked:.3f} s ({megabytes / checked:.0f} MiB/s)")
    print(f"overhead: {checked / plain:.2f}x")


if __name__ == "__main__":
    main()
