"""Triplet loss and in-batch mining against hand-made embeddings and a loop-by-loop reference."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from training.faces.triplet import (batch_hard_triplet_loss, pairwise_sq_distances, semi_hard_triplet_loss,
                                    triplet_loss)


def _reference(emb, labels, margin, mining):
    """Every triplet enumerated in Python, the negative chosen by the rule in the docstring."""
    d = lambda i, j: float(((emb[i] - emb[j]) ** 2).sum())  # noqa: E731
    n, out = len(labels), []
    for a in range(n):
        positives = [p for p in range(n) if p != a and labels[p] == labels[a]]
        negatives = [q for q in range(n) if labels[q] != labels[a]]
        if not positives or not negatives:
            continue
        if mining == "hard":
            out.append(max(0.0, max(d(a, p) for p in positives) - min(d(a, q) for q in negatives) + margin))
            continue
        for p in positives:
            semi = [d(a, q) for q in negatives if d(a, p) < d(a, q) < d(a, p) + margin]
            dn = min(semi) if semi else min(d(a, q) for q in negatives)
            out.append(max(0.0, d(a, p) - dn + margin))
    return sum(out) / len(out)


def test_pairwise_distances_match_cdist():
    emb = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(pairwise_sq_distances(emb), torch.cdist(emb, emb) ** 2, atol=1e-5, rtol=1e-5)


def test_hand_made_batch_hard():
    # identity 0 at (1, 0) and (0.8, 0.6); identity 1 at (0, 1): every distance known by hand
    emb = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    loss, stats = batch_hard_triplet_loss(emb, labels, margin=0.2)
    # anchor 0: d(0,1) = 0.04 + 0.36 = 0.4, d(0,2) = 2 -> 0; anchor 1: 0.4 - (0.64 + 0.16 = 0.8) + 0.2 < 0 -> 0
    assert loss.item() == pytest.approx(0.0) and stats["triplets"] == 2
    loss, _ = batch_hard_triplet_loss(emb, labels, margin=0.5)
    assert loss.item() == pytest.approx((0.0 + 0.1) / 2)


def test_well_separated_identities_give_zero_loss():
    emb = torch.tensor([[1.0, 0.0], [0.99, 0.141], [-1.0, 0.0], [-0.99, 0.141]])
    emb = F.normalize(emb, dim=1)
    for mining in ("hard", "semihard"):
        assert triplet_loss(emb, torch.tensor([0, 0, 1, 1]), 0.2, mining)[0].item() == pytest.approx(0.0)


@pytest.mark.parametrize("mining", ["hard", "semihard"])
@pytest.mark.parametrize("seed,margin", list(itertools.product(range(4), [0.1, 0.5, 1.0])))
def test_mining_matches_the_reference(mining, seed, margin):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(3)              # P=4 identities x K=3
    emb = F.normalize(torch.randn(12, 8, generator=g), dim=1)
    got = triplet_loss(emb, labels, margin, mining)[0].item()
    assert got == pytest.approx(_reference(emb, labels.tolist(), margin, mining), abs=1e-5)


def test_no_positive_or_negative_gives_zero_and_keeps_the_graph():
    emb = torch.randn(3, 4, requires_grad=True)
    for labels in (torch.tensor([0, 1, 2]), torch.tensor([0, 0, 0])):
        for fn in (batch_hard_triplet_loss, semi_hard_triplet_loss):
            loss, stats = fn(emb, labels, 0.2)
            loss.backward()
            assert loss.item() == 0.0 and stats["triplets"] == 0


def test_gradient_pulls_positives_together():
    emb = F.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(3)), dim=1).requires_grad_(True)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    opt = torch.optim.SGD([emb], lr=0.1)
    first = None
    for _ in range(50):
        loss, _ = batch_hard_triplet_loss(F.normalize(emb, dim=1), labels, 0.5)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_unknown_mining_is_refused():
    with pytest.raises(ValueError):
        triplet_loss(torch.zeros(2, 2), torch.tensor([0, 1]), 0.2, "random")
