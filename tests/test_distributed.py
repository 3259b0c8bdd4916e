"""Data-parallel training: N processes under torchrun train what one process trains with the same global batch."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader

from adaframe.data.features import FeatureDataset
from adaframe.distributed import Shard, ShardedRandomSampler, exponential, rand, randn, sharded_loader
from conftest import adaframe, torchrun, torchrun_command

TRAIN = ("--frames", "3", "--hidden", "16", "--batch-size", "16", "--no-progress")


@pytest.mark.parametrize("size", [37, 100])
def test_one_process_loader_is_a_shuffling_dataloader(size):
    """Single-process runs keep the data order (and RNG use) of ``DataLoader(shuffle=True, generator=g)``."""
    torch.manual_seed(0)
    ours = sharded_loader(range(size), 8, Shard(), torch.Generator().manual_seed(3))
    theirs = DataLoader(range(size), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3), drop_last=True)
    for _ in range(3):  # epochs: the generators must advance alike too
        assert [b.tolist() for b in ours] == [b.tolist() for b in theirs]
    assert torch.equal(torch.get_rng_state(), torch.manual_seed(0).get_state())  # the global RNG is left alone


@pytest.mark.parametrize("size", [37, 48, 64])
@pytest.mark.parametrize("world", [2, 3])
def test_shards_make_up_the_global_batches(size, world):
    local = 4
    single = list(BatchSampler(ShardedRandomSampler(size, Shard(), torch.Generator().manual_seed(1)), local * world, drop_last=True))
    ranks = [list(BatchSampler(ShardedRandomSampler(size, Shard(r, world), torch.Generator().manual_seed(1)), local, drop_last=True))
             for r in range(world)]
    assert all(len(batches) == len(single) for batches in ranks)
    for i, whole in enumerate(single):
        # global row rank + world * j is local row j of that rank
        assert [ranks[j % world][i][j // world] for j in range(local * world)] == whole
    seen = [v for batches in ranks for b in batches for v in b]
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("fn", [randn, rand, exponential])
def test_a_shard_draws_its_rows_of_the_global_draw(fn):
    whole = fn((12, 5), generator=torch.Generator().manual_seed(4))
    for r in range(3):
        part = Shard(r, 3).draw(fn, (4, 5), generator=torch.Generator().manual_seed(4))
        assert torch.equal(part, whole[r::3])
    assert torch.equal(Shard().draw(fn, (12, 5), generator=torch.Generator().manual_seed(4)), whole)


def max_weight_difference(a_dir, b_dir) -> float:
    a = torch.load(a_dir / "checkpoint.pt", weights_only=True)["state_dict"]
    b = torch.load(b_dir / "checkpoint.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a if a[k].numel())


def history(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# Each model draws its randomness differently: AdaFrame's Gaussian (and the advantage's std across processes),
# FastForward's categorical jumps and Bernoulli stops, the LSTM's random frames, AvgPooling's mean over all frames.
@pytest.mark.slow
@pytest.mark.parametrize("model, extra", [("adaframe", ("--normalize-advantage", "True")), ("fastforward-g", ()),
                                          ("lstm", ()), ("avgpool", ())])
def test_two_processes_train_like_one(synth_dir, tmp_path, model, extra):
    args = ("train", "--data", str(synth_dir), "--model", model, "--epochs", "4", *TRAIN, *extra)
    adaframe(*args, "--out", str(tmp_path / "one"), cwd=tmp_path)
    two = torchrun(2, *args, "--out", str(tmp_path / "two"), cwd=tmp_path)
    assert len(re.findall(r"^trained ", two.stdout, flags=re.M)) == 1, two.stdout  # only the first process reports ...
    assert len(list((tmp_path / "two" / "tb").iterdir())) == 1  # ... and writes
    # Same global batches, same noise per video: equal up to the order of floating-point sums.
    assert max_weight_difference(tmp_path / "one", tmp_path / "two") < 1e-5
    one_h, two_h = history(tmp_path / "one"), history(tmp_path / "two")
    assert len(one_h) == len(two_h) == 4
    for a, b in zip(one_h, two_h):
        assert b["val_mAP"] == pytest.approx(a["val_mAP"], abs=1e-6)  # the val set is split between the processes
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)  # the training terms are averaged across them


@pytest.mark.slow
@pytest.mark.parametrize("resume_with", [1, 2])
def test_sigterm_to_torchrun_then_resume(synth_dir, tmp_path, resume_with):
    """Stop a 2-process run mid-way with SIGTERM (as a cluster scheduler does) and finish it with 1 or 2 processes:
    with 2, bit for bit the uninterrupted 2-process run; with 1, the 1-process run (the first epochs agree to 1e-7).

    torchrun passes SIGTERM on to its workers; their handler finishes the step, the first saves the state inside the
    epoch and says so. Workers the signal simply killed would leave only the last epoch's state, and no such line."""
    args = ("train", "--data", str(synth_dir), "--epochs", "10", *TRAIN)
    if resume_with == 1:
        adaframe(*args, "--out", str(tmp_path / "straight"), cwd=tmp_path)
    else:
        torchrun(2, *args, "--out", str(tmp_path / "straight"), cwd=tmp_path)
    run = tmp_path / "stopped"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ADAFRAME_DEBUG", None)
    with open(tmp_path / "log.txt", "w") as log_file:  # a file, not a pipe: nobody reads it while torchrun runs
        proc = subprocess.Popen(torchrun_command(2, *args, "--out", str(run)), cwd=tmp_path, env=env,
                                stdout=log_file, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline and (not (run / "metrics.jsonl").is_file() or len(history(run)) < 2):
            time.sleep(0.002)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    log = (tmp_path / "log.txt").read_text()
    assert proc.returncode != 0
    done = len(history(run))
    assert 2 <= done < 10, log
    said = re.findall(r"stopped by SIGTERM after step (\d+): .*train_state.pt holds it; continue with --resume", log)
    assert len(said) == 1, log  # the first process, once
    state = torch.load(run / "train_state.pt", weights_only=True)
    per_epoch = len(FeatureDataset(synth_dir, "train")) // 16
    assert state["step"] == int(said[0]) and state["epoch"] == done
    assert state["partial"]["batches"] == state["step"] - done * per_epoch >= 1  # saved inside the epoch after the last
    if resume_with == 1:
        resumed = adaframe(*args, "--out", str(run), "--resume", cwd=tmp_path)
    else:
        resumed = torchrun(2, *args, "--out", str(run), "--resume", cwd=tmp_path)
    assert f"continuing {run} after step {said[0]} (inside epoch {done + 1})" in resumed.stdout + resumed.stderr
    assert max_weight_difference(tmp_path / "straight", run) < (1e-5 if resume_with == 1 else 1e-12)
    assert [r["val_mAP"] for r in history(run)] == pytest.approx([r["val_mAP"] for r in history(tmp_path / "straight")], abs=1e-6)


RECORD_BATCHES = """
import json, os, sys
from adaframe.cli import main
from adaframe.train import loop as train

rows, forward = [], train.TrainStep.forward

def recording(self, batch):  # the videos this process trains on, step by step
    rows.append(batch.index.tolist())
    return forward(self, batch)

train.TrainStep.forward = recording
try:
    main(sys.argv[2:])
finally:
    with open(os.path.join(sys.argv[1], "rank%s.json" % os.environ.get("RANK", "0")), "w") as f:
        json.dump(rows, f)
"""


@pytest.mark.slow
def test_each_process_trains_on_its_share_of_the_batch(synth_dir, tmp_path, monkeypatch):
    """Under torchrun each process's training steps see half of the global batch, the two halves together being the
    batch one process sees at that step: a DDP run in which every process took the whole batch would train the same
    weights (identical gradients, averaged) at twice the cost, and pass every other test here."""
    from adaframe.train import loop as train

    args = ["train", "--data", str(synth_dir), "--epochs", "2", "--model", "lstm", *TRAIN]
    single: list[list[int]] = []
    forward = train.TrainStep.forward

    def recording(self, batch):
        single.append(batch.index.tolist())
        return forward(self, batch)

    monkeypatch.setattr(train.TrainStep, "forward", recording)
    adaframe(*args, "--out", str(tmp_path / "one"), cwd=tmp_path)
    monkeypatch.undo()
    (tmp_path / "record.py").write_text(RECORD_BATCHES)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ADAFRAME_DEBUG", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "record.py", str(tmp_path),
           *args, "--out", str(tmp_path / "two")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(single) == 2 * (len(FeatureDataset(synth_dir, "train")) // 16) == len(ranks[0]) == len(ranks[1])
    for whole, a, b in zip(single, *ranks):
        assert len(whole) == 16 and len(a) == len(b) == 8
        assert sorted(a + b) == sorted(whole)  # disjoint halves of the same global batch


@pytest.mark.slow
def test_a_global_batch_the_processes_cannot_share_is_a_clear_error(synth_dir, tmp_path):
    proc = torchrun(3, "train", "--data", str(synth_dir), "--out", str(tmp_path / "run"), "--epochs", "1", *TRAIN,
                    cwd=tmp_path, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("adaframe: error: ")]
    assert errors and all("--batch-size 16 is the global batch: it must be divisible by the 3 processes" in e for e in errors)
    assert "[rank 0/3]" in proc.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
