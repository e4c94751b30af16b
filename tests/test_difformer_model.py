"""DIFFormer against an independent dense reference written from the official formulas.

The reference below builds every quantity densely in float64 (N x N kernels, a dense
normalised adjacency) straight from shared/reference/difformer.md §2, reading only the
state_dict; it calls none of the model's helpers.
"""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from difformer.models import DIFFormer, build_model


def random_graph(n, e, seed, weighted=False):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (e,), generator=g)
    dst = torch.randint(0, n, (e,), generator=g)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    # undirected, then one self-loop per node, as the data pipeline hands it to the model
    src, dst = torch.cat([src, dst, torch.arange(n)]), torch.cat([dst, src, torch.arange(n)])
    edge_index = torch.stack([src, dst])
    weight = torch.rand(edge_index.shape[1], generator=g) + 0.5 if weighted else None
    return edge_index, weight


def dense_gcn(edge_index, n, edge_weight):
    """A[t, s] = w * d_t^-1/2 d_s^-1/2, d = unweighted count of edges by target."""
    deg = [0.0] * n
    for t in edge_index[1].tolist():
        deg[t] += 1
    a = torch.zeros(n, n, dtype=torch.float64)
    for k, (s, t) in enumerate(edge_index.t().tolist()):
        w = 1.0 if edge_weight is None else float(edge_weight[k])
        a[t, s] += w / math.sqrt(deg[t] * deg[s])
    return a


def layer_norm(x, sd, key):
    return F.layer_norm(x, x.shape[-1:], sd[key + ".weight"], sd[key + ".bias"], eps=1e-5)


def linear(x, sd, key):
    return x @ sd[key + ".weight"].t() + sd[key + ".bias"]


def reference_forward(sd, x, edge_index, edge_weight, *, num_layers, num_heads, kernel, alpha,
                      use_bn, use_residual, use_weight, use_graph, graph_weight, use_source):
    sd = {k: v.double() for k, v in sd.items()}
    x = x.double()
    n = x.shape[0]
    z = linear(x, sd, "fcs.0")
    if use_bn:
        z = layer_norm(z, sd, "bns.0")
    z = torch.relu(z)
    z0 = z
    adj = dense_gcn(edge_index, n, edge_weight) if use_graph else None
    for i in range(num_layers):
        h = z.shape[1]
        q = linear(z, sd, f"convs.{i}.Wq").reshape(n, num_heads, h)
        k = linear(z, sd, f"convs.{i}.Wk").reshape(n, num_heads, h)
        v = linear(z, sd, f"convs.{i}.Wv").reshape(n, num_heads, h) if use_weight else None
        heads = []
        for hd in range(num_heads):
            vh = v[:, hd] if use_weight else z
            if kernel == "sigmoid":
                s = torch.sigmoid(q[:, hd] @ k[:, hd].t())
                att = (s / s.sum(dim=1, keepdim=True)) @ vh
            else:
                if kernel == "simple":  # one Frobenius norm over the whole [N, H, h] tensor
                    qn, kn = q[:, hd] / q.norm(), k[:, hd] / k.norm()
                else:  # per-node L2
                    qn = q[:, hd] / q[:, hd].norm(dim=1, keepdim=True)
                    kn = k[:, hd] / k[:, hd].norm(dim=1, keepdim=True)
                kern = 1.0 + qn @ kn.t()
                att = (kern @ vh) / kern.sum(dim=1, keepdim=True)
            if use_graph:
                g = adj @ vh
                att = (1 - graph_weight) * att + graph_weight * g if graph_weight > 0 else att + g
            heads.append(att)
        out = torch.stack(heads).mean(dim=0)
        if use_source:
            out = out + z0
        if use_residual:
            out = alpha * out + (1 - alpha) * z
        if use_bn:
            out = layer_norm(out, sd, f"bns.{i + 1}")
        z = out
    return linear(z, sd, "fcs.1")


BASE = dict(num_layers=3, num_heads=1, kernel="simple", alpha=0.5, use_bn=True,
            use_residual=True, use_weight=True, use_graph=True, graph_weight=-1.0,
            use_source=False)

CASES = [
    dict(),
    dict(kernel="sigmoid"),
    dict(num_heads=3),
    dict(kernel="sigmoid", num_heads=2),
    dict(graph_weight=0.7),
    dict(kernel="sigmoid", graph_weight=0.3),
    dict(use_weight=False),
    dict(kernel="sigmoid", use_weight=False),
    dict(use_weight=False, num_heads=2),  # V broadcast over heads, as the official einsums do
    dict(use_source=True),
    dict(kernel="sigmoid", use_source=True, graph_weight=0.5),
    dict(use_graph=False),
    dict(kernel="sigmoid", use_graph=False),
    dict(use_bn=False, use_residual=False),
    dict(alpha=0.2, num_layers=8),
    dict(kernel="simple_pernode"),
    dict(kernel="simple_pernode", num_heads=2, graph_weight=0.4),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items())
                         or "default")
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_dense_reference(case, weighted):
    opts = {**BASE, **case}
    torch.manual_seed(0)
    n, d, h, c = 37, 11, 8, 4
    model = DIFFormer(d, h, c, dropout=0.3, **opts).eval()
    x = torch.randn(n, d)
    edge_index, edge_weight = random_graph(n, 90, seed=1, weighted=weighted)
    out = model(x, edge_index, edge_weight)
    ref = reference_forward(model.state_dict(), x, edge_index, edge_weight, **opts)
    assert out.shape == (n, c)
    assert torch.allclose(out.double(), ref, atol=1e-5, rtol=0), (out.double() - ref).abs().max()


def test_simple_kernel_uses_global_frobenius_not_per_node():
    torch.manual_seed(0)
    n = 200
    x = torch.randn(n, 16)
    edge_index, _ = random_graph(n, 400, seed=2)
    official = DIFFormer(16, 32, 5, kernel="simple", num_layers=2).eval()
    pernode = DIFFormer(16, 32, 5, kernel="simple_pernode", num_layers=2).eval()
    pernode.load_state_dict(official.state_dict())
    diff = (official(x, edge_index) - pernode(x, edge_index)).abs().max()
    assert diff > 1e-2, f"per-node kernel should differ from the official one, diff={diff}"


def test_default_kernel_is_the_official_one():
    assert DIFFormer(4, 8, 2).kernel == "simple"


def official_layout(d, h, c, num_layers):
    """The released checkpoints' keys and shapes (docs/protocols.md §2.5), built by hand."""
    sd = {}
    for i in range(num_layers):
        for w in ("Wk", "Wq", "Wv"):
            sd[f"convs.{i}.{w}.weight"] = torch.randn(h, h)
            sd[f"convs.{i}.{w}.bias"] = torch.randn(h)
    sd["fcs.0.weight"], sd["fcs.0.bias"] = torch.randn(h, d), torch.randn(h)
    sd["fcs.1.weight"], sd["fcs.1.bias"] = torch.randn(c, h), torch.randn(c)
    for j in range(num_layers + 1):
        sd[f"bns.{j}.weight"], sd[f"bns.{j}.bias"] = torch.randn(h), torch.randn(h)
    return sd


@pytest.mark.parametrize("d,h,c,total", [(8, 64, 112, 45_808), (65, 128, 2, 158_338)],
                         ids=["ogbn-proteins", "pokec"])
def test_official_checkpoint_layout_loads_strict(d, h, c, total):
    sd = official_layout(d, h, c, num_layers=3)
    model = DIFFormer(d, h, c, num_layers=3, num_heads=1, kernel="simple", alpha=0.5,
                      dropout=0.0, use_bn=True, use_residual=True, use_weight=True,
                      use_graph=True)
    model.load_state_dict(sd, strict=True)
    assert list(model.state_dict().keys()) == list(sd.keys())  # same registration order
    assert sum(p.numel() for p in model.parameters()) == total
    # loaded, it computes the reference forward of those weights
    x = torch.randn(20, d)
    edge_index, _ = random_graph(20, 40, seed=3)
    ref = reference_forward(sd, x, edge_index, None, **{**BASE, "num_layers": 3})
    assert torch.allclose(model.eval()(x, edge_index).double(), ref, atol=1e-4)


def test_without_use_weight_there_is_no_wv_but_layernorms_stay():
    keys = DIFFormer(5, 8, 2, num_layers=2, use_weight=False, use_bn=False).state_dict().keys()
    assert not any(".Wv." in k for k in keys)
    assert {f"bns.{j}.weight" for j in range(3)} <= set(keys)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    for kernel in ("simple", "sigmoid", "simple_pernode"):
        model = DIFFormer(6, 8, 3, num_layers=2, num_heads=2, kernel=kernel, use_weight=True,
                          use_graph=True, use_bn=True, dropout=0.1)
        x = torch.randn(15, 6)
        edge_index, _ = random_graph(15, 30, seed=4)
        model(x, edge_index).logsumexp(dim=1).sum().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (kernel, name)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    model = DIFFormer(6, 8, 3, dropout=0.5)
    x = torch.randn(10, 6)
    edge_index, _ = random_graph(10, 20, seed=5)
    model.eval()
    assert torch.equal(model(x, edge_index), model(x, edge_index))
    model.train()
    assert not torch.equal(model(x, edge_index), model(x, edge_index))


@pytest.mark.parametrize("kernel", ["simple", "sigmoid", "simple_pernode"])
def test_get_attentions(kernel):
    torch.manual_seed(0)
    n, h = 12, 8
    model = DIFFormer(5, h, 3, num_layers=2, num_heads=2, kernel=kernel, use_graph=False).eval()
    x = torch.randn(n, 5)
    att = model.get_attentions(x)
    assert att.shape == (2, n, n, 2)
    full = model.get_attentions(x, full_kernel=True)
    assert torch.allclose(full.sum(dim=2), torch.ones(2, n, 2), atol=1e-5)
    # layer 0: attention @ V, head-averaged, is the layer's output
    z = torch.relu(model.bns[0](model.fcs[0](x)))
    conv = model.convs[0]
    v = conv.Wv(z).reshape(n, 2, h)
    via_matrix = torch.einsum("nlh,lhd->nhd", full[0], v).mean(dim=1)
    assert torch.allclose(via_matrix, conv(z), atol=1e-5)
    # the official export: q.k / denominator for linear kernels (the constant part left out)
    if kernel == "sigmoid":
        assert torch.allclose(att, full)
    else:
        q, k = conv.Wq(z).reshape(n, 2, h).double(), conv.Wk(z).reshape(n, 2, h).double()
        if kernel == "simple":
            q, k = q / q.norm(), k / k.norm()
        else:
            q, k = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
        qk = torch.einsum("nhm,lhm->nlh", q, k)
        denom = n + torch.einsum("nhm,hm->nh", q, k.sum(0)).unsqueeze(1)
        assert torch.allclose(att[0].double(), qk / denom, atol=1e-6)


def test_get_attentions_with_graph_needs_edges():
    model = DIFFormer(5, 8, 3, use_graph=True).eval()
    with pytest.raises(ValueError, match="edge_index"):
        model.get_attentions(torch.randn(4, 5))
    ei, _ = random_graph(4, 4, seed=0)
    assert model.get_attentions(torch.randn(4, 5), ei).shape == (2, 4, 4, 1)


@pytest.mark.parametrize("kwargs,match", [
    (dict(kernel="softmax"), "unknown kernel 'softmax'; allowed: simple, sigmoid, simple_pernode"),
    (dict(num_layers=0), "num_layers must be >= 1, got 0"),
    (dict(alpha=1.5), r"alpha must be in \[0, 1\], got 1.5"),
    (dict(dropout=-0.1), r"dropout must be in \[0, 1\], got -0.1"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DIFFormer(4, 8, 2, **kwargs)


def test_registry():
    model = build_model("difformer", 7, 3, hidden_channels=16, num_layers=1)
    assert isinstance(model, DIFFormer) and model.fcs[0].in_features == 7
    with pytest.raises(ValueError, match="unknown model .nope.; allowed: appnp, dcrnn, deepsets, dense_gat"):
        build_model("nope", 1, 1)


@pytest.mark.parametrize("heads,use_weight", [(1, True), (2, True), (2, False)])
def test_chunked_sigmoid_attention_equals_dense(heads, use_weight):
    torch.manual_seed(0)
    n = 101
    dense = DIFFormer(6, 8, 3, num_layers=2, num_heads=heads, kernel="sigmoid", dropout=0.0,
                      use_weight=use_weight)
    chunked = DIFFormer(6, 8, 3, num_layers=2, num_heads=heads, kernel="sigmoid", dropout=0.0,
                        use_weight=use_weight, attention_chunk=16)
    chunked.load_state_dict(dense.state_dict())
    x = torch.randn(n, 6)
    edge_index, _ = random_graph(n, 200, seed=6)
    out_d, out_c = dense(x, edge_index), chunked(x, edge_index)
    assert torch.allclose(out_d, out_c, atol=1e-5)
    out_d.square().sum().backward()
    out_c.square().sum().backward()
    for (name, pd), pc in zip(dense.named_parameters(), chunked.parameters()):
        assert torch.allclose(pd.grad, pc.grad, atol=1e-5), name
    with torch.no_grad():
        assert torch.allclose(chunked.eval()(x, edge_index), dense.eval()(x, edge_index), atol=1e-5)


def test_encode_returns_the_embeddings_before_the_head():
    import warnings

    torch.manual_seed(0)
    model = DIFFormer(in_channels=5, hidden_channels=8, out_channels=3, num_layers=2,
                      use_weight=True).eval()
    x = torch.randn(6, 5)
    ring = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 0]])
    loops = torch.arange(6).repeat(2, 1)
    edge_index = torch.cat([ring, ring.flip(0), loops], dim=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every node has its self-loop: no warning
        z = model.encode(x, edge_index)
    assert z.shape == (6, 8)
    assert torch.equal(model.fcs[-1](z), model(x, edge_index))
    assert torch.equal(model(x, edge_index, return_embeddings=True), z)
    with pytest.warns(UserWarning, match="6 of 6 nodes have no self-loop"):
        model.encode(x, torch.cat([ring, ring.flip(0)], dim=1))
