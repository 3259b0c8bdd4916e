"""The AdaFrame agent: shapes, gradients, edge cases, the loss, its policies and the mixed prediction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adaframe.data.features import Batch, FeatureDataset, collate, sample_indices
from adaframe.evaluate.split import agent_batch, evaluate, policy_indices
from adaframe.models.agent import AdaFrame, AgentConfig, fit_mix, next_scan
from adaframe.models.positions import scan_order, scan_positions
from adaframe.models.recurrent import Looked
from adaframe.rl.losses import agent_loss
from adaframe.rl.rollout import StopRule
from conftest import lively, run_agent

B, D, DM, C, H = 5, 16, 8, 4, 32


def make_model(memory_dim=DM, seed=0, **kw) -> AdaFrame:
    torch.manual_seed(seed)
    return AdaFrame(AgentConfig(feature_dim=D, memory_dim=memory_dim, num_classes=C, hidden=H, **kw))


def random_inputs(lengths, td=16, dm=DM, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    feats = torch.randn(len(lengths), int(lengths.max()), D, generator=g)
    feats[torch.arange(feats.shape[1])[None, :] >= lengths[:, None]] = 0.0
    memory = torch.randn(len(lengths), td, dm, generator=g)
    return feats, lengths, memory


@pytest.fixture(scope="module")
def train_batch(synth_dir):
    ds = FeatureDataset(synth_dir, "train")
    return collate([ds[i] for i in range(12)])


# Every agent variant: the paper's (memory read by the LSTM, Gaussian selection), the default (memory read by
# the policy, slots selection) and the two mixes.
# The slots agents start with scan_bias 0, so that they jump to memory slots as often as they scan.
VARIANTS = [{"memory_read": r, "selection": s, "prediction": "lstm", **({"scan_bias": 0.0} if s == "slots" else {})}
            for r in ("lstm", "policy") for s in ("gaussian", "slots")]
VARIANTS += [{"memory_read": "policy", "selection": "slots", "prediction": "mix", "scan_bias": 0.0},
             {"memory_read": "lstm", "selection": "gaussian", "prediction": "pooled", "frame_loss": "subset"},
             # the default agent (the fast preset's): temporal order, positions, the prediction critic, both frame losses
             {"memory_read": "policy", "selection": "slots", "prediction": "mix", "scan_bias": 0.0, "temporal": True,
              "positions": True, "critic": "prediction", "frame_loss": "both"}]
VARIANT_IDS = [f"{v['memory_read']}-{v['selection']}-{v['prediction']}" + ("-temporal" if v.get("temporal") else "")
               for v in VARIANTS]

# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("explore", [True, False])
@pytest.mark.parametrize("steps", [1, 3, 6])
def test_forward_rollout_shapes(train_batch, explore, steps, variant):
    model = make_model(**variant)
    roll = run_agent(model, train_batch.features, train_batch.lengths, train_batch.memory, steps, explore=explore,
                 generator=torch.Generator().manual_seed(0))
    n = train_batch.features.shape[0]
    assert roll.logits.shape == (n, steps, C)
    assert roll.utilities.shape == (n, steps)
    assert roll.log_probs.shape == (n, steps)
    assert roll.indices.shape == (n, steps) and roll.indices.dtype == torch.int64
    assert ((roll.indices >= 0) & (roll.indices < train_batch.lengths[:, None])).all()
    assert torch.isfinite(roll.logits).all() and torch.isfinite(roll.utilities).all()
    if variant["selection"] == "gaussian":
        # the first frame sits at the fixed start (the middle): floor(0.5 T), and is no choice
        assert roll.indices[:, 0].tolist() == [t // 2 for t in train_batch.lengths.tolist()]
        assert (roll.first_log_prob == 0).all()
        if explore:
            # a Gaussian log-density with std 0.1 is at most -log(0.1 sqrt(2 pi))
            assert (roll.log_probs <= -math.log(0.1 * math.sqrt(2 * math.pi)) + 1e-5).all()
    elif explore:  # log-probabilities of categorical choices, the first frame's included
        assert (roll.log_probs <= 0).all() and (roll.first_log_prob < 0).all()
        assert steps == 1 or (roll.log_probs[:, :-1] < 0).any()
    assert (roll.log_probs[:, -1] == 0).all()  # the last step decides nothing: what it would pick is never looked at
    if not explore:
        assert (roll.log_probs == 0).all() and (roll.first_log_prob == 0).all()


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_forward_explore_uses_generator(train_batch, variant):
    model = make_model(**variant)
    run = lambda s: run_agent(model, train_batch.features, train_batch.lengths, train_batch.memory, 6, explore=True,
                          generator=torch.Generator().manual_seed(s)).indices
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("mu", [None, 0.0])
def test_adaframe_batch_shapes(train_batch, mu, variant):
    model = make_model(**variant).eval()
    out = agent_batch(model, train_batch, 5, None if mu is None else StopRule("utility", mu))
    n = train_batch.features.shape[0]
    assert out.probs.shape == (n, C)
    torch.testing.assert_close(out.probs.sum(1), torch.ones(n))
    assert out.steps.shape == (n,)
    assert out.indices.shape == (n, 5) and out.utilities.shape == (n, 5)
    for b in range(n):
        s = int(out.steps[b])
        assert ((out.indices[b, :s] >= 0) & (out.indices[b, :s] < train_batch.lengths[b])).all()
        assert (out.indices[b, s:] == -1).all()
        assert torch.isfinite(out.utilities[b, :s]).all() and torch.isnan(out.utilities[b, s:]).all()
    if mu is None:
        assert (out.steps == 5).all()
    else:  # mu 0: a video stops at the first step whose utility is below the best so far (the lookahead rule, by hand)
        u = agent_batch(model, train_batch, 5).utilities  # the same path without a stop
        drop = torch.cummax(u, 1).values - u > 0  # [B, 5]
        want = torch.where(drop.any(1), drop.float().argmax(1) + 1, 5)
        assert torch.equal(out.steps, want)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_deterministic_forward_matches_inference(train_batch, variant):
    """explore=False forward and agent_batch (no stop rule) run the same deterministic policy."""
    model = make_model(**variant).eval()
    with torch.no_grad():
        roll = run_agent(model, train_batch.features, train_batch.lengths, train_batch.memory, 5, explore=False)
    out = agent_batch(model, train_batch, 5)
    assert torch.equal(roll.indices, out.indices)
    torch.testing.assert_close(torch.softmax(roll.logits[:, -1], -1), out.probs)
    torch.testing.assert_close(roll.utilities, out.utilities)


# ---------------------------------------------------------------- gradients and the loss


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_full_loss_reaches_every_parameter(train_batch, variant):
    """After one optimiser step (the utility and slots heads start at zero weights, which pass no gradient on to the
    memory's query), every parameter gets a finite, nonzero gradient."""
    model = make_model(**variant)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for seed in (0, 1):
        opt.zero_grad()
        terms = agent_loss(model, train_batch, steps=4, gamma=0.9, reward_weight=1.0, generator=torch.Generator().manual_seed(seed))
        assert torch.isfinite(terms["loss"])
        terms["loss"].backward()
        opt.step()
    names = [n for n, _ in model.named_parameters()]
    assert any(n.startswith("memory.") for n in names) and any(n.startswith("select.") for n in names)
    for name, p in model.named_parameters():
        if name.startswith(("head.", "lstm.")) and model.cfg.prediction == "pooled" and model.cfg.memory_read == "lstm":
            continue  # the pooled prediction does not read the LSTM's head (an LSTM that reads the memory still learns)
        assert p.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def naive_loss(model, batch, steps, gamma, lam, seed, normalize=False):
    """L_cls + lam * L_utl - lam * J_sel, written out step by step from the paper's definitions."""
    g = torch.Generator().manual_seed(seed)
    roll = run_agent(model, batch.features, batch.lengths, batch.memory, steps, explore=True, generator=g)
    n = batch.features.shape[0]
    probs = torch.softmax(roll.logits.detach().double(), -1).numpy()
    y = batch.labels.numpy()
    q = np.zeros((n, steps))
    for b in range(n):
        m = [probs[b, t, y[b]] - max(probs[b, t, c] for c in range(C) if c != y[b]) for t in range(steps)]
        r = [max(0.0, m[t] - max([0.0] + m[:t])) for t in range(steps)]
        for t in range(steps):
            q[b, t] = sum(gamma**i * r[t + i] for i in range(steps - t))
    q = torch.from_numpy(q).float()
    standardised = (batch.features - model.frame_norm.mean) / model.frame_norm.std  # [B, T, D]
    if model.cfg.prediction == "lstm":
        l_cls = F.cross_entropy(roll.logits[:, -1], batch.labels)
    else:  # the frame classifiers, and the LSTM's head when mixed
        l_cls = torch.zeros(())
        # Each frame classifier is a bank, one linear classifier per L2 penalty, each with its own loss and penalty.
        every = model.frame_head if model.cfg.frame_loss != "subset" else None
        subset = model.subset_head if model.cfg.frame_loss == "both" else model.frame_head if model.cfg.frame_loss == "subset" else None
        if subset is not None:
            idx = sample_indices(batch.lengths, steps, "random", g)  # [B, K]: K random frames, drawn after the rollout's noise
        for bank in {id(c): c for c in (every, subset) if c is not None}.values():
            for j, penalty in enumerate(bank.penalties.tolist()):
                w, b_ = bank.weight[j], bank.bias[j]
                l_cls = l_cls + penalty / 2 * (w ** 2).sum()
                if bank is every:  # every real frame an example, one mean over all of them
                    ce = [F.cross_entropy(standardised[b, :t] @ w.T + b_, batch.labels[b].expand(t), reduction="sum")
                          for b, t in enumerate(batch.lengths.tolist())]
                    l_cls = l_cls + sum(ce) / batch.lengths.sum()
                if bank is subset:  # the mean of the softmaxes of K random frames
                    logits = standardised[torch.arange(n)[:, None], idx] @ w.T + b_
                    l_cls = l_cls - torch.log(torch.softmax(logits, -1).mean(1)[torch.arange(n), batch.labels]).mean()
        if model.cfg.prediction == "mix":
            l_cls = l_cls + F.cross_entropy(roll.parts[:, -1, 1], batch.labels)
        if model.cfg.temporal:
            l_cls = l_cls + F.cross_entropy(roll.parts[:, -1, 2], batch.labels)
    l_utl = sum(0.5 * (roll.utilities[:, t] - q[:, t]) ** 2 for t in range(steps)).mean()
    # The decision made at step t (the frame of step t + 1) has the advantage Q_t - V_t; the last step's is never used.
    adv = [q[:, t] - roll.utilities[:, t].detach() for t in range(steps - 1)]
    log_pi = [roll.log_probs[:, t] for t in range(steps - 1)]
    if model.cfg.selection == "slots":  # the first frame, chosen from the memory alone: Q_0 minus the batch's mean Q_0
        adv, log_pi = [q[:, 0] - q[:, 0].mean()] + adv, [roll.first_log_prob] + log_pi
    if normalize:  # divided by the (unbiased) std of all the advantages of choices
        flat = torch.cat(adv).double()
        std = math.sqrt(float(((flat - flat.mean()) ** 2).sum()) / (flat.numel() - 1))
        adv = [a / (std + 1e-8) for a in adv]
    j_sel = sum(lp * a for lp, a in zip(log_pi, adv)).mean()
    return l_cls + lam * l_utl - lam * j_sel


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("lam, gamma, normalize", [(1.0, 0.9, False), (0.5, 0.0, False), (2.0, 1.0, False), (1.0, 0.9, True)])
def test_agent_loss_matches_naive_formula(train_batch, lam, gamma, normalize, variant):
    model = make_model(seed=3, **variant)
    kw = {"normalize_advantage": True} if normalize else {}
    got = agent_loss(model, train_batch, steps=4, gamma=gamma, reward_weight=lam, generator=torch.Generator().manual_seed(7), **kw)
    want = naive_loss(model, train_batch, 4, gamma, lam, 7, normalize)
    torch.testing.assert_close(got["loss"], want, rtol=1e-5, atol=1e-5)
    # and the same gradients
    g_got = torch.autograd.grad(got["loss"], list(model.parameters()), allow_unused=True)  # pooled: the LSTM's head is unused
    g_want = torch.autograd.grad(want, list(model.parameters()), allow_unused=True)
    for a, b in zip(g_got, g_want):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- memory size 0, short videos


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_memory_size_zero_forward_loss_inference(variant):
    feats, lengths, _ = random_inputs([9, 4, 12])
    memory = torch.zeros(3, 0, DM)  # Td = 0
    model = make_model(**variant)
    roll = run_agent(model, feats, lengths, memory, 4, explore=True, generator=torch.Generator().manual_seed(0))
    assert roll.logits.shape == (3, 4, C) and torch.isfinite(roll.logits).all()
    from adaframe.data.features import Batch

    batch = Batch(feats, lengths, memory, torch.tensor([0, 1, 2]), torch.arange(3))
    terms = agent_loss(model, batch, 4, 0.9, 1.0, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()
    selection = model.select.fc if variant["selection"] == "gaussian" else model.select.moves  # slots: scan, back, forward
    predicting = model.frame_head if model.cfg.prediction == "pooled" else model.head
    assert predicting.weight.grad is not None and selection.weight.grad.abs().sum() > 0
    model.eval()
    out = agent_batch(model, batch, 4, StopRule("utility", 0.1))
    assert out.probs.shape == (3, C) and torch.isfinite(out.probs).all()
    step = model.step(feats[:, 0], model.memory.encode(memory), model.initial_state(3, torch.device("cpu")))
    assert step.logits.shape == (3, C) and torch.isfinite(step.logits).all()


def test_memory_frames_zero_dataset_end_to_end(synth_dir):
    ds = FeatureDataset(synth_dir, "val", memory_frames=0)
    model = AdaFrame(AgentConfig(ds.feature_dim, ds.memory_dim, len(ds.classes), hidden=H))
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch.memory.shape[:2] == (len(ds), 0)
    terms = agent_loss(model, batch, 3, 0.9, 1.0, generator=torch.Generator().manual_seed(0))
    terms["loss"].backward()
    res = evaluate(model, ds, frames=3, stop=StopRule("utility", 0.5))
    assert res.scores.shape == (len(ds), len(ds.classes)) and np.isfinite(res.scores).all()


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("explore", [True, False])
def test_videos_shorter_than_k(explore, variant):
    feats, lengths, memory = random_inputs([1, 2, 3, 5])
    model = make_model(**variant)
    roll = run_agent(model, feats, lengths, memory, 8, explore=explore, generator=torch.Generator().manual_seed(0))
    assert roll.indices.shape == (4, 8)
    assert ((roll.indices >= 0) & (roll.indices < lengths[:, None])).all()
    assert (roll.indices[0] == 0).all()
    from adaframe.data.features import Batch

    out = agent_batch(model.eval(), Batch(feats, lengths, memory, torch.zeros(4, dtype=torch.long), torch.arange(4)), 8, StopRule("utility", 0.0))
    v = out.indices
    assert ((v == -1) | ((v >= 0) & (v < lengths[:, None]))).all()


# ---------------------------------------------------------------- the slots policy and the uniform scan


def test_looked_marks_the_slots_each_frame_overlaps():
    looked = Looked.start(3, 4, scan_positions(2))
    # by hand, slot j covers [j/4, (j+1)/4): frame 0 of 8 is [0, 1/8) -> slot 0; frame 7 of 8 [7/8, 1) -> 3;
    # frame 2 of 3 [2/3, 1) -> slots 2 (from 0.5) and 3
    looked.mark(torch.tensor([0, 1, 2]), torch.tensor([0, 7, 2]), torch.tensor([8, 8, 3]), 0)
    assert looked.seen.tolist() == [[True, False, False, False], [False, False, False, True], [False, False, True, True]]
    looked.mark(torch.tensor([0, 2]), torch.tensor([4, 1]), torch.tensor([8, 3]), 1)  # [4/8, 5/8) -> 2; [1/3, 2/3) -> 1, 2
    assert looked.seen[0].tolist() == [True, False, True, False] and looked.seen[2].tolist() == [False, True, True, True]
    assert looked.frames.tolist() == [[0, 4], [7, -1], [2, 1]]


def test_looked_blocks_what_would_show_nothing_new():
    looked = Looked.start(3, 4, scan_positions(3))
    rows, lengths = torch.tensor([0, 1, 2]), torch.tensor([8, 8, 3])
    looked.mark(rows, torch.tensor([0, 7, 1]), lengths, 0)
    looked.mark(rows, torch.tensor([1, 3, 0]), lengths, 1)
    blocked = looked.blocked(rows, lengths, 1)  # [slots 0-3, scan, back, forward]
    # video 0 looked at frames 0 then 1: back to 0 was seen; forward to 2 is new
    # video 1 at 7 then 3: frames 2 and 4 are new; video 2 (3 frames) at 1 then 0: back is outside, forward to 1 seen
    assert blocked[:, 4:].tolist() == [[False, True, False], [False, False, False], [False, True, True]]
    assert torch.equal(blocked[:, :4], looked.seen)


def in_scan_segments(indices: torch.Tensor, lengths: torch.Tensor) -> bool:
    """Step t's frame lies in the t-th segment of the scan order: floor(i T / K) <= idx < ceil((i + 1) T / K)."""
    k = indices.shape[1]
    seg = torch.tensor(scan_order(k), dtype=torch.float64)[None, :]
    t = lengths[:, None].double()
    return bool(((indices >= torch.floor(seg * t / k)) & (indices < torch.ceil((seg + 1) * t / k))).all())


@pytest.mark.parametrize("memory_read", ["lstm", "policy"])
def test_untrained_slots_agent_scans_uniformly(memory_read):
    """With the scan action certain, the slots agent looks at the K uniform positions in coarse-to-fine order:
    the uniform scan is the policy's starting point."""
    feats, lengths, memory = random_inputs([9, 30, 12, 50, 6])  # T >= K: the uniform positions are distinct frames
    model = make_model(memory_read=memory_read, selection="slots", scan_bias=1e4)
    for explore in (True, False):
        roll = run_agent(model, feats, lengths, memory, 6, explore=explore, generator=torch.Generator().manual_seed(0))
        if not explore:
            assert torch.equal(roll.indices, policy_indices(lengths, 6, "uniform"))
        else:  # a frame in the scan position's segment
            assert in_scan_segments(roll.indices, lengths), roll.indices
    uniform = sample_indices(lengths, 6, "uniform")  # temporal order
    assert torch.equal(policy_indices(lengths, 6, "uniform"), uniform[:, list(scan_order(6))])


def test_the_scan_skips_a_frame_a_slot_looked_at_first():
    """A jump to a memory slot may look at the frame of a scan position; the scan then goes on past it, and once every
    scan position's frame was looked at, the scan action is blocked: it never looks at a frame twice."""
    model = make_model(selection="slots", memory_dim=4)
    looked, rows, lengths = Looked.start(1, 4, scan_positions(4)), torch.tensor([0]), torch.tensor([8])
    # 8 frames, 4 slots and K = 4: slot j and scan position j both look at frame 2j + 1; the scan's order is 3, 7, 1, 5
    slot_2, scan = torch.full((1, 7), -5.0), torch.full((1, 7), -5.0)
    slot_2[0, 2], scan[0, 4] = 5.0, 5.0  # [slots 0-3, scan, back, forward]
    looked.mark(rows, model.select.choose(slot_2, looked, rows, lengths, -1, None).index, lengths, 0)
    for step in range(1, 4):
        assert not model.where(looked, rows, lengths, step - 1).blocked[0, 4]
        looked.mark(rows, model.select.choose(scan, looked, rows, lengths, step - 1, None).index, lengths, step)
    assert looked.frames.tolist() == [[5, 3, 7, 1]]
    assert next_scan(looked, rows, lengths).tolist() == [4]  # none left
    assert model.where(looked, rows, lengths, 3).blocked[0, 4]


@pytest.mark.parametrize("explore", [True, False])
def test_slots_agent_never_looks_at_a_slot_twice(explore):
    """With scanning impossible, every step jumps to a memory slot no frame looked at so far overlaps, or to a neighbour
    of the last frame not looked at yet: it never pays for the same frame twice. (T >= Td = 32: a frame overlaps at
    most 2 slots, so 10 steps always find a free one.)"""
    feats, lengths, memory = random_inputs([40, 64, 33, 100, 32, 50], td=32)
    model = make_model(memory_read="policy", selection="slots", scan_bias=-1e4)
    roll = run_agent(model, feats, lengths, memory, 10, explore=explore, generator=torch.Generator().manual_seed(1))
    out = agent_batch(model.eval(), Batch(feats, lengths, memory, torch.zeros(6, dtype=torch.long), torch.arange(6)), 10)
    for visited in (roll.indices, out.indices):
        for row, t in zip(visited.tolist(), lengths.tolist()):
            assert len(set(row)) == min(len(row), t), row


# ---------------------------------------------------------------- the mix of the pooled and the recurrent prediction


def mix_parts(n=300, k=3, informative="pooled", seed=0):
    """parts [N, K, 2, C]: one classifier's logits point at the label (plus noise), the other's are noise alone."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % C
    good = 2.0 * F.one_hot(labels, C)[:, None, :].float() + torch.randn(n, k, C, generator=g)  # [N, K, C]
    noise = 3.0 * torch.randn(n, k, C, generator=g)
    pooled, recurrent = (good, noise) if informative == "pooled" else (noise, good)
    return torch.stack([torch.log_softmax(pooled, -1), recurrent], 2), labels


@pytest.mark.parametrize("informative", ["pooled", "recurrent"])
def test_fit_mix_weights_the_classifier_that_generalises(informative):
    parts, labels = mix_parts(informative=informative)
    a, b = fit_mix(parts, labels).tolist()
    assert (a > 5 * b) if informative == "pooled" else (b > 5 * a), (a, b)

    def ce(a, b):
        flat = (a * parts[:, :, 0] + b * parts[:, :, 1]).reshape(-1, C)
        return float(F.cross_entropy(flat, labels[:, None].expand(-1, parts.shape[1]).reshape(-1)))

    best = ce(a, b)  # no point of a grid does better: it is the minimum, not just a descent
    grid = [x / 4 for x in range(0, 17)]
    assert all(best <= ce(x, y) + 1e-4 for x in grid for y in grid)


def test_fit_mix_weights_three_parts():
    """With the temporal classifier the mix has three parts: the informative one gets the weight."""
    parts, labels = mix_parts(informative="recurrent")
    noise = 3.0 * torch.randn(parts.shape[:2] + (C,), generator=torch.Generator().manual_seed(5))
    three = torch.cat([parts[:, :, :1], noise[:, :, None], parts[:, :, 1:]], 2)  # [N, K, 3, C]: pooled, noise, informative
    w = fit_mix(three, labels)
    assert w.shape == (3,) and w[2] > 5 * w[0] and w[2] > 5 * w[1], w.tolist()


def test_fit_mix_reads_only_the_steps_taken():
    parts, labels = mix_parts(n=200, k=4)
    stopped = parts.clone()
    stopped[:100, 2:] = float("nan")  # half the videos stopped after 2 steps
    kept = torch.cat([parts[:100, :2].reshape(-1, 1, 2, C), parts[100:].reshape(-1, 1, 2, C)])  # the same steps, one a row
    kept_labels = torch.cat([labels[:100].repeat_interleave(2), labels[100:].repeat_interleave(4)])
    torch.testing.assert_close(fit_mix(stopped, labels), fit_mix(kept, kept_labels), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- temporal order, positions, the critic's inputs


def test_the_temporal_classifier_reads_the_frames_looked_at_sorted_by_time():
    """At every step the temporal classifier's prediction is its LSTM over the frames looked at so far in temporal order,
    each with its position, whatever order they were visited in: the LSTM baseline's view of the same frames."""
    from adaframe.models.agent import position_features
    from adaframe.rl.rollout import rollout, stored_frames

    feats, lengths, memory = random_inputs([30, 17, 52])
    model = make_model(memory_read="policy", selection="slots", temporal=True).eval()
    positions = torch.tensor([[20, 3, 11, 27], [0, 16, 8, 4], [51, 50, 2, 25]])  # visiting order, not temporal
    roll = rollout(model, memory, lengths, stored_frames(feats), 4, positions=positions)
    for t in range(4):
        seen = positions[:, : t + 1].sort(1).values  # [B, t+1] in time
        x = torch.cat([model.frame_norm(feats[torch.arange(3)[:, None], seen]),
                       position_features((seen.float() / lengths[:, None]).flatten()).view(3, t + 1, -1)], -1)
        with torch.no_grad():
            h = model.ordered(x)[0][:, -1]  # [B, H] after the last of them in time
        torch.testing.assert_close(roll.parts[:, t, 2], model.ordered_head(h), rtol=1e-5, atol=1e-5)
    swapped = rollout(model, memory, lengths, stored_frames(feats), 4, positions=positions[:, [3, 1, 0, 2]])
    torch.testing.assert_close(swapped.parts[:, -1, 2], roll.parts[:, -1, 2], rtol=1e-5, atol=1e-5)  # same frames, any order
    torch.testing.assert_close(roll.logits, torch.einsum("bkpc,p->bkc", roll.parts, model.mix))  # the mix of three parts


def test_positions_tell_the_lstm_where_a_frame_was():
    """The same frame read at another place in the video gives another prediction (the LSTM reads its position)."""
    feats, lengths, memory = random_inputs([40])
    feats[0, 35] = feats[0, 2]  # one frame, at two places
    from adaframe.rl.rollout import rollout, stored_frames

    def recurrent(model: AdaFrame, at: int) -> torch.Tensor:  # [P - 1, C] the recurrent (and temporal) prediction
        return rollout(model, memory, lengths, stored_frames(feats), 1, positions=torch.tensor([[at]])).parts[0, 0, 1:]

    model = make_model(memory_read="policy", selection="slots", positions=True, temporal=True).eval()
    assert not torch.allclose(recurrent(model, 2)[0], recurrent(model, 35)[0])  # the agent's LSTM
    assert not torch.allclose(recurrent(model, 2)[1], recurrent(model, 35)[1])  # the temporal classifier's (always)
    no_positions = make_model(memory_read="policy", selection="slots").eval()
    torch.testing.assert_close(recurrent(no_positions, 2), recurrent(no_positions, 35))  # it cannot tell the two apart


def test_the_prediction_critic_reads_the_prediction_and_the_best_margin_before():
    """critic "prediction": the utility is linear in [h, u / sqrt(Dm), top-1 and top-2 probability, best margin of the
    steps before], and the state carries that best margin (the reward's max over t' < t)."""
    feats, lengths, memory = random_inputs([30, 20, 44])
    model = make_model(memory_read="policy", selection="slots", prediction="mix", critic="prediction", frame_loss="both").eval()
    with torch.no_grad():
        model.utility.weight.normal_()
    state, encoded = model.initial_state(3, torch.device("cpu")), model.encode(memory)
    best = torch.zeros(3)
    for t in range(4):
        s = dict(zip(model.state_names(), state))
        assert torch.equal(s["best"], best)
        out = model.step(feats[:, t * 5], encoded, state)
        top = torch.softmax(out.logits, -1).topk(2, -1).values
        h = out.state[model.state_names().index("h")]
        u = model.head_scale(model.memory(encoded, h)[0])
        want = model.utility(torch.cat([h, u, top, best[:, None]], -1)).squeeze(-1)
        torch.testing.assert_close(out.utility, want)
        best = torch.maximum(best, top[:, 0] - top[:, 1])
        state = out.state


def test_inference_by_the_scan_looks_at_the_uniform_positions_unless_told_to_run_the_policy():
    feats, lengths, memory = random_inputs([30, 20, 44, 9])
    model = lively(make_model(memory_read="policy", selection="slots", scan_bias=0.0)).eval()
    batch = Batch(feats, lengths, memory, torch.zeros(4, dtype=torch.long), torch.arange(4))
    by_policy = agent_batch(model, batch, 5).indices
    model.cfg.inference = "scan"
    assert torch.equal(agent_batch(model, batch, 5).indices, policy_indices(lengths, 5, "uniform"))
    assert torch.equal(agent_batch(model, batch, 5, policy="policy").indices, by_policy)
    assert not torch.equal(by_policy, policy_indices(lengths, 5, "uniform"))
