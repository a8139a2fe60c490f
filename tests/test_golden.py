"""Every shipped checkpoint still produces what it produced: golden rollouts (tests/golden.py, which regenerates them
with `python tests/golden.py --write`) on two fixed synthetic loops, within tolerances that last-bit differences pass
and changes of behaviour do not."""

from __future__ import annotations

import json

import pytest
from golden import GOLDEN, differences, shipped, summarise

EXPECTED = json.loads(GOLDEN.read_text())
SHIPPED = shipped()


def test_every_shipped_checkpoint_has_a_golden_rollout():
    assert sorted(f"{model}/{name}" for model, name, _ in SHIPPED) == sorted(EXPECTED), \
        "shipped checkpoints and tests/golden/rollouts.json disagree: run `python tests/golden.py --write`"
    assert len(EXPECTED) >= 7  # worldpack's five, nwm, diamond


@pytest.mark.parametrize("model, name", [(model, name) for model, name, _ in SHIPPED])
def test_shipped_checkpoint_rolls_out_as_recorded(model, name):
    problems = differences(EXPECTED[f"{model}/{name}"], summarise(model, name))
    assert not problems, f"{model}/{name} changed behaviour: " + "; ".join(problems) + \
        " (if intended: `python tests/golden.py --write`, and say why in the commit)"
