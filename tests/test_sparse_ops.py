"""The cached adjacency, its prebuilt transpose and CSR input features (models/sparse_ops.py):
the same outputs and gradients as the official computation (dense input, adjacency rebuilt in
every forward, transposed by autograd in every backward), built once, and never stale."""
import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

import difformer.models.difformer as difformer_module
from difformer.models import DIFFormer
from difformer.models.sparse_ops import OperandCache, SparseOperand, sparse_product, wants_sparse

OFFICIAL = dict(sparse_input=False, cache_adjacency=False, gram_attention=False)


def bag_of_words(n=600, f=400, density=0.02, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, f, generator=g) < density).float()
    return x / x.sum(1, keepdim=True).clamp(min=1)  # row-normalised, as Planetoid's


def graph(n=600, e=2400, seed=1):
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, e), generator=g)
    return torch.cat([ei, ei.flip(0), torch.arange(n).repeat(2, 1)], 1)


def pair(kernel="simple", dropout=0.0, **kwargs):
    torch.manual_seed(0)
    official = DIFFormer(400, 32, 5, num_layers=2, num_heads=2, kernel=kernel, dropout=dropout,
                         **OFFICIAL)
    ours = DIFFormer(400, 32, 5, num_layers=2, num_heads=2, kernel=kernel, dropout=dropout,
                     **kwargs)
    ours.load_state_dict(official.state_dict())
    return official, ours


def train_step(model, x, ei, y, seed=3):
    torch.manual_seed(seed)  # the same dropout stream for both
    model.zero_grad()
    out = model(x, ei)
    F.cross_entropy(out, y).backward()
    return out.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("kernel", ["simple", "sigmoid", "simple_pernode"])
def test_outputs_and_gradients_equal_the_official_computation(kernel):
    x, ei = bag_of_words(), graph()
    y = torch.randint(0, 5, (600,), generator=torch.Generator().manual_seed(2))
    official, ours = pair(kernel, dropout=0.3)
    for step in range(3):  # the second and third steps read the cached operands
        out_a, grads_a = train_step(official, x, ei, y, seed=step)
        out_b, grads_b = train_step(ours, x, ei, y, seed=step)
        torch.testing.assert_close(out_b, out_a, rtol=0, atol=1e-6)
        for name in grads_a:
            torch.testing.assert_close(grads_b[name], grads_a[name], rtol=0, atol=1e-6,
                                       msg=name)
    assert ours._input_cache._value is not None  # the features were read as CSR


def test_cached_adjacency_alone_is_bit_identical():
    x, ei = torch.randn(600, 400), graph()
    y = torch.randint(0, 5, (600,), generator=torch.Generator().manual_seed(2))
    official, ours = pair(sparse_input=False, gram_attention=False)
    for step in range(2):
        out_a, grads_a = train_step(official, x, ei, y, seed=step)
        out_b, grads_b = train_step(ours, x, ei, y, seed=step)
        assert torch.equal(out_a, out_b)
        assert all(torch.equal(grads_a[k], grads_b[k]) for k in grads_a)


def test_the_adjacency_and_transpose_are_built_once_per_edge_index(monkeypatch):
    builds, transposes = [], []
    real = difformer_module.gcn_normalized_adjacency
    monkeypatch.setattr(difformer_module, "gcn_normalized_adjacency",
                        lambda *a, **k: builds.append(1) or real(*a, **k))
    real_t = SparseOperand.transpose.fget

    def counted(self):
        transposes.append(self._transpose is None)  # True: this access converts
        return real_t(self)

    monkeypatch.setattr(SparseOperand, "transpose", property(counted))
    x, ei = bag_of_words(), graph()
    y = torch.randint(0, 5, (600,))
    _, ours = pair()
    for step in range(4):
        train_step(ours, x, ei, y, seed=step)
    with torch.no_grad():
        ours.eval()(x, ei)
    assert len(builds) == 1
    # read in the backward of both layers (adjacency) and of the input layer (features) in
    # each of the 4 steps, converted once each: 2 conversions in all
    assert len(transposes) == 4 * (2 + 1) and sum(transposes) == 2

    ours.train()
    other = ei.clone()  # another tensor (a mini-batch chunk): built again, once
    train_step(ours, x, other, y)
    assert len(builds) == 2
    other[0, 0] = other[1, 0]  # changed in place: not the cached graph any more
    train_step(ours, x, other, y)
    assert len(builds) == 3


def test_a_feature_matrix_changed_in_place_is_read_again():
    x, ei = bag_of_words(), graph()
    official, ours = pair()
    official.eval(), ours.eval()
    with torch.no_grad():
        ours(x, ei)
        x[:10] = 0.5  # now denser, and different
        torch.testing.assert_close(ours(x, ei), official(x, ei), rtol=0, atol=1e-6)


def test_caches_are_not_weights_and_not_copied():
    x, ei = bag_of_words(), graph()
    official, ours = pair()
    ours(x, ei)
    assert set(ours.state_dict()) == set(official.state_dict())
    assert copy.deepcopy(ours)._adjacency_cache._value is None
    assert pickle.loads(pickle.dumps(ours))._input_cache._value is None


def test_auto_mode_chooses_csr_only_for_large_sparse_matrices():
    assert wants_sparse(bag_of_words(), None)  # 240,000 entries, 2 % non-zero
    assert not wants_sparse(torch.randn(600, 400), None)  # dense
    assert not wants_sparse(bag_of_words(n=50, f=40), None)  # too small to matter
    assert wants_sparse(torch.randn(50, 40), True) and not wants_sparse(bag_of_words(), False)


def test_a_csr_input_is_accepted_as_it_is():
    x, ei = bag_of_words(), graph()
    official, ours = pair(sparse_input=False, gram_attention=False)
    official.eval(), ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x.to_sparse_csr(), ei), official(x, ei), rtol=0,
                                   atol=1e-6)


def test_sparse_product_gradient_equals_autograd():
    a = (torch.rand(30, 20) < 0.2).float() * torch.randn(30, 20)
    dense = torch.randn(20, 4, requires_grad=True)
    sparse_product(SparseOperand(a.to_sparse_csr()), dense).square().sum().backward()
    expected = 2 * a.t() @ (a @ dense.detach())
    torch.testing.assert_close(dense.grad, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="SparseOperand needs a sparse CSR matrix, got layout "
                                        "torch.strided"):
        SparseOperand(a)


def test_operand_cache_matches_tensors_by_identity_and_other_keys_by_value():
    cache, t = OperandCache(), torch.zeros(3)
    assert cache.get((t, 2708), lambda: "a") == "a"
    assert cache.get((t, 2708), lambda: "b") == "a"  # an equal int that is another object
    assert cache.get((t.clone(), 2708), lambda: "c") == "c"


def test_fast_dropout_keeps_the_expected_share_scaled():
    from difformer.models.difformer import fast_dropout

    torch.manual_seed(0)
    x = torch.ones(200_000)
    out = fast_dropout(x, 0.2, True)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.005
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.8))
    assert fast_dropout(x, 0.2, False) is x and torch.equal(fast_dropout(x, 1.0, True), 0 * x)


def test_fast_dropout_is_an_option_of_the_model_only():
    x, ei = bag_of_words(), graph()
    official, fast = pair(dropout=0.5, dropout_mask="fast")
    official.eval(), fast.eval()
    with torch.no_grad():  # the same function without dropout
        torch.testing.assert_close(fast(x, ei), official(x, ei), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="dropout_mask must be null, 'official' or 'fast', "
                                         "got 'quick'"):
        DIFFormer(4, 8, 2, dropout_mask="quick")
