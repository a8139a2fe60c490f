"""Make `import torchvision` work on the CPU build of torch.

The torchvision 0.28.0 wheel on PyPI is the CUDA build. On CPU torch its `_C.so` cannot load (it needs libtorch_cuda),
and torchvision then registers fake kernels for `torchvision::nms` unguarded, so the import dies with
`RuntimeError: operator torchvision::nms does not exist` (upstream pytorch/vision#9085). That breaks lpips, dreamsim,
timm and open_clip, which all import torchvision.

`install()` defines the two missing operator schemas, and only when that exact failure is about to happen: torchvision
is not imported yet and its `_C.so` fails to load. `install_on_import()` defers that check (it imports torch, ~2 s) to
the moment something first imports torchvision, so that `loopnav --help` and `loopnav models` stay fast. With a working
torchvision nothing is touched (defining the schemas there would clash with the real registration). What stays broken is
what needs the compiled ops (`torchvision.ops.nms`, `torchvision.io` decoding); loopnav uses neither.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

_library = None  # the torch.library handle must outlive this call, or the schemas are unregistered again


def _extension_loads(package_dir: Path) -> bool:
    import torch

    for candidate in package_dir.glob("_C*.so"):
        try:
            torch.ops.load_library(str(candidate))
        except OSError:
            return False
        return True
    return True  # no compiled extension at all: torchvision's own import path handles that case


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs install() when torchvision is first imported, then steps aside for the normal import."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            install()
        return None


def install_on_import() -> None:
    if "torchvision" not in sys.modules and not any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())


def install() -> bool:
    """Register the missing schemas if torchvision needs them. Returns True when the shim was applied."""
    global _library
    # a pending install_on_import hook would run install() again from inside find_spec below
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _BeforeTorchvision)]
    if _library is not None or "torchvision" in sys.modules:
        return _library is not None
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None or _extension_loads(Path(spec.origin).parent):
        return False
    import torch

    _library = torch.library.Library("torchvision", "DEF")
    _library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return True
