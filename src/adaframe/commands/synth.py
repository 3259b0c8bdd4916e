"""``adaframe synth``: the synthetic feature data set (``data.synth``) written where 'adaframe train' reads it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from adaframe.data.features import SPLITS, read_videos_csv
from adaframe.data.synth import SynthConfig, generate


@dataclass(kw_only=True)
class SynthCommand(SynthConfig):
    """Write a synthetic feature data set in the layout 'adaframe train' reads."""

    out: Path
    """data set directory to write"""


def run_synth(cmd: SynthCommand) -> None:
    out = generate(cmd, cmd.out)
    counts = Counter(r.split for r in read_videos_csv(out))
    print(f"wrote {sum(counts.values())} videos to {out} ({', '.join(f'{s} {counts[s]}' for s in SPLITS)})")
