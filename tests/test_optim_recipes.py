"""Trainer options every model can use (issue #27, the GraphGPS recipe): AdamW, a cosine
schedule with linear warm-up stepped per epoch, gradient clipping before each step."""
import json
import math

import pytest
import torch

from conftest import train_py
from difformer.train.common import clip_before_step, cosine_with_warmup, make_optimizer


def test_cosine_with_warmup_follows_its_formula():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    schedule = cosine_with_warmup(opt, epochs=10, warmup=3, min_lr=0.01)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    expected = [0.1 * (e + 1) / 3 for e in range(3)] + [
        0.01 + (0.1 - 0.01) * 0.5 * (1 + math.cos(math.pi * (e - 3) / 6)) for e in range(3, 10)]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert seen[-1] == pytest.approx(0.01)  # the last epoch trains at min_lr


def test_gradients_are_clipped_before_each_step_and_adamw_is_adamw():
    layer = torch.nn.Linear(4, 4)
    opt = make_optimizer("adamw", layer.parameters(), 1e-3, 0.01)
    assert isinstance(opt, torch.optim.AdamW)
    assert isinstance(make_optimizer("adam", layer.parameters(), 1e-3, 0.0), torch.optim.Adam)
    clip_before_step(opt, 0.5)
    (1000 * layer(torch.ones(2, 4)).sum()).backward()
    assert torch.linalg.vector_norm(torch.cat([p.grad.view(-1) for p in layer.parameters()])) > 1
    opt.step()
    total = torch.linalg.vector_norm(torch.cat([p.grad.view(-1) for p in layer.parameters()]))
    assert total == pytest.approx(0.5, rel=1e-5)


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
def test_the_recipe_end_to_end_and_its_bad_values(tmp_path):
    train_py("optim.optimizer=adamw", "optim.scheduler=cosine", "optim.warmup_epochs=2",
             "optim.clip_grad_norm=1.0", "optim.lr=0.01", "optim.min_lr=0.001",
             "trainer.runs=1", "trainer.epochs=6", "trainer.progress=false",
             f"hydra.run.dir={tmp_path / 'run'}")
    last = torch.load(tmp_path / "run/checkpoints/run0_last.pt", weights_only=True)
    # after the 6th epoch the schedule has stepped 6 times: its factor at epoch 6 (past the end)
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.001)
    assert last["scheduler"]["last_epoch"] == 6
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["n_runs"] == 1
    for arg, message in [
        ("optim.optimizer=sgd", "optim.optimizer=sgd is not allowed; use adam or adamw"),
        ("optim.scheduler=step", "optim.scheduler=step is not allowed; use null (constant lr), "
                                 "plateau or cosine"),
        ("optim.clip_grad_norm=0", "optim.clip_grad_norm must be > 0, got 0"),
    ]:
        proc = train_py(arg, f"hydra.run.dir={tmp_path / 'bad'}", check=False)
        assert proc.returncode == 2 and proc.stderr == f"error: {message}\n", proc.stderr
    proc = train_py("optim.scheduler=cosine", "optim.warmup_epochs=9", "trainer.epochs=5",
                    f"hydra.run.dir={tmp_path / 'bad'}", check=False)
    assert proc.stderr == "error: optim.warmup_epochs=9 must be below trainer.epochs=5\n"
