"""The training loop of every model: each kind's loss (``LOSSES``, written in ``rl.losses``), the epochs, validation,
checkpoints (the resumable state is ``train.state``)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from adaframe import distributed
from adaframe.data.features import Batch, FeatureDataset, collate, feature_statistics, gather_frames, read_spec, sample_indices
from adaframe.distributed import Shard, gather, sharded_loader
from adaframe.evaluate.metrics import mean_average_precision, top1
from adaframe.evaluate.split import Policy, agent_batch, evaluate
from adaframe.models.agent import AdaFrame, fit_mix, mix_logits
from adaframe.models.frame_classifier import FrameClassifier
from adaframe.models.kinds import CHECKPOINT, KINDS, build_model, save_checkpoint
from adaframe.models.standardize import set_statistics
from adaframe.rl.losses import agent_loss, avgpool_loss, explained_variance, lstm_loss, sampler_loss
from adaframe.rl.rewards import RewardName, discounted_returns, step_rewards
from adaframe.rl.rollout import default_stop
from adaframe.train.config import TrainConfig
from adaframe.train.state import StopSignal, TRAIN_STATE, TrainState
from adaframe.utils import AdaframeError, atomic_write, make_dir, resolve_device, seed_everything, write_json


def log_line(epoch: int, epochs: int, step: int, total: int, terms: dict[str, float], elapsed: float, step0: int = 0) -> str:
    """``epoch 2/40 step 130/3480 loss 1.234 loss_cls ... | 12.3 steps/s, ETA 4:32`` for ``--log-every``.

    The speed counts the steps of this process (``step0``: where a resumed run started).
    """
    rate = (step - step0) / max(elapsed, 1e-9)
    eta = int((total - step) / rate) if rate > 0 else 0
    shown = " ".join(f"{k} {v:.4g}" for k, v in terms.items())
    return f"epoch {epoch + 1}/{epochs} step {step}/{total} {shown} | {rate:.1f} steps/s, ETA {eta // 60}:{eta % 60:02d}"


RUN_FILES = (CHECKPOINT, TRAIN_STATE, "metrics.jsonl", "config.json", "tb")


def prepare_out(cfg: TrainConfig) -> None:
    """Create OUT. A run already there is continued (``--resume``), replaced (``--overwrite``: its files are
    deleted first, so nothing of it can be mistaken for the new run) or, by default, left alone with an error.
    What a start that never finished an epoch left (config.json, tb/) is cleared."""
    make_dir(cfg.out)
    found = [name for name in (CHECKPOINT, TRAIN_STATE) if (cfg.out / name).exists()]
    if cfg.resume and found:
        return
    if found and not cfg.overwrite:
        raise AdaframeError(f"{cfg.out} already holds a run ({', '.join(found)}): continue it with --resume, replace it "
                            "with --overwrite, or choose another --out")
    for name in RUN_FILES:
        path = cfg.out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=0.1)


Loss = Callable[[nn.Module, Batch, TrainConfig, torch.Generator, Shard], dict[str, torch.Tensor]]
LOSSES: dict[str, Loss] = {  # every kind of models.kinds.KINDS: the loss that trains it, with the settings it reads
    **{kind: lambda model, batch, c, g, shard: agent_loss(model, batch, c.frames, c.gamma, c.reward_weight, c.step_cost, g,
                                                           c.normalize_advantage, c.reward, shard)
       for kind in ("adaframe", "frameglimpse", "frameglimpse-g", "fastforward", "fastforward-g")},
    "sampler": lambda model, batch, c, g, shard: sampler_loss(model, batch, c.frames, c.reward_weight, g, shard),
    "avgpool": lambda model, batch, c, g, shard: avgpool_loss(model, batch, shard),
    "lstm": lambda model, batch, c, g, shard: lstm_loss(model, batch, c.frames, g, shard),
}


class TrainStep(nn.Module):
    """A model and its loss as one module: DistributedDataParallel wraps this, so the whole loss is its forward."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, generator: torch.Generator, shard: Shard):
        super().__init__()
        self.model, self.cfg, self.generator, self.shard = model, cfg, generator, shard

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return LOSSES[self.cfg.model](self.model, batch, self.cfg, self.generator, self.shard)


def split_metrics(scores: np.ndarray, labels: np.ndarray, split: str) -> dict[str, float]:
    return {f"{split}_mAP": 100 * mean_average_precision(scores, labels), f"{split}_top1": 100 * top1(scores, labels)}


def validate(model: nn.Module, dataset: FeatureDataset | Subset, frames: int, device: torch.device, shard: Shard,
             split: str = "val") -> dict[str, float]:
    """mAP and top-1 of ``dataset`` (keys ``{split}_mAP``, ``{split}_top1``); each process evaluates every N-th video and
    the scores are gathered."""
    part = dataset if shard.world == 1 else Subset(dataset, range(shard.rank, len(dataset), shard.world))
    res = evaluate(model, part, frames, "uniform", default_stop(model), device=device)
    parts = gather((res.scores, res.labels), shard)
    return split_metrics(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), split)


PROBE_VIDEOS = 400
"""the most training videos the training split's mAP is measured on"""


def train_probe(train_set: FeatureDataset, size: int) -> Subset:
    """``size`` training videos spread evenly over the split: the training mAP is measured on them as val's is on val, so
    that a classifier that learns its training videos instead of their classes shows as a gap between the two."""
    size = min(len(train_set), max(size, 1), PROBE_VIDEOS)
    return Subset(train_set, [i * len(train_set) // size for i in range(size)])


@torch.no_grad()
def val_parts(model: AdaFrame, val_set: FeatureDataset, frames: int, device: torch.device, policy: Policy,
              batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """The parts' logits of every step [N, K, P, C] (pooled, recurrent, temporal) of K-step rollouts of the val split (the agent's own
    ``policy`` or the ``uniform`` scan), and the labels [N]."""
    parts, labels = [], []
    model.eval()
    for batch in DataLoader(val_set, batch_size=batch_size, shuffle=False, collate_fn=collate):
        batch = batch.to(device)
        parts.append(agent_batch(model, batch, frames, policy=policy).parts.cpu())  # type: ignore[union-attr]  # [B, K, P, C]
        labels.append(batch.labels.cpu())
    return torch.cat(parts), torch.cat(labels)


def mixed_scores(parts: torch.Tensor, weights: torch.Tensor) -> np.ndarray:
    """[N, C] the mixed prediction after the last step of rollouts ``parts`` [N, K, P, C]."""
    return torch.softmax(mix_logits(parts[:, -1], weights), -1).numpy()


@torch.no_grad()
def refit_mix(model: AdaFrame, val_set: FeatureDataset, frames: int, device: torch.device) -> dict[str, float]:
    """Fit AdaFrame's mix of its predictions (``agent.fit_mix``) on K-step rollouts of the val split, both by its policy and
    by the uniform scan (inference may use either: ``policy_check``), and measure val.

    ``val_mAP`` (the policy) and ``val_mAP_scan`` are scored with the weights fitted on val itself; ``val_mAP_heldout``
    is the policy's val mAP with each half of the split scored by weights fitted on the other half, an estimate that no
    fit has seen. Every process runs the whole split, so all hold the same weights."""
    (policy, truth), (scan, _) = (val_parts(model, val_set, frames, device, p) for p in ("policy", "uniform"))
    both, twice = torch.cat([policy, scan]), torch.cat([truth, truth])
    model.mix.copy_(fit_mix(both, twice).to(device))
    halves = torch.arange(len(truth)) % 2 == 0  # [N]
    heldout = np.zeros((len(truth), policy.shape[-1]))
    for half in (halves, ~halves):
        rows = torch.cat([~half, ~half])  # fit on the other half's videos, both rollouts
        heldout[half.numpy()] = mixed_scores(policy[half], fit_mix(both[rows], twice[rows]))
    weights = model.mix.cpu()
    return {"mix_pooled": float(weights[0]), "mix_recurrent": float(weights[1]),
            **split_metrics(mixed_scores(policy, weights), truth.numpy(), "val"),
            "val_mAP_scan": split_metrics(mixed_scores(scan, weights), truth.numpy(), "val")["val_mAP"],
            "val_mAP_heldout": split_metrics(heldout, truth.numpy(), "val")["val_mAP"]}


SUBSET_MARGIN = 2.0
"""val mAP by which the frame classifier trained on random frames must beat AvgPooling's loss to replace it: a smaller
difference is the noise of a few hundred val videos (docs/design.md: What predicts the class)"""


@torch.no_grad()
def bank_val_maps(bank_logits: Callable[[torch.Tensor], torch.Tensor], val_set: FeatureDataset, frames: int,
                  device: torch.device, batch_size: int = 128) -> np.ndarray:
    """val mAP [G] of each classifier of a bank (``bank_logits``: frames [..., D] -> [..., G, C]), its softmax averaged
    over K uniform frames of each video (AvgPooling's rule)."""
    scores, labels = [], []
    for batch in DataLoader(val_set, batch_size=batch_size, shuffle=False, collate_fn=collate):
        batch = batch.to(device)
        picked = gather_frames(batch.features, sample_indices(batch.lengths, frames, "uniform"))  # [B, K, D]
        scores.append(torch.softmax(bank_logits(picked), -1).mean(1).cpu())  # [B, G, C]
        labels.append(batch.labels.cpu())
    s, truth = torch.cat(scores).numpy(), torch.cat(labels).numpy()
    return np.array([100 * mean_average_precision(s[:, g], truth) for g in range(s.shape[1])])


def pick_penalty(classifier: FrameClassifier, bank_logits: Callable[[torch.Tensor], torch.Tensor], val_set: FeatureDataset,
                 frames: int, device: torch.device) -> float:
    """The bank's classifier with the best val mAP (``bank_val_maps``; a tie goes to the smaller penalty) predicts from
    now on; returns its val mAP."""
    maps = bank_val_maps(bank_logits, val_set, frames, device)
    classifier.pick(int(maps.argmax()))
    return float(maps.max())


def pick_frame_classifier(model: nn.Module, val_set: FeatureDataset, frames: int, device: torch.device) -> dict[str, object]:
    """After every epoch: each bank of frame classifiers (AvgPooling's, the sampler's, AdaFrame's) picks its L2 penalty
    on val. AdaFrame with ``frame_loss`` "both" then picks the classifier its pooled prediction reads: the one trained on
    every frame (AvgPooling's loss) unless the one trained on K random frames has a val mAP ``SUBSET_MARGIN`` higher
    (``AgentConfig.pooled_by``)."""
    model.eval()
    if not isinstance(model, AdaFrame):
        classifier = model.frame_classifier()
        val_map = pick_penalty(classifier, model.frame_bank, val_set, frames, device)
        return {"frames_penalty": classifier.picked_penalty, "frames_val_mAP": val_map}
    heads = ("every", "subset") if model.cfg.frame_loss == "both" else (model.cfg.frame_loss,)
    maps = {h: pick_penalty(model.frame_classifier(h), lambda x, h=h: model.frame_bank(x, h), val_set, frames, device) for h in heads}
    record: dict[str, object] = {f"pooled_{h}_mAP": m for h, m in maps.items()}
    record.update({f"pooled_{h}_penalty": model.frame_classifier(h).picked_penalty for h in heads})
    if model.cfg.frame_loss == "both":
        model.cfg.pooled_by = "subset" if maps["subset"] >= maps["every"] + SUBSET_MARGIN else "every"
        record["pooled_by"] = model.cfg.pooled_by
    return record


POLICY_MARGIN = 0.5
"""the val mAP a policy must add over the uniform scan of its own network for inference to use it: less is within the
noise of a few hundred val videos, and a user should not pay for a policy that may lose"""


@torch.no_grad()
def policy_check(model: AdaFrame, val_set: FeatureDataset, frames: int, device: torch.device) -> dict[str, object]:
    """After training: what the slots policy adds on val over the uniform scan read by the same network; where it adds less
    than ``POLICY_MARGIN``, the agent infers by the scan (``AgentConfig.inference``), saved with the weights."""
    model.cfg.inference = "policy"
    learned, scan = (evaluate(model, val_set, frames, policy=p, device=device) for p in ("policy", "uniform"))
    gain = 100 * (mean_average_precision(learned.scores, learned.labels) - mean_average_precision(scan.scores, scan.labels))
    model.cfg.inference = "policy" if gain >= POLICY_MARGIN else "scan"
    return {"policy_minus_scan": gain, "inference": model.cfg.inference}


CRITIC_RIDGE = 1e-3
"""the ridge penalty of the critic's refit, per val sample (the critic's inputs are of order 1)"""


@torch.no_grad()
def refit_critic(model: AdaFrame, val_set: FeatureDataset, frames: int, gamma: float, reward: RewardName, device: torch.device,
                 batch_size: int = 128) -> dict[str, float]:
    """After training: refit the utility head (linear) by ridge regression on the discounted returns of the val split's
    K-step rollouts, read as inference reads them (the policy or the scan, the final mix): videos on which the prediction
    is as sure as it will be on new ones (why: docs/design.md, "A policy that earns its frames, or steps aside").
    Returns the critic's explained variance on val before and after."""
    features: list[torch.Tensor] = []
    hook = model.utility.register_forward_hook(lambda module, inputs, output: features.append(inputs[0]))  # [B, F] each step
    rows, returns = [], []
    try:
        for batch in DataLoader(val_set, batch_size=batch_size, shuffle=False, collate_fn=collate):
            batch = batch.to(device)
            features.clear()
            roll = agent_batch(model, batch, frames)  # as inference looks, all K steps
            rows.append(torch.stack(features, 1).flatten(0, 1).double().cpu())  # [B * K, F]
            returns.append(discounted_returns(step_rewards(roll.logits, batch.labels, reward), gamma).flatten().double().cpu())
    finally:
        hook.remove()
    z, q = torch.cat(rows), torch.cat(returns)  # [M, F], [M]
    before = explained_variance((z @ model.utility.weight.double().cpu().T).squeeze(1) + float(model.utility.bias), q)
    centred = z - z.mean(0)
    w = torch.linalg.solve(centred.T @ centred + CRITIC_RIDGE * len(z) * torch.eye(z.shape[1], dtype=z.dtype), centred.T @ (q - q.mean()))
    model.utility.weight.copy_(w.float()[None].to(device))
    model.utility.bias.fill_(float(q.mean() - z.mean(0) @ w))
    after = explained_variance(z @ w + float(q.mean() - z.mean(0) @ w), q)
    return {"critic_val_ev_trained": float(before), "critic_val_ev_refit": float(after)}


def load_splits(cfg: TrainConfig, shard: Shard) -> tuple[FeatureDataset, FeatureDataset | None]:
    """The training split and the val split (None, with a warning, where the data set has none)."""
    reads_memory = KINDS[cfg.model].memory != "none"
    train_set = FeatureDataset(cfg.data, "train", memory_frames=cfg.memory_frames if reads_memory else 0)
    if len(train_set.classes) < 2:
        raise AdaframeError(f"{cfg.data / 'videos.csv'} has {len(train_set.classes)} class ({', '.join(train_set.classes)}): "
                            "recognition needs at least 2")
    try:
        return train_set, FeatureDataset(cfg.data, "val", classes=train_set.classes, memory_frames=train_set.memory_frames)
    except AdaframeError as e:
        if "is empty" not in str(e):
            raise
        if shard.main:
            print("warning: no val split; training without validation" + (
                  " (AdaFrame's mix of predictions keeps its starting weights 1, 1)" if cfg.model == "adaframe" else ""), file=sys.stderr)
        return train_set, None


def after_epoch(model: nn.Module, cfg: TrainConfig, val_set: FeatureDataset | None, probe: Subset, last: bool, device: torch.device,
                shard: Shard) -> dict[str, object]:
    """What every epoch ends with, logged: the val split picks each frame classifier's penalty (AdaFrame's: also the
    classifier its pooled prediction reads) and fits AdaFrame's mix; val and train mAP; after the ``last`` epoch,
    AdaFrame's choice between the policy and the scan and its critic's refit (the checkpoint saves what they set)."""
    record: dict[str, object] = {}
    adaframe = val_set is not None and cfg.model == "adaframe"
    if val_set is not None and (cfg.model in ("avgpool", "sampler") or adaframe and cfg.model_options.prediction != "lstm"):
        record.update(pick_frame_classifier(model, val_set, cfg.frames, device))
    if adaframe and cfg.model_options.prediction == "mix":
        record.update(refit_mix(model, val_set, cfg.frames, device))
    elif val_set is not None:
        record.update(validate(model, val_set, cfg.frames, device, shard))
    record.update(validate(model, probe, cfg.frames, device, shard, "train"))
    if adaframe and last:
        if cfg.policy_check:
            record.update(policy_check(model, val_set, cfg.frames, device))
        if cfg.calibrate_critic:
            record.update(refit_critic(model, val_set, cfg.frames, cfg.gamma, cfg.reward, device))
    return record


def train(cfg: TrainConfig) -> Path:
    """Train one model and write ``cfg.out``: checkpoint.pt (every epoch), config.json, metrics.jsonl, tb/.

    Under torchrun each process trains on its share of every batch (DistributedDataParallel); only the
    first writes files.
    """
    shard, device = distributed.start(resolve_device(cfg.device))
    try:
        return _train(cfg, shard, device)
    finally:
        distributed.stop()


def _train(cfg: TrainConfig, shard: Shard, device: torch.device) -> Path:
    if cfg.batch_size % shard.world:
        raise AdaframeError(f"--batch-size {cfg.batch_size} is the global batch: it must be divisible by the {shard.world} processes")
    seed_everything(cfg.seed)
    train_set, val_set = load_splits(cfg, shard)
    probe = train_probe(train_set, len(val_set) if val_set is not None else 256)
    sizes = {"feature_dim": train_set.feature_dim, "memory_dim": train_set.memory_dim, "num_classes": len(train_set.classes),
             "hidden": cfg.hidden, "memory_frames": train_set.memory_frames, "frames": cfg.frames}
    features = read_spec(cfg.data)  # how the features were made; predict rebuilds the backbones from it
    model = build_model(cfg.model, {**sizes, **cfg.model_options.given(cfg.model)})  # an option not given: the model's default
    if cfg.standardize:  # fixed input standardisation with the training split's statistics
        set_statistics(model, feature_statistics(train_set))
    model = model.to(device)
    optimizer, scheduler = make_optimizer(model, cfg)
    if shard.main:
        prepare_out(cfg)
        write_json(cfg.out / "config.json", {"train": cfg.to_dict(), "model": asdict(model.cfg), "classes": train_set.classes})
        unseen = sorted(set(train_set.classes) - {train_set.classes[i] for i in np.unique(train_set.labels)})
        if unseen:
            print(f"warning: {len(unseen)} class(es) of videos.csv have no train video, so the model cannot learn them: "
                  f"{', '.join(unseen[:5])}{' ...' if len(unseen) > 5 else ''}", file=sys.stderr)

    generator = torch.Generator(device=device).manual_seed(cfg.seed)  # exploration noise and frame sampling
    order = torch.Generator().manual_seed(cfg.seed)  # the data order: each epoch's shuffle draws from it
    loader = sharded_loader(train_set, cfg.batch_size, shard, order, collate_fn=collate, num_workers=cfg.workers)
    start = TrainState.resume(cfg, model, optimizer, scheduler, generator, order, shard) if cfg.resume else TrainState()
    start_epoch, step, history, partial = start.epoch, start.step, start.history, start.partial
    step_fn: nn.Module = TrainStep(model, cfg, generator, shard)
    if shard.world > 1:
        step_fn = DistributedDataParallel(step_fn, device_ids=[device] if device.type == "cuda" else None)
    writer = SummaryWriter(str(cfg.out / "tb")) if shard.main else None
    step0, total, started = step, cfg.epochs * len(loader), time.perf_counter()
    bar = tqdm(range(start_epoch, cfg.epochs), desc=f"train {cfg.model}-{cfg.frames}", unit="epoch",
               disable=not (cfg.progress and shard.main), initial=start_epoch, total=cfg.epochs)
    signals = StopSignal()
    try:
        for epoch in bar:
            model.train()
            # A run stopped by a signal mid-epoch left the batches it had done and the data order of the epoch's start.
            skip, sums = (partial["batches"], dict(partial["sums"])) if partial else (0, {})
            if partial:
                order.set_state(partial["order"])
            partial = None
            order_at_start = order.get_state()
            t0 = time.perf_counter()
            for i, batch in enumerate(loader):
                if i < skip:
                    continue
                terms = step_fn(batch.to(device))
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                optimizer.step()
                step += 1
                # One reduction (and one device-to-host copy) for all terms and the stop flag: processes stop together.
                flag = torch.tensor(float(signals.requested is not None), device=device)
                values = shard.mean(torch.stack([v.detach().float() for v in terms.values()] + [flag])).tolist()
                stopping, values = values[-1] > 0, values[:-1]
                for k, v in zip(terms, values):
                    sums[k] = sums.get(k, 0.0) + v
                if writer is not None:
                    for k, v in zip(terms, values):
                        writer.add_scalar(f"train/{k}", v, step)
                    writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
                if cfg.log_every and step % cfg.log_every == 0 and shard.main:
                    tqdm.write(log_line(epoch, cfg.epochs, step, total, dict(zip(terms, values)), time.perf_counter() - started, step0))
                if stopping:
                    if shard.main:
                        TrainState(epoch, step, history, {"batches": i + 1, "order": order_at_start, "sums": sums}).save(
                            cfg, model, optimizer, scheduler, generator, order)
                        writer.close()
                        tqdm.write(f"stopped by {signals.requested or 'a signal'} after step {step}: {cfg.out / TRAIN_STATE} holds it; continue with --resume")
                    distributed.barrier(shard)
                    raise KeyboardInterrupt
            scheduler.step()
            record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
            record.update({k: v / len(loader) for k, v in sums.items()})
            record.update(after_epoch(model, cfg, val_set, probe, epoch + 1 == cfg.epochs, device, shard))
            history.append(record)
            bar.set_postfix({k: f"{record[k]:.3g}" for k in ("loss", "train_mAP", "val_mAP") if k in record})
            if writer is not None:
                for k, v in record.items():
                    if k != "epoch" and isinstance(v, (int, float)):
                        writer.add_scalar(f"epoch/{k}", v, epoch + 1)
                save_checkpoint(cfg.out, model, cfg.model, train_set.classes, cfg.to_dict(), {"epoch": epoch + 1, "features": features},
                                memory_frames=train_set.memory_frames)
                atomic_write(cfg.out / "metrics.jsonl", lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in history)))
                TrainState(epoch + 1, step, history).save(cfg, model, optimizer, scheduler, generator, order)
        if writer is not None:
            writer.close()
        distributed.barrier(shard)  # the files are complete before any process returns
    finally:
        signals.restore()
        if writer is not None:  # after an error too (closing twice is harmless): flushes what was logged, ends its thread
            writer.close()
    return cfg.out
