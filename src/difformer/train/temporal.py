"""Spatial-temporal training (official ``spatial-temporal/main.py``), one node-regression loop.

Per run: seed ``seed + run``, a fresh model and Adam; each epoch either one step on the mean
cost over all train snapshots (``step: cumulative``, Chickenpox and Covid) or one step per
snapshot (``step: per_snapshot``, WikiMath); the best-valid epoch is kept, with early stopping
after ``patience`` non-improving epochs. ``patience_mode: total`` counts them over the whole run
as the official code does (it never resets the counter); ``reset`` restarts after an improvement.
Test MSE is reported in both conventions (``paper``: the official [n,1]-[n] broadcast;
``standard``: elementwise) from the same best-valid weights.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.temporal import TemporalDataset, chrono_split_fingerprint
from ..models import build_model
from .checkpoint import save_run_checkpoint
from .common import mean_std, peak_memory_mb, seed_everything
from .metrics import MSE, with_auxiliary_loss

PATIENCE_MODES = ("reset", "total")


class EarlyStopping:
    """Counts non-improving epochs; ``reset`` restarts the count after an improvement,
    ``total`` (the official code) never does."""

    def __init__(self, patience: int, mode: str):
        if mode not in PATIENCE_MODES:
            raise ValueError(f"trainer.patience_mode={mode} is not allowed; use "
                             f"{' or '.join(PATIENCE_MODES)}")
        self.patience, self.mode, self.bad = patience, mode, 0

    def step(self, improved: bool) -> bool:
        """Record one epoch; True when training should stop."""
        if improved:
            if self.mode == "reset":
                self.bad = 0
        else:
            self.bad += 1
        return self.bad >= self.patience


def _to(snapshots, device):
    return [(s.x.to(device), s.edge_index.to(device), s.edge_weight.to(device), s.y.to(device))
            for s in snapshots]


@torch.no_grad()
def evaluate_temporal(model, snapshots) -> dict:
    """Mean over snapshots of each MSE convention, in eval mode."""
    model.eval()
    totals = {name: 0.0 for name in MSE}
    for x, ei, ew, y in snapshots:
        pred = model(x, ei, ew)
        for name, fn in MSE.items():
            totals[name] += fn(pred, y).item()
    return {name: total / max(len(snapshots), 1) for name, total in totals.items()}


def train_temporal(*, dataset: TemporalDataset, spec, model_name: str, model_kwargs: dict,
                   lr: float, weight_decay: float, epochs: int, runs: int, patience: int,
                   patience_mode: str, mse: str, seed: int, device: torch.device, run_dir: Path,
                   logger, dataset_config: dict, config: dict, progress: bool = True,
                   save_checkpoints: bool = True) -> dict:
    if mse not in MSE:
        raise ValueError(f"trainer.mse={mse} is not allowed; use {' or '.join(MSE)}")
    EarlyStopping(patience, patience_mode)  # validates the mode before any work
    if dataset.step not in ("cumulative", "per_snapshot"):
        raise ValueError(f"dataset.step={dataset.step} is not allowed; use cumulative or "
                         "per_snapshot")
    start = time.time()
    split = dataset.split()
    train = _to([dataset.snapshots[i] for i in split.train], device)
    valid = _to([dataset.snapshots[i] for i in split.valid], device)
    test = _to([dataset.snapshots[i] for i in split.test], device)
    cost_fn = MSE[mse]
    kwargs = {"in_channels": dataset.num_features, "out_channels": 1, **model_kwargs}
    data_fp = dataset.fingerprint()
    results = []
    for run in range(runs):
        run_start = time.time()
        seed_everything(seed + run)
        model = build_model(model_name, **kwargs).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        best, best_state = None, None
        stopper = EarlyStopping(patience, patience_mode)
        bar = tqdm(range(epochs), desc=f"run {run}", leave=False,
                   disable=None if progress else True)
        for epoch in bar:
            t0 = time.time()
            model.train()
            if dataset.step == "cumulative":
                optimizer.zero_grad()
                loss = sum(with_auxiliary_loss(model, cost_fn(model(x, ei, ew), y))
                           for x, ei, ew, y in train) / len(train)
                loss.backward()
                optimizer.step()
                loss = loss.item()
            else:
                total = 0.0
                for x, ei, ew, y in train:
                    optimizer.zero_grad()
                    cost = cost_fn(model(x, ei, ew), y)
                    with_auxiliary_loss(model, cost).backward()
                    optimizer.step()
                    total += cost.item()
                loss = total / len(train)
            scores = evaluate_temporal(model, valid)
            logger.log({"run": run, "epoch": epoch, "loss": loss, "valid": scores[mse],
                        **{f"valid_mse_{k}": v for k, v in scores.items()},
                        "seconds": time.time() - t0, "peak_memory_mb": peak_memory_mb(device)})
            improved = best is None or scores[mse] < best["valid"]
            if improved:
                best = {"epoch": epoch, "valid": scores[mse]}
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            bar.set_postfix(loss=f"{loss:.4f}", valid=f"{scores[mse]:.4f}")
            if stopper.step(improved):
                break
        bar.close()
        model.load_state_dict(best_state)
        test_scores = evaluate_temporal(model, test)
        record = {"run": run, "seed": seed + run, "best_epoch": best["epoch"],
                  "epochs_run": epoch + 1, "valid": best["valid"], "test": test_scores[mse],
                  **{f"test_mse_{k}": v for k, v in test_scores.items()},
                  "seconds": time.time() - run_start}
        if save_checkpoints:
            record["checkpoint"] = save_run_checkpoint(
                run_dir, run, state_dict=best_state, model_name=model_name, model_kwargs=kwargs,
                dataset_config=dataset_config, data_fingerprint=data_fp,
                split_fingerprint=chrono_split_fingerprint(split), seed=seed + run,
                split_seed=seed, metrics={"metric": "mse", "mse": mse, "best_epoch": best["epoch"],
                                          **{k: v for k, v in record.items() if k.startswith(
                                              ("valid", "test"))}}, config=config)
        results.append(record)
        print(f"run {run:02d} | seed {seed + run} | best epoch {best['epoch']} "
              f"(stopped after {epoch + 1}) | valid {best['valid']:.4f} | test MSE paper "
              f"{test_scores['paper']:.4f} standard {test_scores['standard']:.4f} | "
              f"{record['seconds']:.1f}s", flush=True)
    summary = {"dataset": dataset.name, "model": model_name, "metric": "mse",
               "mse_convention": mse, "higher_is_better": False,
               "split": dataset.summary().split("| split ")[-1], "std_ddof": 1,
               "n_runs": len(results), "runs": results}
    for key, field in (("test", "test"), ("valid", "valid"),
                       ("test_mse_paper", "test_mse_paper"),
                       ("test_mse_standard", "test_mse_standard")):
        summary[f"{key}_mean"], summary[f"{key}_std"] = mean_std([r[field] for r in results])
    summary.update(device=str(device), wall_seconds=time.time() - start)
    return summary
