"""EMA (diffusers' EMAModel), the LR warm-up (LambdaLR) and the safetensors checkpoint: the decay and
the learning rate are the same functions of the step as the hand-written versions they replaced, and a
run saved, reloaded into fresh objects and continued equals one that never stopped."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from pipeline.training.loop import param_groups, warmup_schedule
from pipeline.training.state import EMA, STATE_JSON, load_checkpoint, save_checkpoint

LR, WARMUP = 1e-2, 5


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


@pytest.mark.parametrize("decay", [0.9, 0.999, 0.9999])
def test_ema_decay_is_the_warmup_formula_of_the_step(decay):
    ema = EMA(_model(0), decay)
    for s in list(range(0, 200)) + list(range(200, 200_000, 997)):
        assert ema.decay_at(s) == pytest.approx(min(decay, (1.0 + s) / (10.0 + s)), rel=1e-12, abs=0), s


def test_ema_update_applies_the_decay_of_its_step():
    model = _model(0).double()
    ema = EMA(model, 0.99)
    before = {k: v.clone() for k, v in ema.shadow.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, 7)
    d = (1.0 + 7) / (10.0 + 7)
    for name, p in model.named_parameters():
        torch.testing.assert_close(ema.shadow[name], d * before[name] + (1 - d) * p, rtol=1e-12, atol=1e-12)
    copied = ema.copy_to(_model(1).double())
    assert all(torch.equal(p, ema.shadow[n]) for n, p in copied.named_parameters())


def test_ema_disabled_keeps_the_raw_weights():
    model = _model(0)
    ema = EMA(model, 0.0)
    ema.update(model, 3)
    assert ema.shadow == {} and ema.decay_at(3) == 0.0
    other = _model(1)
    assert all(torch.equal(a, b) for a, b in zip(ema.copy_to(other).parameters(), _model(1).parameters()))


def test_ema_refuses_a_model_with_floating_buffers():
    with pytest.raises(ValueError, match="buffers"):
        EMA(nn.BatchNorm1d(3), 0.9)


def _optimizer(model: nn.Module) -> tuple[torch.optim.Optimizer, list[float]]:
    opt = torch.optim.AdamW(param_groups(model, {"2": 10.0}), lr=LR)
    return opt, [g["lr_scale"] for g in opt.param_groups]


@pytest.mark.parametrize("start", [0, 3, 9])
def test_lr_warmup_is_a_function_of_the_step(start):
    model = _model(0)
    opt, scales = _optimizer(model)
    assert sorted(scales) == [1.0, 10.0]
    for g in opt.param_groups:  # what a checkpoint's groups may hold: the schedule must override it
        g["lr"] = 123.0
    schedule = warmup_schedule(opt, scales, LR, WARMUP, start)
    for s in range(start, 12):
        assert [g["lr"] for g in opt.param_groups] == [k * LR * min(1.0, (s + 1) / WARMUP) for k in scales], s
        opt.step()
        schedule.step()


def _train(model, opt, ema, schedule, steps: range) -> None:
    for s in steps:
        gen = torch.Generator().manual_seed(1000 + s)  # the batch is a function of the step
        x, y = torch.randn(16, 4, generator=gen), torch.randn(16, 2, generator=gen)
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
        ema.update(model, s)


def _fresh(seed: int):
    model = _model(seed)
    opt, scales = _optimizer(model)
    return model, opt, scales, EMA(model, 0.9)


def test_saved_run_resumes_exactly(tmp_path):
    url = str(tmp_path / "checkpoint")
    model, opt, scales, ema = _fresh(0)
    _train(model, opt, ema, warmup_schedule(opt, scales, LR, WARMUP, 0), range(0, 8))

    first, opt1, scales1, ema1 = _fresh(0)
    _train(first, opt1, ema1, warmup_schedule(opt1, scales1, LR, WARMUP, 0), range(0, 3))
    save_checkpoint(url, 3, first, ema1, opt1, {"note": "x"})
    state = tmp_path / "checkpoint" / STATE_JSON
    meta = json.loads(state.read_text())
    for g in meta["optimizer"]["param_groups"]:  # the layout written before the LambdaLR warm-up
        g.pop("initial_lr")
        g["lr"] = 0.5
    state.write_text(json.dumps(meta))

    resumed, opt2, scales2, ema2 = _fresh(1)  # other initial weights: everything must come from the checkpoint
    loaded = load_checkpoint(url, resumed, ema2, opt2)
    assert loaded["step"] == 3 and loaded["note"] == "x"
    _train(resumed, opt2, ema2, warmup_schedule(opt2, scales2, LR, WARMUP, 3), range(3, 8))

    for (name, a), b in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name
        assert torch.equal(ema.shadow[name], ema2.shadow[name]), name
        assert not torch.equal(ema.shadow[name], a), name  # the average is not the raw weights


def test_checkpoint_without_ema_weights_is_refused(tmp_path):
    url = str(tmp_path / "checkpoint")
    model, opt, _, _ = _fresh(0)
    save_checkpoint(url, 1, model, EMA(model, 0.0), opt, {})
    model2, opt2, _, ema2 = _fresh(0)  # resuming with EMA on needs the averaged weights
    with pytest.raises(ValueError, match="no EMA weights"):
        load_checkpoint(url, model2, ema2, opt2)
