"""A finished trial's trained model, loaded back from the store (for a notebook: sample any cell).

The model is rebuilt from the `config` column of the trial's row (the config it ran with) and
given the weights the trial kept in STORE/_checkpoints/SWEEP/TRIAL_ID/model.pt.
"""

from __future__ import annotations

import io
import json

import torch

from rlv import columns as col
from rlv.config import TrialConfig
from rlv.errors import RlvError
from rlv.levels import DATASETS
from rlv.store.checkpoints import MODEL_FILE, trial_dir
from rlv.store.files import trial_rows
from rlv.store.store import Store
from rlv.trial.models.vae import VAE
from rlv.trial.run import build_model


def stored_config(store: Store, sweep: str, trial_id: str) -> TrialConfig:
    """The TrialConfig a finished trial ran with, from its row."""
    rows = trial_rows(store, sweep, {trial_id}, [col.CONFIG])
    if not rows:
        raise RlvError(f"store {store} has no finished trial {trial_id!r} in sweep {sweep!r}; "
                       f"`rlv status {sweep} --store {store}` lists them")
    return TrialConfig.from_dict(json.loads(str(rows[0][col.CONFIG])))


def load_model(store: str | Store, sweep: str, trial_id: str) -> VAE:
    """The trained VAE of trial `trial_id` of `sweep`, on the CPU, in eval mode. `store`: a
    folder or URI (a notebook's call), or a command's opened Store."""
    if not isinstance(store, Store):
        store = Store.open(store)
    cfg = stored_config(store, sweep, trial_id)
    path = f"{trial_dir(store.root, sweep, trial_id)}/{MODEL_FILE}"
    data = store.read_optional(path)
    if data is None:
        raise RlvError(f"trial {trial_id!r} of sweep {sweep!r} kept no model in {store} (its "
                       "sweep said keep_model: false, or it ran before rlv kept models)")
    model = build_model(cfg, DATASETS.build(cfg.data.dataset), torch.device("cpu"))
    model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    return model.eval()
