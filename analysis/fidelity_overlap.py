"""The overlap candidate of analysis/fidelity.md, measured on the faithful runs' trained models.

    python analysis/fidelity_overlap.py STORE [--sweep fidelity-fc]

`data.test_overlap: independent` changes only which images the test split holds: the training
split, and so (training being deterministic on the CPU) the trained model, is the faithful run's.
So instead of training every cell again, this loads each finished trial's model (keep_model) and
evaluates it, with rlv's own test evaluation (rlv.trial.evaluate.test_metrics, the same seeded
posterior sample), on three splits of its seed: its own test split (which must give back the
stored test columns: a check that the model and the split are the run's), the independent test
split the candidate would have used, and its training split. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import pandas as pd
import torch

from rlv import columns as col
from rlv.config import TrialConfig
from rlv.trial.data import load_split
from rlv.trial.evaluate import test_metrics
from rlv.trial.saved import load_model


def evaluate(store: str, sweep: str) -> pd.DataFrame:
    trials = pd.read_parquet(f"{store}/trials", filters=[(col.SWEEP, "=", sweep)])
    rows = []
    for _, row in trials.sort_values(col.TRIAL_ID).iterrows():
        cfg = TrialConfig.from_dict(json.loads(row[col.CONFIG]))
        model = load_model(store, sweep, row[col.TRIAL_ID])
        own = load_split(cfg.data, cfg.seed, torch.device("cpu"))
        mine = test_metrics(model, own.test, cfg.seed)
        train = test_metrics(model, own.train, cfg.seed)
        independent = dataclasses.replace(cfg.data, test_overlap="independent")
        other = test_metrics(model, load_split(independent, cfg.seed, torch.device("cpu")).test,
                             cfg.seed)
        rows.append({"trial": row[col.TRIAL_ID], "stored test RE": row[col.TEST_RE],
                     "re-evaluated test RE": mine[col.TEST_RE],
                     "train RE (model at the end)": train[col.TEST_RE],
                     "independent test RE": other[col.TEST_RE],
                     "stored test RT": row[col.TEST_RT], "independent test RT": other[col.TEST_RT],
                     "independent test neg ELBO": other[col.TEST_NEG_ELBO]})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store")
    parser.add_argument("--sweep", default="fidelity-fc")
    args = parser.parse_args()
    torch.set_num_threads(1)  # beside the running trials
    table = evaluate(args.store, args.sweep)
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join(v if isinstance(v, str) else f"{v:.2f}" for v in row) + " |")


if __name__ == "__main__":
    main()
