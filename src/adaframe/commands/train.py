"""``adaframe train``: train a model on a feature data set (``train.loop``) and summarise its last epoch.

Its config is ``train.config.TrainConfig``, which the library builds too (``report``, ``video-demo``).
"""

from __future__ import annotations

import json
import os

from adaframe.train.config import TrainConfig


def run_train(cfg: TrainConfig) -> None:
    from adaframe.train.loop import train  # tensorboard is slow to import; only train needs it

    out = train(cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun the first process reports
        return
    lines = (out / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    val = f"{last['val_mAP']:.2f}%" if "val_mAP" in last else "n/a (no val split)"
    fit = f"train mAP {last['train_mAP']:.2f}%, " if "train_mAP" in last else ""
    print(f"trained {cfg.model} (K={cfg.frames}) for {last.get('epoch', 0)} epochs: run dir {out}, last {fit}val mAP {val}")
    if "pooled_by" in last:  # frame_loss both: the val split's choice, with the scores it was made on (its last epoch)
        picked = next(json.loads(line) for line in reversed(lines) if "pooled_every_mAP" in json.loads(line))
        trained = {"every": "every frame", "subset": f"{cfg.frames} random frames a video"}
        print(f"the pooled prediction reads the frame classifier trained on {trained[last['pooled_by']]} (val mAP over {cfg.frames} "
              f"uniform frames at epoch {picked['epoch']}: " + ", ".join(f"{trained[h]} {picked[f'pooled_{h}_mAP']:.2f} with L2 penalty "
                                                         f"{picked[f'pooled_{h}_penalty']:g}" for h in trained) + ")")
    if "frames_penalty" in last:
        print(f"the frame classifier's L2 penalty, picked on val: {last['frames_penalty']:g} (val mAP over {cfg.frames} uniform "
              f"frames {last['frames_val_mAP']:.2f})")
    if "inference" in last:
        print(f"the policy adds {last['policy_minus_scan']:+.2f} mAP on val over the uniform scan of the same network: "
              + ("inference looks where the policy chooses" if last["inference"] == "policy" else
                 "inference looks by the uniform scan (eval --policy policy runs the policy)"))
