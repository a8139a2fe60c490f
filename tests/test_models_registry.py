"""The registry: built-ins declared as entry points, plug-ins, "did you mean" errors, model args, `loopnav models`."""

from __future__ import annotations

import pytest
from conftest import install_model_plugin
from typer.testing import CliRunner

from loopnav.cli import app
from loopnav_bench.models import WorldModel, bind_args, load_model, model_class, parse_model_args
from loopnav_bench.registry import MODELS, SOURCES, TRAINERS, UnknownNameError

PLUGIN = """
class Plugin(WorldModel):
    name = "plugin"

    def rollout(self, request):
        return np.zeros((request.horizon, 4, 4, 3), np.uint8)
"""


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownNameError) as err:
        model_class("copy-lst")
    message = str(err.value)
    assert "Did you mean: copy-last" in message
    assert "Available:" in message and "nearest-pose" in message


def test_unknown_model_without_close_name_lists_available():
    with pytest.raises(UnknownNameError, match="Available: ") as err:
        model_class("zzzzzz")
    assert "Did you mean" not in str(err.value)


def test_floor_models_load_by_name():
    for name in ("dummy", "copy-last", "nearest-pose"):
        model = load_model(name, seed=3)
        assert isinstance(model, WorldModel) and model.seed == 3 and model.name == name


def test_entry_point_plugin_is_registered_and_loads(tmp_path, monkeypatch):
    entry = install_model_plugin(tmp_path, "my-model", PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert MODELS.entries()["my-model"].value == entry
    model = load_model("my-model", answer=42)
    assert type(model).__name__ == "Plugin" and model.model_args == {"answer": 42}

    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "my-model" in line)
    assert "loopnav_plugin_" in line  # the package that registers it (folded at 80 columns)
    assert "loopnav" in next(line for line in result.output.splitlines() if "copy-last" in line)
    worldpack = next(line for line in result.output.splitlines() if "worldpack" in line)
    assert "yes" in worldpack and "WorldPack" in worldpack  # it trains; what it is, in one line
    assert "fine-memory*" in result.output and "* the default checkpoint" in result.output


def test_builtin_name_wins_over_a_plugin_of_the_same_name(tmp_path, monkeypatch):
    install_model_plugin(tmp_path, "copy-last", PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert MODELS.entries()["copy-last"].value == "baselines.floors:CopyLastModel"


def test_entry_that_is_not_a_world_model_is_rejected(tmp_path, monkeypatch):
    install_model_plugin(tmp_path, "not-a-model", "class Plugin:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError, match="not a loopnav_bench.models.WorldModel subclass"):
        model_class("not-a-model")


def test_parse_model_args_types_and_errors():
    assert parse_model_args("a=1, b=2.5,c=true,d=alex,e=") == {"a": 1, "b": 2.5, "c": True, "d": "alex", "e": ""}
    assert parse_model_args(None) == {}
    assert parse_model_args("init='2024',tag=\"true\",q='") == {"init": "2024", "tag": "true", "q": "'"}  # quoted: text
    with pytest.raises(ValueError, match="'oops' is not key=value"):
        parse_model_args("a=1,oops")


def test_cli_unknown_model_is_a_clear_error(tiny_shards, tmp_path):
    result = CliRunner().invoke(app, ["evaluate", "--model", "nearest-pos", "--data", str(tiny_shards),
                                      "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "Did you mean: nearest-pose" in result.output


def test_every_builtin_is_declared_as_an_entry_point_and_loads():
    assert {"worldpack", "nwm", "diamond", "copy-last", "nearest-pose", "dummy"} <= set(MODELS.names())
    assert set(TRAINERS.names()) == {"autoencoder", "worldpack", "nwm", "diamond"}
    assert set(SOURCES.names()) >= {"vizdoom", "loopnav", "recon"}
    for registry in (MODELS, TRAINERS, SOURCES):
        for name, entry in registry.entries().items():
            assert entry.dist is not None
            if entry.dist.name == "loopnav":
                assert registry.load(name) is not None, name
    with pytest.raises(UnknownNameError, match="Did you mean: worldpack"):
        TRAINERS.load("worldpak")
    with pytest.raises(UnknownNameError, match="Did you mean: vizdoom"):
        SOURCES.load("vizdom")


def test_bind_args_checks_names_and_types():
    from dataclasses import dataclass

    @dataclass
    class Args:
        variant: str = "full"
        steps: int | None = None
        scale: float = 1.0

    assert bind_args(Args, {"variant": "base", "steps": 3, "scale": 2}, "m") == Args("base", 3, 2)
    with pytest.raises(ValueError, match="no model arg 'varient'. Did you mean variant"):
        bind_args(Args, {"varient": "base"}, "m")
    with pytest.raises(ValueError, match="steps='abc' is not of type int"):
        bind_args(Args, {"steps": "abc"}, "m")
    with pytest.raises(ValueError, match="scale=True"):
        bind_args(Args, {"scale": True}, "m")
    with pytest.raises(ValueError, match="variant=2024 is not of type str; quote it to keep it as text: "
                                         "variant='2024'"):
        bind_args(Args, parse_model_args("variant=2024"), "m")
    assert bind_args(Args, parse_model_args("variant='2024'"), "m").variant == "2024"
