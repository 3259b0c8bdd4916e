"""Lists of video files (data/video_lists.py), as ``extract`` and ``predict --videos`` read them: folders (and the files
they leave out), list files, ActivityNet JSON, shards."""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from adaframe.data.features import SPLITS
from adaframe.data.video_lists import parse_shard, read_video_list, skipped_files, video_files as listed_videos
from adaframe.commands.extract import ExtractConfig
from adaframe.utils import AdaframeError
from conftest import copy, source, write_list


def entries_as_tuples(entries) -> list[tuple[str, Path, str, str]]:
    return [(e.video_id, Path(e.path), e.label, e.split) for e in entries]


# ============================================================================= 1. read_video_list

def test_directory_label_layout_uses_the_folder_as_label_and_the_default_split(video_files, tmp_path):
    src = source(video_files, 0)
    root = tmp_path / "root"
    copy(src, root / "dance" / "a.mp4")
    copy(src, root / "dance" / "b.MKV")  # extensions in any case
    copy(src, root / "run" / "c.avi")
    (root / "run" / "notes.txt").write_text("not a video")
    (root / "run" / "d.npy").write_bytes(b"neither")
    got = entries_as_tuples(read_video_list(root, split="val"))
    assert sorted(got) == [("a", root / "dance" / "a.mp4", "dance", "val"), ("b", root / "dance" / "b.MKV", "dance", "val"),
                           ("c", root / "run" / "c.avi", "run", "val")]


def test_directory_split_label_layout_takes_split_and_label_from_the_folders(video_files, tmp_path):
    src = source(video_files, 0)
    root = tmp_path / "root"
    copy(src, root / "train" / "dance" / "a.mp4")
    copy(src, root / "val" / "run" / "b.mp4")
    copy(src, root / "test" / "dance" / "c.mp4")
    for default in ("train", "test"):  # the folder decides, not the default
        got = sorted(entries_as_tuples(read_video_list(root, split=default)))
        assert got == [("a", root / "train" / "dance" / "a.mp4", "dance", "train"), ("b", root / "val" / "run" / "b.mp4", "run", "val"),
                       ("c", root / "test" / "dance" / "c.mp4", "dance", "test")]


def test_flat_directory_is_unlabeled_in_the_default_split(video_files, tmp_path):
    root = tmp_path / "flat"
    copy(source(video_files, 0), root / "x.mp4")
    copy(source(video_files, 1), root / "y.mov")
    assert sorted(entries_as_tuples(read_video_list(root))) == [("x", root / "x.mp4", "unlabeled", "train"),
                                                                ("y", root / "y.mov", "unlabeled", "train")]
    assert {e.split for e in read_video_list(root, split="test")} == {"test"}


def test_list_file_comments_blank_lines_splits_spaces_and_relative_paths(tmp_path):
    folder = tmp_path / "lists"
    lst = write_list(folder / "videos.txt", [
        "# a comment line",
        "",
        "   ",
        "clips/a.mp4 dance",
        "  clips/b.mp4   run   val  ",
        "\tclips/my holiday clip.mp4 dance test",
        "  # an indented comment",
        f"{tmp_path / 'abs' / 'd.mp4'} run train",
    ])
    expected = [("a", folder / "clips/a.mp4", "dance", "test"), ("b", folder / "clips/b.mp4", "run", "val"),
                ("my holiday clip", folder / "clips/my holiday clip.mp4", "dance", "test"),
                ("d", tmp_path / "abs" / "d.mp4", "run", "train")]
    assert entries_as_tuples(read_video_list(lst, split="test")) == expected  # in list order; files need not exist yet
    # --video-root replaces the list's folder for relative paths; absolute ones stay.
    other = tmp_path / "elsewhere"
    got = entries_as_tuples(read_video_list(lst, video_root=other, split="test"))
    assert [g[1] for g in got] == [other / "clips/a.mp4", other / "clips/b.mp4", other / "clips/my holiday clip.mp4",
                                   tmp_path / "abs" / "d.mp4"]


# The list format: 'path label [split]' separated by any whitespace; the path may contain (single) spaces.
# A label that is itself a split name is ambiguous after a path with spaces, so labels avoid them.
_WORD = st.text(alphabet=string.ascii_letters + string.digits + "_-()éü", min_size=1, max_size=6)
_ROW = st.tuples(
    st.lists(_WORD, max_size=2),  # sub-folders
    st.lists(_WORD, min_size=1, max_size=3),  # words of the file name, joined by single spaces
    st.sampled_from([".mp4", ".avi", ".MKV"]),
    st.booleans(),  # absolute path?
    st.text(alphabet=string.ascii_letters + string.digits + "_-#.", min_size=1, max_size=8).filter(lambda s: s not in SPLITS),
    st.none() | st.sampled_from(SPLITS),
    st.sampled_from([" ", "  ", "\t", " \t "]),  # field separator
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_ROW, min_size=1, max_size=6), default=st.sampled_from(SPLITS), comments=st.lists(st.booleans(), max_size=6))
def test_list_file_property_returns_exactly_the_rows(rows, default, comments):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        lines, expected = [], []
        for i, (dirs, words, ext, absolute, label, split, sep) in enumerate(rows):
            name = " ".join(words) + f"_{i}"  # unique ids
            rel = "/".join([*dirs, name + ext])
            path_text = str(d / "abs" / rel) if absolute else rel
            if i < len(comments):
                lines.append("# comment " + path_text if comments[i] else "")
            lines.append(sep.join([path_text, label] + ([split] if split else [])))
            expected.append((name, (d / "abs" / rel) if absolute else (d / rel), label, split or default))
        lst = write_list(d / "list.txt", lines)
        assert entries_as_tuples(read_video_list(lst, split=default)) == expected


# The path is the line as written up to the label: runs of whitespace inside a file name are kept.
def test_list_path_with_consecutive_spaces_is_kept_verbatim(video_files, tmp_path):
    video = copy(source(video_files, 0), tmp_path / "my  clip.mp4")
    lst = write_list(tmp_path / "list.txt", ["my  clip.mp4 dance val"])
    [e] = read_video_list(lst)
    assert (e.video_id, e.path, e.label, e.split) == ("my  clip", video, "dance", "val")


def test_activitynet_json(video_files, tmp_path):
    src = source(video_files, 0)
    root = tmp_path / "anet"
    copy(src, root / "deep" / "er" / "v_aaa.mp4")  # v_<id>.<ext>, anywhere under the root
    copy(src, root / "other" / "bbb.mkv")  # <id>.<ext>
    copy(src, root / "v_ccc.webm")
    database = {
        "aaa": {"subset": "training", "annotations": [{"label": "Run", "segment": [0, 1]}, {"label": "Dance"}, {"label": "Dance"}]},
        "bbb": {"subset": "validation", "annotations": [{"label": "Cook"}]},
        "ccc": {"subset": "training", "annotations": [{"label": "Swim"}]},
        "ttt": {"subset": "testing", "annotations": []},  # no labels: skipped
        "uuu": {"subset": "testing"},
        "mmm": {"subset": "validation", "annotations": [{"label": "Cook"}]},  # no file: kept, fails at extraction
    }
    js = tmp_path / "meta" / "activity_net.v1-3.min.json"
    js.parent.mkdir()
    js.write_text(json.dumps({"version": "VERSION 1.3", "taxonomy": [], "database": database}))
    got = {e.video_id: e for e in read_video_list(js, video_root=root)}
    assert set(got) == {"aaa", "bbb", "ccc", "mmm"}
    assert (got["aaa"].path, got["aaa"].label, got["aaa"].split) == (root / "deep" / "er" / "v_aaa.mp4", "Dance", "train")
    assert (got["bbb"].path, got["bbb"].label, got["bbb"].split) == (root / "other" / "bbb.mkv", "Cook", "val")
    assert (got["ccc"].path, got["ccc"].label, got["ccc"].split) == (root / "v_ccc.webm", "Swim", "train")
    assert got["mmm"].split == "val" and not got["mmm"].path.exists()
    # Without --video-root the JSON's own folder is searched: none of the files are there.
    assert not any(e.path.exists() for e in read_video_list(js))


def test_duplicate_ids_name_both_paths(video_files, tmp_path):
    root = tmp_path / "root"
    copy(source(video_files, 0), root / "dance" / "same.mp4")
    copy(source(video_files, 1), root / "run" / "same.avi")
    copy(source(video_files, 2), root / "run" / "other.mp4")
    # Stems that collide take the whole file name; the others keep their stems.
    assert sorted(e.video_id for e in read_video_list(root)) == ["other", "same.avi", "same.mp4"]
    a = copy(source(video_files, 0), root / "dance" / "other.mp4")
    b = root / "run" / "other.mp4"
    with pytest.raises(AdaframeError) as err:
        read_video_list(root)
    assert str(a) in str(err.value) and str(b) in str(err.value) and "other.mp4" in str(err.value)
    lst = write_list(tmp_path / "list.txt", ["x/clip.mp4 a", "y/clip.mp4 b"])
    with pytest.raises(AdaframeError, match="clip") as err:
        read_video_list(lst)
    assert str(tmp_path / "x/clip.mp4") in str(err.value) and str(tmp_path / "y/clip.mp4") in str(err.value)


def test_unknown_default_split_names_file_and_line(tmp_path):
    lst = write_list(tmp_path / "list.txt", ["# header", "", "a.mp4 dance val", "b.mp4 run"])
    with pytest.raises(AdaframeError, match="unknown split") as err:
        read_video_list(lst, split="training")  # used by line 4, which names no split
    assert f"{lst}:4" in str(err.value)


# A misspelled split ('a.mp4 dance training', a.mp4 exists) is an error naming file:line, not read as the
# path 'a.mp4 dance' with label 'training'.
def test_unknown_split_in_a_list_line_names_file_and_line(video_files, tmp_path):
    copy(source(video_files, 0), tmp_path / "a.mp4")
    lst = write_list(tmp_path / "list.txt", ["# header", "a.mp4 dance training"])
    with pytest.raises(AdaframeError) as err:
        read_video_list(lst)
    assert f"{lst}:2" in str(err.value) and "training" in str(err.value)


def test_bad_inputs_are_adaframe_errors(tmp_path):
    with pytest.raises(AdaframeError, match="does not exist"):
        read_video_list(tmp_path / "missing.txt")
    one_token = write_list(tmp_path / "one.txt", ["# fine", "lonely.mp4"])
    with pytest.raises(AdaframeError, match="expected 'path label") as err:
        read_video_list(one_token)
    assert f"{one_token}:2" in str(err.value)
    with pytest.raises(AdaframeError, match="no videos"):
        read_video_list(write_list(tmp_path / "empty.txt", ["# nothing", ""]))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(AdaframeError, match="no videos"):
        read_video_list(tmp_path / "emptydir")
    (tmp_path / "clip.MP4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    with pytest.raises(AdaframeError, match="is a video; --videos takes a folder of videos, a list file or an ActivityNet JSON"):
        read_video_list(tmp_path / "clip.MP4")
    for name, text in [("broken.json", "{not json"), ("list.json", "[1, 2]"), ("nodb.json", '{"version": "1.3"}'),
                       ("dbl.json", '{"database": [1]}'), ("subset.json", '{"database": {"x": {"subset": "dev", "annotations": [{"label": "a"}]}}}')]:
        (tmp_path / name).write_text(text)
        with pytest.raises(AdaframeError) as err:
            read_video_list(tmp_path / name)
        assert name in str(err.value)


# A 'database' entry that is not an object is a one-line error, not an AttributeError traceback.
def test_activitynet_entry_that_is_not_an_object_is_an_adaframe_error(tmp_path):
    js = tmp_path / "bad.json"
    js.write_text(json.dumps({"database": {"abc": "oops"}}))
    with pytest.raises(AdaframeError):
        read_video_list(js)


# ============================================================================= 2. parse_shard

@pytest.mark.parametrize("text, expected", [(None, (0, 1)), ("0/1", (0, 1)), ("3/4", (3, 4)), (" 1 / 2 ", (1, 2)), ("09/10", (9, 10))])
def test_parse_shard_valid(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["2/2", "5/4", "0/0", "-1/2", "1", "1/", "/2", "a/b", "1/2/3", "", "1.0/2", "1:2"])
def test_parse_shard_invalid(text):
    with pytest.raises(AdaframeError, match="--shard"):
        parse_shard(text)
    with pytest.raises(AdaframeError, match="--shard"):
        ExtractConfig(Path("v"), Path("o"), shard=text)




# ============================================================================= ActivityNet JSON: properties

# ActivityNet's subsets and the splits they become; the round trip below spells out its expectations
# independently of the parser's own table.
_ANET_SUBSETS = {"training": "train", "validation": "val", "testing": "test"}
_ANET_EXTS = [".mp4", ".MP4", ".mkv", ".webm", ".avi", ".Mov", ".m4v", ".ts"]
# Any id that is a valid file name: no '/' or NUL, not '.' or '..'; unicode, spaces, dots, 'v_' prefixes welcome.
# (At most 20 characters keeps 'v_<id>.webm' under the 255 bytes of a file name.)
_ANET_ID = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=20).filter(lambda s: s not in (".", ".."))


@st.composite
def _anet_database(draw):
    """(database, files, expected): the JSON's 'database'; {id: (sub-folders, file name) or None for no file};
    and the (id, path relative to the video root, label, split) read_video_list must return, in order."""
    ids = draw(st.lists(_ANET_ID, min_size=1, max_size=6, unique=True))
    pool = draw(st.lists(st.text(max_size=8), min_size=1, max_size=4))  # a few labels, so that they repeat
    database, files, expected = {}, {}, []
    for vid in ids:
        subset = draw(st.sampled_from(sorted(_ANET_SUBSETS)))
        labels = draw(st.lists(st.sampled_from(pool) | st.text(), max_size=5))  # '' labels are no labels
        annotations = [{"label": lab, "segment": [draw(st.floats(0, 100)), draw(st.floats(100, 200))]} for lab in labels]
        annotations[draw(st.integers(0, len(annotations))):0] = draw(st.lists(st.just({"segment": [0.0, 1.0]}), max_size=1))
        meta = {"duration": 12.5, "resolution": "640x360", "url": f"https://www.youtube.com/watch?v={vid}", "subset": subset}
        if annotations or draw(st.booleans()):  # the testing subset: an empty list, or no 'annotations' at all
            meta["annotations"] = annotations
        database[vid] = meta
        kind = draw(st.sampled_from(["v_", "bare", "missing"]))
        if kind == "missing":
            files[vid] = None
            rel = Path(f"v_{vid}.mp4")  # a missing file fails later, as that video
        else:
            dirs = draw(st.lists(st.sampled_from(["sub", "training", "a b", "ü.d"]), max_size=2))
            name = ("v_" if kind == "v_" else "") + vid + draw(st.sampled_from(_ANET_EXTS))
            files[vid] = (dirs, name)
            rel = Path(*dirs, name)
        named = [lab for lab in labels if lab]
        if named:  # the most frequent label; of equally frequent ones, the first
            expected.append((vid, rel, max(dict.fromkeys(named), key=named.count), _ANET_SUBSETS[subset]))
    return database, files, expected


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=_anet_database(), separate_root=st.booleans(), ascii_only=st.booleans(),
       json_name=st.sampled_from(["activity_net.v1-3.min.json", "anet.JSON", "my list.json"]))
def test_activitynet_property_round_trip(case, separate_root, ascii_only, json_name):
    database, files, expected = case
    # 'v_<id>.*' or '<id>.*': a file is ambiguous only when its name is also that of another id ('x' and 'v_x'),
    # which ActivityNet's ids (all of 11 characters) never are; such cases are left out.
    stems = {vid: Path(f[1]).stem for vid, f in files.items() if f is not None}
    assume(not any(stem in (vid, f"v_{vid}") for vid in database for other, stem in stems.items() if other != vid))
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        root = d / "videos" if separate_root else d
        for f in files.values():
            if f is not None:
                folder = root.joinpath(*f[0])
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f[1]).touch()
        js = (d / "meta" if separate_root else d) / json_name
        js.parent.mkdir(parents=True, exist_ok=True)
        js.write_text(json.dumps({"version": "VERSION 1.3", "taxonomy": [], "database": database}, ensure_ascii=ascii_only),
                      encoding="utf-8")
        if not expected:
            with pytest.raises(AdaframeError, match="no videos"):
                read_video_list(js, video_root=root if separate_root else None)
            return
        got = read_video_list(js, video_root=root if separate_root else None)
        assert entries_as_tuples(got) == [(vid, root / rel, label, split) for vid, rel, label, split in expected]
        assert all(type(e.video_id) is str and type(e.label) is str for e in got)


# Arbitrary JSON values, ActivityNet-shaped documents with arbitrary values inside, and arbitrary bytes.
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                     max_leaves=12)
_ANET_ANNOTATION = st.fixed_dictionaries({"label": st.text(max_size=4) | _JSON}, optional={"segment": _JSON}) | _JSON
_ANET_VIDEO = st.fixed_dictionaries({"subset": st.sampled_from(sorted(_ANET_SUBSETS)) | _JSON,
                                     "annotations": st.lists(_ANET_ANNOTATION, max_size=3) | _JSON}) | _JSON
_ANET_KEY = st.text(max_size=6) | st.sampled_from(["", ".", "..", "../up", "a/b", "/abs", "nul\x00"])  # ids that are no file names
_ANET_DOCUMENT = st.fixed_dictionaries({"database": st.dictionaries(_ANET_KEY, _ANET_VIDEO, max_size=4) | _JSON},
                                       optional={"version": _JSON})
_ANET_GARBAGE = st.one_of(
    _ANET_DOCUMENT.map(lambda v: json.dumps(v).encode()),
    _JSON.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.binary(max_size=8).map(lambda b: b'{"database": {"a": ' + b),
    st.tuples(st.sampled_from([("[", "]"), ('{"database": ', "}")]), st.integers(1, 3000)).map(  # deeply nested
        lambda t: (t[0][0] * t[1] + "0" + t[0][1] * t[1]).encode()),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=_ANET_GARBAGE)
def test_activitynet_property_garbage_is_a_list_or_an_adaframe_error(content):
    with tempfile.TemporaryDirectory() as d:
        js = Path(d) / "activity_net.json"
        js.write_bytes(content)
        try:
            got = read_video_list(js)
        except AdaframeError:
            return
        assert isinstance(got, list) and got
        for e in got:  # whatever is returned is usable: an id that is a file name (features/<id>.npy), a text label, a split
            assert isinstance(e.video_id, str) and e.video_id not in ("", ".", "..") and not {"/", "\x00"} & set(e.video_id), e
            assert isinstance(e.label, str) and e.label and e.split in SPLITS, e

# ============================================================================= files a folder leaves out

def test_a_folder_names_what_it_leaves_out_and_takes_gifs(video_files, tmp_path):
    root = tmp_path / "v"
    copy(source(video_files, 0), root / "dance" / "a.mp4")
    copy(source(video_files, 1), root / "dance" / "b.GIF")  # PyAV decodes GIFs: a video, in any case
    (root / "dance" / "notes.txt").write_text("not a video")
    (root / "dance" / "._a.mp4").write_bytes(b"macOS litter")
    assert [e.video_id for e in read_video_list(root)] == ["a", "b"] and listed_videos(root) == sorted(root.rglob("[ab].*"))
    assert skipped_files(root) == [(root / "dance" / "._a.mp4", "hidden file"),
                                   (root / "dance" / "notes.txt", "not a video file (by its extension)")]
    lst = write_list(tmp_path / "list.txt", [f"{root / 'dance' / 'a.mp4'} dance"])
    assert skipped_files(lst) == []  # a list names its videos one by one: nothing is left out
