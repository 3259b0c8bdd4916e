"""The feature data set: loading, padding, memory subsets, frame sampling, and bad input."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch

from adaframe.data import features as data_module
from adaframe.data.features import FeatureDataset, collate, evidence_hits, gather_frames, read_evidence, sample_indices
from adaframe.utils import AdaframeError
from conftest import random_videos, read_rows


# ---------------------------------------------------------------- loading the synthetic set


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_synth_dataset_lengths_dims_items(synth_dir, split):
    rows = [r for r in read_rows(synth_dir) if r["split"] == split]
    classes = sorted({r["label"] for r in read_rows(synth_dir)})
    ds = FeatureDataset(synth_dir, split)
    assert len(ds) == len(rows) > 0
    assert ds.classes == classes
    assert (ds.feature_dim, ds.memory_dim, ds.memory_frames) == (16, 8, 16)
    for i, r in enumerate(rows):
        feats = np.load(synth_dir / "features" / f"{r['video_id']}.npy")
        mem = np.load(synth_dir / "memory" / f"{r['video_id']}.npy")
        assert ds.lengths[i] == feats.shape[0]
        assert 8 <= feats.shape[0] <= 20
        item = ds[i]
        np.testing.assert_array_equal(item["features"], feats)
        np.testing.assert_array_equal(item["memory"], mem)
        assert item["features"].dtype == np.float32 and item["memory"].dtype == np.float32
        assert item["label"] == classes.index(r["label"]) == ds.labels[i]
        assert item["index"] == i


def test_collate_pads_and_masks(synth_dir):
    ds = FeatureDataset(synth_dir, "train")
    order = np.argsort(ds.lengths)
    pick = [int(order[0]), int(order[-1]), int(order[len(order) // 2])]
    assert ds.lengths[pick[0]] < ds.lengths[pick[1]]
    items = [ds[i] for i in pick]
    batch = collate(items)
    tmax = max(it["features"].shape[0] for it in items)
    assert batch.features.shape == (3, tmax, 16)
    assert batch.memory.shape == (3, 16, 8)
    assert batch.lengths.tolist() == [it["features"].shape[0] for it in items]
    assert batch.labels.tolist() == [it["label"] for it in items]
    assert batch.index.tolist() == pick
    for b, it in enumerate(items):
        t = it["features"].shape[0]
        np.testing.assert_array_equal(batch.features[b, :t].numpy(), it["features"])
        assert (batch.features[b, t:] == 0).all()
        assert batch.mask[b].tolist() == [True] * t + [False] * (tmax - t)
        np.testing.assert_array_equal(batch.memory[b].numpy(), it["memory"])
    assert batch.mask.dtype == torch.bool


def test_small_splits_are_kept_in_ram_read_only_and_large_ones_read_again(tmp_path, make_dataset, monkeypatch):
    make_dataset(tmp_path / "d", random_videos(4))
    ds = FeatureDataset(tmp_path / "d", "train")
    first = ds[1]
    assert ds[1]["features"] is first["features"] and ds[1]["memory"] is first["memory"]  # cached
    assert not first["features"].flags.writeable  # shared by every later read: nobody may change it
    batch = collate([ds[0], ds[1]])
    batch.features += 1.0  # the batch is a copy
    np.testing.assert_array_equal(ds[1]["features"], np.load(tmp_path / "d" / "features" / "vid001.npy"))
    monkeypatch.setattr(data_module, "CACHE_BYTES", 10)  # a split larger than the budget
    big = FeatureDataset(tmp_path / "d", "train")
    assert big[1]["features"] is not big[1]["features"]
    np.testing.assert_array_equal(big[1]["features"], first["features"])


def test_evidence_golden(tmp_path, make_dataset):
    make_dataset(tmp_path / "d", random_videos(3))
    assert read_evidence(tmp_path / "d", ["vid000"]) is None  # no evidence.csv: nothing to report
    (tmp_path / "d" / "evidence.csv").write_text("video_id,start,frames\nvid002,4,2\nvid000,0,1\nvid001,3,3\n")
    ev = read_evidence(tmp_path / "d", ["vid000", "vid001", "vid002"])
    assert ev.tolist() == [[0, 1], [3, 3], [4, 2]]
    visited = np.array([[2, 1, -1], [0, 5, 6], [-1, -1, -1]])  # frames 3..5 show video 1's class: 5 does
    assert evidence_hits(visited, ev).tolist() == [False, True, False]
    assert evidence_hits(np.array([[0, -1, -1], [6, 2, 1], [5, 5, 5]]), ev).tolist() == [True, False, True]
    with pytest.raises(AdaframeError, match="evidence.csv"):
        read_evidence(tmp_path / "d", ["vid000", "vid009"])  # a video without a row
    (tmp_path / "d" / "evidence.csv").write_text("video_id,begin\nvid000,1\n")
    with pytest.raises(AdaframeError, match="evidence.csv"):
        read_evidence(tmp_path / "d", ["vid000"])


def test_memory_uniform_subset(synth_dir):
    full = FeatureDataset(synth_dir, "val")
    sub = FeatureDataset(synth_dir, "val", memory_frames=4)
    assert sub.memory_frames == 4 and sub.memory_dim == 8
    for i in range(len(full)):
        # centres of 4 equal segments of 16 stored slots: 2, 6, 10, 14 (by hand)
        np.testing.assert_array_equal(sub[i]["memory"], full[i]["memory"][[2, 6, 10, 14]])
    same = FeatureDataset(synth_dir, "val", memory_frames=16)
    np.testing.assert_array_equal(same[0]["memory"], full[0]["memory"])
    one = FeatureDataset(synth_dir, "val", memory_frames=1)
    np.testing.assert_array_equal(one[0]["memory"], full[0]["memory"][[8]])


def test_memory_more_than_stored_is_an_error(synth_dir):
    with pytest.raises(AdaframeError, match="17"):
        FeatureDataset(synth_dir, "val", memory_frames=17)


def test_memory_frames_zero_ignores_memory_files(synth_dir, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_dir, root)
    shutil.rmtree(root / "memory")
    with pytest.raises(AdaframeError, match="memory"):
        FeatureDataset(root, "val")
    ds = FeatureDataset(root, "val", memory_frames=0)
    assert ds.memory_frames == 0
    item = ds[0]
    assert item["memory"].shape[0] == 0
    batch = collate([ds[0], ds[1]])
    assert batch.memory.shape[:2] == (2, 0)


def test_classes_argument_sets_index_order(make_dataset, tmp_path):
    root = make_dataset(tmp_path / "d", random_videos(6, classes=3))
    ds = FeatureDataset(root, "train", classes=["c2", "c0", "c1", "extra"])
    assert ds.labels.tolist() == [1, 2, 0, 1, 2, 0]  # video i has label c{i % 3}


# ---------------------------------------------------------------- frame sampling


@pytest.mark.parametrize(
    "t, k, expected",
    [
        # centre of segment i is (i + 0.5) * T / k, floored (by hand)
        (10, 4, [1, 3, 6, 8]),  # 1.25, 3.75, 6.25, 8.75
        (7, 2, [1, 5]),  # 1.75, 5.25
        (5, 5, [0, 1, 2, 3, 4]),
        (12, 3, [2, 6, 10]),
        (3, 4, [0, 1, 1, 2]),  # k > T: 0.375, 1.125, 1.875, 2.625
        (1, 3, [0, 0, 0]),
        (9, 1, [4]),
        (20, 10, [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]),  # centres on whole frames: 0.35 * 20 is 6.99999988 in float32
    ],
)
def test_sample_indices_uniform_golden(t, k, expected):
    assert sample_indices(torch.tensor([t]), k, "uniform").tolist() == [expected]


def test_the_agents_uniform_scan_reads_the_baselines_uniform_frames():
    """One rule for "K uniform frames": the scan AdaFrame falls back on, the scan action and the baselines' frames."""
    from adaframe.models.positions import scan_indices, scan_order

    lengths = torch.arange(1, 400)
    for k in (3, 7, 10, 25):
        uniform = sample_indices(lengths, k, "uniform")
        assert torch.equal(scan_indices(lengths, k), uniform[:, list(scan_order(k))])
        exact = [[int((i + 0.5) * t / k) if ((2 * i + 1) * t) % (2 * k) else (2 * i + 1) * t // (2 * k) for i in range(k)]
                 for t in lengths.tolist()]  # by hand, Python's exact integers
        assert uniform.tolist() == [[min(v, t - 1) for v in row] for row, t in zip(exact, lengths.tolist())]


def test_sample_indices_uniform_batch_rows_independent():
    idx = sample_indices(torch.tensor([10, 7, 1]), 2, "uniform")
    assert idx.tolist() == [[2, 7], [1, 5], [0, 0]]  # 2.5, 7.5 | 1.75, 5.25 | 0, 0
    assert idx.dtype == torch.int64


def _random_cases():
    return [(t, k) for t in (1, 2, 3, 5, 7, 10, 16, 23) for k in (1, 2, 3, 4, 5, 8, 10)]


@pytest.mark.parametrize("t, k", _random_cases())
def test_sample_indices_random_in_range_sorted_one_per_segment(t, k):
    g = torch.Generator().manual_seed(t * 100 + k)
    idx = sample_indices(torch.full((300,), t), k, "random", g)
    assert idx.shape == (300, k) and idx.dtype == torch.int64
    assert ((idx >= 0) & (idx < t)).all()
    assert (idx[:, 1:] >= idx[:, :-1]).all()
    # one per segment: frame idx_i (the interval [idx_i, idx_i + 1)) overlaps segment [i T / k, (i + 1) T / k)
    i = torch.arange(k)[None, :]
    assert ((idx + 1) * k > i * t).all()
    assert (idx * k < (i + 1) * t).all()


def test_sample_indices_random_distinct_when_k_le_t():
    """The docstring promises distinct frames whenever k <= T (TSN-style: one frame in each of k segments)."""
    bad = []
    for t, k in _random_cases():
        if k > t:
            continue
        g = torch.Generator().manual_seed(t * 100 + k)
        idx = sample_indices(torch.full((300,), t), k, "random", g)
        dup_rows = (idx[:, 1:] == idx[:, :-1]).any(1)
        if dup_rows.any():
            bad.append(f"T={t},k={k}: {int(dup_rows.sum())}/300 rows repeat a frame, e.g. {idx[dup_rows][0].tolist()}")
    assert not bad, "; ".join(bad)


def test_sample_indices_random_varies_and_uses_generator():
    lengths = torch.full((50,), 20)
    a = sample_indices(lengths, 4, "random", torch.Generator().manual_seed(3))
    b = sample_indices(lengths, 4, "random", torch.Generator().manual_seed(3))
    c = sample_indices(lengths, 4, "random", torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len({tuple(r) for r in a.tolist()}) > 10


@pytest.mark.parametrize("mode", ["uniform", "random"])
def test_sample_indices_k_greater_than_t_repeats_in_range(mode):
    lengths = torch.tensor([1, 2, 3, 5])
    idx = sample_indices(lengths, 8, mode, torch.Generator().manual_seed(0))
    assert idx.shape == (4, 8)
    assert (idx >= 0).all() and (idx < lengths[:, None]).all()
    assert (idx[:, 1:] >= idx[:, :-1]).all()
    if mode == "uniform":  # with k >= T the uniform centres cover every frame
        for row, t in zip(idx.tolist(), lengths.tolist()):
            assert set(row) == set(range(t))


def test_sample_indices_bad_arguments():
    with pytest.raises(ValueError):
        sample_indices(torch.tensor([5]), 0, "uniform")
    with pytest.raises(ValueError):
        sample_indices(torch.tensor([5]), 2, "bogus")


def test_gather_frames():
    feats = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    idx = torch.tensor([[3, 0], [1, 1]])
    out = gather_frames(feats, idx)
    assert torch.equal(out, torch.stack([feats[0, [3, 0]], feats[1, [1, 1]]]))


# ---------------------------------------------------------------- bad data
# The messages are those of the table in docs/bad-input.md, whole (the data set's paths put in).


def _expect_error(root, message, split="train", **kw):
    """``message``: the whole error, or a compiled pattern for the parts that come from numpy."""
    pattern = message if isinstance(message, re.Pattern) else re.escape(message)
    with pytest.raises(AdaframeError) as e:
        FeatureDataset(root, split, **kw)
    assert re.fullmatch(pattern, str(e.value)), str(e.value)


def test_good_handmade_dataset_loads(tmp_path, make_dataset):
    root = make_dataset(tmp_path / "d", random_videos(4))
    ds = FeatureDataset(root, "train")
    assert len(ds) == 4 and ds.feature_dim == 6 and (ds.memory_frames, ds.memory_dim) == (8, 4)


def test_missing_feature_file(tmp_path, make_dataset):
    v = random_videos(4)
    v[2]["features"] = None
    root = make_dataset(tmp_path / "d", v)
    _expect_error(root, f"video 'vid002': features file {root}/features/vid002.npy is missing")


def test_missing_memory_file(tmp_path, make_dataset):
    v = random_videos(4)
    v[1]["memory"] = None
    root = make_dataset(tmp_path / "d", v)
    _expect_error(root, f"video 'vid001': memory file {root}/memory/vid001.npy is missing")


def test_one_dimensional_features(tmp_path, make_dataset):
    v = random_videos(4)
    v[3]["features"] = np.zeros(12, dtype=np.float32)
    root = make_dataset(tmp_path / "d", v)
    _expect_error(root, f"video 'vid003': features {root}/features/vid003.npy has shape (12,), expected 2-D [frames, dim]")


def test_three_dimensional_features(tmp_path, make_dataset):
    v = random_videos(4)
    v[0]["features"] = np.zeros((3, 6, 1), dtype=np.float32)
    root = make_dataset(tmp_path / "d", v)
    _expect_error(root, f"video 'vid000': features {root}/features/vid000.npy has shape (3, 6, 1), expected 2-D [frames, dim]")


@pytest.mark.parametrize("odd", [0, 2])  # the first video too: the message names the odd one, not the one after it
def test_wrong_feature_dim(tmp_path, make_dataset, odd):
    v = random_videos(4)
    v[odd]["features"] = np.zeros((5, 7), dtype=np.float32)  # D=7, the others have D=6
    _expect_error(make_dataset(tmp_path / "d", v), f"video 'vid00{odd}': features D=7, memory [Td, Dm]=[8, 4], but 3 of the 4 "
                                                   "videos have D=6, memory [8, 4]; all videos must share them")


def test_wrong_memory_shape(tmp_path, make_dataset):
    v = random_videos(4)
    v[3]["memory"] = np.zeros((8, 5), dtype=np.float32)
    _expect_error(make_dataset(tmp_path / "d", v), "video 'vid003': features D=6, memory [Td, Dm]=[8, 5], but 3 of the 4 videos "
                                                   "have D=6, memory [8, 4]; all videos must share them")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("what", ["features", "memory"])
def test_non_finite_values_raise_when_loaded(tmp_path, make_dataset, bad, what):
    v = random_videos(4)
    v[1][what] = v[1][what].copy()
    v[1][what][0, 2] = bad
    root = make_dataset(tmp_path / "d", v)
    ds = FeatureDataset(root, "train")  # headers are fine
    ds[0], ds[2]  # the others load
    with pytest.raises(AdaframeError) as e:
        ds[1]
    assert str(e.value) == f"video 'vid001': {root}/{what}/vid001.npy contains NaN or inf"


def test_unknown_split(tmp_path, make_dataset):
    v = random_videos(4)
    v[2]["split"] = "validation"
    root = make_dataset(tmp_path / "d", v)
    _expect_error(root, f"{root}/videos.csv:4: video 'vid002' has unknown split 'validation' (expected one of ('train', 'val', 'test'))")


def test_unknown_split_argument(tmp_path, make_dataset):
    _expect_error(make_dataset(tmp_path / "d", random_videos(4)), "unknown split 'validation' (expected one of ('train', 'val', 'test'))",
                  split="validation")


def test_empty_split(tmp_path, make_dataset):
    root = make_dataset(tmp_path / "d", random_videos(4))
    _expect_error(root, f"{root}/videos.csv: split 'val' is empty", split="val")


def test_zero_frames(tmp_path, make_dataset):
    v = random_videos(4)
    v[1]["features"] = np.zeros((0, 6), dtype=np.float32)
    _expect_error(make_dataset(tmp_path / "d", v), "video 'vid001': features have T=0 frames; at least 1 is needed")


def test_duplicate_video_id(tmp_path, make_dataset):
    v = random_videos(4)
    v.append(dict(v[2]))
    root = make_dataset(tmp_path / "d", v)
    _expect_error(root, f"{root}/videos.csv:6: duplicate video_id 'vid002'")  # line 1 is the header


def test_label_not_in_classes(tmp_path, make_dataset):
    v = random_videos(4, classes=2)
    v[3]["label"] = "zebra"
    _expect_error(make_dataset(tmp_path / "d", v), "video 'vid003': label 'zebra' is not among the model's 2 classes",
                  classes=["c0", "c1"])


@pytest.mark.parametrize("missing", ["video_id", "label", "split"])
def test_missing_csv_column(tmp_path, make_dataset, missing):
    cols = tuple(c for c in ("video_id", "label", "split") if c != missing)
    root = make_dataset(tmp_path / "d", random_videos(4), columns=cols)
    _expect_error(root, f"{root}/videos.csv: missing column(s) ['{missing}']; found {list(cols)}")


@pytest.mark.parametrize("content, message", [
    (b"video_id,label,split\n", "{csv} lists no videos"),  # header only
    (b"", "{csv}: missing column(s) ['label', 'split', 'video_id']; found None"),
    (b"video_id;label;split\nv0;a;train\n", "{csv}: missing column(s) ['label', 'split', 'video_id']; found ['video_id;label;split']"),
    ("video_id,label,split\nv0,caf\u00e9,train\n".encode("latin-1"), "{csv} is not UTF-8 text (byte 27): save it as UTF-8"),
])
def test_unreadable_videos_csv(tmp_path, make_dataset, content, message):
    root = make_dataset(tmp_path / "d", random_videos(4))
    (root / "videos.csv").write_bytes(content)
    _expect_error(root, message.format(csv=root / "videos.csv"))


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32])
def test_non_float32_features(tmp_path, make_dataset, dtype):
    v = random_videos(4)
    v[2]["features"] = v[2]["features"].astype(dtype)
    root = make_dataset(tmp_path / "d", v)
    _expect_error(root, f"video 'vid002': features {root}/features/vid002.npy has dtype {np.dtype(dtype)}, expected float32")


def test_non_float32_memory(tmp_path, make_dataset):
    v = random_videos(4)
    v[0]["memory"] = v[0]["memory"].astype(np.float64)
    root = make_dataset(tmp_path / "d", v)
    _expect_error(root, f"video 'vid000': memory {root}/memory/vid000.npy has dtype float64, expected float32")


@pytest.mark.parametrize("cut", ["data", "header", "empty", "garbage"])
def test_partial_or_foreign_npy(tmp_path, make_dataset, cut):
    """docs/bad-input.md: 'Partial .npy (cut in its data / in its header / 0 bytes)': numpy's reason after the file's name
    (in numpy's words, which a new numpy may change: any one line)."""
    root = make_dataset(tmp_path / "d", random_videos(4))
    path = root / "features" / "vid001.npy"
    whole = path.read_bytes()
    path.write_bytes({"data": whole[:-8], "header": whole[:40], "empty": b"", "garbage": b"not a numpy file"}[cut])
    _expect_error(root, re.compile(re.escape(f"video 'vid001': cannot read features file {path}: ") + ".+"))


def test_missing_directory_and_csv(tmp_path, make_dataset):
    _expect_error(tmp_path / "nowhere", f"data directory {tmp_path / 'nowhere'} does not exist")
    (tmp_path / "empty").mkdir()
    _expect_error(tmp_path / "empty", f"{tmp_path / 'empty' / 'videos.csv'} is missing: a data set needs videos.csv with columns "
                                      "video_id,label,split")
    root = make_dataset(tmp_path / "d", random_videos(4))
    _expect_error(root / "videos.csv", f"data directory {root / 'videos.csv'} is a file, not a data set directory")


# Property tests of the videos.csv parser: whatever the file holds, the answer is records or one AdaframeError.
import csv  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from adaframe.data.features import SPLITS, read_videos_csv  # noqa: E402

_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=12)
_ID = _TEXT.map(str.strip).filter(lambda s: s and "/" not in s and "\\" not in s and not s.startswith(".")
                                  and "\r" not in s and "\n" not in s)
_LABEL = _TEXT.map(str.strip).filter(lambda s: s and "\r" not in s and "\n" not in s)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(_ID, _LABEL, st.sampled_from(SPLITS)), min_size=1, max_size=8, unique_by=lambda r: r[0]))
def test_videos_csv_round_trips_any_names(tmp_path_factory, rows):
    """Ids and labels with commas, quotes, spaces and any script survive csv writing and reading."""
    root = tmp_path_factory.mktemp("csv")
    with open(root / "videos.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "label", "split"])
        w.writerows(rows)
    assert [(r.video_id, r.label, r.split) for r in read_videos_csv(root)] == rows


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=300) | st.text(max_size=300).map(lambda t: ("video_id,label,split\n" + t).encode("utf-8", "surrogatepass")))
def test_videos_csv_never_crashes_on_garbage(tmp_path_factory, content):
    root = tmp_path_factory.mktemp("garbage")
    (root / "videos.csv").write_bytes(content)
    try:
        records = read_videos_csv(root)
    except AdaframeError as e:
        assert "videos.csv" in str(e)  # the message names the file
    else:
        assert records and all(r.split in SPLITS and r.video_id and r.label for r in records)
