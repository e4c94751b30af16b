"""Graph-level prediction: mini-batches of whole graphs, one prediction per graph.

Each epoch the train graphs are shuffled by the run's own generator (seed + run; its state is
carried across a resume) and cut into ``trainer.batch_size`` graphs per optimizer step (PyG's
``DataLoader`` collates them into one disjoint graph with a ``batch`` vector). Loss and metric
come from the dataset: multi-task BCE over the known labels with ogb's Evaluator (ROC-AUC for
molhiv, AP for molpcba), cross-entropy and accuracy (TU), L1 and MAE (ZINC). Evaluation runs
the same batches in eval mode over the train, valid and test graphs. Continuous node
attributes are scaled with statistics fitted on each split's train graphs
(:mod:`difformer.data.scaling`, ``dataset.scale``).
"""

from __future__ import annotations

import torch

from ...data.scaling import Standardiser, scaled_graphs
from ..metrics import METRICS, with_auxiliary_loss
from .base import Task


def graph_inputs(model, data) -> dict:
    """The keyword inputs ``model`` reads from a collated batch: the graph of each node, edge
    features when the data has them, and the positional encodings the model declares."""
    module = getattr(model, "module", model)
    inputs = {"batch": data.batch}
    if getattr(data, "edge_attr", None) is not None:
        inputs["edge_attr"] = data.edge_attr
    for name in getattr(module, "positional_encodings", {}):
        inputs[f"{name}_pe"] = data[f"{name}_pe"]
    return inputs


def predict(model, data):
    return model(data.x, data.edge_index, **graph_inputs(model, data))


class GraphEpoch:
    """One pass over the train graphs in shuffled mini-batches, one optimizer step each."""

    def __init__(
        self, model, optimizer, graphs, batch_size: int, loss_fn, device, autocast_dtype, seed: int
    ):
        self.model, self.optimizer, self.graphs = model, optimizer, graphs
        self.batch_size, self.loss_fn, self.device = batch_size, loss_fn, device
        self.autocast = autocast_dtype
        self.generator = torch.Generator().manual_seed(seed)

    def train_epoch(self, epoch: int, progress=None) -> float:
        from torch_geometric.loader import DataLoader

        self.model.train()
        order = torch.randperm(len(self.graphs), generator=self.generator).tolist()
        loader = DataLoader([self.graphs[i] for i in order], batch_size=self.batch_size)
        total, count = 0.0, 0
        for step, data in enumerate(loader):
            data = data.to(self.device)
            self.optimizer.zero_grad()
            with torch.autocast(
                self.device.type, dtype=self.autocast, enabled=self.autocast is not None
            ):
                out = predict(self.model, data)
            loss = self.loss_fn(out.float(), data.y)
            with_auxiliary_loss(self.model, loss).backward()
            self.optimizer.step()
            total += loss.item() * data.num_graphs
            count += data.num_graphs
            if progress is not None:
                progress(step + 1, len(loader))
        return total / max(count, 1)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


@torch.no_grad()
def predict_all(model, graphs, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode predictions and targets of ``graphs``, in order, on the CPU."""
    from torch_geometric.loader import DataLoader

    model.eval()
    preds, targets = [], []
    for data in DataLoader(graphs, batch_size=batch_size):
        data = data.to(device)
        preds.append(predict(model, data).float().cpu())
        targets.append(data.y.cpu())
    if not preds:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(preds), torch.cat(targets)


class GraphTask(Task):
    """Graph classification / regression over a :class:`~difformer.data.GraphDataset`."""

    kind = "graph"
    level = "graph"
    trainers = ("graph",)
    auto_trainer = ("graph", {"epochs": 100, "batch_size": 32})
    unused_trainer_keys = ("eval_device", "eval_chunk", "mse")

    def __init__(self, dataset, spec, settings, device, eval_device=None, rank=0, world=1):
        # graph batches are evaluated where they train (trainer.eval_device is not a key here)
        super().__init__(dataset, spec, settings, device, None, rank, world)
        self.batch_size = self.trainer.batch_size or 32
        # split fingerprint -> (its scaler, every graph scaled by it), fitted once per split
        self._prepared: dict[str, tuple[Standardiser | None, list]] = {}

    def model_inputs(self) -> dict:
        return self.dataset.model_inputs()

    def _prepare(self, split) -> tuple[Standardiser | None, list]:
        key = self.split_fingerprint(split)
        if key not in self._prepared:
            d, scaler = self.dataset, None
            if d.scale == "standard" and d.continuous:
                train_x = torch.cat([d.graphs[i].x for i in split.train.tolist()])
                scaler = Standardiser.fit(train_x, d.continuous)
            self._prepared[key] = (scaler, scaled_graphs(d.graphs, scaler))
        return self._prepared[key]

    def input_transform(self, split) -> dict | None:
        scaler = self._prepare(split)[0]
        return None if scaler is None else scaler.to_dict()

    def use_input_transform(self, split, state: dict | None) -> None:
        scaler = None if state is None else Standardiser.from_dict(state)
        self._prepared[self.split_fingerprint(split)] = (
            scaler,
            scaled_graphs(self.dataset.graphs, scaler),
        )

    def _graphs(self, split, part: str) -> list:
        graphs = self._prepare(split)[1]
        return [graphs[i] for i in getattr(split, part).tolist()]

    def epoch_runner(self, model, optimizer, split, run: int):
        return GraphEpoch(
            model,
            optimizer,
            self._graphs(split, "train"),
            self.batch_size,
            self.loss_fn,
            self.device,
            self.autocast,
            seed=self.settings.seed + run,
        )

    def evaluate(self, model, split) -> dict:
        fn, scores = METRICS[self.metric], {}
        parts = ("train", "valid", "test") if self.trainer.eval_train else ("valid", "test")
        for part in parts:
            pred, y = predict_all(model, self._graphs(split, part), self.batch_size, self.device)
            scores[part] = fn(pred, y)
            if part == "valid":
                scores["valid_loss"] = self.loss_fn(pred, y).item() if len(y) else float("nan")
        scores.setdefault("train", float("nan"))
        return scores

    def regime(self) -> str:
        return f"graph mini-batches (B={self.batch_size} graphs)"

    def summary(self, records: list[dict]) -> dict:
        return {**super().summary(records), "precision": self.trainer.precision}
