"""Node classification on one graph: full-graph steps or random-partition mini-batches.

Own csv/npz data with ``dataset.scale=standard`` has its feature columns standardised with the
statistics of each split's train nodes (:mod:`difformer.data.scaling`), recorded in the
checkpoints; every other dataset is used as loaded.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...data.scaling import Standardiser
from ..metrics import evaluate as evaluate_split
from ..metrics import with_auxiliary_loss
from ..minibatch import RandomPartitionStep
from .base import Task


class FullGraphEpoch:
    """One optimizer step on the whole graph, the loss on the train nodes (official main.py)."""

    def __init__(
        self, model, optimizer, x, edge_index, y, train_idx, loss_fn, device, autocast_dtype
    ):
        self.model, self.optimizer = model, optimizer
        self.x, self.edge_index, self.y, self.train_idx = x, edge_index, y, train_idx
        self.loss_fn, self.device, self.autocast = loss_fn, device, autocast_dtype

    def train_epoch(self, epoch: int, progress=None) -> float:
        self.model.train()
        self.optimizer.zero_grad()
        with torch.autocast(
            self.device.type, dtype=self.autocast, enabled=self.autocast is not None
        ):
            out = self.model(self.x, self.edge_index)
            loss = self.loss_fn(out[self.train_idx].float(), self.y[self.train_idx])
        with_auxiliary_loss(self.model, loss).backward()
        self.optimizer.step()
        return loss.item()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class NodeTask(Task):
    """Node classification on one graph, full-graph or random-partition mini-batches."""

    kind = "node"
    trainers = ("fullgraph", "minibatch")
    auto_trainer = ("fullgraph", {"epochs": 500})
    unused_trainer_keys = ("patience", "patience_mode", "mse", "eval_train")

    def __init__(self, dataset, spec, settings, device, eval_device=None, rank=0, world=1):
        super().__init__(dataset, spec, settings, device, eval_device, rank, world)
        self.batch_size = self.trainer.batch_size
        # Mini-batches move chunks to the device and leave the graph where it is (CPU for
        # large graphs); the whole graph goes to a device only to train or evaluate there.
        self.train_data = None if self.batch_size else self._on(device)
        self.eval_data = (
            self.train_data
            if self.train_data is not None and self.eval_device == device
            else self._on(self.eval_device)
        )
        # dataset.scale=standard: split fingerprint -> (its scaler, the scaled features on
        # the CPU), fitted once per split on its train nodes
        self._scaled: dict[str, tuple[Standardiser, Tensor]] = {}
        self._scaled_on: dict[tuple[str, str], Tensor] = {}

    def _on(self, dev) -> tuple[Tensor, Tensor, Tensor]:
        d = self.dataset
        return d.x.to(dev), d.edge_index.to(dev), d.y.to(dev)

    def _prepare(self, split) -> tuple[Standardiser, Tensor] | None:
        if getattr(self.dataset, "scale", "none") != "standard":
            return None
        key = self.split_fingerprint(split)
        if key not in self._scaled:
            x = self.dataset.x
            scaler = Standardiser.fit(x[split.train], x.shape[1])
            self._scaled[key] = (scaler, scaler.apply(x))
        return self._scaled[key]

    def _features(self, split, data: tuple[Tensor, Tensor, Tensor] | None, dev):
        """(x, edge_index, y) on ``dev`` for ``split``: ``data`` with x scaled when asked."""
        data = data if data is not None else self._on(dev)
        prepared = self._prepare(split)
        if prepared is None:
            return data
        key = (self.split_fingerprint(split), str(dev))
        if key not in self._scaled_on:  # moved once per split and device, not every epoch
            self._scaled_on[key] = prepared[1].to(dev)
        return (self._scaled_on[key], *data[1:])

    def input_transform(self, split) -> dict | None:
        prepared = self._prepare(split)
        return None if prepared is None else prepared[0].to_dict()

    def use_input_transform(self, split, state: dict | None) -> None:
        if state is None:  # recorded without scaling: the features as loaded
            self.dataset.scale = "none"
            return
        scaler = Standardiser.from_dict(state)
        self._scaled[self.split_fingerprint(split)] = (scaler, scaler.apply(self.dataset.x))
        self._scaled_on.clear()

    @classmethod
    def supports_torchrun(cls, trainer) -> bool:
        return trainer.batch_size is not None  # DDP over the mini-batch chunks

    def epoch_runner(self, model, optimizer, split, run: int):
        if self.batch_size is not None:
            d = self.dataset
            return RandomPartitionStep(
                self._features(split, None, torch.device("cpu"))[0],
                d.y,
                d.edge_index,
                split.train,
                self.batch_size,
                self.loss_fn,
                self.device,
                seed=self.settings.seed + run,
                rank=self.rank,
                world_size=self.world,
                autocast_dtype=self.autocast,
                model=model,
                optimizer=optimizer,
            )
        x, edge_index, y = self._features(split, self.train_data, self.device)
        return FullGraphEpoch(
            model,
            optimizer,
            x,
            edge_index,
            y,
            split.train.to(self.device),
            self.loss_fn,
            self.device,
            self.autocast,
        )

    def evaluates_at(self, epoch: int, epochs: int) -> bool:
        """Every eval_step-th epoch from 0, as the official scripts (Pokec, 500 epochs every
        9: 0, 9, ..., 495); ``trainer.eval_last`` adds the last epoch as a candidate."""
        return epoch % self.trainer.eval_step == 0 or (
            bool(self.trainer.eval_last) and epoch == epochs - 1
        )

    def evaluate(self, model, split) -> dict:
        # Module.to walks every submodule even when nothing moves: 2 ms of a 50 ms Cora epoch
        moves = self.eval_device != self.device
        if moves:
            model.to(self.eval_device)
        scores = evaluate_split(
            model,
            *self._features(split, self.eval_data, self.eval_device),
            split,
            self.metric,
            self.spec.loss,  # type: ignore[call-arg]
            self.trainer.eval_chunk,
        )
        if moves:
            model.to(self.device)
        return scores

    def regime(self) -> str:
        return "fullgraph" if self.batch_size is None else f"minibatch (B={self.batch_size})"

    def summary(self, records: list[dict]) -> dict:
        return {
            **super().summary(records),
            "eval_device": str(self.eval_device),
            "precision": self.trainer.precision,
        }
