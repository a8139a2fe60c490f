"""Rollouts side by side: ground truth | each entry's prediction (| the memories it retrieved), frame by frame.

`loopnav show` and the report draw with this module. A trajectory's frames come from the prepared set the runs were
evaluated on (checked by manifest hash); predictions from the run folder beside each results file
(<out>/<model>/run-<key>/predictions/<id>.npz, with the memory indices a model reported through
`RolloutRequest.report_memory`); per-frame scores from the samples file, so they are the leaderboard's numbers (at the
evaluation size). Every frame is labelled with its index, its phase (the end of the context the model was given, then
the return leg it predicted) and, on the return leg, each entry's per-frame scores.

Outputs: MP4 (H.264 through the ffmpeg that imageio-ffmpeg ships), animated WebP or GIF (Pillow), or a PNG contact
strip of evenly spaced return-leg frames.
"""

from __future__ import annotations

import difflib
import functools
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from leaderboard.results import Run, range_order
from loopnav_bench.contract import model_dirname, prediction_file
from loopnav_bench.evaluate import load_trajectories, read_prediction, select_trajectories
from loopnav_bench.fileio import atomic_path, resolve_within
from loopnav_bench.metrics import FRAME_METRICS, HIGHER_IS_BETTER, resize_frames, trajectory_mean
from loopnav_bench.schema import Trajectory
from loopnav_bench.shards import manifest_hash

SUFFIXES = (".mp4", ".webp", ".gif", ".png")
TILE = 192          # display height of a frame, in pixels
MEMORY_SHOWN = 3    # retrieved frames drawn under a prediction (best first)
STRIP_COLUMNS = 8   # return-leg frames in a PNG contact strip
GAP, PAD = 6, 4
INK, PAPER, CONTEXT_EDGE, RETURN_EDGE = (20, 20, 20), (255, 255, 255), (150, 150, 150), (40, 110, 200)
SHORT = {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "dreamsim": "DreamSim"}


class ShowError(ValueError):
    """An unknown entry or trajectory, runs that cannot be lined up, or a missing prediction; the message names it."""


@dataclass
class Clip:
    """One entry's rollout of one trajectory."""

    entry: str
    frames: np.ndarray          # predicted target frames at the trajectory's size, uint8 [horizon, h, w, 3]
    memory: np.ndarray | None   # trajectory frame index per step and slot, -1 empty; None: the model reports none
    scores: dict[str, list[float]]  # per-frame metrics from the samples row


@dataclass
class Scene:
    """A trajectory and every entry's rollout of it: what one video shows."""

    traj: Trajectory
    clips: list[Clip]

    @property
    def offset(self) -> int:
        return int(self.traj.offset)


# ---------------------------------------------------------------------------------------------------- selection


def entry_runs(runs: list[Run], entries: list[str]) -> list[Run]:
    """The newest run of each named entry, in the order given; all must be on one data manifest."""
    newest: dict[str, Run] = {}
    for run in runs:  # load_runs returns oldest first
        newest[run.model] = run
    chosen = []
    for entry in entries:
        if entry not in newest:
            close = difflib.get_close_matches(entry, newest, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ShowError(f"--entry {entry!r}: no such entry in the results.{hint} They have: "
                            f"{', '.join(sorted(newest))}")
        chosen.append(newest[entry])
    manifests = {run.results["data"]["manifest_hash"] for run in chosen}
    if len(manifests) > 1:
        raise ShowError(f"--entry {','.join(entries)}: the runs were evaluated on different data manifests, so their "
                        f"trajectories cannot be lined up")
    return chosen


def default_metric(run: Run) -> str:
    """The first frame metric (papers' order) the run has values for: what best/median/worst rank by."""
    for name in FRAME_METRICS:
        if run.metric_info(name).get("available") and any(r["metrics"].get(name) for r in run.rows):
            return name
    raise ShowError(f"{run.results_path}: no frame metric has values, so trajectories cannot be ranked")


def cell_keys(run: Run) -> list[tuple[str, str, str]]:
    """(split, task, range) of the run's cells, in the leaderboard's order."""
    keys = {(r["split"], r["task"], str(r["range"])) for r in run.rows}
    return sorted(keys, key=lambda k: (k[0], k[1], range_order(k[2])))


def ranked_across(runs: list[Run], split: str, task: str, range_: str, metric: str,
                  worst_first: bool = False) -> list[str]:
    """Trajectory ids of one cell, best (or worst) first by `metric` averaged over `runs` (each trajectory's mean over
    its frames, as the leaderboard averages; ties by id); trajectories some run has no value for are left out."""
    scores: dict[str, list[float]] = {}
    for run in runs:
        for row in run.cell_rows(split, task, range_):
            if row["metrics"].get(metric):
                scores.setdefault(row["id"], []).append(trajectory_mean(row, metric)[0])
    complete = {i: float(np.mean(v)) for i, v in scores.items() if len(v) == len(runs)}
    sign = (-1.0 if HIGHER_IS_BETTER.get(metric, True) else 1.0) * (-1.0 if worst_first else 1.0)
    return sorted(complete, key=lambda i: (sign * complete[i], i))


def select_ids(runs: list[Run], ids: list[str] | None = None, best: int | None = None, worst: int | None = None,
               metric: str | None = None) -> list[str]:
    """Trajectory ids to show: the given ones (each must be in every run), or the best / worst N of every cell by
    `metric` averaged over the runs."""
    if ids:
        for run in runs:
            known = {row["id"] for row in run.rows}
            if missing := [i for i in ids if i not in known]:
                close = difflib.get_close_matches(missing[0], known, n=1)
                raise ShowError(f"--id {missing[0]!r}: {run.model} has no such trajectory"
                                + (f". Did you mean {close[0]!r}?" if close else ""))
        return list(dict.fromkeys(ids))
    metric = metric or default_metric(runs[0])
    chosen: list[str] = []
    for key in cell_keys(runs[0]):
        chosen += ranked_across(runs, *key, metric, worst_first=not best)[:best or worst]
    return list(dict.fromkeys(chosen))


# ---------------------------------------------------------------------------------------------------- loading


def prediction_path(run: Run, trajectory_id: str) -> Path:
    """Where `loopnav evaluate` saved this run's prediction: <out>/<model>/run-<key>/predictions/<id>.npz."""
    return prediction_file(run.results_path.parent / run.results["run_key"], trajectory_id)


def data_folder(runs: list[Run], data: Path | None) -> Path:
    """The prepared set the runs were evaluated on (or `data`), checked by manifest hash."""
    wanted = runs[0].results["data"]["manifest_hash"]
    folder = Path(data or runs[0].results["data"]["path"])
    try:
        found = manifest_hash(folder)
    except (FileNotFoundError, ValueError) as err:
        raise ShowError(f"{folder}: cannot read the prepared data the runs were evaluated on ({err}); pass --data") \
            from None
    if found != wanted:
        raise ShowError(f"{folder}: manifest hash {found[:12]}… is not the one the runs were evaluated on "
                        f"({wanted[:12]}…); pass --data with that set")
    return folder


def load_scenes(runs: list[Run], ids: list[str], data: Path | None = None) -> Iterator[Scene]:
    """One Scene per id, in the order given, with every run's prediction, memory and per-frame scores."""
    folder = data_folder(runs, data)
    rows = [{row["id"]: row for row in run.rows} for run in runs]
    splits = sorted({by_id[i]["split"] for by_id in rows for i in ids if i in by_id})
    items, _ = select_trajectories(folder, splits)
    wanted = {item.id: item for item in items if item.id in ids}
    if missing := [i for i in ids if i not in wanted]:
        raise ShowError(f"{folder}: no trajectory {missing[0]!r} in split(s) {', '.join(splits)}")
    loaded = dict((item.id, traj) for item, traj in load_trajectories([wanted[i] for i in ids]))
    for trajectory_id in ids:
        traj = loaded[trajectory_id]
        clips = []
        for run, by_id in zip(runs, rows):
            if trajectory_id not in by_id:
                raise ShowError(f"{run.samples_path}: {run.model} has no row for trajectory {trajectory_id!r}")
            path = prediction_path(run, trajectory_id)
            if not path.is_file():
                raise ShowError(f"{path}: no saved prediction of {run.model} for trajectory {trajectory_id!r} "
                                f"(predictions stay in the run folder beside the results file)")
            frames, memory = read_prediction(path)
            scores = {name: values for name, values in by_id[trajectory_id]["metrics"].items() if values}
            clips.append(Clip(run.model, resize_frames(frames, traj.frames.shape[1:3]), memory, scores))
        yield Scene(traj, clips)


# ---------------------------------------------------------------------------------------------------- drawing


@functools.lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _text_bar(lines: list[str], width: int, size: int = 14, bold: bool = False) -> np.ndarray:
    """White bar of `width` pixels with one line of text per entry (cut to fit)."""
    return _cached_bar(tuple(lines), width, size, bold)


@functools.lru_cache(maxsize=4096)  # titles, captions and frame labels repeat from frame to frame
def _cached_bar(lines: tuple[str, ...], width: int, size: int, bold: bool) -> np.ndarray:
    font = _font(size + 2 if bold else size)
    line_height = (size + 2 if bold else size) + 4
    image = Image.new("RGB", (width, line_height * len(lines) + PAD), PAPER)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        while line and draw.textlength(line, font=font) > width - 2 * PAD:
            line = line[:-2] + "…"
        draw.text((PAD, PAD // 2 + i * line_height), line, fill=INK, font=font)
    return np.asarray(image)


def _scaled(frame: np.ndarray, height: int) -> np.ndarray:
    """`frame` at `height` pixels (blocky when enlarged, so pixels stay visible)."""
    h, w = frame.shape[:2]
    width = max(1, round(w * height / h))
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_NEAREST if height >= h else cv2.INTER_AREA)


def _framed(frame: np.ndarray, color: tuple[int, int, int], border: int = 3) -> np.ndarray:
    return cv2.copyMakeBorder(frame, border, border, border, border, cv2.BORDER_CONSTANT, value=color)


def _stack(parts: list[np.ndarray], axis: int, gap: int = GAP) -> np.ndarray:
    """Stack images along `axis` (0: down, 1: across), padded with white to a common size, `gap` pixels apart."""
    other = 1 - axis
    size = max(p.shape[other] for p in parts)
    padded = []
    for i, part in enumerate(parts):
        pad = [(0, 0), (0, 0), (0, 0)]
        pad[other] = (0, size - part.shape[other])
        if i:
            pad[axis] = (gap, 0)
        padded.append(np.pad(part, pad, constant_values=255))
    return np.concatenate(padded, axis=axis)


def _memory_row(scene: Scene, clip: Clip, step: int, width: int) -> np.ndarray:
    """The first MEMORY_SHOWN frames the model retrieved for this step, small, with their frame indices."""
    tile = (width - (MEMORY_SHOWN - 1) * PAD) // MEMORY_SHOWN
    slots = [int(i) for i in clip.memory[step][:MEMORY_SHOWN]] if clip.memory is not None else []
    tiles = []
    for index in slots + [-1] * (MEMORY_SHOWN - len(slots)):
        if index < 0:
            image = np.full((tile, tile, 3), 235, np.uint8)
            caption = "empty"
        else:  # before the offset a real context frame, from it on one the model generated itself
            real = index < scene.offset
            source = scene.traj.frames[index] if real else clip.frames[index - scene.offset]
            image = cv2.resize(source, (tile, tile), interpolation=cv2.INTER_AREA)
            caption = f"#{index}" + ("" if real else " gen")
        tiles.append(_stack([image, _text_bar([caption], tile, size=11)], 0, 0))
    return _stack([_text_bar(["memory (retrieved)"], width, size=11), _stack(tiles, 1, PAD)], 0, 0)


def panels(scene: Scene, t: int, metrics: list[str]) -> list[np.ndarray]:
    """Frame `t` of the trajectory as one panel per column: ground truth, then each entry with its scores and, for
    models that report them, its retrieved memories (on the return leg)."""
    returning = t >= scene.offset
    step = t - scene.offset
    edge = RETURN_EDGE if returning else CONTEXT_EDGE
    truth = _framed(_scaled(scene.traj.frames[t], TILE), edge)
    width = truth.shape[1]
    out = [_stack([_text_bar(["ground truth"], width, bold=True), truth], 0, 0)]
    for clip in scene.clips:
        frame = clip.frames[step] if returning else scene.traj.frames[t]  # the context: what the model was given
        parts = [_text_bar([clip.entry], width, bold=True), _framed(_scaled(frame, TILE), edge)]
        if returning:
            parts.append(_text_bar([f"{SHORT.get(m, m)} {clip.scores[m][step]:.3g}" for m in metrics
                                    if m in clip.scores], width))
            if clip.memory is not None:
                parts.append(_memory_row(scene, clip, step, width))
        out.append(_stack(parts, 0, 0))
    return out


def header(scene: Scene, t: int) -> list[str]:
    meta, horizon = scene.traj.meta, len(scene.traj) - scene.offset
    phase = (f"return leg, step {t - scene.offset + 1} of {horizon} (predicted)" if t >= scene.offset
             else f"context (given), {scene.offset - t} before the return leg")
    return [f"{scene.traj.id} · {meta['task']} range {meta['range']}", f"frame {t} of {len(scene.traj) - 1} · {phase}"]


def _metrics(scene: Scene) -> list[str]:
    have = {name for clip in scene.clips for name in clip.scores}
    return [name for name in dict.fromkeys(("psnr", "ssim", *FRAME_METRICS)) if name in have]


def _pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.pad(image, [(0, height - image.shape[0]), (0, width - image.shape[1]), (0, 0)], constant_values=255)


def video_frames(scene: Scene, context: int = 15) -> Iterator[np.ndarray]:
    """The composed frames of a video, all of one size: the last `context` context frames, then the return leg."""
    metrics = _metrics(scene)

    def compose(t: int) -> np.ndarray:
        body = _stack(panels(scene, t, metrics), 1)
        return _stack([_text_bar(header(scene, t), body.shape[1], size=14), body], 0, GAP)

    height, width = compose(scene.offset).shape[:2]  # a return-leg frame is the largest (scores, memories)
    height, width = height + height % 2, width + width % 2  # H.264 in 4:2:0 needs even sides
    for t in range(max(0, scene.offset - context), len(scene.traj)):
        yield _pad_to(compose(t), height, width)


def contact_strip(scene: Scene, columns: int = STRIP_COLUMNS) -> np.ndarray:
    """Evenly spaced return-leg frames across, ground truth and each entry down, labelled like the video."""
    metrics = _metrics(scene)
    times = np.unique(np.linspace(scene.offset, len(scene.traj) - 1, columns).round().astype(int))
    stacks = []
    for t in times:
        parts = panels(scene, int(t), metrics)
        label = _text_bar([f"frame {t} · step {t - scene.offset + 1}"], parts[0].shape[1], size=13)
        stacks.append(_stack([label, _stack(parts, 0)], 0, 0))
    body = _stack(stacks, 1)
    meta = scene.traj.meta
    title = [f"{scene.traj.id} · {meta['task']} range {meta['range']} · return leg of "
             f"{len(scene.traj) - scene.offset} frames after {scene.offset} of context"]
    return _stack([_text_bar(title, body.shape[1], size=15), body], 0, GAP)


# ---------------------------------------------------------------------------------------------------- writing


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ShowError(f"--out {path}: the name must end in {', '.join(SUFFIXES)}")
    return suffix


def write_mp4(frames: Iterator[np.ndarray], path: Path, fps: float) -> None:
    """H.264 (yuv420p, fast start) that browsers play, through the ffmpeg binary imageio-ffmpeg ships."""
    import imageio_ffmpeg

    first = next(frames)
    height, width = first.shape[:2]
    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(str(tmp), (width, height), fps=fps, codec="libx264", quality=None,
                                             macro_block_size=1, ffmpeg_log_level="error",
                                             output_params=["-crf", "23", "-movflags", "+faststart", "-f", "mp4"])
        writer.send(None)  # starts ffmpeg
        for frame in itertools.chain([first], frames):
            writer.send(np.ascontiguousarray(frame))
        writer.close()


def write_animation(frames: Iterator[np.ndarray], path: Path, fps: float) -> None:
    """Animated WebP or GIF (looping), through Pillow."""
    images = [Image.fromarray(frame) for frame in frames]
    options = {"lossless": False, "quality": 80} if path.suffix.lower() == ".webp" else {"optimize": True}
    with atomic_path(path) as tmp:
        images[0].save(tmp, format=path.suffix[1:].upper(), save_all=True, append_images=images[1:],
                       duration=round(1000 / fps), loop=0, **options)


def write_png(image: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", optimize=True)


def write_scene(scene: Scene, path: Path, fps: float = 15.0, context: int = 15) -> Path:
    """`scene` as the file `path` names by its suffix: .mp4, .webp, .gif (videos) or .png (contact strip)."""
    suffix = _check_suffix(path)
    if suffix == ".png":
        write_png(contact_strip(scene), path)
    elif suffix == ".mp4":
        write_mp4(video_frames(scene, context), path, fps)
    else:
        write_animation(video_frames(scene, context), path, fps)
    return path


def output_paths(out: Path, ids: list[str]) -> list[Path]:
    """`out` itself for one trajectory; `<stem>_<id><suffix>` beside it for each of several."""
    _check_suffix(out)
    if len(ids) == 1:
        return [out]
    return [resolve_within(out.parent, f"{out.stem}_{model_dirname(i)}{out.suffix}", "trajectory id") for i in ids]


def show(runs: list[Run], entries: list[str], out: Path, ids: list[str] | None = None, best: int | None = None,
         worst: int | None = None, metric: str | None = None, data: Path | None = None, fps: float = 15.0,
         context: int = 15) -> list[Path]:
    """Write one file per selected trajectory with every entry lined up; returns the paths written."""
    _check_suffix(out)
    if sum((bool(ids), best is not None, worst is not None)) != 1:
        raise ShowError("choose the trajectories with exactly one of --id, --best N or --worst N")
    if (best is not None and best < 1) or (worst is not None and worst < 1):
        raise ShowError("--best / --worst N must be at least 1")
    if not entries:
        raise ShowError("--entry names no entry")
    if metric is not None and metric not in FRAME_METRICS:
        raise ShowError(f"--metric {metric!r}: choose a frame metric, one of {', '.join(FRAME_METRICS)}")
    chosen = entry_runs(runs, entries)
    selected = select_ids(chosen, ids, best, worst, metric)
    if not selected:
        raise ShowError(f"--metric {metric}: no trajectory has values for it in every entry shown")
    scenes = load_scenes(chosen, selected, data)
    return [write_scene(scene, path, fps, context) for scene, path in zip(scenes, output_paths(out, selected))]
