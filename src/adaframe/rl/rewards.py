"""Rewards and returns (Section 3.1, Eq. 3 and the utility target).

The margin ``m_t = p_t(gt) - max_{c != gt} p_t(c)`` measures how sure and how right the
prediction after step t is. The reward is the improvement of the margin over the best margin
seen so far, so the agent is paid once for each new piece of evidence and never for looking at
the same thing twice: ``r_t = max(0, m_t - max_{t' < t} m_{t'})``, with ``m_0 = 0`` (the margin
of the uninformed, uniform prediction).
"""

from __future__ import annotations

from typing import Literal

import torch


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits [B, K, C], labels [B] -> margins [B, K] in [-1, 1]."""
    probs = torch.softmax(logits, dim=-1)  # [B, K, C]
    gt = labels[:, None, None].expand(-1, probs.shape[1], 1)  # [B, K, 1]
    p_gt = probs.gather(-1, gt).squeeze(-1)  # [B, K]
    p_other = probs.scatter(-1, gt, float("-inf")).amax(-1)  # [B, K]
    return p_gt - p_other


def margin_rewards(m: torch.Tensor, m0: float = 0.0) -> torch.Tensor:
    """m [B, K] -> r [B, K], r_t = max(0, m_t - max(m0, m_1, ..., m_{t-1}))."""
    best_before = torch.cat([m.new_full((m.shape[0], 1), m0), m[:, :-1]], dim=1)  # [B, K]: m_{t-1}, m0 first
    best_before = torch.cummax(best_before, dim=1).values.clamp(min=m0)
    return (m - best_before).clamp(min=0.0)


def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """rewards [B, K] -> Q [B, K], Q_t = sum_{i >= 0} gamma^i r_{t+i} (the utility's target)."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    return returns


# Table 3's alternatives to the margin reward. Both start from p_0(gt) = 1/C, the uninformed prediction.
def gt_probabilities(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits [B, K, C], labels [B] -> p_t(gt) [B, K]."""
    probs = torch.softmax(logits, dim=-1)  # [B, K, C]
    return probs.gather(-1, labels[:, None, None].expand(-1, probs.shape[1], 1)).squeeze(-1)


def prediction_rewards(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """PREDICTION: r_t = p_t(gt), paid again for every step, new evidence or not."""
    return gt_probabilities(logits, labels)


def transition_rewards(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """PREDICTION TRANSITION: r_t = p_t(gt) - p_{t-1}(gt), which may be negative."""
    p = gt_probabilities(logits, labels)  # [B, K]
    before = torch.cat([p.new_full((p.shape[0], 1), 1.0 / logits.shape[-1]), p[:, :-1]], dim=1)  # [B, K]
    return p - before


RewardName = Literal["margin", "prediction", "transition"]


def step_rewards(logits: torch.Tensor, labels: torch.Tensor, kind: RewardName = "margin") -> torch.Tensor:
    """The reward of every step of a rollout, logits [B, K, C] -> [B, K]."""
    if kind == "margin":
        return margin_rewards(margins(logits, labels))
    if kind == "prediction":
        return prediction_rewards(logits, labels)
    if kind == "transition":
        return transition_rewards(logits, labels)
    raise ValueError(f"unknown reward {kind!r}")
