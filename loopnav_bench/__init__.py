"""loopnav: does a video world model keep a place consistent when it comes back to it?"""

__version__ = "0.1.0"

from loopnav_bench import _torchvision_compat  # noqa: E402

_torchvision_compat.install_on_import()  # before anything (lpips, dreamsim) imports torchvision

from loopnav_bench.schema import SCHEMA_VERSION, Trajectory, TrajectoryError  # noqa: E402
from loopnav_bench.shards import read_trajectories  # noqa: E402

__all__ = ["SCHEMA_VERSION", "Trajectory", "TrajectoryError", "read_trajectories", "__version__"]
