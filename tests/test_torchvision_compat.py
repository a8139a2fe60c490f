"""The torchvision shim: with loopnav imported first, torchvision and lpips import on this torch build; install() never
touches an already imported torchvision. Each case runs in a fresh interpreter (imports are process-wide state)."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import shutil
import subprocess
import sys
import textwrap

import pytest


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


@pytest.mark.slow  # a fresh interpreter
def test_torchvision_and_lpips_import_after_loopnav():
    out = run_python("""
        import json
        import loopnav_bench
        from loopnav_bench import _torchvision_compat
        import torch, torchvision, lpips
        from torchvision import transforms
        image = transforms.functional.resize(torch.zeros(3, 8, 8), [4, 4], antialias=True)
        applied = _torchvision_compat._library is not None
        # the shim is applied exactly when torchvision's compiled extension cannot load on this torch build
        import importlib.util, pathlib
        so = list(pathlib.Path(importlib.util.find_spec("torchvision").origin).parent.glob("_C*.so"))
        needed = bool(so) and not _torchvision_compat._extension_loads(so[0].parent)
        print(json.dumps({"applied": applied, "needed": needed, "shape": list(image.shape),
                          "again": _torchvision_compat.install()}))
    """)
    result = json.loads(out)
    assert result["applied"] == result["needed"] == result["again"]
    assert result["shape"] == [3, 4, 4]


def test_install_is_a_no_op_when_torchvision_is_already_imported():
    out = run_python("""
        import sys, types
        sys.modules["torchvision"] = types.ModuleType("torchvision")  # imported before loopnav
        from loopnav_bench import _torchvision_compat
        print(_torchvision_compat.install(), _torchvision_compat._library is None)
    """)
    assert out == "False True"


@pytest.mark.slow  # a fresh interpreter
def test_help_and_models_do_not_import_torch():
    out = run_python("""
        import sys
        from typer.testing import CliRunner
        from loopnav.cli import app
        for args in (["--help"], ["models"], ["evaluate", "--help"]):
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, result.output
        print("torch" in sys.modules, "torchvision" in sys.modules)
    """)
    assert out == "False False"


@pytest.mark.slow  # fresh interpreters
@pytest.mark.parametrize("extension_loads", [True, False], ids=["users-cuda-build", "cpu-torch-with-cuda-wheel"])
def test_shim_acts_only_when_torchvisions_extension_cannot_load(tmp_path, extension_loads):
    """A researcher's matching torch/torchvision pair (whose compiled extension loads) is left untouched; only a
    torchvision whose `_C.so` cannot load on this torch gets the two operator schemas. Simulated with a stand-in
    torchvision package whose `_C.so` is a loadable shared library (the C maths library) or not a library at all."""
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    if extension_loads:
        shutil.copy(_shared_library_path("m"), fake / "_C.so")
    else:
        (fake / "_C.so").write_bytes(b"not a shared library")
    out = run_python(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import torch
        from loopnav_bench import _torchvision_compat
        applied = _torchvision_compat.install()
        print(applied, hasattr(torch.ops.torchvision, "nms"))
    """)
    assert out == ("False False" if extension_loads else "True True")


def _shared_library_path(name: str) -> str:
    """The file behind `ctypes.util.find_library(name)` (which returns only a soname on Linux)."""
    handle = ctypes.CDLL(ctypes.util.find_library(name))
    link_map = ctypes.cast(handle._handle, ctypes.POINTER(ctypes.c_void_p * 2))  # struct link_map: l_addr, l_name
    return ctypes.cast(link_map.contents[1], ctypes.c_char_p).value.decode()
