"""Baseline world models. Each registers in `loopnav_bench.models.MODELS` and loads lazily from there."""
