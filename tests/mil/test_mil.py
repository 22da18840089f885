import math

import pytest
import torch

from stmil.mil.model import Scorer, boxes_bce_loss, mil_ranking_loss

# A = 2 anomalous bags, B = 1 normal bag, S = 3 segments, N = 2 cuboids; rows are segments.
POS = [
    [[0.1, 0.2], [0.5, 0.3], [0.4, 0.9]],  # max 0.9
    [[0.2, 0.1], [0.3, 0.4], [0.2, 0.2]],  # max 0.4
]
NEG = [[[0.3, 0.6], [0.1, 0.2], [0.0, 0.1]]]  # max 0.6


def test_mil_ranking_loss_hand_example():
    pos = torch.tensor(POS, dtype=torch.float64)
    neg = torch.tensor(NEG, dtype=torch.float64)
    total, parts = mil_ranking_loss(pos, neg)
    # hinge: (1 - 0.9 + 0.6) + (1 - 0.4 + 0.6) = 0.7 + 1.2 = 1.9
    assert parts["hinge"].item() == pytest.approx(1.9)
    # smoothness, per bag and cuboid (column), adjacent differences squared:
    #   bag 0 cuboid 0: 0.1, 0.5, 0.4 -> 0.4^2 + 0.1^2 = 0.17
    #   bag 0 cuboid 1: 0.2, 0.3, 0.9 -> 0.1^2 + 0.6^2 = 0.37
    #   bag 1 cuboid 0: 0.2, 0.3, 0.2 -> 0.1^2 + 0.1^2 = 0.02
    #   bag 1 cuboid 1: 0.1, 0.4, 0.2 -> 0.3^2 + 0.2^2 = 0.13
    #   total 0.69
    assert parts["smoothness"].item() == pytest.approx(0.69)
    # sparsity: bag 0 sums to 2.4, bag 1 to 1.4 -> 3.8
    assert parts["sparsity"].item() == pytest.approx(3.8)
    # total: 1.9 + 8e-5 * 0.69 + 8e-5 * 3.8 = 1.9 + 8e-5 * 4.49 = 1.9003592
    assert total.item() == pytest.approx(1.9003592)
    total2, _ = mil_ranking_loss(pos, neg, lambda1=1.0, lambda2=0.0)
    assert total2.item() == pytest.approx(1.9 + 0.69)


def test_mil_ranking_loss_hinge_clips_at_zero_and_sums_pairs():
    pos = torch.tensor([[[2.5]], [[0.5]]])  # maxima 2.5, 0.5
    neg = torch.tensor([[[0.2]], [[1.0]]])  # maxima 0.2, 1.0
    _, parts = mil_ranking_loss(pos, neg)
    # pairs: (2.5, 0.2) -> 0, (2.5, 1.0) -> 0, (0.5, 0.2) -> 0.7, (0.5, 1.0) -> 1.5
    assert parts["hinge"].item() == pytest.approx(2.2)


def test_mil_ranking_loss_gradient_flows_to_maxima():
    pos = torch.tensor(POS, requires_grad=True)
    neg = torch.tensor(NEG, requires_grad=True)
    total, _ = mil_ranking_loss(pos, neg, lambda1=0.0, lambda2=0.0)
    total.backward()
    # hinge gradient: -1 per active pair at each positive bag's argmax, +A at the negative's.
    assert pos.grad[0, 2, 1].item() == -1.0 and pos.grad[1, 1, 1].item() == -1.0
    assert neg.grad[0, 0, 1].item() == 2.0
    assert pos.grad.abs().sum().item() == 2.0 and neg.grad.abs().sum().item() == 2.0


def test_mil_ranking_loss_through_scorer_backward():
    torch.manual_seed(0)
    scorer = Scorer(in_dim=8)
    pos, neg = scorer(torch.randn(3, 4, 5, 8)), scorer(torch.randn(2, 4, 5, 8))
    total, _ = mil_ranking_loss(pos, neg)
    total.backward()
    grads = [p.grad for p in scorer.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_mil_ranking_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="expected pos"):
        mil_ranking_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))


def test_scorer_shape_range_and_layers():
    scorer = Scorer().eval()
    out = scorer(torch.randn(2, 32, 49, 528) * 10)
    assert out.shape == (2, 32, 49)
    assert (out >= 0).all() and (out <= 1).all()
    linears = [m for m in scorer.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(528, 512), (512, 32), (32, 1)]


def test_scorer_init_is_deterministic_and_glorot():
    torch.manual_seed(123)
    a = Scorer()
    torch.manual_seed(123)
    b = Scorer()
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    w = a.net[0].weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / (528 + 512)), rel=0.05)
    assert (a.net[0].bias == 0).all()
    x = torch.randn(4, 528)
    a.eval()
    assert torch.equal(a(x), a(x))  # no dropout at eval


def test_boxes_bce_loss_hand_values():
    scores = torch.tensor([[[0.8, 0.1], [0.5, 0.5]]])
    targets = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    # -(ln 0.8 + ln 0.9 + ln 0.5 + ln 0.5) / 4
    ref = -(math.log(0.8) + math.log(0.9) + 2 * math.log(0.5)) / 4
    assert boxes_bce_loss(scores, targets).item() == pytest.approx(ref, rel=1e-6)
    # pos_weight 3 triples the positive terms; the mean is still over 4 instances
    ref_w = -(3 * math.log(0.8) + math.log(0.9) + 3 * math.log(0.5) + math.log(0.5)) / 4
    assert boxes_bce_loss(scores, targets, pos_weight=3.0).item() == pytest.approx(ref_w, rel=1e-6)
    with pytest.raises(ValueError, match="differ"):
        boxes_bce_loss(scores, targets[..., :1])


def test_scorer_forward_hand_computed():
    """One instance through set weights: ``sigmoid(W3 (W2 relu(W1 x + b1) + b2) + b3)``.

    The mid layer's pre-activation is negative, so an activation added there would change the
    result (Sultani's mid layer is linear).
    """
    scorer = Scorer(in_dim=2, hidden=2, mid=1, dropout=0.6).eval()
    l1, l2, l3 = (m for m in scorer.net if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        l1.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
        l1.bias.copy_(torch.tensor([0.0, -1.0]))
        l2.weight.copy_(torch.tensor([[-1.0, -2.0]]))
        l2.bias.copy_(torch.tensor([0.5]))
        l3.weight.copy_(torch.tensor([[3.0]]))
        l3.bias.copy_(torch.tensor([1.0]))
    x = torch.tensor([[2.0, 1.0]], dtype=torch.float32)
    # hidden: relu([2 - 1 + 0, 1 + 2 - 1]) = [1, 2]; mid: -1 - 4 + 0.5 = -4.5; out: -13.5 + 1
    expected = 1 / (1 + math.exp(12.5))
    assert scorer(x).item() == pytest.approx(expected, rel=1e-6)


def test_bag_dropout_shares_one_mask_per_bag():
    from stmil.mil.model import BagDropout

    torch.manual_seed(0)
    drop = BagDropout(0.5).train()
    out = drop(torch.ones(3, 4, 5, 6))
    # One mask of 6 units per bag, the same for all 4 x 5 instances; kept units scaled by 2.
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    for b in range(3):
        assert (out[b] == out[b, :1, :1]).all()
    assert not all(torch.equal(out[0, 0, 0], out[b, 0, 0]) for b in (1, 2))
    rows = drop(torch.ones(50, 6))  # 2-D: ordinary per-row dropout
    assert len({tuple(r.tolist()) for r in rows}) > 1
    assert torch.equal(drop.eval()(torch.ones(2, 3)), torch.ones(2, 3))
