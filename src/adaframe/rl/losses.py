"""The training losses, every term returned for logging: the agents' (AdaFrame, Section 3.1, Eqs. 3-7, and
FrameGlimpse / FastForward), and the AvgPooling / LSTM baselines'. Each is a mean over the batch, so DDP's
average over processes is the loss of their global batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adaframe.data.features import Batch, gather_frames, sample_indices
from adaframe.distributed import Shard
from adaframe.models.baselines import AvgPooling, LSTMBaseline
from adaframe.models.recurrent import Exploration, RecurrentAgent
from adaframe.rl.rewards import RewardName, discounted_returns, margins, step_rewards
from adaframe.rl.rollout import count_distinct, rollout, stored_frames


def agent_loss(model: RecurrentAgent, batch: Batch, steps: int, gamma: float, reward_weight: float, step_cost: float = 0.0,
               generator: torch.Generator | None = None, normalize_advantage: bool = False, reward: RewardName = "margin",
               shard: Shard = Shard()) -> dict[str, torch.Tensor]:
    """``L = L_cls + lambda * L_utl - lambda * J_sel`` (Eqs. 3-7) over one sampled rollout of any agent.

    AdaFrame runs all K steps; FrameGlimpse and FastForward sample their stop, and every term is masked to the
    steps taken (``alive``). Those agents also predict at every step taken (any of them could have been the
    last), and pay ``step_cost`` for every step after the first: the margin reward is never negative, so without
    a price on frames stopping would never pay; steps after the stop earn nothing, so stopping forfeits the
    rewards still to come and saves the costs.
    """
    roll = rollout(model, batch.memory, batch.lengths, stored_frames(batch.features), steps,
                   explore=Exploration(generator, shard))
    alive = roll.alive.float()  # [B, K]
    taken = alive.sum(1)  # [B] steps of each episode
    # L_cls: cross-entropy of the prediction at the last step (agents that stop: at every step taken).
    if model.has_stop_head:
        ce = F.cross_entropy(roll.logits.transpose(1, 2), batch.labels[:, None].expand(-1, steps), reduction="none")  # [B, K]
        loss_cls = ((ce * alive).sum(1) / taken).mean()
    else:
        loss_cls = F.cross_entropy(roll.logits[:, -1], batch.labels)
    # Rewards from every step's prediction (no gradient flows through rewards).
    with torch.no_grad():
        m = margins(roll.logits, batch.labels)  # [B, K]
        rewards = step_rewards(roll.logits, batch.labels, reward)  # [B, K]
        rewards[:, 1:] -= step_cost if model.has_stop_head else 0.0
        rewards = rewards * alive
        returns = discounted_returns(rewards, gamma)  # [B, K], Q_t
    # L_utl (Eq. 6): the utility regresses the discounted return, summed over the steps taken.
    loss_utl = 0.5 * ((roll.utilities - returns).pow(2) * alive).sum(1).mean()
    # J_sel (Eq. 7): REINFORCE with the utility as baseline. The decision that chose step t's frame was made after
    # step t-1, so it is credited with Q_{t-1} - V_{t-1}. A first frame chosen from the memory alone has no utility
    # before it: its baseline is the batch's mean return; a fixed first frame is no decision.
    with torch.no_grad():
        decided = torch.cat([torch.full_like(roll.alive[:, :1], model.chooses_first), roll.alive[:, :-1]], dim=1)  # [B, K]
        first = returns[:, 0] - shard.mean(returns[:, 0].mean()) if model.chooses_first else torch.zeros_like(returns[:, 0])
        advantage = torch.cat([first[:, None], (returns - roll.utilities)[:, :-1]], dim=1) * decided  # [B, K]
        if normalize_advantage:
            advantage = advantage / (shard.std(advantage[decided]) + 1e-8)
    j_sel = (roll.log_probs * advantage).sum(1).mean()
    loss = loss_cls + reward_weight * loss_utl - reward_weight * j_sel
    last = (taken.long() - 1)[:, None]  # [B, 1] the last step taken
    return {
        "loss": loss, "loss_cls": loss_cls.detach(), "loss_utl": loss_utl.detach(), "j_sel": j_sel.detach(),
        "reward": rewards.sum(1).mean(), "margin_last": m.gather(1, last).mean(), "utility": roll.utilities.detach().mean(),
        "advantage": advantage.mean(), "steps": taken.mean(),
        "explained_variance": explained_variance(roll.utilities.detach(), returns, roll.alive),
        "frames_used": count_distinct(torch.where(roll.alive, roll.indices, -1)).float().mean(),
    }


def explained_variance(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``1 - Var(target - predicted) / Var(target)`` over the (masked) entries: 1 is a perfect critic, <= 0 a useless one."""
    if mask is not None:
        predicted, target = predicted[mask], target[mask]
    var = target.var(unbiased=False)
    return 1 - (target - predicted).var(unbiased=False) / var if var > 0 else torch.tensor(float("nan"))


def avgpool_loss(model: AvgPooling, batch: Batch, shard: Shard = Shard()) -> dict[str, torch.Tensor]:
    """Every real frame of a video is a training example with the video's label.

    The mean is over the frames of the global batch: divided by the processes' mean frame count, DDP's
    average of the processes' losses is the sum over all frames over their number.
    """
    logits = model.forward_head(batch.features)  # [B, T, C]
    per_frame = F.cross_entropy(logits.transpose(1, 2), batch.labels[:, None].expand(-1, logits.shape[1]), reduction="none")  # [B, T]
    mask = batch.mask.float()
    loss = (per_frame * mask).sum() / shard.mean(mask.sum())
    return {"loss": loss, "loss_cls": loss.detach()}


def lstm_loss(model: LSTMBaseline, batch: Batch, frames: int, generator: torch.Generator | None,
              shard: Shard = Shard()) -> dict[str, torch.Tensor]:
    """K frames, one at random in each of K segments (the uniform ones are seen at test time)."""
    idx = sample_indices(batch.lengths, frames, "random", generator, shard)  # [B, K]
    picked = gather_frames(batch.features, idx)  # [B, K, D]
    loss = F.cross_entropy(model(picked, torch.ones_like(idx, dtype=torch.bool)), batch.labels)
    return {"loss": loss, "loss_cls": loss.detach()}
