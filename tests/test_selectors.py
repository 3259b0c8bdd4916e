"""The training-free selectors (``models/selectors.py``): k-center covers what looks different, motion-guided sampling
follows where the memory changes, both give frames inside the video; and through ``adaframe eval --sampling``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adaframe.models.selectors import kcenter_slots, motion_positions, select_frames
from adaframe.utils import AdaframeError
from conftest import adaframe


def clustered_memory() -> torch.Tensor:
    """[1, 8, 2]: six slots at the origin, one far to the right, one far up."""
    memory = torch.zeros(1, 8, 2)
    memory[0, 2] = torch.tensor([10.0, 0.0])
    memory[0, 6] = torch.tensor([0.0, 7.0])
    return memory


def test_kcenter_takes_the_typical_slot_then_the_farthest_ones():
    slots = kcenter_slots(clustered_memory(), 3)
    assert slots.tolist() == [[0, 2, 6]]  # slot 0: the first slot nearest the mean; then the two outliers, farthest first
    assert kcenter_slots(clustered_memory(), 2).tolist() == [[0, 2]]


def test_kcenter_never_takes_a_slot_twice_and_refuses_more_than_the_memory_holds():
    memory = torch.randn(5, 16, 4, generator=torch.Generator().manual_seed(0))
    slots = kcenter_slots(memory, 16)
    assert torch.equal(slots, torch.arange(16).expand(5, -1))  # every slot once, in temporal order
    with pytest.raises(AdaframeError, match="K = 17"):
        kcenter_slots(memory, 17)


def test_motion_positions_crowd_where_the_memory_changes():
    td, k = 16, 8
    still = torch.zeros(1, td, 3)
    still[0, 8:] = 1.0  # one change, between slots 7 and 8
    positions = motion_positions(still, k)[0]
    times = (torch.arange(td) + 0.5) / td
    assert ((positions > times[7] - 1e-6) & (positions < times[8] + 1e-6)).all()  # every position inside that gap
    assert (positions[1:] > positions[:-1]).all()
    steady = torch.arange(td, dtype=torch.float32)[None, :, None].expand(1, td, 3)  # the same change everywhere
    expected = times[0] + (torch.arange(k) + 0.5) / k * (times[-1] - times[0])
    torch.testing.assert_close(motion_positions(steady, k)[0], expected)


def test_selected_frames_lie_in_every_video():
    memory = torch.randn(4, 16, 5, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([3, 16, 40, 200])
    for selector in ("kcenter", "motion"):
        idx = select_frames(memory, lengths, 10, selector)
        assert idx.shape == (4, 10) and ((idx >= 0) & (idx < lengths[:, None])).all(), selector
        assert (idx[:, 1:] >= idx[:, :-1]).all(), selector  # temporal order
    with pytest.raises(AdaframeError, match="picks frames from the global memory"):
        select_frames(torch.zeros(4, 0, 5), lengths, 3, "motion")


@pytest.mark.parametrize("sampling", ["kcenter", "motion"])
def test_eval_reads_a_baseline_on_a_selectors_frames_and_counts_the_memory(synth_dir, tmp_path, sampling):
    adaframe("train", "--data", str(synth_dir), "--out", "avg", "--model", "avgpool", "--epochs", "2", "--no-progress", cwd=tmp_path)
    for name, how in (("uniform", "uniform"), ("picked", sampling)):
        adaframe("eval", "--checkpoint", "avg", "--data", str(synth_dir), "--frames", "4", "--sampling", how, "--json",
                 f"{name}.json", "--per-video", f"{name}.csv", "--no-progress", cwd=tmp_path)
    uniform, picked = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("uniform", "picked"))
    assert picked["sampling"] == sampling and picked["avg_frames"] <= 4
    assert picked["memory_frames"] == 16 and uniform["memory_frames"] == 0
    cost = (picked["avg_frames"] * picked["backbone_gflops"] + 16 * picked["memory_gflops"]  # the memory's frames count too
            + picked["avg_steps"] * picked["head_gflops_per_step"])
    assert picked["gflops_per_video"] == pytest.approx(cost, rel=1e-6)
    rows = (tmp_path / "picked.csv").read_text().splitlines()[1:]
    visited = [list(map(int, r.split(",")[7].split())) for r in rows]
    assert visited != [list(map(int, r.split(",")[7].split())) for r in (tmp_path / "uniform.csv").read_text().splitlines()[1:]]
    assert np.isfinite(picked["mAP"])
