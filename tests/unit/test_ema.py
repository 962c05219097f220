"""EMA of trainable weights: the update rule, warm-up, swap in/out, state round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoomsr.modules.ema import EMA


def _net():
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    net[1].weight.requires_grad_(False)  # frozen: not tracked
    return net


def test_update_follows_the_formula_and_skips_frozen():
    net = _net()
    ema = EMA(net, decay=0.9, warmup=False)
    assert "1.weight" not in ema.shadow and "0.weight" in ema.shadow
    before = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    ema.update()
    torch.testing.assert_close(ema.shadow["0.weight"], 0.9 * before + 0.1 * (before + 1.0))


def test_warmup_decay():
    ema = EMA(_net(), decay=0.999)
    assert ema.current_decay() == pytest.approx(0.1)
    ema.num_updates = 10_000
    assert ema.current_decay() == 0.999


def test_applied_swaps_in_and_restores():
    net = _net()
    ema = EMA(net, decay=0.5, warmup=False)
    trained = net[0].weight.detach().clone()
    ema.shadow["0.weight"] = torch.zeros_like(trained)
    with ema.applied():
        assert torch.count_nonzero(net[0].weight) == 0
    torch.testing.assert_close(net[0].weight.detach(), trained)


def test_state_dict_round_trip():
    a, b = EMA(_net(), 0.9), EMA(_net(), 0.9)
    a.update()
    b.load_state_dict(a.state_dict())
    assert b.num_updates == 1
    for k in a.shadow:
        torch.testing.assert_close(a.shadow[k], b.shadow[k])
    with pytest.raises(KeyError, match="EMA state lacks"):
        b.load_state_dict({"num_updates": 0, "shadow": {}})
