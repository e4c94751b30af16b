"""Dataset registry: name -> loader plus the metadata the trainer needs.

The training loop never looks at a dataset's name: task, loss, metric and split protocol
come from the :class:`DatasetSpec` here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import instances, large, loaders, molecules, own, temporal, tu, validation
from .base import NodeDataset
from .graphs import GraphDataset, with_positional_encodings
from .sources import DataRoot


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    loader: Callable[..., Any]
    loss: str  # key of LOSSES (regression: "mse", convention from trainer.mse)
    metric: str  # key of METRICS / HIGHER_IS_BETTER in difformer.train.metrics
    protocol: str  # the split protocol in words (docs/datasets.md)
    source: str  # where the data comes from (docs/datasets.md)
    kind: str = "node"  # the task kind (difformer.train.tasks.TASKS): node | temporal | graph


_PLANETOID = "20 per class / 500 valid / 1000 test, one split (seed) shared by all runs"
_FIXED10 = "10 fixed splits, run i uses split i"
_INSTANCES = "L per class / 1000 valid / rest test, a new split per run"
_RAND50 = "random 50/25/25 of the labelled nodes, a new split per run"
_CHRONO = "chronological 20 % train / 20 % valid / 60 % test, the same in every run"
_SCAFFOLD = "scaffold split 80/10/10 (OGB's procedure), the same in every run"

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "cora",
            loaders.load_planetoid,
            "cross_entropy",
            "accuracy",
            _PLANETOID,
            "Planetoid (Yang et al. 2016)",
        ),
        DatasetSpec(
            "citeseer",
            loaders.load_planetoid,
            "cross_entropy",
            "accuracy",
            _PLANETOID,
            "Planetoid (Yang et al. 2016)",
        ),
        DatasetSpec(
            "pubmed",
            loaders.load_planetoid,
            "cross_entropy",
            "accuracy",
            _PLANETOID,
            "Planetoid (Yang et al. 2016)",
        ),
        DatasetSpec(
            "film",
            loaders.load_film,
            "cross_entropy",
            "accuracy",
            _FIXED10 + " (Geom-GCN 60/20/20)",
            "Geom-GCN (Pei et al. 2020)",
        ),
        DatasetSpec(
            "chameleon",
            loaders.load_heterophily_npz,
            "cross_entropy",
            "accuracy",
            _FIXED10 + " (filtered)",
            "Platonov et al. 2023",
        ),
        DatasetSpec(
            "squirrel",
            loaders.load_heterophily_npz,
            "cross_entropy",
            "accuracy",
            _FIXED10 + " (filtered)",
            "Platonov et al. 2023",
        ),
        DatasetSpec(
            "ogbn-proteins",
            large.load_ogbn_proteins,
            "bce",
            "rocauc_ogb",
            "OGB public species split, the same in every run",
            "OGB (Hu et al. 2020)",
        ),
        DatasetSpec(
            "pokec",
            large.load_pokec,
            "cross_entropy",
            "accuracy",
            _RAND50 + " (dataset.split=fixed: the authors' split files)",
            "LINKX (Lim et al. 2021)",
        ),
        DatasetSpec(
            "tolokers",
            large.load_tolokers,
            "cross_entropy",
            "rocauc",
            "10 fixed 50/25/25 splits, run i uses split i",
            "Platonov et al. 2023",
        ),
        DatasetSpec(
            "synthetic",
            large.load_synthetic,
            "cross_entropy",
            "accuracy",
            "random 50/25/25, a new split per run",
            "seeded generator, Pokec's size by default (benchmarks)",
        ),
        DatasetSpec(
            "digits",
            instances.load_digits,
            "cross_entropy",
            "accuracy",
            "L per class / valid / rest, a new split per run",
            "scikit-learn load_digits",
        ),
        DatasetSpec(
            "cifar10",
            instances.load_simclr_features,
            "cross_entropy",
            "accuracy",
            _INSTANCES,
            "SimCLR ResNet-18 features (DIFFormer authors)",
        ),
        DatasetSpec(
            "stl10",
            instances.load_simclr_features,
            "cross_entropy",
            "accuracy",
            _INSTANCES,
            "SimCLR ResNet-18 features (DIFFormer authors)",
        ),
        DatasetSpec(
            "20news",
            instances.load_20news,
            "cross_entropy",
            "accuracy",
            _INSTANCES,
            "20 Newsgroups bydate, 10 categories (scikit-learn)",
        ),
        DatasetSpec(
            "npz",
            own.load_npz,
            "cross_entropy",
            "accuracy",
            "the file's masks or index arrays, else labels per class or random ratios",
            "your own arrays (numpy .npz)",
        ),
        DatasetSpec(
            "pyg",
            own.load_pyg,
            "cross_entropy",
            "accuracy",
            "the file's masks or index arrays, else labels per class or random ratios",
            "your own torch_geometric Data (torch.save)",
        ),
        DatasetSpec(
            "csv",
            own.load_csv,
            "cross_entropy",
            "accuracy",
            "labels per class or random ratios",
            "your own nodes.csv (+ edges.csv)",
        ),
        DatasetSpec(
            "chickenpox",
            temporal.load_temporal,
            "mse",
            "mse",
            _CHRONO,
            "PyTorch Geometric Temporal (Rozemberczki et al. 2021)",
            kind="temporal",
        ),
        DatasetSpec(
            "covid",
            temporal.load_temporal,
            "mse",
            "mse",
            _CHRONO,
            "PyTorch Geometric Temporal, England Covid",
            kind="temporal",
        ),
        DatasetSpec(
            "wikimath",
            temporal.load_temporal,
            "mse",
            "mse",
            _CHRONO,
            "PyTorch Geometric Temporal, Wikipedia vital mathematics",
            kind="temporal",
        ),
        DatasetSpec(
            "hiv",
            molecules.load_hiv,
            "bce_masked",
            "rocauc_molhiv",
            _SCAFFOLD,
            "MoleculeNet HIV (the molecules of ogbg-molhiv), OGB features",
            kind="graph",
        ),
        DatasetSpec(
            "ogbg-molhiv",
            molecules.load_ogbg,
            "bce_masked",
            "rocauc_molhiv",
            "OGB scaffold split",
            "OGB (Hu et al. 2020)",
            kind="graph",
        ),
        DatasetSpec(
            "ogbg-molpcba",
            molecules.load_ogbg,
            "bce_masked",
            "ap_molpcba",
            "OGB scaffold split",
            "OGB (Hu et al. 2020)",
            kind="graph",
        ),
        DatasetSpec(
            "smiles_csv",
            molecules.load_smiles_csv,
            "bce_masked",
            "rocauc_multitask",
            "scaffold (default) or random split",
            "your own SMILES CSV",
            kind="graph",
        ),
        DatasetSpec(
            "tu",
            tu.load_tu,
            "cross_entropy",
            "accuracy",
            "stratified 10-fold cross-validation (or random 80/10/10)",
            "TU datasets (Morris et al. 2020), PyG TUDataset",
            kind="graph",
        ),
        DatasetSpec(
            "zinc",
            tu.load_zinc,
            "l1",
            "mae",
            "ZINC subset split",
            "ZINC 12k (Dwivedi et al. 2020)",
            kind="graph",
        ),
    ]
}


def registry_name(opts) -> str:
    """The registry key of a ``dataset`` config node: ``_target_`` (your own loader), else
    ``loader`` (a family whose members are picked by ``name``, as ``tu``), else ``name``."""
    return str(opts.get("_target_") or opts.get("loader") or opts.get("name"))


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS and "." in name:  # your own loader: dataset._target_=my_pkg.load
        from hydra.utils import get_method

        try:
            loader = get_method(name)
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"dataset._target_={name}: cannot import it ({err})") from err
        return DatasetSpec(
            name,
            loader,
            "cross_entropy",
            "accuracy",
            "the loader's split protocol",
            f"your own loader {name}",
        )
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def load_dataset(
    opts, root: DataRoot
) -> tuple[NodeDataset | temporal.TemporalDataset, DatasetSpec]:
    """Load the dataset described by the ``dataset`` config node ``opts``."""
    spec = get_spec(registry_name(opts))
    name = str(opts.get("_target_") or opts.name)
    dataset = spec.loader(name, opts, root)
    if "." in spec.name and isinstance(dataset, NodeDataset):  # your own loader's result
        validation.check_node_dataset(f"dataset._target_={spec.name}", dataset)
    decided = {k: getattr(dataset, k, None) for k in ("loss", "metric")}
    decided = {k: v for k, v in decided.items() if v is not None}
    return dataset, (dataclasses.replace(spec, **decided) if decided else spec)  # type: ignore[arg-type]


def prepare_for_model(dataset, model, cache_dir=None):
    """Give ``model`` the input it declares: a model with ``knn_k`` runs on the symmetrised
    k-NN graph of the features (with self-loops) instead of the dataset's graph; a graph-level
    model's ``positional_encodings`` are computed once and cached under ``cache_dir``."""
    if isinstance(dataset, GraphDataset):
        needs = getattr(model, "positional_encodings", None) or {}
        if needs:
            if cache_dir is None:
                raise ValueError("positional encodings need a cache folder")
            dataset = with_positional_encodings(dataset, needs, cache_dir)
        return dataset
    k = getattr(model, "knn_k", None)
    if k is None or not isinstance(dataset, NodeDataset):
        return dataset
    return dataclasses.replace(
        dataset, edge_index=instances.knn_edges(dataset.x, int(k)), has_graph=True
    )


def markdown_table() -> str:
    """Every registered dataset with its task kind, loss, metric, split protocol and source:
    the table of docs/datasets.md (``python scripts/datasets_table.py`` writes it)."""
    lines = [
        "| dataset | task kind | loss | metric | split | source |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {s.name} | {s.kind} | {s.loss} | {s.metric} | {s.protocol} | {s.source} |"
        for s in DATASETS.values()
    ]
    return "\n".join(lines) + "\n"
