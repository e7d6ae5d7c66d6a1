"""`rlv train`: one trial outside Ray, writing its metrics and images to a folder.

The folder holds `metrics.json` (the store's trial row), `epochs.json` (the epoch rows), the three
PNG grids and, while training, `checkpoint.pt`: running the same command again resumes from it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rlv import columns as col
from rlv.config import TrialConfig
from rlv.errors import RlvError
from rlv.paths import atomic_write_bytes, cache_dir
from rlv.sweep.validation import check_trial_config
from rlv.trial.fid_weights import check_weights_available
from rlv.trial.loop import EpochMetrics, Trainer
from rlv.trial.run import TrialResult, epoch_row, run_trial

CHECKPOINT = "checkpoint.pt"


def _json_bytes(value: Any) -> bytes:
    # NaN (e.g. FID skipped) becomes null: strict JSON that every reader accepts
    def clean(v: Any) -> Any:
        return None if col.is_nan(v) else v

    if isinstance(value, list):
        value = [{k: clean(v) for k, v in row.items()} for row in value]
    else:
        value = {k: clean(v) for k, v in value.items()}
    return (json.dumps(value, indent=2) + "\n").encode()


def _resume_state(out: Path, cfg: TrialConfig, echo: Callable[[str], None]) -> dict[str, Any] | None:
    path = out / CHECKPOINT
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)  # data only: no code runs
    except Exception as exc:
        raise RlvError(f"cannot read checkpoint {path} ({exc}); delete it to start over") from None
    if saved.get("config") != cfg.to_dict():
        raise RlvError(f"{out} holds a checkpoint of another configuration; pass another --out "
                       f"or delete {path}")
    echo(f"resuming from {path} (epoch {saved['trainer']['epoch']})")
    return saved["trainer"]  # type: ignore[no-any-return]


def train_to_folder(cfg: TrialConfig, out: Path, echo: Callable[[str], None]) -> TrialResult:
    """Run `cfg`, printing progress through `echo`; write results under `out`."""
    check_trial_config(cfg)
    out = out.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise RlvError(f"--out {out} is a file, not a folder; pass a folder (new or one of an "
                       "earlier `rlv train` to resume it)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RlvError(f"cannot create --out folder {out}: {exc.strerror or exc}") from None
    cache_dir()  # an unusable $RLV_CACHE_DIR is one line now, not an error inside training
    if cfg.eval.fid_samples > 0:
        check_weights_available()  # bad FID weights fail before training, not after it
    resume = _resume_state(out, cfg, echo)
    width = len(str(cfg.train.epochs))

    def on_epoch(m: EpochMetrics, trainer: Trainer) -> None:
        logdet = f"  log|det| {m.flow_logdet:7.3f}" if cfg.model.prior != "normal" else ""
        echo(f"epoch {m.epoch:>{width}}/{cfg.train.epochs}  neg ELBO {m.train_neg_elbo:9.3f}  "
             f"RE {m.train_re:8.3f}  RT {m.train_rt:8.3f}{logdet}  {m.epoch_time_s:6.2f} s")
        if cfg.train.checkpoint_due(m.epoch):
            buffer = io.BytesIO()
            torch.save({"config": cfg.to_dict(), "trainer": trainer.state_dict()}, buffer)
            atomic_write_bytes(out / CHECKPOINT, buffer.getvalue())

    echo(f"{cfg.name}: {cfg.data.dataset}, {cfg.train.epochs} epochs, objective "
         f"{cfg.train.objective}, FID on {cfg.eval.fid_samples} samples")
    result = run_trial(cfg, resume=resume, on_epoch=on_epoch, on_phase=lambda p: echo(f"{p} ..."))
    for column, png in result.images.by_column().items():
        atomic_write_bytes(out / f"{column.removeprefix('image_')}.png", png)
    atomic_write_bytes(out / "metrics.json", _json_bytes(result.row))
    epochs = [epoch_row(cfg, m) for m in result.epochs]
    atomic_write_bytes(out / "epochs.json", _json_bytes(epochs))
    (out / CHECKPOINT).unlink(missing_ok=True)
    echo(summary(result.row))
    echo(f"wrote {out}/metrics.json, epochs.json and 3 PNG grids")
    return result


def summary(row: dict[str, Any]) -> str:
    return (f"test: neg ELBO {row[col.TEST_NEG_ELBO]:.3f}  RE {row[col.TEST_RE]:.3f}  "
            f"RT {row[col.TEST_RT]:.3f} (true -KL/D {row[col.TEST_RT_ELBO]:.3f})  "
            f"{col.fid_text(row[col.FID])}  |  {row[col.TRAINABLE_PARAMS]:,} trainable parameters  "
            f"{row[col.EPOCH_TIME_S]:.2f} s/epoch on {row[col.DEVICE]}")
