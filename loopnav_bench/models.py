"""The world-model API.

A model meets the harness only here. `loopnav evaluate` builds a `RolloutRequest` from a trajectory: the context
(frames, poses and actions of [0, offset)) and the target's poses and actions for [offset, T). The target frames are
never in the request (the one exception: an oracle reference entry, `WorldModel.oracle`, gets them at the
evaluation size in `target_frames`, and is never ranked). The model returns the T - offset target frames, generated
autoregressively, at whatever resolution it works at; the harness resizes predictions and ground truth to the
evaluation size the same way. A model that retrieves past frames may report which, per predicted frame
(`RolloutRequest.report_memory`): they are saved with the prediction and drawn by `loopnav show` and `loopnav report`.

Registering a model: an entry point in the `loopnav.models` group
(`[project.entry-points."loopnav.models"] mymodel = "mypkg.model:MyModel"`), as loopnav's own models are declared in
its pyproject.toml (see `loopnav_bench.registry`). Entries load lazily, so `loopnav models` imports no model.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import math
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from loopnav_bench.fileio import read_json
from loopnav_bench.registry import MODELS
from loopnav_bench.schema import Trajectory

T = TypeVar("T")


@dataclass
class RolloutRequest:
    id: str
    context_frames: np.ndarray   # uint8 [offset, H, W, 3]
    context_poses: np.ndarray    # float [offset, 5]
    context_actions: np.ndarray  # float32 [offset, A]
    target_poses: np.ndarray     # float [T - offset, 5]
    target_actions: np.ndarray   # float32 [T - offset, A]
    meta: dict[str, Any] = field(default_factory=dict)  # source, task, range, fps, action_layout, ...
    seed: int = 0  # per-trajectory seed (request_seed): sample with it so results do not depend on batching or ranks
    # the target frames at the evaluation size: given ONLY to a model whose class declares `oracle = True`
    target_frames: np.ndarray | None = None
    memory: dict[int, list[int]] = field(default_factory=dict, repr=False)  # what report_memory was told, by step

    @property
    def horizon(self) -> int:
        return len(self.target_poses)

    def report_memory(self, step: int, indices: Any) -> None:
        """Optional, for models that retrieve memories: for predicted frame `step` (0 = the first target frame), the
        trajectory frame indices retrieved for it (-1: an empty slot; indices from `offset` on are frames the model
        generated). `loopnav evaluate` saves them with the prediction and `loopnav show` draws them beside it."""
        self.memory[int(step)] = [int(i) for i in indices]

    def reported_memory(self) -> np.ndarray | None:
        """int64 [horizon, slots] of what the model reported, None if it reported nothing; an incomplete or ragged
        report is an error naming the trajectory."""
        if not self.memory:
            return None
        steps = [self.memory.get(step) for step in range(self.horizon)]
        if None in steps or len(self.memory) != self.horizon or len({len(step) for step in steps}) != 1:
            raise ValueError(f"trajectory {self.id!r}: the model reported memories for steps {sorted(self.memory)[:5]}"
                             f"… ({len(self.memory)} of {self.horizon}); expected the same number of slots for every "
                             f"step 0..{self.horizon - 1}")
        memory = np.array(steps, dtype=np.int64)
        before = len(self.context_frames) + np.arange(self.horizon)[:, None]  # each step sees only earlier frames
        if (memory < -1).any() or (memory >= before).any():
            step = int(np.argwhere((memory < -1) | (memory >= before))[0, 0])
            raise ValueError(f"trajectory {self.id!r}: memory reported for predicted frame {int(before[step, 0])} "
                             f"names {steps[step]}, not -1 or an earlier frame")
        return memory

    @classmethod
    def from_trajectory(cls, traj: Trajectory, seed: int = 0) -> "RolloutRequest":
        """The protocol's split: everything before `offset`, and only poses and actions after it."""
        ctx, tgt = traj.context, traj.target
        return cls(id=traj.id, context_frames=traj.frames[ctx], context_poses=traj.poses[ctx],
                   context_actions=traj.actions[ctx], target_poses=traj.poses[tgt], target_actions=traj.actions[tgt],
                   meta=dict(traj.meta), seed=request_seed(seed, traj.id))


def request_seed(seed: int, trajectory_id: str) -> int:
    """The seed of one trajectory's rollout, from the run's seed and the trajectory id (stable across processes)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{trajectory_id}".encode()).digest()[:4], "little")


class WorldModel(ABC):
    """Subclass this and implement `rollout`. Override `rollout_batch` when the model can batch trajectories."""

    name: str = "unnamed"
    description: str = ""  # one line for `loopnav models` (read from the source, so keep it a plain string)
    takes_checkpoint: bool = True  # False: the model has no weights, so a --checkpoint given to it is an error
    # True only for reference entries that must see the target frames (RolloutRequest.target_frames): results mark
    # them "oracle" and the leaderboard never ranks them. The harness gives target frames to no other model.
    oracle: bool = False

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0, **model_args: Any):
        self.checkpoint, self.device, self.seed, self.model_args = checkpoint, device, seed, model_args

    @abstractmethod
    def rollout(self, request: RolloutRequest) -> np.ndarray:
        """Return uint8 [request.horizon, h, w, 3]: the predicted target frames, in order."""

    def rollout_batch(self, requests: list[RolloutRequest]) -> list[np.ndarray]:
        return [self.rollout(r) for r in requests]

    def describe(self) -> dict[str, Any]:
        """What the results file records about this model (context used, resolution, parameters, ...)."""
        return {"name": self.name, "model_args": self.model_args, "checkpoint": self.checkpoint}


SHIPPED_DIR = "checkpoints"  # a model's shipped checkpoints: <folder of its module>/checkpoints/<name>/config.json


def shipped_checkpoints(folder: Path, model: str) -> dict[str, Path]:
    """Name -> folder of every checkpoint of `model` shipped under `folder` (whose config.json names the model)."""
    if not folder.is_dir():
        return {}
    return {d.name: d for d in sorted(folder.iterdir())
            if (d / "config.json").is_file() and read_json(d / "config.json").get("model") == model}


def model_class(name: str) -> type[WorldModel]:
    return MODELS.load(name, subclass_of=WorldModel)


HARNESS_ARGS = ("checkpoint", "device", "seed")  # every model's options, given by the command line's own flags


def parse_model_args(text: str | None) -> dict[str, Any]:
    """`k=v,k2=v2` (lm-eval style) -> dict, with ints, floats and booleans parsed; a quoted value (`k='123'`) stays
    text."""
    args: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in (text or "").split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--model-args item {item!r} is not key=value")
        key = key.strip()
        if key in HARNESS_ARGS:
            raise ValueError(f"--model-args {key}: set by the harness; pass --{key} instead")
        args[key] = _parse_value(value.strip())
        if isinstance(args[key], float) and not math.isfinite(args[key]):
            raise ValueError(f"--model-args {item!r}: not a finite number")
    return args


def bind_args(cls: type[T], args: dict[str, Any], owner: str) -> T:
    """Model args as the dataclass `cls` that declares them: an unknown name is an error with "did you mean", and a
    value must have its field's annotated type (an int also does for a float)."""
    hints = typing.get_type_hints(cls)
    for key, value in args.items():
        if key not in hints:
            close = difflib.get_close_matches(key, hints, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ValueError(f"{owner} takes no model arg {key!r}.{hint} It takes: {', '.join(hints) or 'none'}")
        if wanted := _unfit(value, hints[key]):
            raise ValueError(f"{owner}: model arg {key}={value!r} is not of type {' or '.join(wanted)}"
                             f"{_quote_hint(key, value, wanted)}")
    return cls(**args)


def _unfit(value: Any, annotation: Any) -> list[str]:
    """The type names `annotation` allows when `value` is none of them (an int does for a float); [] if it fits."""
    wanted = [t for t in typing.get_args(annotation) or (annotation,) if isinstance(t, type) and t is not type(None)]
    fits = not wanted or any(type(value) is t or (t is float and type(value) is int) for t in wanted)
    return [] if fits else [t.__name__ for t in wanted]


def _quote_hint(key: str, value: Any, wanted: list[str]) -> str:
    """How to pass text that reads as a number or boolean (a folder named 2024) where text is wanted."""
    return f"; quote it to keep it as text: {key}='{value}'" if "str" in wanted else ""


def _parse_value(value: str) -> Any:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def load_model(name: str, checkpoint: str | None = None, device: str = "cpu", seed: int = 0,
               **model_args: Any) -> WorldModel:
    cls = model_class(name)
    if checkpoint is not None and not cls.takes_checkpoint:
        raise ValueError(f"--checkpoint {checkpoint}: model {name!r} has no weights to load")
    check_model_args(cls, model_args)
    return cls(checkpoint=checkpoint, device=device, seed=seed, **model_args)


def model_arg_names(cls: type[WorldModel]) -> list[str]:
    """The model args `cls` declares, with those of the classes it hands its **model_args on to (WorldPack: memory,
    then its adapter's sampler_steps and solver)."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names += [p for p, spec in inspect.signature(klass.__init__).parameters.items()
                      if spec.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
                      and p not in ("self", *HARNESS_ARGS, *names)]
    return names


def check_model_args(cls: type[WorldModel], model_args: dict[str, Any]) -> None:
    """Refuse model args the model's __init__ does not take, or of another type than it annotates, before anything
    loads (ranges are the model's to check, also before it loads weights)."""
    parameters = inspect.signature(cls.__init__).parameters
    named = [p for p, spec in parameters.items() if spec.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
             and p not in ("self", *HARNESS_ARGS)]
    try:
        hints = typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):  # a plug-in's annotations that do not resolve: no type check
        hints = {}
    for key, value in model_args.items():
        if key not in named:
            if any(spec.kind is inspect.Parameter.VAR_KEYWORD for spec in parameters.values()):
                continue  # the model takes further args (in self.model_args) and checks them itself
            raise ValueError(f"--model-args {key}: model {cls.name!r} takes {', '.join(named) or 'no model args'}")
        if wanted := _unfit(value, hints.get(key)):
            raise ValueError(f"--model-args {key}={value!r}: model {cls.name!r} wants {' or '.join(wanted)}"
                             f"{_quote_hint(key, value, wanted)}")
