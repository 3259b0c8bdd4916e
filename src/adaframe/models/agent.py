"""The AdaFrame agent (Section 3.1): an LSTM that reads one frame a step and decides where to look next.

Step t reads the frame's feature ``v_t`` [B, D] and a context ``u_t`` [B, Dm] attended from the encoded global memory
[B, Td, Dm] (``memory_read``: read by the LSTM too, the paper's, or only by the selection and utility heads). The state ``h_t``
[B, H] feeds three heads: the prediction ``f_p`` (class logits [B, C]; ``prediction`` "pooled" or "mix" adds a frame
classifier's mean softmax and, with ``temporal``, a temporal-order LSTM, combined by ``mix_logits``), the selection
``f_s`` (``GaussianSelection``: a mean relative position [B]; ``SlotSelection``: logits [B, Td + 3] over the memory's
slots, scan, back and forward) and the utility ``f_u`` (a critic [B]). The options are ``AgentConfig``'s; why each
exists: docs/design.md, "The agent: what makes the policy work", "What predicts the class" and "A policy that earns
its frames, or steps aside". Relative positions become frame indices by ``models.positions``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

from adaframe.distributed import exponential, rand, randn
from adaframe.models.frame_classifier import PENALTIES, FrameClassifier, check_penalties
from adaframe.models.positions import fixed_start, location_to_index, scan_indices
from adaframe.models.recurrent import Decision, Exploration, Looked, RecurrentAgent, State, Step
from adaframe.utils import AdaframeError

MemoryRead = Literal["lstm", "policy"]
Selection = Literal["gaussian", "slots"]
Prediction = Literal["lstm", "pooled", "mix"]
FrameLoss = Literal["every", "subset", "both"]
Critic = Literal["state", "prediction"]
Inference = Literal["policy", "scan"]
POSITION_FREQUENCIES = 4
"""the frame's relative position p enters the LSTM as sin and cos of 2^k pi p, k < 4 (8 numbers)"""
CRITIC_FEATURES = 3
"""what the critic reads of the prediction: its two largest probabilities and the best margin before this step"""


class Where(NamedTuple):
    """What AdaFrame knows of where it is before a step (``AdaFrame.where``), for the A videos it runs on."""

    blocked: torch.Tensor  # [A, Td + 3] bool: the slots policy's actions that would look at nothing new
    position: torch.Tensor  # [A] relative position in [0, 1) of the frame about to be read


def position_features(position: torch.Tensor) -> torch.Tensor:
    """position [A] in [0, 1] -> [A, 2 * POSITION_FREQUENCIES]: sin and cos of ``2^k pi p`` (k = 0 alone is monotone in p,
    the higher ones tell nearby positions apart)."""
    angles = position[:, None] * math.pi * (2.0 ** torch.arange(POSITION_FREQUENCIES, device=position.device))  # [A, F]
    return torch.cat([angles.sin(), angles.cos()], -1)


@dataclass
class AgentConfig:
    feature_dim: int
    memory_dim: int
    num_classes: int
    hidden: int = 1024
    policy_std: float = 0.1
    """std of the Gaussian selection policy"""
    start: float = 0.5
    """relative position of the first frame (gaussian selection)"""
    memory_read: MemoryRead = "policy"
    """who reads the global memory: the LSTM ("lstm", the paper) or only the selection and utility heads"""
    selection: Selection = "slots"
    """the selection policy: the paper's Gaussian over positions, or a choice among memory slots and a uniform scan"""
    scan_bias: float = 3.0
    """slots selection: initial bias of the scan action's logit (3: the untrained agent mostly scans)"""
    prediction: Prediction = "mix"
    """what predicts the class: the LSTM's head ("lstm", the paper), the mean of a frame classifier's softmax over the
    frames looked at ("pooled", AvgPooling's rule), or both mixed with weights fitted on held-out videos ("mix")"""
    temporal: bool = False
    """prediction "mix": a second LSTM re-reads, at every step, the frames looked at so far in temporal order (each with
    its position), as the LSTM baseline reads its frames, and predicts as a third part of the mix; so a class told by
    the order of two moments is not lost to the order the policy visits them in"""
    positions: bool = False
    """the LSTM reads each frame's relative position in the video with it (``position_features``), so that the
    recurrent prediction knows the frames' temporal order whatever order the policy visits them in"""
    frame_loss: FrameLoss = "every"
    """how the frame classifier of a pooled or mixed prediction trains: on every frame of the training videos
    (AvgPooling's loss), on the mean softmax of K random frames ("subset"), or "both": two classifiers, one each way, and
    the val split picks the one the pooled prediction reads (``pooled_by``)"""
    pooled_by: Literal["every", "subset"] = "every"
    """frame_loss "both": the classifier the pooled prediction reads (set by training on the val split)"""
    frame_penalties: tuple[float, ...] = PENALTIES
    """the L2 penalties of each frame classifier's bank; the val split picks one per classifier
    (``models/frame_classifier.py``)"""
    critic: Critic = "state"
    """what the utility head reads: ``[h_t, u_t]`` ("state", the paper) or also the prediction that decides the reward:
    its two largest probabilities and the best margin of the steps before ("prediction")"""
    inference: Inference = "policy"
    """where inference looks: the policy's choices, or the uniform scan (set by training where the policy added
    nothing over the scan on the val split)"""

    def __post_init__(self) -> None:
        if min(self.feature_dim, self.num_classes, self.hidden) < 1 or self.memory_dim < 0:
            raise AdaframeError(f"invalid AgentConfig dims: {self}")
        if self.policy_std <= 0 or not 0.0 <= self.start <= 1.0:
            raise AdaframeError("policy_std must be > 0 and start in [0, 1]")
        if self.memory_read not in ("lstm", "policy") or self.selection not in ("gaussian", "slots"):
            raise AdaframeError(f"unknown memory_read {self.memory_read!r} or selection {self.selection!r}")
        if self.prediction not in ("lstm", "pooled", "mix"):
            raise AdaframeError(f"unknown prediction {self.prediction!r} (expected lstm, pooled or mix)")
        if self.frame_loss not in ("every", "subset", "both") or self.pooled_by not in ("every", "subset") or self.critic not in ("state", "prediction"):
            raise AdaframeError(f"unknown frame_loss {self.frame_loss!r} or critic {self.critic!r}")
        if self.inference not in ("policy", "scan"):
            raise AdaframeError(f"unknown inference {self.inference!r} (expected policy or scan)")
        check_penalties(self.frame_penalties)
        if self.temporal and self.prediction != "mix":
            raise AdaframeError("temporal: the temporal-order LSTM is a part of the mixed prediction: use prediction 'mix'")


class SelectionPolicy(nn.Module):
    """AdaFrame's f_s and its policy: ``forward`` scores where to look next, ``choose`` turns the scores into a frame."""

    def choose(self, output: torch.Tensor, looked: Looked, rows: torch.Tensor, lengths: torch.Tensor, step: int,
               explore: Exploration | None) -> Decision:
        raise NotImplementedError


class GaussianSelection(SelectionPolicy):
    """The paper's f_s: ``sigmoid(W h_t)`` is the mean of a Gaussian over the next relative position. When the LSTM
    does not read the memory (``memory_read`` "policy"), it reads ``[h_t, u_t]``, so that the memory still reaches it."""

    def __init__(self, cfg: AgentConfig):
        super().__init__()
        self.std = cfg.policy_std
        self.reads_memory = cfg.memory_read == "policy"
        self.fc = nn.Linear(cfg.hidden + (cfg.memory_dim if self.reads_memory else 0), 1)

    def forward(self, h: torch.Tensor, u: torch.Tensor, encoded: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(torch.cat([h, u], dim=-1) if self.reads_memory else h)).squeeze(-1)  # [B]

    def choose(self, mean: torch.Tensor, looked: Looked, rows: torch.Tensor, lengths: torch.Tensor, step: int,
               explore: Exploration | None) -> Decision:
        if explore is None:
            return Decision(location_to_index(mean, lengths), torch.zeros_like(mean))
        noise = explore.draw(randn, mean.shape, mean.device)
        action = (mean + self.std * noise).detach()
        return Decision(location_to_index(action, lengths), Normal(mean, self.std).log_prob(action))


class SlotSelection(SelectionPolicy):
    """A categorical over Td + 3 actions: the global memory's slots not yet looked at, the next position of a uniform
    scan, and the frame just before or after the last one (a closer look at what it just saw)."""

    def __init__(self, cfg: AgentConfig):
        super().__init__()
        self.query = nn.Linear(cfg.hidden + cfg.memory_dim, cfg.memory_dim) if cfg.memory_dim else None
        self.moves = nn.Linear(cfg.hidden + cfg.memory_dim, 3)  # scan, back, forward
        # Zero weights: the untrained policy is the same for every video (mostly the scan), and its gradient into the
        # shared LSTM starts at zero and grows only as the policy learns.
        for layer in (self.query, self.moves):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        with torch.no_grad():
            self.moves.bias[0] = cfg.scan_bias

    def forward(self, h: torch.Tensor, u: torch.Tensor, encoded: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        """-> logits [B, Td + 3]: the slots, then scan, back, forward; a blocked action gets -1e4."""
        z = torch.cat([h, u], dim=-1)  # [B, H + Dm]
        moves = self.moves(z)  # [B, 3]
        if self.query is not None and encoded.shape[1]:
            scores = torch.einsum("bd,btd->bt", self.query(z), encoded) / math.sqrt(encoded.shape[-1])  # [B, Td]
            moves = torch.cat([scores, moves], dim=-1)
        return moves.masked_fill(blocked, -1e4)

    def choose(self, logits: torch.Tensor, looked: Looked, rows: torch.Tensor, lengths: torch.Tensor, step: int,
               explore: Exploration | None) -> Decision:
        """The action for videos ``rows`` after ``step`` (-1: before the first) from their logits [A, Td + 3]; a scan
        action advances the rows' scans."""
        slots, scan = logits.shape[1] - 3, looked.scan
        if explore is not None:
            # A categorical draw as argmax(p / Exp(1)) (torch.multinomial's), the noise drawn for the global batch.
            q = explore.draw(exponential, logits.shape, logits.device)  # [A, Td + 3]
            action = (torch.softmax(logits.detach(), -1) / q).argmax(-1)  # [A]
            log_prob = torch.log_softmax(logits, -1).gather(1, action[:, None]).squeeze(1)
        else:
            action, log_prob = logits.argmax(-1), logits.new_zeros(logits.shape[0])
        is_scan, is_slot = action == slots, action < slots
        k = len(looked.scan)
        scans = next_scan(looked, rows, lengths).clamp(max=k - 1)  # [A] the scan's next position not looked at yet
        looked.scans[rows] = torch.where(is_scan, scans + 1, looked.scans[rows])
        slot = action.clamp(max=max(slots - 1, 0))  # [A]
        neighbour = looked.frames[rows, step] + torch.where(action == slots + 1, -1, 1)  # [A] back or forward
        if explore is None:  # the frames themselves, in integer arithmetic: the scan reads exactly the K uniform frames
            at_scan = scan_indices(lengths, k).gather(1, scans[:, None]).squeeze(1)  # [A]
            at_slot = (2 * slot + 1) * lengths // (2 * max(slots, 1))  # [A] the slot's centre, floor((j + 0.5) T / Td)
            index = torch.where(is_scan, at_scan, torch.where(is_slot, at_slot, neighbour))
            return Decision(torch.minimum(index.clamp(min=0), lengths - 1), log_prob)
        # Training: anywhere within the scan position's segment or the slot's stretch, so the classifier sees varied frames.
        dtype = logits.dtype
        at_scan, at_slot = scan[scans], (slot.to(dtype) + 0.5) / max(slots, 1)  # [A] relative positions
        width = torch.where(is_scan, 1.0 / k, 1.0 / max(slots, 1))
        position = torch.where(is_scan, at_scan, at_slot) + width * (explore.draw(rand, at_scan.shape, at_scan.device) - 0.5)
        index = torch.where(is_scan | is_slot, location_to_index(position, lengths), neighbour)
        return Decision(torch.minimum(index.clamp(min=0), lengths - 1), log_prob)


def next_scan(looked: Looked, rows: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[A] the uniform scan's next position (index into ``looked.scan``) whose frame no step has looked at yet: a slot or a
    neighbour may have looked at a scan position's frame first, and the scan skips it. K when none is left."""
    k = len(looked.scan)
    frames = scan_indices(lengths, k)  # [A, K] the scan's frames, in its order
    seen = (frames[:, :, None] == looked.frames[rows][:, None, :]).any(-1)  # [A, K]
    open_ = ~seen & (torch.arange(k, device=rows.device)[None, :] >= looked.scans[rows][:, None])  # [A, K]
    return torch.where(open_.any(1), open_.float().argmax(1), k)  # argmax: the first open position


class AdaFrame(RecurrentAgent):
    """The agent of Section 3.1 (see the module's docstring for its options)."""

    def __init__(self, cfg: AgentConfig):
        inputs = cfg.feature_dim + (cfg.memory_dim if cfg.memory_read == "lstm" else 0) + (2 * POSITION_FREQUENCIES if cfg.positions else 0)
        super().__init__(cfg, inputs)
        self.select = GaussianSelection(cfg) if cfg.selection == "gaussian" else SlotSelection(cfg)  # f_s
        self.utility = nn.Linear(cfg.hidden + cfg.memory_dim + (CRITIC_FEATURES if cfg.critic == "prediction" else 0), 1)  # f_u
        bank = lambda: FrameClassifier(cfg.feature_dim, cfg.num_classes, tuple(cfg.frame_penalties))  # noqa: E731
        self.frame_head = bank() if cfg.prediction != "lstm" else None  # by cfg.frame_loss
        self.subset_head = bank() if cfg.prediction != "lstm" and cfg.frame_loss == "both" else None
        # The temporal-order classifier: an LSTM over the frames looked at, sorted by time, each with its position.
        self.ordered = nn.LSTM(cfg.feature_dim + 2 * POSITION_FREQUENCIES, cfg.hidden, batch_first=True) if cfg.temporal else None
        self.ordered_head = nn.Linear(cfg.hidden, cfg.num_classes) if cfg.temporal else None
        # The mix's weights: pooled, recurrent (and temporal). Fitted on val (fit_mix), saved with the weights.
        parts = 3 if cfg.temporal else 2
        self.register_buffer("mix", torch.tensor([1.0, 0.0]) if cfg.prediction == "pooled" else torch.ones(parts))
        # A critic that starts at 0: no reward expected, and no gradient into the LSTM before it has learned anything.
        nn.init.zeros_(self.utility.weight)
        nn.init.zeros_(self.utility.bias)

    @property
    def chooses_first(self) -> bool:  # type: ignore[override]
        return self.cfg.selection == "slots"

    def act(self, out: Step, looked: Looked, rows: torch.Tensor, lengths: torch.Tensor, step: int,
            explore: Exploration | None, last: bool) -> Decision | None:
        """The next frame after ``step``, chosen by f_s; nothing after the last step (it would never be looked at)."""
        return None if last else self.select.choose(out.policy, looked, rows, lengths, step, explore)

    def state_names(self) -> tuple[str, ...]:
        """The state from step to step, in order: the LSTM's ``h``, ``c`` [B, H]; with the temporal classifier its inputs
        of the frames looked at ``read`` [B, K, D + 2F] and their positions ``at`` [B, K] (2 where no frame is yet: after
        every position); ``count`` [B], the frames looked at (with a frame classifier or the temporal one); with a frame
        classifier ``summed`` [B, C], the sum of its softmaxes over them; with the prediction critic ``best`` [B], the best
        margin (top-1 - top-2 probability) so far."""
        names = ("h", "c") + (("read", "at") if self.ordered is not None else ())
        if self.ordered is not None or self.frame_head is not None:
            names += ("count",)
        if self.frame_head is not None:
            names += ("summed",)
        return names + (("best",) if self.cfg.critic == "prediction" else ())

    def initial_state(self, batch: int, device: torch.device, steps: int = 1) -> State:
        """See ``state_names`` (``steps``: K, the frames the temporal classifier holds); the best margin starts at 0, the
        margin of the uninformed prediction (as the reward's m_0)."""
        zeros = lambda *shape: torch.zeros(batch, *shape, device=device)  # noqa: E731
        start = {"h": zeros(self.cfg.hidden), "c": zeros(self.cfg.hidden), "count": zeros(), "summed": zeros(self.cfg.num_classes),
                 "best": zeros()}
        if self.ordered is not None:
            start.update(read=zeros(steps, self.ordered.input_size), at=torch.full((batch, steps), 2.0, device=device))
        return tuple(start[name] for name in self.state_names())

    def inference_positions(self, lengths: torch.Tensor, steps: int) -> torch.Tensor | None:
        """[B, K] the frames inference looks at where training chose the uniform scan over the policy (in the scan's
        order, the middle first: ``positions.scan_indices``); None where the policy chooses."""
        return None if self.cfg.inference == "policy" else scan_indices(lengths, steps)

    def frame_classifier(self, head: Literal["pooled", "every", "subset"] = "pooled") -> FrameClassifier:
        """The frame classifier the pooled prediction reads, or the one trained on every frame or on K random ones
        (``cfg.frame_loss``: with "both" each has its own, else ``frame_head`` is it)."""
        if head == "pooled":
            head = self.cfg.pooled_by if self.subset_head is not None else "every"
        classifier = self.subset_head if head == "subset" and self.subset_head is not None else self.frame_head
        assert classifier is not None, "prediction 'lstm' has no frame classifier"
        return classifier

    def frame_logits(self, frames: torch.Tensor, head: Literal["pooled", "every", "subset"] = "pooled") -> torch.Tensor:
        """frames [..., D] -> the (picked) logits [..., C] of ``frame_classifier(head)``."""
        return self.frame_classifier(head)(self.frame_norm(frames))

    def frame_bank(self, frames: torch.Tensor, head: Literal["every", "subset"]) -> torch.Tensor:
        """frames [..., D] -> the logits [..., G, C] of every classifier in ``frame_classifier(head)``'s bank."""
        return self.frame_classifier(head).bank(self.frame_norm(frames))

    def frame_penalty(self) -> torch.Tensor:
        """The L2 penalties of the frame classifiers' banks."""
        return sum((c.penalty() for c in (self.frame_head, self.subset_head) if c is not None), torch.zeros(()))

    def where(self, looked: Looked, rows: torch.Tensor, lengths: torch.Tensor, step: int) -> Where:
        """The slots policy's actions that would look at nothing new (``Looked.blocked``; the scan once its positions are
        all looked at), and the position of the frame the step reads."""
        exhausted = next_scan(looked, rows, lengths) >= len(looked.scan)  # [A]
        return Where(looked.blocked(rows, lengths, step, exhausted), looked.frames[rows, step].float() / lengths.float())

    def read_in_order(self, x: torch.Tensor, position: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The temporal classifier: ``x`` [B, D + 2F] joins the frames read before (``read``, ``at``), and its LSTM reads
        them all sorted by position (the slots of frames not looked at yet, at position 2, sort after them and are not
        read) -> its state after the last of them [B, H], and the new ``read`` and ``at``."""
        n = state["count"].long()  # [B] frames read before
        slot = torch.arange(state["at"].shape[1], device=x.device)[None, :] == n[:, None]  # [B, K] where this frame goes
        read = torch.where(slot[:, :, None], x[:, None, :], state["read"])  # [B, K, D + 2F]
        at = torch.where(slot, position[:, None], state["at"])  # [B, K]
        order = at.argsort(dim=1)  # [B, K] temporal order, the empty slots last (ties: one frame read twice, either order)
        if not torch.compiler.is_exporting():  # eager: no need to read the empty slots (the export's graph reads all K)
            order = order[:, : int(n.max()) + 1]  # [B, n + 1]
        outputs, _ = self.ordered(read.gather(1, order[:, :, None].expand(-1, -1, read.shape[-1])))  # [B, n + 1, H]
        h = outputs.gather(1, n[:, None, None].expand(-1, 1, outputs.shape[-1])).squeeze(1)  # [B, H] after the n + 1 frames
        return h, {"read": read, "at": at}

    def step(self, frame: torch.Tensor, encoded: torch.Tensor, state: State, where: Where | None = None) -> Step:
        """One step: frame [B, D], encoded [B, Td, Dm], ``state`` (``state_names``), ``where`` (default: no action
        blocked, position 0)."""
        if where is None:
            where = Where(torch.zeros(frame.shape[0], encoded.shape[1] + 3, dtype=torch.bool, device=frame.device),
                          frame.new_zeros(frame.shape[0]))
        s = dict(zip(self.state_names(), state))
        x, where_am_i = self.frame_norm(frame), position_features(where.position)  # [B, D], [B, 2F]
        inputs = torch.cat([x, where_am_i], -1) if self.cfg.positions else x
        if self.cfg.memory_read == "lstm":
            u, _ = self.memory(encoded, s["h"])  # u_t from W_h h_{t-1}
            h, c = self.lstm(torch.cat([inputs, u], dim=-1), (s["h"], s["c"]))
        else:
            h, c = self.lstm(inputs, (s["h"], s["c"]))
            u, _ = self.memory(encoded, h)  # u_t from W_h h_t: what the memory says after this frame
        u = self.head_scale(u)
        selection = self.select(h, u, encoded, where.blocked)
        logits = recurrent = self.forward_head(h)  # [B, C]
        new = {"h": h, "c": c}
        if "count" in s:
            new["count"] = s["count"] + 1
        parts = None
        if self.frame_head is not None:
            new["summed"] = s["summed"] + torch.softmax(self.frame_logits(frame), -1)  # [B, C]
            pooled = torch.log((new["summed"] / new["count"][:, None]).clamp(min=1e-12))  # [B, C] the mean softmax so far: AvgPooling's
            parts = [pooled, recurrent]
            if self.ordered is not None:
                ordered, kept = self.read_in_order(torch.cat([x, where_am_i], -1), where.position, s)
                new.update(kept)
                parts.append(self.ordered_head(ordered))
            parts = torch.stack(parts, 1)  # [B, P, C]
            logits = mix_logits(parts, self.mix)
        critic = [h, u]
        if self.cfg.critic == "prediction":  # the reward is the prediction's margin over the best before: the critic sees both
            probs = torch.softmax(logits.detach(), -1)  # [B, C]
            top = F.pad(probs, (0, 1)).topk(2, -1).values  # [B, 2] (with one class, the second is the 0 padded on)
            critic += [top, s["best"][:, None]]
            new["best"] = torch.maximum(s["best"], top[:, 0] - top[:, 1])
        utility = self.utility(torch.cat(critic, dim=-1)).squeeze(-1)  # [B]
        return Step(logits, selection, utility, tuple(new[name] for name in self.state_names()), parts=parts)

    def flops_probe(self, memory_frames: int, device: torch.device | str = "cpu", steps: int = 1) -> Callable[[], object]:
        """One step at batch 1 (``RecurrentAgent.flops_probe``). The temporal classifier's LSTM runs over up to K =
        ``steps`` frames, which ``nn.LSTM`` hides from the FLOP counter: its K cells are counted as ``torch.lstm_cell``
        on the same weights (an upper bound: at step t it reads t + 1)."""
        step = super().flops_probe(memory_frames, device, steps)
        if self.ordered is None:
            return step
        lstm = self.ordered
        x, h = torch.zeros(1, lstm.input_size, device=device), torch.zeros(1, self.cfg.hidden, device=device)

        def probe() -> None:
            step()
            for _ in range(steps):
                torch.lstm_cell(x, (h, h), lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
        return probe

    def head_scale(self, u: torch.Tensor) -> torch.Tensor:
        """``u / sqrt(Dm)``: the memory's context enters the selection and utility heads at the scale of ``h`` (norm ~1),
        whatever the memory's width (why: docs/design.md, "The agent: what makes the policy work", point 3)."""
        return u / math.sqrt(max(self.cfg.memory_dim, 1))

    def first(self, encoded: torch.Tensor, lengths: torch.Tensor, looked: Looked, explore: Exploration | None) -> Decision:
        """Gaussian selection: the fixed ``start``. Slots: a choice from the memory read with ``h_0 = 0``."""
        if self.cfg.selection == "gaussian":
            return fixed_start(self.cfg.start, lengths)
        rows = torch.arange(encoded.shape[0], device=encoded.device)
        return self.select.choose(self.first_scores(encoded), looked, rows, lengths, -1, explore)

    def first_scores(self, encoded: torch.Tensor) -> torch.Tensor:
        """Slots selection: the logits of the first choice [B, Td + 3], from the memory read with ``h_0 = 0`` (no last
        frame to step back or forward from)."""
        b, slots = encoded.shape[:2]
        h = torch.zeros(b, self.cfg.hidden, device=encoded.device)
        u = self.head_scale(self.memory(encoded, h)[0])
        blocked = torch.zeros(b, slots + 3, dtype=torch.bool, device=h.device)
        blocked[:, slots + 1:] = True
        return self.select(h, u, encoded, blocked)


def mix_logits(parts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i * parts_i``: the mixed prediction of the parts' logits ``parts`` [..., P, C] (pooled, recurrent and,
    with the temporal classifier, temporal) with ``weights`` [P] -> [..., C]."""
    return (parts * weights[:, None]).sum(-2)  # element-wise: no matmul for the FLOP counter


def fit_mix(parts: torch.Tensor, labels: torch.Tensor, iterations: int = 50) -> torch.Tensor:
    """The weights ``w > 0`` of ``softmax(sum_i w_i * parts_i)`` that minimise its cross-entropy over every step of
    held-out videos (a P-parameter logistic regression: Platt's and temperature scaling's idea, for P classifiers at
    once).

    Args:
        parts: [N, K, P, C] the parts' logits at each step (``Rollout.parts``; NaN after a stop).
        labels: [N].

    Returns:
        [P] the weights.
    """
    ok = ~torch.isnan(parts[:, :, 0, 0])  # [N, K] steps taken
    taken = parts[ok].double()  # [M, P, C]; float64: the optimum, not float32's noise, decides where LBFGS stops
    target = labels[:, None].expand_as(ok)[ok]  # [M]
    log_w = torch.zeros(parts.shape[2], dtype=torch.float64, requires_grad=True)  # every weight starts at 1
    opt = torch.optim.LBFGS([log_w], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(mix_logits(taken, log_w.clamp(-10, 5).exp()), target)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return log_w.detach().clamp(-10, 5).exp().float()
