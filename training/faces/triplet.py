"""FaceNet's triplet loss with online mining inside a batch of P identities x K photos.

For an anchor A, a positive P (same identity) and a negative N (another identity), on
L2-normalised embeddings f:

    L = max(||f(A) - f(P)||^2 - ||f(A) - f(N)||^2 + alpha, 0)

Mining picks the triplets inside the batch (Schroff et al. 2015; Hermans et al. 2017):
- ``hard``: for each anchor, its farthest positive and its closest negative ("batch hard");
- ``semihard``: every (anchor, positive) pair with, as negative, the closest one that is still
  farther than the positive (``d(A,P) < d(A,N) < d(A,P) + alpha``); where none is, the farthest
  negative inside the margin is not available and the closest negative is used (FaceNet's fallback).
"""

from __future__ import annotations

import torch

MINING = ("hard", "semihard")


def pairwise_sq_distances(emb: torch.Tensor) -> torch.Tensor:
    """``(B, D)`` → ``(B, B)`` squared Euclidean distances, clamped at 0."""
    sq = (emb * emb).sum(dim=1)
    return (sq[:, None] - 2 * emb @ emb.T + sq[None, :]).clamp(min=0.0)


def _masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same   # positives (not self), negatives


def batch_hard_triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float
                            ) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean over anchors that have a positive and a negative; returns the loss and statistics."""
    d = pairwise_sq_distances(emb)
    pos, neg = _masks(labels)
    valid = pos.any(dim=1) & neg.any(dim=1)
    if not valid.any():
        return emb.sum() * 0.0, {"active": 0.0, "triplets": 0.0}
    hardest_pos = torch.where(pos, d, torch.full_like(d, -1.0)).max(dim=1).values
    hardest_neg = torch.where(neg, d, torch.full_like(d, float("inf"))).min(dim=1).values
    losses = (hardest_pos - hardest_neg + margin).clamp(min=0.0)[valid]
    return losses.mean(), {"active": float((losses > 0).float().mean()), "triplets": float(valid.sum())}


def semi_hard_triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float
                           ) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean over all (anchor, positive) pairs with a negative; semi-hard negatives where they exist."""
    d = pairwise_sq_distances(emb)
    pos, neg = _masks(labels)
    a_idx, p_idx = torch.nonzero(pos, as_tuple=True)
    has_neg = neg[a_idx].any(dim=1)
    a_idx, p_idx = a_idx[has_neg], p_idx[has_neg]
    if a_idx.numel() == 0:
        return emb.sum() * 0.0, {"active": 0.0, "triplets": 0.0}
    d_ap = d[a_idx, p_idx]                                   # (T,)
    d_an = d[a_idx]                                          # (T, B)
    negs = neg[a_idx]
    inf = torch.full_like(d_an, float("inf"))
    semi = negs & (d_an > d_ap[:, None]) & (d_an < d_ap[:, None] + margin)
    closest_semi = torch.where(semi, d_an, inf).min(dim=1).values
    closest_any = torch.where(negs, d_an, inf).min(dim=1).values
    d_n = torch.where(semi.any(dim=1), closest_semi, closest_any)
    losses = (d_ap - d_n + margin).clamp(min=0.0)
    return losses.mean(), {"active": float((losses > 0).float().mean()), "triplets": float(len(losses))}


def triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float = 0.2, mining: str = "hard"
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    if mining == "hard":
        return batch_hard_triplet_loss(emb, labels, margin)
    if mining == "semihard":
        return semi_hard_triplet_loss(emb, labels, margin)
    raise ValueError(f"mining must be one of {MINING}, not {mining!r}")
