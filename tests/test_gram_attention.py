"""DIFFormer-s attention from the Gram matrix (models/attention/gram.py) against the projected
form (Q, K for every node, as the official code): outputs and every gradient equal in float64
to rounding, within 1e-6 in float32 on the Cora cell's shape, and the projected form wherever
the Gram form does not apply."""
import pytest
import torch
import torch.nn.functional as F

from difformer.models import DIFFormer, DIFFormerConv
from difformer.models.attention.gram import gram_applies, gram_simple_attention


def conv_pair(d, heads, use_weight, use_graph=False, dtype=torch.float64):
    torch.manual_seed(0)
    gram = DIFFormerConv(d, d, num_heads=heads, use_weight=use_weight, use_graph=use_graph,
                         gram_attention=True).to(dtype)
    projected = DIFFormerConv(d, d, num_heads=heads, use_weight=use_weight,
                              use_graph=use_graph, gram_attention=False).to(dtype)
    projected.load_state_dict(gram.state_dict())
    return gram, projected


def grads(conv, x):
    x = x.clone().requires_grad_(True)
    conv.zero_grad()
    out = conv(x)
    (out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out.detach(), x.grad, {k: p.grad.clone() for k, p in conv.named_parameters()}


@pytest.mark.parametrize("heads,use_weight", [(1, False), (3, False), (1, True), (2, True)])
def test_outputs_and_gradients_equal_the_projected_form_in_float64(heads, use_weight):
    gram, projected = conv_pair(12, heads, use_weight)
    # columns with a large common offset: the cross terms of the norms must not cancel badly
    x = torch.randn(257, 12, dtype=torch.float64) * 1.5 + torch.linspace(-3, 3, 12,
                                                                        dtype=torch.float64)
    out_g, dx_g, dw_g = grads(gram, x)
    out_p, dx_p, dw_p = grads(projected, x)
    torch.testing.assert_close(out_g, out_p, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx_g, dx_p, rtol=1e-10, atol=1e-12)
    assert dw_g.keys() == dw_p.keys()
    for name in dw_p:
        torch.testing.assert_close(dw_g[name], dw_p[name], rtol=1e-10, atol=1e-12, msg=name)


def test_the_gram_products_backward_passes_gradcheck():
    torch.manual_seed(1)
    conv = DIFFormerConv(5, 5, num_heads=2, use_weight=True, use_graph=False).double()
    x = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda inp: gram_simple_attention(inp, conv.Wq, conv.Wk, conv.Wv, 2), (x,))


def test_the_cora_cell_shape_agrees_within_1e_6_in_float32():
    """8 layers x 64 on a 2708-node bag-of-words graph, one train step with dropout: outputs
    and every gradient of the whole model within 1e-6 of the official order of products."""
    g = torch.Generator().manual_seed(0)
    n, f = 2708, 1433
    x = (torch.rand(n, f, generator=g) < 0.013).float()
    x = x / x.sum(1, keepdim=True).clamp(min=1)
    ei = torch.randint(0, n, (2, 5000), generator=g)
    ei = torch.cat([ei, ei.flip(0), torch.arange(n).repeat(2, 1)], 1)
    y = torch.randint(0, 7, (n,), generator=g)
    models = []
    for gram in (True, False):
        torch.manual_seed(0)
        models.append(DIFFormer(f, 64, 7, num_layers=8, dropout=0.2, use_weight=False,
                                gram_attention=gram))
    results = []
    for model in models:
        torch.manual_seed(5)  # the same dropout masks for both
        out = model(x, ei)
        F.cross_entropy(out, y).backward()
        results.append((out.detach(), {k: p.grad for k, p in model.named_parameters()}))
    (out_g, grad_g), (out_p, grad_p) = results
    torch.testing.assert_close(out_g, out_p, rtol=0, atol=1e-6)
    for name in grad_p:
        torch.testing.assert_close(grad_g[name], grad_p[name], rtol=0, atol=1e-6, msg=name)
    # the Gram form did run: no N x h query was projected
    assert models[0].convs[0].gram_attention and not models[1].convs[0].gram_attention


@pytest.mark.parametrize("kernel", ["sigmoid", "simple_pernode"])
def test_other_kernels_keep_the_projected_form(kernel):
    torch.manual_seed(0)
    x = torch.randn(40, 8)
    assert not gram_applies(kernel, x)
    a = DIFFormerConv(8, 8, kernel=kernel, use_graph=False, gram_attention=True)
    b = DIFFormerConv(8, 8, kernel=kernel, use_graph=False, gram_attention=False)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))


def test_half_precision_autocast_keeps_the_projected_form():
    torch.manual_seed(0)
    x = torch.randn(40, 8)
    gram, projected = conv_pair(8, 2, True, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not gram_applies("simple", x)
        assert torch.equal(gram(x), projected(x))
    assert gram_applies("simple", x)


def test_graph_mini_batches_keep_the_projected_form():
    torch.manual_seed(0)
    x = torch.randn(30, 8)
    batch = torch.tensor([0] * 12 + [1] * 18)
    gram, projected = conv_pair(8, 1, False, dtype=torch.float32)
    assert torch.equal(gram(x, batch=batch, num_graphs=2), projected(x, batch=batch,
                                                                      num_graphs=2))


@pytest.mark.parametrize("use_graph", [False, True])
def test_a_layer_that_changes_the_width_agrees_too(use_graph):
    """DIFFormerConv(12 -> 8) with Wv: the Gram form reads the 12-wide input, V is 8 wide."""
    torch.manual_seed(0)
    gram = DIFFormerConv(12, 8, num_heads=2, use_weight=True, use_graph=use_graph).double()
    projected = DIFFormerConv(12, 8, num_heads=2, use_weight=True, use_graph=use_graph,
                              gram_attention=False).double()
    projected.load_state_dict(gram.state_dict())
    x = torch.randn(50, 12, dtype=torch.float64)
    adj = None
    if use_graph:
        from difformer.models.difformer import gcn_normalized_adjacency

        adj = gcn_normalized_adjacency(torch.arange(50).repeat(2, 1), 50).double()
    out = gram(x, adj)
    assert out.shape == (50, 8)
    torch.testing.assert_close(out, projected(x, adj), rtol=1e-12, atol=1e-12)
