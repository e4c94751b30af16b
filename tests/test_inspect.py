"""The energy view (mode=inspect): energies and attention shares against direct dense
computations, and the report end to end on a trained checkpoint."""
import json

import pytest
import torch
import torch.nn.functional as F

from conftest import train_py
from difformer.modes import energy as ie
from difformer.models import DIFFormer


def small_graph(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    src = torch.randint(0, n, (120,), generator=g)
    dst = torch.randint(0, n, (120,), generator=g)
    loops = torch.arange(n)
    edge_index = torch.stack([torch.cat([src, dst, loops]), torch.cat([dst, src, loops])])
    y = torch.randint(0, 3, (n,), generator=g)
    return x, edge_index, y


def dense_penalty(z, kernel):
    """sum_{i,j} delta(||z~_i - z~_j||^2), every pair written out."""
    zt = F.normalize(z.double(), dim=-1)
    x = torch.cdist(zt, zt).square()
    if kernel == "sigmoid":
        values = [torch.trapezoid(torch.sigmoid(1 - torch.linspace(0, v, 2001) / 2),
                                  torch.linspace(0, v, 2001)) for v in x.flatten().tolist()]
        return float(sum(values))
    return float((2 * x - x * x / 4).sum())


@pytest.mark.parametrize("kernel", ["simple", "simple_pernode", "sigmoid"])
def test_energy_per_layer_equals_a_dense_computation(kernel):
    torch.manual_seed(0)
    x, edge_index, _ = small_graph()
    model = DIFFormer(6, 8, 3, num_layers=3, kernel=kernel, use_weight=True).eval()
    states = model.diffusion_states(x, edge_index)
    rows = ie.energies(states, kernel, lam=0.5)
    with torch.no_grad():
        z = model.fcs[0](x)
        z = F.relu(model.bns[0](z))    # the input block (use_bn): the state entering layer 0
    for k, row in enumerate(rows):
        z_next = states[k]["z_out"]
        assert torch.equal(states[k]["z_in"], z)
        local = float((z_next.double() - z.double()).square().sum())
        pair = dense_penalty(z_next, kernel)
        assert row["local"] == pytest.approx(local, rel=1e-9)
        assert row["pair"] == pytest.approx(pair, rel=1e-5)
        assert row["energy"] == pytest.approx(local + 0.5 * pair, rel=1e-5)
        assert row["decreased"] == (None if k == 0 else row["energy"] <= rows[k - 1]["energy"])
        z = z_next
    # the states are the forward's: the last one through the head gives the model's output
    torch.testing.assert_close(model.fcs[-1](states[-1]["z_out"]), model(x, edge_index))


def test_sampled_sigmoid_penalty_estimates_the_exact_sum():
    z = torch.randn(300, 5, generator=torch.Generator().manual_seed(1))
    exact = ie.pair_penalty(z, "sigmoid")
    assert ie.pair_penalty(z, "sigmoid", max_exact=100) == pytest.approx(exact, rel=0.05)


@pytest.mark.parametrize("kernel", ["simple", "sigmoid", "simple_pernode"])
def test_within_class_shares_equal_a_direct_computation(kernel):
    torch.manual_seed(0)
    x, edge_index, y = small_graph()
    model = DIFFormer(6, 8, 3, num_layers=2, num_heads=2, kernel=kernel).eval()
    full = model.get_attentions(x, edge_index, full_kernel=True)      # [L, N, N, H]
    for k, state in enumerate(model.diffusion_states(x, edge_index)):
        rows = ie.attention_rows(state["query"], state["key"], kernel, torch.arange(40))
        torch.testing.assert_close(rows, full[k], atol=1e-6, rtol=1e-5)
        out = ie.class_structure(rows, y, y, 3)
        a = full[k].mean(-1)
        within = sum(float(a[i, y == y[i]].sum()) for i in range(40)) / 40
        uniform = sum(float((y == y[i]).sum()) / 40 for i in range(40)) / 40
        assert out["within_class"] == pytest.approx(within, abs=1e-6)
        assert out["uniform"] == pytest.approx(uniform, abs=1e-6)
        for c in range(3):
            for d in range(3):
                expected = a[y == c][:, y == d].sum(1).mean()
                assert out["class_matrix"][c][d] == pytest.approx(float(expected), abs=1e-6)


def test_the_global_norm_shrinks_the_qk_part_against_the_per_node_norm():
    torch.manual_seed(0)
    q, k, v = torch.randn(500, 1, 8), torch.randn(500, 1, 8) + 1.0, torch.randn(500, 1, 8)
    parts = ie.simple_kernel_parts(q, k, v)
    s = 1 / (q.norm() * k.norm())
    den = (s * torch.einsum("nhm,hm->nh", q, k.sum(0))).abs().mean() / 500
    assert parts["global"]["denominator_ratio"] == pytest.approx(float(den), rel=1e-5)
    assert parts["global"]["denominator_ratio"] < 0.1 * parts["per_node"]["denominator_ratio"]


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
def test_inspect_mode_writes_the_report_and_refuses_other_models(tmp_path):
    out = tmp_path / "run"
    train_py("trainer.runs=1", "trainer.epochs=5", "model.num_layers=3", f"hydra.run.dir={out}")
    report = tmp_path / "inspect"
    proc = train_py("mode=inspect", f"checkpoint={out}/checkpoints/run0.pt",
                    f"hydra.run.dir={report}")
    result = json.loads((report / "inspect.json").read_text())
    assert result["kernel"] == "simple" and len(result["layers"]) == 3
    assert result["nodes"] == 1797 and result["attention_rows"] == 1797
    layer = result["layers"][-1]
    assert 0 <= layer["uniform"] <= layer["within_class"] + 1 and "simple_kernel_parts" in layer
    assert len(result["class_matrices"][0]) == 10
    for name in ("energy.png", "attention_share.png", "class_attention.png", "heatmap.png"):
        assert (report / name).stat().st_size > 1000
    assert "energy by layer" in proc.stdout
    gcn = tmp_path / "gcn"
    train_py("model=mlp", "trainer.runs=1", "trainer.epochs=2", f"hydra.run.dir={gcn}")
    refused = train_py("mode=inspect", f"checkpoint={gcn}/checkpoints/run0.pt",
                       f"hydra.run.dir={tmp_path / 'no'}", check=False)
    assert refused.returncode == 2
    assert "mode=inspect reads a node-level DIFFormer checkpoint" in refused.stderr
