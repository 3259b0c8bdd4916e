"""The training losses, every term returned for logging: the agents' (AdaFrame, Section 3.1, Eqs. 3-7, and
FrameGlimpse / FastForward), and the AvgPooling / LSTM baselines'. Each is a mean over the batch, so DDP's
average over processes is the loss of their global batch."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from adaframe.data.features import Batch, gather_frames, sample_indices
from adaframe.distributed import Shard, exponential, rand
from adaframe.models.baselines import AvgPooling, LSTMBaseline
from adaframe.models.recurrent import Exploration, RecurrentAgent
from adaframe.models.sampler import OneStepSampler, plackett_luce_log_prob, slot_frames
from adaframe.rl.rewards import RewardName, discounted_returns, margins, step_rewards
from adaframe.rl.rollout import count_distinct, stored_frames, train_rollout


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
    roll = train_rollout(model, batch.memory, batch.lengths, stored_frames(batch.features), steps, Exploration(generator, shard))
    alive = roll.alive.float()  # [B, K]
    taken = alive.sum(1)  # [B] steps of each episode
    # L_cls: cross-entropy of the prediction at the last step (agents that stop: at every step taken).
    terms = {}
    if model.has_stop_head:
        ce = F.cross_entropy(roll.logits.transpose(1, 2), batch.labels[:, None].expand(-1, steps), reduction="none")  # [B, K]
        loss_cls = ((ce * alive).sum(1) / taken).mean()
    elif roll.parts is None:
        loss_cls = F.cross_entropy(roll.logits[:, -1], batch.labels)
    else:
        # AdaFrame's two classifiers, each trained on its own: the frame classifier on every frame (AvgPooling's loss) or
        # pooled over K random frames, the LSTM's head (when mixed in) at the last step. Trained on their sum, the one that
        # fits the training videos best would take over, whether or not it generalises; the mix is fitted on val (fit_mix).
        how = model.cfg.frame_loss
        # Each is a bank of classifiers, one per L2 penalty (models/frame_classifier.py), the penalties in loss_penalty.
        terms["loss_frames"] = ((every_frame_loss(lambda x: model.frame_bank(x, "every"), batch, shard) if how != "subset" else 0.0)
                                + (subset_loss(lambda x: model.frame_bank(x, "subset"), batch, steps, generator, shard) if how != "every" else 0.0))
        terms["loss_penalty"] = model.frame_penalty()
        terms["loss_recurrent"] = F.cross_entropy(roll.parts[:, -1, 1], batch.labels)
        if model.cfg.temporal:  # the temporal classifier, at the last step too
            terms["loss_temporal"] = F.cross_entropy(roll.parts[:, -1, 2], batch.labels)
        loss_cls = terms["loss_frames"] + terms["loss_penalty"] + (terms["loss_recurrent"] + terms.get("loss_temporal", 0.0) if model.cfg.prediction == "mix" else 0.0)
        terms = {k: v.detach() for k, v in terms.items()}
    # Rewards from every step's prediction (no gradient flows through rewards).
    with torch.no_grad():
        m = margins(roll.logits, batch.labels)  # [B, K]
        # A stop agent pays step_cost for every step after the first (see above); AdaFrame runs K steps and pays nothing.
        costs = torch.zeros_like(alive)  # [B, K]
        costs[:, 1:] = step_cost if model.has_stop_head else 0.0
        rewards = (step_rewards(roll.logits, batch.labels, reward) - costs) * alive  # [B, K]
        returns = discounted_returns(rewards, gamma)  # [B, K], Q_t
    # L_utl (Eq. 6): the utility regresses the discounted return, summed over the steps taken.
    loss_utl = 0.5 * ((roll.utilities - returns).pow(2) * alive).sum(1).mean()
    # J_sel (Eq. 7): REINFORCE with the utility as baseline, each decision credited at the step that made it (cleanrl's
    # convention): the decision at step t (where to look next; a stop agent's also whether to stop), made from h_t, with
    # A_t = Q_t - V_t. The last step's decision is never looked at (``in_order`` leaves it out), and a stopped video
    # decides nothing. A first frame chosen from the memory alone has no utility before it: its baseline is the
    # batch's mean return; a fixed first frame is no decision.
    with torch.no_grad():
        advantage = (returns - roll.utilities) * roll.alive  # [B, K]
        first_decided = torch.full_like(roll.alive[:, 0], model.chooses_first)  # [B]
        if model.chooses_first:
            first_advantage = returns[:, 0] - shard.mean(returns[:, 0].mean())  # [B]
        else:
            first_advantage = torch.zeros_like(returns[:, 0])  # [B]
        if normalize_advantage:
            scale = shard.std(in_order(first_advantage, advantage)[in_order(first_decided, roll.alive)]) + 1e-8
            advantage, first_advantage = advantage / scale, first_advantage / scale
    first_term = roll.first_log_prob * first_advantage  # [B]
    step_terms = roll.log_probs * advantage  # [B, K]
    j_sel = in_order(first_term, step_terms).sum(1).mean()
    loss = loss_cls + reward_weight * loss_utl - reward_weight * j_sel
    last = (taken.long() - 1)[:, None]  # [B, 1] the last step taken
    return {
        "loss": loss, "loss_cls": loss_cls.detach(), "loss_utl": loss_utl.detach(), "j_sel": j_sel.detach(),
        "reward": rewards.sum(1).mean(), "margin_last": m.gather(1, last).mean(), "utility": roll.utilities.detach().mean(),
        "advantage": in_order(first_advantage, advantage).mean(),
        "steps": taken.mean(),
        "explained_variance": explained_variance(roll.utilities.detach(), returns, roll.alive),
        "frames_used": count_distinct(torch.where(roll.alive, roll.indices, -1)).float().mean(), **terms,
    }


def in_order(first: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """The K decisions of each video that picked a frame it looked at, in the order they were made.

    Args:
        first: [B] of the first frame's decision.
        steps: [B, K] of the decision made at step t (which picked step t + 1's frame).

    Returns:
        [B, K]: the first frame's, then steps 0..K-2's (step K-1's picks no frame and is left out).
    """
    return torch.cat([first[:, None], steps[:, :-1]], 1)  # [B, K]


def explained_variance(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``1 - Var(target - predicted) / Var(target)`` over the (masked) entries: 1 is a perfect critic, <= 0 a useless one."""
    if mask is not None:
        predicted, target = predicted[mask], target[mask]
    var = target.var(unbiased=False)
    return 1 - (target - predicted).var(unbiased=False) / var if var > 0 else torch.tensor(float("nan"))


def subset_loss(bank_logits: Callable[[torch.Tensor], torch.Tensor], batch: Batch, frames: int, generator: torch.Generator | None,
                shard: Shard = Shard()) -> torch.Tensor:
    """Cross-entropy of a pooled prediction, the mean of a frame classifier's softmax over K random frames (one in each
    of K segments), summed over the classifiers of a bank (``bank_logits``: frames [..., D] -> [..., G, C]), each
    trained on its own. Unlike AvgPooling's loss (``every_frame_loss``), no single frame must name the class: a frame
    that shows nothing of it (titles, crowds, the shared scene) may stay uncertain while the frames that show it decide."""
    idx = sample_indices(batch.lengths, frames, "random", generator, shard)  # [B, K]
    probs = torch.softmax(bank_logits(gather_frames(batch.features, idx)), -1).mean(1)  # [B, G, C]
    p_gt = probs.gather(2, batch.labels[:, None, None].expand(-1, probs.shape[1], 1)).squeeze(2)  # [B, G]
    return -torch.log(p_gt.clamp(min=1e-12)).mean(0).sum()


def every_frame_loss(bank_logits: Callable[[torch.Tensor], torch.Tensor], batch: Batch, shard: Shard = Shard()) -> torch.Tensor:
    """AvgPooling's loss: every real frame of a video is a training example with the video's label; summed over the
    classifiers of a bank (``bank_logits``: frames [..., D] -> [..., G, C]), each trained on its own.

    The mean is over the frames of the global batch: divided by the processes' mean frame count, DDP's
    average of the processes' losses is the sum over all frames over their number.
    """
    logits = bank_logits(batch.features)  # [B, T, G, C]
    labels = batch.labels[:, None, None].expand(logits.shape[:-1])  # [B, T, G]
    per_frame = F.cross_entropy(logits.flatten(0, 2), labels.flatten(), reduction="none").view(labels.shape).sum(2)  # [B, T]
    mask = batch.mask.float()
    return (per_frame * mask).sum() / shard.mean(mask.sum())


def avgpool_loss(model: AvgPooling, batch: Batch, shard: Shard = Shard()) -> dict[str, torch.Tensor]:
    """The bank of frame classifiers (``models/frame_classifier.py``): each one's cross-entropy on every frame and its
    L2 penalty."""
    loss_cls = every_frame_loss(model.frame_bank, batch, shard)
    loss_penalty = model.head.penalty()
    return {"loss": loss_cls + loss_penalty, "loss_cls": loss_cls.detach(), "loss_penalty": loss_penalty.detach()}


def lstm_loss(model: LSTMBaseline, batch: Batch, frames: int, generator: torch.Generator | None,
              shard: Shard = Shard()) -> dict[str, torch.Tensor]:
    """K frames, one at random in each of K segments (the uniform ones are seen at test time)."""
    idx = sample_indices(batch.lengths, frames, "random", generator, shard)  # [B, K]
    picked = gather_frames(batch.features, idx)  # [B, K, D]
    loss = F.cross_entropy(model(picked, torch.ones_like(idx, dtype=torch.bool)), batch.labels)
    return {"loss": loss, "loss_cls": loss.detach()}


def sampler_loss(model: OneStepSampler, batch: Batch, frames: int, reward_weight: float, generator: torch.Generator | None,
                 shard: Shard = Shard()) -> dict[str, torch.Tensor]:
    """The one-step sampler: its pooled classifier on K random frames, its policy by REINFORCE (``models/sampler.py``).

    ``L = L_cls - lambda * J_sel``: ``L_cls`` is the cross-entropy of the mean softmax of K random frames, one in each
    of K segments; ``J_sel = log pi(slots) * (r - r_greedy)`` with ``r`` the classifier's p(gt) on the K slots drawn
    (without replacement, by Gumbel top-k) and ``r_greedy`` on the K most likely ones.
    """
    # L_cls: the classifier learns from random subsets, never from the policy's choices.
    loss_cls = subset_loss(model.frame_bank, batch, frames, generator, shard) + model.classifier.penalty()
    # J_sel: K slots drawn from the policy, each frame anywhere within its slot's stretch of time.
    logits = model.slot_logits(batch.memory)  # [B, Td]
    td = logits.shape[1]
    with torch.no_grad():
        gumbel = -torch.log(shard.draw(exponential, logits.shape, generator=generator, device=logits.device))  # [B, Td]
        drawn = (logits + gumbel).topk(frames, dim=1).indices  # [B, K], in the order drawn
        offset = shard.draw(rand, drawn.shape, generator=generator, device=logits.device)  # [B, K]
        greedy = logits.topk(frames, dim=1).indices  # [B, K]

        def confidence(slots: torch.Tensor, within: torch.Tensor | None) -> torch.Tensor:  # [B] p(gt) of the frozen classifier
            picked = gather_frames(batch.features, slot_frames(slots, td, batch.lengths, within))  # [B, K, D]
            return model.probs(picked).gather(1, batch.labels[:, None]).squeeze(1)

        reward = confidence(drawn, offset)  # [B]
        advantage = reward - confidence(greedy, None)  # [B] self-critical baseline
    log_prob = plackett_luce_log_prob(logits, drawn)  # [B]
    j_sel = (log_prob * advantage).mean()
    loss = loss_cls - reward_weight * j_sel
    return {"loss": loss, "loss_cls": loss_cls.detach(), "j_sel": j_sel.detach(), "reward": reward.mean(),
            "advantage": advantage.mean(), "entropy": -(torch.softmax(logits, 1) * torch.log_softmax(logits, 1)).sum(1).mean().detach()}
