"""The licences of the published models' official weights: shown by `loopnav models` (which must not import torch,
hence a module of its own) and recorded with the weight files (published/weights.py) and in results (describe())."""

LICENCES = {
    "oasis": "MIT (Etched/oasis-500m, open-oasis)",
    "worldmem": "S-Lab License 1.0: non-commercial use only (xizaoqu/WorldMem)",
    "nwm": "CC-BY-NC-4.0 (facebook/nwm); the shipped CPU-trained nwm checkpoint is loopnav's own",
}
