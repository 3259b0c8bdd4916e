"""Training loops: AdaFrame (Section 3.1, Eqs. 3-7) and the AvgPooling / LSTM baselines."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Subset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from adaframe.agent import AdaFrame
from adaframe.baselines import AvgPooling, LSTMBaseline
from adaframe import distributed
from adaframe.distributed import Shard, gather, sharded_loader
from adaframe.checkpoint import CHECKPOINT, build_model, save_checkpoint
from adaframe.standardize import feature_statistics, set_statistics
from adaframe.config import NOT_IN_RESULT, TrainConfig
from adaframe.data import Batch, FeatureDataset, collate, gather_frames, sample_indices, read_spec
from adaframe.inference import count_distinct, default_stop, evaluate
from adaframe.metrics import mean_average_precision, top1
from adaframe.rewards import RewardName, discounted_returns, margins, step_rewards
from adaframe.rl_baselines import StopAgent
from adaframe.utils import AdaframeError, atomic_write, load_torch_file, make_dir, resolve_device, save_torch, seed_everything, write_json


def adaframe_loss(model: AdaFrame, batch: Batch, steps: int, gamma: float, reward_weight: float,
                  generator: torch.Generator | None = None, normalize_advantage: bool = False,
                  reward: RewardName = "margin", shard: Shard = Shard()) -> dict[str, torch.Tensor]:
    """``L = L_cls + lambda * L_utl - lambda * J_sel`` for one batch, every term returned for logging.

    Every term is a mean over the batch, so the mean over data-parallel processes (DDP's gradient average)
    is the loss of their global batch.
    """
    roll = model(batch.features, batch.lengths, batch.memory, steps, explore=True, generator=generator, shard=shard)
    # L_cls: cross-entropy of the prediction at the last step.
    loss_cls = F.cross_entropy(roll.logits[:, -1], batch.labels)
    # Rewards from every step's prediction (no gradient flows through rewards).
    with torch.no_grad():
        m = margins(roll.logits, batch.labels)  # [B, K]
        rewards = step_rewards(roll.logits, batch.labels, reward)  # [B, K]
        returns = discounted_returns(rewards, gamma)  # [B, K], Q_t
    # L_utl (Eq. 6): the utility regresses the discounted return, summed over steps.
    loss_utl = 0.5 * (roll.utilities - returns).pow(2).sum(1).mean()
    # J_sel (Eq. 7): REINFORCE with the utility as baseline. The frame of step t+1 was chosen after step t,
    # so its choice is credited with Q_t - V_t. A first frame chosen from the memory alone (slots selection)
    # has no utility before it: its baseline is the batch's mean return; a fixed first frame is no choice.
    with torch.no_grad():
        first_chosen = model.cfg.selection != "gaussian"
        first = returns[:, 0] - shard.mean(returns[:, 0].mean()) if first_chosen else torch.zeros_like(returns[:, 0])
        advantage = torch.cat([first[:, None], (returns - roll.utilities)[:, :-1]], dim=1)  # [B, K], of choosing frame t
        if normalize_advantage:
            advantage = advantage / (shard.std(advantage if first_chosen else advantage[:, 1:]) + 1e-8)
    j_sel = (roll.log_probs * advantage).sum(1).mean()
    loss = loss_cls + reward_weight * loss_utl - reward_weight * j_sel
    return {
        "loss": loss, "loss_cls": loss_cls.detach(), "loss_utl": loss_utl.detach(), "j_sel": j_sel.detach(),
        "reward": rewards.sum(1).mean(), "margin_last": m[:, -1].mean(), "utility": roll.utilities.detach().mean(),
        "advantage": advantage.mean(), "explained_variance": explained_variance(roll.utilities.detach(), returns),
        "frames_used": count_distinct(roll.indices).float().mean(),
    }


def explained_variance(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``1 - Var(target - predicted) / Var(target)`` over the (masked) entries: 1 is a perfect critic, <= 0 a useless one."""
    if mask is not None:
        predicted, target = predicted[mask], target[mask]
    var = target.var(unbiased=False)
    return 1 - (target - predicted).var(unbiased=False) / var if var > 0 else torch.tensor(float("nan"))


def stop_agent_loss(model: StopAgent, batch: Batch, steps: int, gamma: float, reward_weight: float, step_cost: float,
                    generator: torch.Generator | None = None, normalize_advantage: bool = False,
                    reward: RewardName = "margin", shard: Shard = Shard()) -> dict[str, torch.Tensor]:
    """FrameGlimpse / FastForward: ``L = L_cls + lambda * L_utl - lambda * J_policy`` over each sampled episode.

    Every step up to the sampled stop predicts, so L_cls averages the cross-entropy over those steps
    (any of them could have been the last). The reward is AdaFrame's minus ``step_cost`` for every
    step after the first; steps after the stop earn nothing, so stopping forfeits the rewards still
    to come and saves the costs. The policy gradient covers the stop decision and the move together.
    """
    roll = model(batch.features, batch.lengths, batch.memory, steps, generator=generator, shard=shard)
    alive = roll.alive.float()  # [B, K]
    taken = alive.sum(1)  # [B] steps of each episode
    ce = F.cross_entropy(roll.logits.transpose(1, 2), batch.labels[:, None].expand(-1, steps), reduction="none")  # [B, K]
    loss_cls = ((ce * alive).sum(1) / taken).mean()
    with torch.no_grad():
        m = margins(roll.logits, batch.labels)  # [B, K]
        rewards = step_rewards(roll.logits, batch.labels, reward)  # [B, K]
        rewards[:, 1:] -= step_cost
        rewards = rewards * alive
        returns = discounted_returns(rewards, gamma)  # [B, K]
    loss_utl = 0.5 * ((roll.utilities - returns).pow(2) * alive).sum(1).mean()
    advantage = (returns - roll.utilities).detach() * alive  # [B, K]
    if normalize_advantage:
        advantage = advantage / (shard.std(advantage[alive.bool()]) + 1e-8)
    j_policy = (roll.log_probs * advantage).sum(1).mean()
    loss = loss_cls + reward_weight * loss_utl - reward_weight * j_policy
    last = (taken.long() - 1)[:, None]  # [B, 1] the stop step
    return {
        "loss": loss, "loss_cls": loss_cls.detach(), "loss_utl": loss_utl.detach(), "j_sel": j_policy.detach(),
        "reward": rewards.sum(1).mean(), "margin_last": m.gather(1, last).mean(), "utility": roll.utilities.detach().mean(),
        "advantage": advantage.mean(), "steps": taken.mean(),
        "explained_variance": explained_variance(roll.utilities.detach(), returns, roll.alive),
        "frames_used": count_distinct(torch.where(roll.alive, roll.indices, -1)).float().mean(),
    }


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


def log_line(epoch: int, epochs: int, step: int, total: int, terms: dict[str, float], elapsed: float, step0: int = 0) -> str:
    """``epoch 2/40 step 130/3480 loss 1.234 loss_cls ... | 12.3 steps/s, ETA 4:32`` for ``--log-every``.

    The speed counts the steps of this process (``step0``: where a resumed run started).
    """
    rate = (step - step0) / max(elapsed, 1e-9)
    eta = int((total - step) / rate) if rate > 0 else 0
    shown = " ".join(f"{k} {v:.4g}" for k, v in terms.items())
    return f"epoch {epoch + 1}/{epochs} step {step}/{total} {shown} | {rate:.1f} steps/s, ETA {eta // 60}:{eta % 60:02d}"


TRAIN_STATE = "train_state.pt"
STATE_KEYS = frozenset({"config", "epoch", "step", "history", "model", "optimizer", "scheduler", "generator", "order", "torch_rng"})


class StopSignal:
    """SIGTERM or Ctrl-C (SIGINT) during training: finish the current step, save the state, then stop."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self.previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self.previous = {}


def save_train_state(cfg: TrainConfig, epoch: int, step: int, history: list[dict], model: nn.Module,
                     optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                     generator: torch.Generator, order: torch.Generator, partial: dict | None = None) -> None:
    """Everything ``--resume`` needs, in one atomically written file: a kill at any moment leaves a consistent state.

    ``epoch``: epochs finished; ``partial``: for a stop inside the next epoch, the batches done, the data order at the
    epoch's start and the loss sums so far.
    """
    state = {"config": cfg.to_dict(), "epoch": epoch, "step": step, "history": history, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
             "order": order.get_state(), "torch_rng": torch.get_rng_state(), "partial": partial}
    save_torch(cfg.out / TRAIN_STATE, state)


def settings_differing(saved: dict, cfg: TrainConfig) -> list[str]:
    """The settings in which a saved run's config differs from ``cfg``, those a resumed run may change aside: more
    epochs may follow, on another device; the run directory may have moved; the data is compared by place."""
    ignore = NOT_IN_RESULT | {"epochs", "device", "out"}
    saved = {k: v for k, v in saved.items() if k not in ignore}
    wanted = {k: v for k, v in cfg.to_dict().items() if k not in ignore}
    saved["data"], wanted["data"] = str(Path(saved.get("data", "")).resolve()), str(cfg.data.resolve())
    return sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))


def resume_state(cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator,
                 order: torch.Generator, shard: Shard = Shard()) -> tuple[int, int, list[dict], dict | None]:
    """Load ``OUT/train_state.pt`` into the freshly built objects; returns (epochs done, steps done, history, partial).

    Loading never executes code (``weights_only``). A run with other settings is refused: resuming it would
    silently mix two experiments. Every process loads the same state: the random draws are those of the global
    batch, so the number of processes may differ from the interrupted run's.
    """
    path = cfg.out / TRAIN_STATE
    if not path.is_file():
        if shard.main:
            tqdm.write(f"--resume: no {path} yet, starting from the first epoch")
        return 0, 0, [], None
    try:
        state = load_torch_file(path, what="training state")
    except AdaframeError as e:
        raise AdaframeError(f"--resume: {e}") from None
    if not isinstance(state, dict) or not STATE_KEYS <= state.keys():
        raise AdaframeError(f"--resume: {path} is not a training state written by 'adaframe train'")
    diff = settings_differing(state["config"], cfg)
    if diff:
        raise AdaframeError(f"--resume: {cfg.out} was trained with other settings ({', '.join(diff)}); use another --out")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    order.set_state(state["order"])
    torch.set_rng_state(state["torch_rng"])
    partial = state.get("partial")
    where = f"step {state['step']} (inside epoch {state['epoch'] + 1})" if partial else f"epoch {state['epoch']}"
    if shard.main:
        tqdm.write(f"--resume: continuing {cfg.out} after {where} of {cfg.epochs} epochs")
    return int(state["epoch"]), int(state["step"]), list(state["history"]), partial


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
    o = cfg.optim
    if o.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=o.weight_decay)
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=o.lr_step, gamma=0.1)


class TrainStep(nn.Module):
    """A model and its loss as one module: DistributedDataParallel wraps this, so the whole loss is its forward."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, generator: torch.Generator, shard: Shard):
        super().__init__()
        self.model, self.cfg, self.generator, self.shard = model, cfg, generator, shard

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        model, c, g, shard = self.model, self.cfg, self.generator, self.shard
        if isinstance(model, AdaFrame):
            return adaframe_loss(model, batch, c.frames, c.gamma, c.reward_weight, g, c.normalize_advantage, c.reward, shard)
        if isinstance(model, StopAgent):
            return stop_agent_loss(model, batch, c.frames, c.gamma, c.reward_weight, c.step_cost, g, c.normalize_advantage,
                                   c.reward, shard)
        if isinstance(model, AvgPooling):
            return avgpool_loss(model, batch, shard)
        return lstm_loss(model, batch, c.frames, g, shard)


def validate(model: nn.Module, val_set: FeatureDataset, frames: int, device: torch.device, shard: Shard) -> dict[str, float]:
    """Validation mAP and top-1; each process evaluates every N-th video and the scores are gathered."""
    part = val_set if shard.world == 1 else Subset(val_set, range(shard.rank, len(val_set), shard.world))
    res = evaluate(model, part, frames, "uniform", default_stop(model), device=device)
    parts = gather((res.scores, res.labels), shard)
    scores, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return {"val_mAP": 100 * mean_average_precision(scores, labels), "val_top1": 100 * top1(scores, labels)}


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
    agent = cfg.model not in ("avgpool", "lstm")
    train_set = FeatureDataset(cfg.data, "train", memory_frames=cfg.memory_frames if agent else 0)  # baselines read no memory
    if len(train_set.classes) < 2:
        raise AdaframeError(f"{cfg.data / 'videos.csv'} has {len(train_set.classes)} class ({', '.join(train_set.classes)}): "
                            "recognition needs at least 2")
    try:
        val_set = FeatureDataset(cfg.data, "val", classes=train_set.classes, memory_frames=train_set.memory_frames)
    except AdaframeError as e:
        if "is empty" not in str(e):
            raise
        val_set = None
        if shard.main:
            print("warning: no val split; training without validation", file=sys.stderr)
    dims = {"feature_dim": train_set.feature_dim, "memory_dim": train_set.memory_dim, "num_classes": len(train_set.classes),
            "hidden": cfg.hidden, "std": cfg.policy_std, "memory_frames": train_set.memory_frames}
    if cfg.model == "adaframe":
        dims.update(memory_read=cfg.memory_read, selection=cfg.selection)
    features = read_spec(cfg.data)  # how the features were made; predict rebuilds the backbones from it
    model = build_model(cfg.model, dims)
    if cfg.standardize:  # fixed input standardisation of the recurrent models
        set_statistics(model, feature_statistics(train_set))
    model = model.to(device)
    optimizer, scheduler = make_optimizer(model, cfg)
    if shard.main:
        prepare_out(cfg)
        write_json(cfg.out / "config.json", {"train": cfg.to_dict(), "dims": dims, "classes": train_set.classes})
        unseen = sorted(set(train_set.classes) - {train_set.classes[i] for i in np.unique(train_set.labels)})
        if unseen:
            print(f"warning: {len(unseen)} class(es) of videos.csv have no train video, so the model cannot learn them: "
                  f"{', '.join(unseen[:5])}{' ...' if len(unseen) > 5 else ''}", file=sys.stderr)

    generator = torch.Generator(device=device).manual_seed(cfg.seed)  # exploration noise and frame sampling
    order = torch.Generator().manual_seed(cfg.seed)  # the data order: each epoch's shuffle draws from it
    loader = sharded_loader(train_set, cfg.batch_size, shard, order, collate_fn=collate, num_workers=cfg.workers)
    history: list[dict] = []
    start_epoch, step, partial = 0, 0, None
    if cfg.resume:
        start_epoch, step, history, partial = resume_state(cfg, model, optimizer, scheduler, generator, order, shard)
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
                        save_train_state(cfg, epoch, step, history, model, optimizer, scheduler, generator, order,
                                         {"batches": i + 1, "order": order_at_start, "sums": sums})
                        writer.close()
                        tqdm.write(f"stopped by {signals.requested or 'a signal'} after step {step}: {cfg.out / TRAIN_STATE} holds it; continue with --resume")
                    distributed.barrier(shard)
                    raise KeyboardInterrupt
            scheduler.step()
            record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
            record.update({k: v / len(loader) for k, v in sums.items()})
            if val_set is not None:
                record.update(validate(model, val_set, cfg.frames, device, shard))
            history.append(record)
            bar.set_postfix({k: f"{record[k]:.3g}" for k in ("loss", "val_mAP") if k in record})
            if writer is not None:
                for k, v in record.items():
                    if k != "epoch":
                        writer.add_scalar(f"epoch/{k}", v, epoch + 1)
                save_checkpoint(cfg.out, model, cfg.model, dims, train_set.classes, cfg.to_dict(), {"epoch": epoch + 1, "features": features})
                atomic_write(cfg.out / "metrics.jsonl", lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in history)))
                save_train_state(cfg, epoch + 1, step, history, model, optimizer, scheduler, generator, order)
        if writer is not None:
            writer.close()
        distributed.barrier(shard)  # the files are complete before any process returns
    finally:
        signals.restore()
        if writer is not None:  # after an error too (closing twice is harmless): flushes what was logged, ends its thread
            writer.close()
    return cfg.out
