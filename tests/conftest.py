"""Shared fixtures: small synthetic trajectories and a prepared shard set, made on the fly (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import loopnav_bench  # noqa: F401  (applies the torchvision shim before any test imports torchvision)
from loopnav_bench.schema import Trajectory, make_key, wrap_angle
from loopnav_bench.sources import Source


def make_trajectory(index: int = 0, length: int = 24, size: int = 16, task: str = "ABA", rng_range: int = 5,
                    split: str = "test", offset: int | None = None, seed: int = 0) -> Trajectory:
    """A loop A -> B -> A on a circle: frames are a deterministic function of the pose, so memory helps."""
    rng = np.random.default_rng(seed * 1000 + index)
    half = length // 2
    t = np.concatenate([np.linspace(0, 1, half), np.linspace(1, 0, length - half)])
    x, y = rng_range * t, np.zeros(length)
    yaw = wrap_angle(np.where(np.arange(length) < half, 0.0, np.pi))
    poses = np.stack([x, y, np.zeros(length), yaw, np.zeros(length)], axis=1)
    frames = np.zeros((length, size, size, 3), np.uint8)
    for i, (px, pyaw) in enumerate(zip(x, yaw)):
        frames[i, ..., 0] = int(40 * px) % 256
        frames[i, ..., 1] = 200 if pyaw > 1 else 50
        frames[i, : size // 2, :, 2] = np.arange(size, dtype=np.uint8) * 8
    actions = rng.integers(-1, 2, size=(length, 4)).astype(np.float32)
    meta = {"id": make_key("synthetic", task, rng_range, split, index), "source": "synthetic", "task": task,
            "range": rng_range, "location": f"loc{index % 2}", "split": split, "fps": 20,
            "action_layout": "vizdoom-v1", "original_ids": {"index": index}}
    return Trajectory(frames=frames, poses=poses, actions=actions, offset=offset or half, meta=meta,
                      raw_actions=[{"a": a.tolist()} for a in actions]).validate()


class SyntheticSource(Source):
    """A Source over make_trajectory: lets tests drive `prepare` without a simulator or raw files."""

    name = "synthetic"
    shard_size = 3

    def __init__(self, per_split: int = 4, fail_on: tuple[int, ...] = ()):
        self.per_split, self.fail_on = per_split, fail_on

    def settings(self):
        return {"per_split": self.per_split}

    def plan(self):
        return {split: [{"split": split, "index": i} for i in range(self.per_split)] for split in ("train", "test")}

    def load(self, spec):
        if spec["index"] in self.fail_on:
            raise RuntimeError(f"simulated crash on {spec}")
        task = "ABA" if spec["index"] % 2 == 0 else "ABCA"
        return make_trajectory(spec["index"], task=task, split=spec["split"])


_CACHE_ROOT = pytest.StashKey[Path]()


def pytest_configure(config):
    """Every cache a test or its subprocesses could fill in a folder of this session, never the user's: set before
    any test module is imported, because huggingface_hub and datasets read HF_HOME at import. The terminal size of
    whatever runs the suite is forgotten for the same reason (pytest-xdist's workers set COLUMNS=80, and rich fixes a
    console's width from it at import): a test that needs a width passes it to the command it runs."""
    import os
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="loopnav-tests-"))
    config.stash[_CACHE_ROOT] = root
    os.environ["HF_HOME"] = str(root / "huggingface")
    os.environ.pop("HF_DATASETS_CACHE", None)  # else datasets would still write where it names
    os.environ["LOOPNAV_CACHE_DIR"] = str(root / "loopnav")  # for module- and session-scoped fixtures
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)
    if os.environ.get("PYTEST_XDIST_WORKER"):  # workers share the cores: one torch thread each, subprocesses too
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


# The inner loop (`pytest -m "not slow"`) stays under a minute only if every test that takes seconds is marked: the
# summary names each unmarked test over this many seconds of its own, so that a new one is marked when it lands.
SLOW_SECONDS = 2.0
_unmarked_slow: list[str] = []


def pytest_runtest_logreport(report):
    if report.when in ("setup", "call") and report.duration > SLOW_SECONDS and "slow" not in report.keywords:
        _unmarked_slow.append(f"{report.duration:5.1f} s {report.when:5} {report.nodeid}")


def pytest_terminal_summary(terminalreporter):
    if _unmarked_slow:
        terminalreporter.section(f"unmarked tests over {SLOW_SECONDS:g} s: mark them slow, or make them faster")
        for line in _unmarked_slow:
            terminalreporter.write_line(line)


def pytest_unconfigure(config):
    import shutil

    if (root := config.stash.get(_CACHE_ROOT, None)) is not None:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def private_cache_dir(tmp_path_factory, monkeypatch):
    """loopnav's cache (latents; weights unless a test places its own) in a fresh folder per test: no test finds what
    another one cached."""
    monkeypatch.setenv("LOOPNAV_CACHE_DIR", str(tmp_path_factory.mktemp("loopnav-cache")))


def _loopback(host) -> bool:
    import ipaddress

    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:  # a host name: resolving it would already be network traffic
        return False


class NetworkRefused(OSError):
    """A test tried to reach beyond this machine."""


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Refuse every IP connection or datagram that is not to loopback, so a test (and the code it runs) that would
    need the network fails here, on any machine, instead of passing only where there is none."""
    import socket

    def guard(method):
        def guarded(sock, *args):
            address = args[-1]
            if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
                raise NetworkRefused(f"tests may not use the network: {method.__name__} to {address!r}")
            return method(sock, *args)
        return guarded

    for name in ("connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, name, guard(getattr(socket.socket, name)))


@pytest.fixture
def tiny_shards(tmp_path):
    """A prepared set of synthetic trajectories (4 train, 4 test, 3 per shard)."""
    from loopnav_bench.shards import prepare

    out = tmp_path / "shards"
    prepare(SyntheticSource(), out)
    return out


@pytest.fixture(scope="module")
def latent_data(tmp_path_factory):
    """Synthetic shards (`shards/`) and an untrained 16 px autoencoder checkpoint (`ae/`) for the latent models."""
    import torch

    from loopnav_bench.shards import prepare
    from modelkit import checkpoint as ckpt
    from modelkit.autoencoder import Autoencoder, AutoencoderConfig

    root = tmp_path_factory.mktemp("latent-data")
    prepare(SyntheticSource(), root / "shards")
    config = AutoencoderConfig(image_size=16, channels=(8, 16), latent_channels=4)
    torch.manual_seed(0)
    ckpt.write_step(root / "ae", 0, {"model": "autoencoder", "config": config.to_dict()},
                    {ckpt.WEIGHTS: Autoencoder(config).state_dict()})
    return root


def install_model_plugin(root, name: str, code: str) -> str:
    """A fake installed distribution under `root` that registers `name` in the `loopnav.models` entry-point group,
    with the model class `Plugin` defined by `code` (which sees `np`, `WorldModel` and `RolloutRequest`).
    Put `root` on sys.path (or PYTHONPATH for subprocesses) to install it. Returns the entry-point value."""
    module = f"loopnav_plugin_{name.replace('-', '_')}"
    (root / f"{module}.py").write_text("import numpy as np\n"
                                       "from loopnav_bench.models import RolloutRequest, WorldModel\n\n"
                                       + code)
    dist_info = root / f"{module}-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(f"[loopnav.models]\n{name} = {module}:Plugin\n")
    return f"{module}:Plugin"


def check_rollout_contract(model, size: int) -> None:
    """What every sampling WorldModel must do on synthetic loops (16 px frames): return uint8 [horizon, size, size, 3],
    the same frames for the same request seed whatever else is in the batch, and other frames for another seed."""
    from loopnav_bench.models import RolloutRequest

    request = RolloutRequest.from_trajectory(make_trajectory(0, length=14, size=16), seed=3)
    frames = model.rollout(request)
    assert frames.shape == (request.horizon, size, size, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, model.rollout(request))
    longer = RolloutRequest.from_trajectory(make_trajectory(1, length=18, size=16), seed=4)
    batched = model.rollout_batch([request, longer])
    assert np.array_equal(batched[0], frames)
    assert batched[1].shape == (longer.horizon, size, size, 3)
    reseeded = RolloutRequest.from_trajectory(make_trajectory(0, length=14, size=16), seed=4)
    assert not np.array_equal(model.rollout(reseeded), frames)


@pytest.fixture(scope="module")
def torch_single_thread():
    """Torch on one intra-op thread for the module: on a small shared CPU box, two threads spinning against other
    processes made the model tests about 10x slower (122 s against 12 s for test_nwm + test_diamond)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def loss_after_steps(model, batch: dict, lr: float, steps: int = 20) -> tuple[float, float]:
    """`model.loss(batch)` before and after `steps` AdamW steps on that one batch, with the same diffusion noise
    levels and noise at every evaluation, so that only the weights change between them."""
    import torch

    def loss():
        torch.manual_seed(7)
        return model.loss(batch)

    before = loss().item()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    return before, loss().item()
