"""Node-classification training, one loop for all models.

Per run: seed ``seed + run``, a fresh model and a fresh Adam; each epoch either one step on the
whole graph (official ``main.py``) or, with ``batch_size``, one step per chunk of a random node
partition (official ``main-batch.py``, see :mod:`.minibatch`); the loss is on the train nodes.
Evaluation runs on the full graph every ``eval_step`` epochs (optionally on another device,
as the official large-graph script evaluates on CPU, and streamed in row chunks); the epoch
with the best validation score (first maximum) gives the reported test score.

Under torchrun (mini-batch only) every rank trains its share of each epoch's chunks through
DistributedDataParallel; rank 0 alone evaluates, logs and writes checkpoints.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data import NodeDataset, split_fingerprint
from ..models import build_model
from . import distributed
from .checkpoint import save_run_checkpoint
from .common import mean_std, peak_memory_mb, seed_everything
from .metrics import HIGHER_IS_BETTER, LOSSES, evaluate, with_auxiliary_loss
from .minibatch import RandomPartitionStep


def train_fullgraph(*, dataset: NodeDataset, spec, model_name: str, model_kwargs: dict,
                    lr: float, weight_decay: float, epochs: int, runs: int, eval_step: int,
                    seed: int, device: torch.device, run_dir: Path, logger,
                    dataset_config: dict, config: dict, progress: bool = True,
                    save_checkpoints: bool = True, batch_size: int | None = None,
                    eval_device: torch.device | None = None, eval_chunk: int | None = None,
                    precision: str = "32") -> dict:
    start = time.time()
    rank, world = distributed.rank(), distributed.world_size()
    if world > 1 and batch_size is None:
        raise ValueError("distributed training (torchrun) needs mini-batches: set "
                         "trainer=minibatch or trainer.batch_size")
    lead = rank == 0
    autocast = {"32": None, "bf16": torch.bfloat16}[precision]
    eval_device = eval_device or device
    # Mini-batches move chunks to the device and leave the graph where it is (CPU for large
    # graphs); the whole graph goes to a device only to train or evaluate on it there.
    def on_device(dev):
        return tuple(t.to(dev) for t in (dataset.x, dataset.edge_index, dataset.y))

    x, edge_index, y = on_device(device) if batch_size is None else (None, None, None)
    eval_data = (x, edge_index, y) if batch_size is None and eval_device == device \
        else on_device(eval_device)
    loss_fn = LOSSES[spec.loss]
    better = (lambda a, b: a > b) if HIGHER_IS_BETTER[spec.metric] else (lambda a, b: a < b)
    data_fp = dataset.fingerprint()
    kwargs = {"in_channels": dataset.num_features, "out_channels": dataset.num_classes,
              **model_kwargs}
    results = []
    for run in range(runs):
        run_start = time.time()
        split = dataset.split(run, seed)
        seed_everything(seed + run)
        model = build_model(model_name, **kwargs).to(device)
        # A model without trainable parameters (label propagation) is evaluated once.
        trainable = any(p.requires_grad for p in model.parameters())
        trained = distributed.wrap(model, device) if trainable else model
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay) \
            if trainable else None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        best, best_state = None, None
        minibatch = None if batch_size is None or not trainable else RandomPartitionStep(
            dataset.x, dataset.y, dataset.edge_index, split.train, batch_size, loss_fn, device,
            seed=seed + run, rank=rank, world_size=world, autocast_dtype=autocast)
        run_epochs = epochs if trainable else 1
        bar = tqdm(range(run_epochs), desc=f"run {run}", leave=False,
                   disable=None if progress and lead else True)
        for epoch in bar:
            t0 = time.time()
            if hasattr(model, "on_epoch_start"):  # e.g. Polynormer's local-then-global schedule
                model.on_epoch_start(epoch)
            if not trainable:
                loss = float("nan")
            elif minibatch is not None:
                loss = minibatch(trained, optimizer)
            else:
                model.train()
                optimizer.zero_grad()
                with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                    out = model(x, edge_index)
                    loss_t = loss_fn(out[split.train].float(), y[split.train])
                with_auxiliary_loss(model, loss_t).backward()
                optimizer.step()
                loss = loss_t.item()
            if not lead or (epoch % eval_step and epoch != run_epochs - 1):
                continue
            model.to(eval_device)
            scores = evaluate(model, *eval_data, split, spec.metric, spec.loss, eval_chunk)
            model.to(device)
            logger.log({"run": run, "epoch": epoch, "loss": loss, **scores,
                        "seconds": time.time() - t0, "peak_memory_mb": peak_memory_mb(device)})
            if best is None or better(scores["valid"], best["valid"]):
                best = {"epoch": epoch, **scores}
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            bar.set_postfix(loss=f"{loss:.4f}", valid=f"{scores['valid']:.4f}",
                            best=f"{best['valid']:.4f}")
        bar.close()
        if not lead:
            continue
        record = {"run": run, "seed": seed + run, "best_epoch": best["epoch"],
                  "train": best["train"], "valid": best["valid"], "test": best["test"],
                  "seconds": time.time() - run_start}
        if save_checkpoints:
            record["checkpoint"] = save_run_checkpoint(
                run_dir, run, state_dict=best_state, model_name=model_name, model_kwargs=kwargs,
                dataset_config=dataset_config, data_fingerprint=data_fp,
                split_fingerprint=split_fingerprint(split), seed=seed + run, split_seed=seed,
                metrics={"metric": spec.metric, "best_epoch": best["epoch"],
                         **{k: best[k] for k in ("train", "valid", "test")}}, config=config)
        results.append(record)
        print(f"run {run:02d} | seed {seed + run} | best epoch {best['epoch']} | "
              f"train {100 * best['train']:.2f} | valid {100 * best['valid']:.2f} | "
              f"test {100 * best['test']:.2f} | {record['seconds']:.1f}s", flush=True)
    if not lead:
        return {}
    test_mean, test_std = mean_std([r["test"] for r in results])
    valid_mean, valid_std = mean_std([r["valid"] for r in results])
    return {"dataset": dataset.name, "model": model_name, "metric": spec.metric,
            "regime": "fullgraph" if batch_size is None else f"minibatch (B={batch_size})",
            "higher_is_better": HIGHER_IS_BETTER[spec.metric], "split": dataset.splits.description,
            "test_mean": test_mean, "test_std": test_std, "valid_mean": valid_mean,
            "valid_std": valid_std, "std_ddof": 1, "n_runs": len(results), "runs": results,
            "device": str(device), "eval_device": str(eval_device), "world_size": world,
            "precision": precision, "wall_seconds": time.time() - start}
