"""Graph-level models: batch invariance of every global attention, encoders, GatedGCN against a
dense reference, the Laplacian sign flip, and the per-graph DIFFormer kernels."""
import pytest
import torch

from difformer.models import DIFFormer, build_model
from difformer.models.attention.batched import _groups, batched_linear_attention

SIZES = [5, 9, 3, 60, 7, 1, 12]


def ring(n: int, offset: int = 0) -> torch.Tensor:
    """A cycle with self-loops (both directions), nodes offset..offset+n-1."""
    i = torch.arange(n)
    edges = torch.stack([torch.cat([i, (i + 1) % n, i]), torch.cat([(i + 1) % n, i, i])])
    return edges + offset


def graphs(dim: int = 8, seed: int = 0, categorical: int | None = None):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in SIZES:
        x = torch.randint(0, categorical, (n, 1), generator=g) if categorical else \
            torch.randn(n, dim, generator=g)
        edge_index = ring(n)
        out.append((x, edge_index, torch.randn(edge_index.shape[1], 4, generator=g)))
    return out


def batched(items, order):
    xs, edges, attrs, batch, offset = [], [], [], [], 0
    for slot, g in enumerate(order):
        x, e, a = items[g]
        xs.append(x), edges.append(e + offset), attrs.append(a)
        batch.append(torch.full((x.shape[0],), slot))
        offset += x.shape[0]
    return torch.cat(xs), torch.cat(edges, 1), torch.cat(attrs), torch.cat(batch)


ORDERS = [[3, 0, 5, 6, 4, 2, 1], [1, 2, 4, 6, 5, 0, 3]]


def assert_node_outputs_batch_invariant(model, dim=8, **extra):
    """Each graph's node outputs alone (batch=None) equal its outputs inside shuffled batches."""
    items = graphs(dim)
    alone = [model(x, e, **extra) for x, e, _ in items]
    for order in ORDERS:
        x, e, _, batch = batched(items, order)
        parts = model(x, e, batch=batch, **extra).split([SIZES[g] for g in order])
        for slot, g in enumerate(order):
            torch.testing.assert_close(parts[slot], alone[g], atol=1e-5, rtol=1e-5)


NODE_MODELS = {
    "difformer_s": lambda: DIFFormer(8, 16, 3, num_layers=2, num_heads=2, use_weight=True),
    "difformer_a": lambda: DIFFormer(8, 16, 3, num_layers=2, num_heads=2, kernel="sigmoid"),
    "difformer_a_chunked": lambda: DIFFormer(8, 16, 3, num_layers=2, kernel="sigmoid",
                                             attention_chunk=16),
    "difformer_s_pernode": lambda: DIFFormer(8, 16, 3, num_layers=2, kernel="simple_pernode"),
    "difformer_s_nograph": lambda: DIFFormer(8, 16, 3, use_graph=False, use_weight=False),
    "sgformer": lambda: build_model("sgformer", 8, 3, hidden_channels=16),
    "sgformer_pyg": lambda: build_model("sgformer_pyg", 8, 3, hidden_channels=16),
    "polynormer": lambda: build_model("polynormer", 8, 3, hidden_channels=16,
                                      local_epochs=0),
}


@pytest.mark.parametrize("name", sorted(NODE_MODELS))
def test_global_attention_is_batch_invariant(name):
    torch.manual_seed(0)
    assert_node_outputs_batch_invariant(NODE_MODELS[name]().eval())


def test_pyg_attentions_without_our_fix_depend_on_the_batch():
    """PyG's SGFormer masks only V: padded keys enter the denominator and the padded size N
    replaces each graph's own -- the bug our wrappers fix (PyG PR #10409's discussion)."""
    from torch_geometric.nn.models import SGFormer

    torch.manual_seed(0)
    model = SGFormer(8, 16, 3, trans_num_layers=1, gnn_num_layers=1).eval()
    items = graphs()
    x, e, _ = items[0]
    alone = model(x, e, torch.zeros(x.shape[0], dtype=torch.long))
    bx, be, _, batch = batched(items, ORDERS[0])
    inside = model(bx, be, batch).split([SIZES[g] for g in ORDERS[0]])[ORDERS[0].index(0)]
    assert (inside - alone).abs().max() > 1e-3


def test_one_graph_through_the_batch_path_equals_the_official_computation():
    torch.manual_seed(0)
    for kernel in ("simple", "sigmoid", "simple_pernode"):
        model = DIFFormer(8, 16, 3, num_layers=3, kernel=kernel, use_weight=True).eval()
        x, e, _ = graphs()[3]
        official = model(x, e)
        torch.testing.assert_close(model(x, e, batch=torch.zeros(60, dtype=torch.long)),
                                   official, atol=1e-6, rtol=1e-5)


def test_per_graph_simple_kernel_equals_a_dense_reference():
    """(sum_j v_j + s q_i K^T V)/(s q_i . sum_j k_j + n_g) per graph, s = 1/(|Q_g| |K_g|),
    against the explicit pairwise sum (1 + s q_i.k_j) v_j / sum_j (1 + s q_i.k_j)."""
    torch.manual_seed(0)
    sizes = [4, 30, 1, 9]
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    q, k, v = (torch.randn(sum(sizes), 2, 5) for _ in range(3))
    from difformer.models.attention.batched import per_graph_frobenius_scale

    scale = per_graph_frobenius_scale(q, k, batch, 4)
    out = batched_linear_attention(q, k, v, batch, 4, scale, pad_budget=1)  # small groups too
    expected, start = [], 0
    for g, n in enumerate(sizes):
        qg, kg, vg = q[start:start + n], k[start:start + n], v[start:start + n]
        s = 1 / (qg.norm() * kg.norm())
        w = 1 + s * torch.einsum("ihm,jhm->ijh", qg, kg)
        expected.append(torch.einsum("ijh,jhd->ihd", w, vg) / w.sum(1).unsqueeze(-1))
        start += n
    torch.testing.assert_close(out, torch.cat(expected), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(batched_linear_attention(q, k, v, batch, 4, scale), out,
                               atol=1e-6, rtol=1e-5)


def test_sigmoid_attention_on_graph_batches_survives_rows_whose_scores_all_underflow():
    """Scores near -200 for every key of some rows: float32 sigmoids are 0 there and the
    official quotient is 0/0; the batch path gives the float64 official weights, finite
    values and gradients (the cause of DIFFormer-a's NaN at width 128 on ENZYMES)."""
    from difformer.models.attention.batched import batched_sigmoid_attention
    from difformer.models.attention.kernels import sigmoid_rows

    torch.manual_seed(0)
    sizes = [2, 5, 1, 7]
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    q = torch.randn(15, 2, 4)
    k = torch.randn(15, 2, 4)
    q[:7] = q[:7].sign() * 10.0  # first two graphs: every q.k is +-400 or so
    k[:7] = -q[:7] * 0.5 + 0.01 * torch.randn(7, 2, 4)
    v = torch.randn(15, 2, 3)
    assert torch.isnan(sigmoid_rows(q[:2], k[:2], v[:2])).any()  # the official form fails
    expected, start = [], 0
    for n in sizes:
        rows = slice(start, start + n)
        expected.append(sigmoid_rows(q[rows].double(), k[rows].double(), v[rows].double()))
        start += n
    expected = torch.cat(expected).float()
    assert torch.isfinite(expected).all()
    for alone in (False, True):  # padded groups, and each graph alone (max_entries=1)
        qg = q.clone().requires_grad_()
        out = batched_sigmoid_attention(qg, k, v, batch, 4, max_entries=1 if alone else 1 << 22)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        out.square().sum().backward()
        assert torch.isfinite(qg.grad).all()


def test_graph_difformer_appends_each_nodes_mean_incoming_edge_encoding():
    """Against a loop over nodes: the input DIFFormer receives is [atom embedding, mean of the
    node's incoming bond encodings (0 without)]; edges change the output; without edge_attr one
    line; edge_features=False is the model without an edge encoder."""
    from difformer.models.graph_level import GraphDIFFormer

    torch.manual_seed(0)
    kw = dict(node_input="categorical", edge_input="categorical", edge_channels=3,
              num_layers=2, kernel="simple_pernode")
    model = GraphDIFFormer(10, 8, 2, edge_features=True, **kw).eval()
    x = torch.randint(0, 10, (5, 1))
    edge_index = torch.tensor([[0, 1, 2, 3, 0], [1, 0, 1, 1, 3]])  # node 2 and 4: no in-edge
    edge_attr = torch.tensor([[0], [2], [1], [1], [2]])
    rows = []
    for i in range(5):
        into = [e for e in range(5) if int(edge_index[1, e]) == i]
        enc = model.edge_encoder.encoder.weight[edge_attr[into].view(-1)]
        rows.append(enc.mean(0) if into else torch.zeros(8))
    h = torch.cat([model.encoder(x), torch.stack(rows)], dim=1)
    from torch_geometric.utils import add_self_loops

    looped = add_self_loops(edge_index, num_nodes=5)[0]
    expected = model.difformer(h, looped, batch=torch.zeros(5, dtype=torch.long)).mean(0)
    out = model(x, edge_index, edge_attr=edge_attr)
    torch.testing.assert_close(out[0], expected, atol=1e-6, rtol=1e-5)
    assert (model(x, edge_index, edge_attr=(edge_attr + 1) % 3) - out).abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"^this model reads edge features \(edge_input="
                       r"categorical\): pass edge_index and edge_attr, or build it with "
                       r"edge_features=False$"):
        model(x, edge_index)
    plain = GraphDIFFormer(10, 8, 2, edge_features=False, **kw)
    assert plain.edge_encoder is None and not any("edge" in k for k in plain.state_dict())
    assert plain(x, edge_index).shape == (1, 2)


def test_groups_pad_only_within_budget_and_leave_a_large_graph_alone():
    def cost(count, widest, nodes):
        return count * widest

    sizes = [3, 4, 500, 2, 2]
    groups = _groups(sizes, cost, lambda nodes: max(16, 2 * nodes))
    assert groups == [(0, 2), (2, 4), (4, 5)]   # the 500-node graph never widens [3, 4]
    for a, b in groups:                        # padded rows <= max(floor, 2 x real rows)
        assert (b - a) * max(sizes[a:b]) <= max(16, 2 * sum(sizes[a:b]))
    assert _groups([], cost, lambda nodes: 8) == []


def graph_model(name, categorical=False, **kw):
    inputs = dict(node_input="categorical", edge_input="dense", edge_channels=4) \
        if categorical else dict(node_input="dense", edge_input="dense", edge_channels=4)
    return build_model(name, 10 if categorical else 8, 2, **inputs, **kw)


GRAPH_MODELS = {
    "difformer_s_graph": dict(name="difformer_graph", hidden_channels=16, num_layers=2,
                              edge_features=True),
    "difformer_a_graph": dict(name="difformer_graph", hidden_channels=16, num_layers=2,
                              kernel="sigmoid", edge_features=True),
    "gated_gt": dict(name="gated_gt", hidden_channels=16, num_layers=2, lap_pe=3),
    "gps_gine": dict(name="gps", hidden_channels=16, num_layers=2, heads=2, pe="rwse",
                     pe_dim=4),
    "gps_gatedgcn": dict(name="gps", hidden_channels=16, num_layers=2, heads=2,
                         local="gatedgcn", pe="lap", pe_dim=3),
    "gin_vn": dict(name="mol_gnn", hidden_channels=16, num_layers=3, virtual_node=True),
    "gcn": dict(name="mol_gnn", hidden_channels=16, num_layers=3, conv="gcn"),
    "deepsets": dict(name="deepsets", hidden_channels=16, num_layers=2),
}


@pytest.mark.parametrize("key", sorted(GRAPH_MODELS))
def test_graph_level_predictions_are_batch_invariant(key):
    """Each graph's prediction alone equals its row in shuffled batches (eval mode)."""
    spec = dict(GRAPH_MODELS[key])
    torch.manual_seed(0)
    model = graph_model(spec.pop("name"), categorical=key.startswith("difformer"), **spec).eval()
    items = graphs(categorical=10 if key.startswith("difformer") else None)
    pe_names = list(model.positional_encodings)

    def pe(n, seed):
        g = torch.Generator().manual_seed(seed)
        return {f"{p}_pe": torch.randn(n, model.positional_encodings[p], generator=g)
                for p in pe_names}

    pes = [pe(x.shape[0], i) for i, (x, _, _) in enumerate(items)]
    alone = torch.cat([model(x, e, edge_attr=a, **pes[i]) for i, (x, e, a) in enumerate(items)])
    for order in ORDERS:
        x, e, a, batch = batched(items, order)
        extra = {k: torch.cat([pes[g][k] for g in order]) for k in pes[0]}
        out = model(x, e, batch=batch, edge_attr=a, **extra)
        torch.testing.assert_close(out, alone[order], atol=1e-5, rtol=1e-5)


def test_node_encoders_match_ogb_and_embeddings():
    from ogb.graphproppred.mol_encoder import AtomEncoder

    from difformer.models.graph_inputs import EdgeEncoder, NodeEncoder

    torch.manual_seed(0)
    atoms = NodeEncoder("ogb_atom", 9, 8)
    x = torch.tensor([[5, 0, 4, 5, 3, 0, 2, 0, 0], [7, 1, 2, 5, 0, 0, 1, 1, 1]])
    expected = sum(atoms.encoder.atom_embedding_list[i](x[:, i]) for i in range(9))
    assert isinstance(atoms.encoder, AtomEncoder)
    torch.testing.assert_close(atoms(x), expected)
    table = NodeEncoder("categorical", 28, 8)
    torch.testing.assert_close(table(torch.tensor([[3], [27]])), table.encoder.weight[[3, 27]])
    constant = EdgeEncoder(None, 0, 8)
    assert constant(None, 5).shape == (5, 8) and constant.constant.requires_grad
    with pytest.raises(ValueError, match="node_input='onehot' is not allowed"):
        NodeEncoder("onehot", 3, 8)


def test_gated_gcn_layer_equals_a_loop_reference():
    from difformer.models.graph_transformers import GatedGCNLayer

    torch.manual_seed(0)
    layer = GatedGCNLayer(6)
    h, edge_index = torch.randn(5, 6), torch.tensor([[0, 1, 2, 3, 4, 0], [1, 2, 3, 4, 0, 2]])
    e = torch.randn(6, 6)
    h_out, e_out = layer(h, edge_index, e)
    for i in range(5):
        num, den = torch.zeros(6), torch.zeros(6)
        for k, (j, t) in enumerate(edge_index.t().tolist()):
            if t != i:
                continue
            e_hat = layer.D(h[i]) + layer.E(h[j]) + layer.C(e[k])
            torch.testing.assert_close(e_out[k], e_hat)
            gate = torch.sigmoid(e_hat)
            num, den = num + gate * layer.B(h[j]), den + gate
        torch.testing.assert_close(h_out[i], layer.A(h[i]) + num / (den + 1e-6))


def test_laplacian_signs_flip_per_batch_in_training_only():
    from difformer.models.graph_transformers import flip_signs

    pe = torch.randn(7, 4)
    assert torch.equal(flip_signs(pe, training=False), pe)
    seen = set()
    for _ in range(40):
        flipped = flip_signs(pe, training=True)
        sign = flipped / pe
        assert torch.allclose(sign, sign[:1].expand_as(sign))        # one sign per column
        assert set(sign[0].tolist()) <= {-1.0, 1.0}
        seen.add(tuple(sign[0].tolist()))
    assert len(seen) > 1


def test_gated_gt_reads_its_laplacian_encoding_and_flips_it_only_in_training():
    torch.manual_seed(0)
    model = graph_model("gated_gt", hidden_channels=16, num_layers=2, lap_pe=3, dropout=0.0)
    x, e, a = graphs()[3]
    pe = torch.randn(x.shape[0], 3)
    model.eval()
    assert torch.equal(model(x, e, edge_attr=a, lap_pe=pe), model(x, e, edge_attr=a, lap_pe=pe))
    assert not torch.allclose(model(x, e, edge_attr=a, lap_pe=pe),
                              model(x, e, edge_attr=a, lap_pe=-pe))
    with pytest.raises(ValueError, match="needs lap_pe="):
        model(x, e, edge_attr=a)


def test_every_graph_level_model_can_read_positional_encodings():
    """DIFFormer appends the encoding to each node's input (its own input layer learns it);
    OGB's GNNs add its projection to the node embedding, as GraphGPS does."""
    from difformer.models.graph_level import GraphDIFFormer, MolGNN

    torch.manual_seed(0)
    x, pe = torch.randn(5, 3), torch.rand(5, 4)
    edges = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    model = GraphDIFFormer(3, 8, 2, num_layers=1, pe="rwse", pe_dim=4).eval()
    assert model.positional_encodings == {"rwse": 4}
    plain = GraphDIFFormer(7, 8, 2, num_layers=1).eval()
    plain.load_state_dict(model.state_dict())
    assert torch.allclose(model(x, edges, rwse_pe=pe), plain(torch.cat([x, pe], 1), edges),
                          atol=1e-6)
    gin = MolGNN(3, 8, 2, num_layers=2, pe="lap", pe_dim=4).eval()
    assert gin.positional_encodings == {"lap": 4}
    with torch.no_grad():
        gin.pe_encoder.weight.zero_()
        gin.pe_encoder.bias.zero_()
    bare = MolGNN(3, 8, 2, num_layers=2).eval()
    bare.load_state_dict({k: v for k, v in gin.state_dict().items()
                          if not k.startswith("pe_encoder")})
    assert torch.allclose(gin(x, edges, lap_pe=pe), bare(x, edges), atol=1e-6)
    with pytest.raises(ValueError, match="pe=rwse needs rwse_pe="):
        model(x, edges)
    with pytest.raises(ValueError, match="pe='spd' is not allowed; use lap, rwse or none"):
        MolGNN(3, 8, 2, pe="spd")


def test_deepsets_is_a_sum_over_each_graphs_nodes_and_never_reads_the_edges():
    """Deep Sets, the structure-agnostic floor: rho(sum over a graph's nodes of phi(x)),
    computed here node by node with the layers' own weights."""
    from difformer.models.deepsets import DeepSets

    torch.manual_seed(0)
    model = DeepSets(3, 8, 2, num_layers=2).eval()
    x, batch = torch.randn(7, 3), torch.tensor([0, 0, 0, 1, 1, 2, 2])
    edges = torch.tensor([[0, 1, 3, 5], [1, 2, 4, 6]])

    def phi(v):
        v = model.node_encoder.encoder.weight @ v + model.node_encoder.encoder.bias
        for layer in model.phi:
            v = torch.relu(layer.weight @ v + layer.bias)
        return v

    want = []
    for g in range(3):
        total = sum(phi(x[i]) for i in range(7) if batch[i] == g)
        hidden = torch.relu(model.rho.weight @ total + model.rho.bias)
        want.append(model.head.weight @ hidden + model.head.bias)
    out = model(x, edges, batch=batch)
    torch.testing.assert_close(out, torch.stack(want), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(x, edges[:, :1], batch=batch), out)  # edges ignored
    assert model.requires_graph is False
