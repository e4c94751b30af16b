"""``mode=inspect checkpoint=PATH``: the energy view of a trained DIFFormer on its own data.

Writes ``inspect.json`` and four pictures into the run directory:

* ``energy.png``: per layer the energy E(Z^(k+1), k) = local + lambda * pair (and both terms),
  with whether it decreased (Theorem 1; :mod:`difformer.modes.energy` derives each kernel's
  penalty);
* ``attention_share.png``: the share of each node's attention that stays within its class, by
  layer, against the share a uniform attention gives;
* ``class_attention.png``: the class-by-class attention matrix of the first and last layer;
* ``heatmap.png``: the attention among a sample of nodes sorted by class (first and last layer).

For the simple kernels ``inspect.json`` also holds, per layer, how far the layer is from "mean of
V": the q.k part of the attention against its constant part, with the checkpoint's global
Frobenius norm and with per-node norms of the same q and k. Attention rows are all nodes up to
``inspect.max_rows`` (else a seeded sample of that many); the energy's pair term is exact for the
simple kernels at any N and for sigmoid up to ``inspect.max_exact`` nodes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config.core import ConfigError
from ..config.settings import Settings
from ..models import DIFFormer
from ..runs import rundir
from ..runs.files import write_json
from . import energy as ie
from .evaluate import rebuild


def options(config: dict) -> dict:
    """The ``inspect.*`` keys of the resolved config, checked."""
    opts = dict(config.get("inspect") or {})
    lam = opts.get("lam", 1.0)
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or lam < 0:
        raise ConfigError(f"inspect.lam must be a number >= 0, got {lam!r}")
    for key, default in (("max_rows", 4096), ("max_exact", 20000), ("heatmap_nodes", 200)):
        value = opts.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"inspect.{key} must be an integer >= 1, got {value!r}")
        opts[key] = value
    opts["lam"] = float(lam)
    return opts


@torch.no_grad()
def inspect_checkpoint(settings: Settings, run_dir: Path, ckpt: dict) -> dict:
    opts = options(settings.config)
    model, dataset, task, split, problems = rebuild(settings, ckpt)
    if not isinstance(model, DIFFormer):
        raise ConfigError(
            f"mode=inspect reads a node-level DIFFormer checkpoint; "
            f"{settings.checkpoint} holds model {ckpt['model']['name']}"
        )
    model.cpu().eval()
    x, edge_index, y = dataset.x, dataset.edge_index, dataset.y
    n, kernel = x.shape[0], model.kernel
    states = model.diffusion_states(x, edge_index if model.use_graph else None)
    layers = ie.energies(states, kernel, opts["lam"], max_exact=opts["max_exact"])
    generator = torch.Generator().manual_seed(settings.seed)
    rows = (
        torch.arange(n)
        if n <= opts["max_rows"]
        else torch.randperm(n, generator=generator)[: opts["max_rows"]].sort().values
    )
    labelled = y >= 0
    sample = _heatmap_nodes(y, opts["heatmap_nodes"], generator)
    maps, matrices = [], []
    for k, state in enumerate(states):
        attention = ie.attention_rows(state["query"], state["key"], kernel, rows)
        keep = labelled[rows]
        structure = ie.class_structure(
            attention[keep][:, labelled], y[rows][keep], y[labelled], dataset.num_classes
        )
        layers[k].update(within_class=structure["within_class"], uniform=structure["uniform"])
        matrices.append(structure["class_matrix"])
        if kernel != "sigmoid":
            layers[k]["simple_kernel_parts"] = ie.simple_kernel_parts(
                state["query"], state["key"], state["value"]
            )
        if k in (0, len(states) - 1):
            maps.append(
                ie.attention_rows(state["query"], state["key"], kernel, sample)[:, sample].mean(-1)
            )
    result = {
        "checkpoint": str(Path(str(settings.checkpoint)).resolve()),
        "dataset": dataset.name,
        "kernel": kernel,
        "nodes": n,
        "attention_rows": int(rows.numel()),
        "lambda": opts["lam"],
        "layers": layers,
        "energy_decreases_every_layer": all(r["decreased"] for r in layers[1:]),
        "class_matrices": matrices,
        "mismatches": problems,
    }
    write_json(Path(run_dir) / rundir.INSPECT, result)
    _plots(Path(run_dir), result, maps, y[sample])
    steps = ", ".join(f"{r['energy']:.4g}" for r in layers)
    print(
        f"{dataset.name} | DIFFormer ({kernel}) | energy by layer: {steps} | decreases every "
        f"layer: {result['energy_decreases_every_layer']} | within-class attention "
        f"{layers[-1]['within_class']:.3f} (uniform {layers[-1]['uniform']:.3f}) | "
        f"{run_dir / rundir.INSPECT}",
        flush=True,
    )
    return result


def _heatmap_nodes(y: torch.Tensor, count: int, generator) -> torch.Tensor:
    labelled = (y >= 0).nonzero().view(-1)
    pick = labelled[torch.randperm(labelled.numel(), generator=generator)[:count]]
    return pick[torch.argsort(y[pick], stable=True)]


def _plots(run_dir: Path, result: dict, maps: list, y_sample: torch.Tensor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = result["layers"]
    ks = [r["layer"] for r in layers]
    title = f"{result['dataset']}, DIFFormer ({result['kernel']})"
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, [r["energy"] for r in layers], "o-", label=f"energy (λ = {result['lambda']:g})")
    ax.plot(ks, [r["local"] for r in layers], "s--", label="local ‖Z(k+1) − Z(k)‖²")
    ax.plot(ks, [result["lambda"] * r["pair"] for r in layers], "^--", label="λ · pair term")
    ax.set(xlabel="layer k", ylabel="value", yscale="symlog", title=f"energy per layer: {title}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / rundir.INSPECT_PLOTS[0], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, [r["within_class"] for r in layers], "o-", label="attention within the class")
    ax.plot(ks, [r["uniform"] for r in layers], "k--", label="uniform attention")
    ax.set(
        xlabel="layer k",
        ylabel="share of a node's attention",
        ylim=(0, 1),
        title=f"within-class attention: {title}",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / rundir.INSPECT_PLOTS[1], dpi=110)
    plt.close(fig)

    pairs = [(0, result["class_matrices"][0]), (ks[-1], result["class_matrices"][-1])]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, (k, matrix) in zip(axes, pairs):
        image = ax.imshow(matrix, cmap="viridis")
        ax.set(title=f"layer {k}", xlabel="attended class", ylabel="node's class")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(f"class-by-class attention: {title}")
    fig.tight_layout()
    fig.savefig(run_dir / rundir.INSPECT_PLOTS[2], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    bounds = (torch.nonzero(y_sample[1:] != y_sample[:-1]).view(-1) + 0.5).tolist()
    for ax, k, image_data in zip(axes, (0, ks[-1]), maps):
        image = ax.imshow(image_data.numpy(), cmap="magma")
        for b in bounds:
            ax.axhline(b, color="w", lw=0.4)
            ax.axvline(b, color="w", lw=0.4)
        ax.set(title=f"layer {k}", xlabel="key (sorted by class)", ylabel="query")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(f"attention among {len(y_sample)} sampled nodes: {title}")
    fig.tight_layout()
    fig.savefig(run_dir / rundir.INSPECT_PLOTS[3], dpi=110)
    plt.close(fig)
