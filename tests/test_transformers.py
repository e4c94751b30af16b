"""NodeFormer and SGFormer against independent dense references of their official formulas."""
import math

import pytest
import torch

from difformer.models.nodeformer import (NodeFormer, adjacency_powers, create_projection_matrix,
                                         kernelized_softmax, normalized_adjacency)
from difformer.models.sgformer import SGFormer, sgformer_attention


def small_graph(n=25, e=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    src, dst = torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g)
    loops = torch.arange(n)
    return torch.stack([torch.cat([src, dst, loops]), torch.cat([dst, src, loops])])


# ----- SGFormer ------------------------------------------------------------------------------

def test_sgformer_attention_equals_dense_formula():
    g = torch.Generator().manual_seed(0)
    n, h, m = 30, 2, 5
    q, k, v = (torch.randn(n, h, m, generator=g, dtype=torch.float64) for _ in range(3))
    qn, kn = q / q.norm(), k / k.norm()  # one Frobenius norm over the whole tensor
    expected = torch.empty(n, h, m, dtype=torch.float64)
    for head in range(h):
        s = qn[:, head] @ kn[:, head].T                      # [N, N]
        num = s @ v[:, head] + n * v[:, head]                 # N * v_i, not sum_j v_j
        expected[:, head] = num / (s.sum(dim=1, keepdim=True) + n)
    assert torch.allclose(sgformer_attention(q, k, v), expected, atol=1e-12)


def test_pyg_sgformer_is_the_per_row_variant_and_differs():
    from torch_geometric.nn.attention import SGFormerAttention

    torch.manual_seed(0)
    n, c = 20, 6
    att = SGFormerAttention(c, heads=1, head_channels=c).eval()
    x = torch.randn(1, n, c)
    with torch.no_grad():
        q, k, v = att.q(x), att.k(x), att.v(x)
        qn, kn = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
        s = qn[0] @ kn[0].T
        per_row = (s @ v[0] + n * v[0]) / (s.sum(dim=1, keepdim=True) + n)
        assert torch.allclose(att(x)[0], per_row, atol=1e-5)
        official = sgformer_attention(q[0].unsqueeze(1), k[0].unsqueeze(1), v[0].unsqueeze(1))
        assert not torch.allclose(official[:, 0], per_row, atol=1e-4)


def test_sgformer_model_equals_dense_reference():
    torch.manual_seed(0)
    n, d, hidden, c = 25, 7, 8, 3
    x, edge_index = torch.randn(n, d), small_graph(n)
    model = SGFormer(d, hidden, c, trans_use_weight=True, gnn_num_layers=2,
                     graph_weight=0.3).eval()
    with torch.no_grad():
        # transformer branch: Linear, LayerNorm, ReLU; one layer; (z + z_prev) / 2; LayerNorm
        t = model.trans_conv
        z = torch.relu(t.bns[0](t.fcs[0](x)))
        layer = t.convs[0]
        att = sgformer_attention(layer.Wq(z).unsqueeze(1), layer.Wk(z).unsqueeze(1),
                                 layer.Wv(z).unsqueeze(1))[:, 0]
        z = t.bns[1]((att + z) / 2)
        # GCN branch with a dense D^-1/2 A D^-1/2 (degree by target), residual to the input
        a = torch.zeros(n, n)
        a.index_put_((edge_index[1], edge_index[0]), torch.ones(edge_index.shape[1]),
                     accumulate=True)
        deg = a.sum(dim=1)
        a_hat = a / deg.sqrt().unsqueeze(1) / deg.sqrt().unsqueeze(0)
        gc = model.graph_conv
        h0 = torch.relu(gc.bns[0](gc.fcs[0](x)))
        h = h0
        for i, lin in enumerate(gc.convs):
            h = torch.relu(gc.bns[i + 1](lin(a_hat @ h))) + h0
        expected = model.fc(0.3 * h + 0.7 * z)
        assert torch.allclose(model(x, edge_index), expected, atol=1e-5)


# ----- NodeFormer ----------------------------------------------------------------------------

def test_projection_matrix_is_the_official_draw():
    """Official code: torch.manual_seed(seed + block) before each block's randn, torch.qr, then
    manual_seed(seed + blocks + 1) for the Gaussian row norms."""
    m, d, seed = 10, 4, 1234
    blocks = []
    for b in range(3):  # 2 full blocks and 2 remaining rows
        torch.manual_seed(seed + b)
        q, _ = torch.linalg.qr(torch.randn(d, d))
        blocks.append(q.t() if b < 2 else q.t()[:2])
    torch.manual_seed(seed + 3)
    expected = torch.diag(torch.norm(torch.randn(m, d), dim=1)) @ torch.vstack(blocks)
    assert torch.allclose(create_projection_matrix(m, d, seed=seed), expected)


def _features(x, w, tau, is_query):
    """Positive random features of exp(q.k / (tau sqrt(d))), written out."""
    d, m = x.shape[-1], w.shape[0]
    xs = x / math.sqrt(tau) / d ** 0.25
    proj = xs @ w.T
    sq = (xs ** 2).sum(dim=-1, keepdim=True) / 2
    shift = proj.max(dim=-1, keepdim=True)[0] if is_query else proj.max()
    return (torch.exp(proj - sq - shift) + 1e-6) / math.sqrt(m)


def test_kernelized_softmax_equals_dense_reference():
    g = torch.Generator().manual_seed(0)
    n, d, m, tau = 20, 4, 16, 0.25
    q, k, v = (torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(3))
    w = create_projection_matrix(m, d, seed=7).double()
    edge_index = small_graph(n)
    out, weight = kernelized_softmax(q[None, :, None], k[None, :, None], v[None, :, None], w,
                                     edge_index, tau)
    a = _features(q, w, tau, True) @ _features(k, w, tau, False).T  # [N, N]
    expected = (a @ v) / a.sum(dim=1, keepdim=True)
    assert torch.allclose(out[0, :, 0], expected, atol=1e-10)
    start, end = edge_index
    edge_expected = a[end, start] / a.sum(dim=1)[end]
    assert torch.allclose(weight[0, :, 0], edge_expected, atol=1e-10)


def test_kernelized_softmax_approximates_exact_softmax():
    """With an isotropic Gaussian projection (an unbiased positive-random-feature draw) the
    kernel converges to exact softmax(q.k / (tau sqrt(d))). The official orthogonal draw is not
    isotropic (unsigned QR: a block's first row always has a negative first coordinate), so it
    converges elsewhere; we keep it, as the official code, and only check the feature map here."""
    g = torch.Generator().manual_seed(1)
    n, d, m, tau = 40, 4, 16384, 1.0
    q, k = (0.5 * torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(m, d, generator=g, dtype=torch.float64)
    out, _ = kernelized_softmax(q[None, :, None], k[None, :, None], v[None, :, None], w,
                                small_graph(n), tau)
    exact = torch.softmax(q @ k.T / (tau * math.sqrt(d)), dim=1) @ v
    assert (out[0, :, 0] - exact).abs().max() < 0.02


def test_relational_bias_adjacency_and_powers():
    n = 12
    edge_index = small_graph(n, 20)
    a = torch.zeros(n, n)
    a.index_put_((edge_index[1], edge_index[0]), torch.ones(edge_index.shape[1]),
                 accumulate=True)
    d_in, d_out = a.sum(dim=1), a.sum(dim=0)  # by target / by source
    expected = a / d_in.sqrt().unsqueeze(1) / d_out.sqrt().unsqueeze(0)
    got = normalized_adjacency(edge_index, n).to_dense()
    assert torch.allclose(got, expected, atol=1e-6)
    adjs = adjacency_powers(edge_index, n, 3)
    binary = (a.T > 0).float()
    for i, power in enumerate([binary, binary @ binary, (binary @ binary) @ (binary @ binary)]):
        dense = torch.zeros(n, n)
        dense[adjs[i][0], adjs[i][1]] = 1
        assert torch.equal(dense, (power > 0).float()), i


def test_nodeformer_edge_loss_and_auxiliary_loss():
    torch.manual_seed(0)
    n = 30
    x, edge_index = torch.randn(n, 5), small_graph(n)
    model = NodeFormer(5, 8, 3, num_layers=2, num_heads=2, use_gumbel=False, rb_order=1,
                       lamda=0.5)
    model.train()
    model(x, edge_index)
    losses = model._link_losses
    assert len(losses) == 2 and all(loss.item() < 0 for loss in losses)  # log of probabilities
    assert model.auxiliary_loss().item() == pytest.approx(-0.5 * sum(l.item() for l in losses) / 2)
    model.eval()
    model(x, edge_index)
    assert model.auxiliary_loss() is None  # evaluation adds nothing
    with pytest.raises(ValueError, match="rb_trans='tanh' is not allowed"):
        NodeFormer(5, 8, 3, rb_trans="tanh")


def test_relational_bias_term_of_a_layer_equals_dense_per_head_formula():
    from difformer.models.nodeformer import NodeFormerConv

    torch.manual_seed(0)
    n, h, heads = 15, 4, 2
    edge_index = small_graph(n, 25)
    z = torch.randn(1, n, h)
    with_rb = NodeFormerConv(h, h, heads, use_gumbel=False, rb_order=2).eval()
    with torch.no_grad():
        with_rb.b.copy_(torch.tensor([[0.3, -1.0], [2.0, 0.5]]))
    plain = NodeFormerConv(h, h, heads, use_gumbel=False, rb_order=0).eval()
    plain.load_state_dict({k: v for k, v in with_rb.state_dict().items() if k != "b"})
    adjs = adjacency_powers(edge_index, n, 2)
    mats = [normalized_adjacency(a, n) for a in adjs]
    with torch.no_grad():
        diff = with_rb(z, adjs, 0.25, mats)[0] - plain(z, adjs, 0.25)[0]
        value = with_rb.Wv(z).reshape(n, heads, h)
        bias = torch.zeros(n, heads, h)
        for i, adj in enumerate(adjs):
            dense = torch.zeros(n, n)
            dense.index_put_((adj[1], adj[0]), torch.ones(adj.shape[1]), accumulate=True)
            d_in, d_out = dense.sum(dim=1), dense.sum(dim=0)
            norm = dense / d_in.sqrt().unsqueeze(1) / d_out.sqrt().unsqueeze(0)
            for head in range(heads):
                bias[:, head] += torch.sigmoid(with_rb.b[i, head]) * (norm @ value[:, head])
        expected = bias.flatten(-2) @ with_rb.Wo.weight.T
    assert torch.allclose(diff[0], expected, atol=1e-5)


def official_projection_global(m, d, seed):
    """The official create_projection_matrix as written: it seeds the *global* RNG."""
    blocks, current = [], seed
    for _ in range(m // d):
        torch.manual_seed(current)
        q, _ = torch.linalg.qr(torch.randn((d, d)))
        blocks.append(q.t())
        current += 1
    if m - (m // d) * d:
        torch.manual_seed(current)
        q, _ = torch.linalg.qr(torch.randn((d, d)))
        blocks.append(q.t()[:m - (m // d) * d])
    current += 1
    torch.manual_seed(current)
    return torch.diag(torch.norm(torch.randn((m, d)), dim=1)) @ torch.vstack(blocks)


@pytest.mark.parametrize("m,d", [(30, 8), (32, 8), (10, 32)])
def test_official_rng_leaves_the_global_rng_where_the_official_code_does(m, d):
    from difformer.models.nodeformer import reseed_like_official

    expected = official_projection_global(m, d, 12345)
    after_official = torch.get_rng_state()
    torch.manual_seed(999)  # anywhere else
    assert torch.allclose(create_projection_matrix(m, d, seed=12345), expected)
    reseed_like_official(12345, m, d)
    assert torch.equal(torch.get_rng_state(), after_official)


def test_official_rng_freezes_the_gumbel_noise_and_the_default_does_not():
    torch.manual_seed(0)
    x, edge_index = torch.randn(12, 5), small_graph(12, 20)
    for official, same in ((True, True), (False, False)):
        model = NodeFormer(5, 8, 3, num_layers=1, num_heads=2, official_rng=official).train()
        a, b = model(x, edge_index), model(x, edge_index)
        assert torch.equal(a, b) is same


def test_sgformer_loads_official_names_strictly_and_our_older_checkpoints():
    torch.manual_seed(0)
    x, edge_index = torch.randn(10, 5), small_graph(10, 16)
    model = SGFormer(5, 8, 3, gnn_num_layers=2).eval()
    keys = list(model.state_dict())
    # the official layout: graph_conv.convs.{i}.W, as the official GraphConvLayer names it
    assert "graph_conv.convs.0.W.weight" in keys and "graph_conv.convs.1.W.bias" in keys
    official = {k: v.clone() for k, v in model.state_dict().items()}
    fresh = SGFormer(5, 8, 3, gnn_num_layers=2).eval()
    fresh.load_state_dict(official, strict=True)
    assert torch.equal(fresh(x, edge_index), model(x, edge_index))
    # our checkpoints before the rename still load, to the same outputs
    old = {k.replace(".W.", "."): v for k, v in official.items()}
    again = SGFormer(5, 8, 3, gnn_num_layers=2).eval()
    again.load_state_dict(old, strict=True)
    assert torch.equal(again(x, edge_index), model(x, edge_index))
    # without use_graph the official class still has graph_conv; our old files had none
    plain = SGFormer(5, 8, 3, use_graph=False).eval()
    assert any(k.startswith("graph_conv.") for k in plain.state_dict())
    old_plain = {k: v for k, v in plain.state_dict().items() if not k.startswith("graph_conv.")}
    other = SGFormer(5, 8, 3, use_graph=False).eval()
    other.load_state_dict(old_plain, strict=True)
    assert torch.equal(other(x), plain(x))
