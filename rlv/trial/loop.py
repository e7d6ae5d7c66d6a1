"""The training loop: Adam on the negative ELBO, one epoch at a time, data resident on the device.

Batches are index slices of a per-epoch permutation of the training tensor (no DataLoader, no
per-batch host-to-device copies). The epoch's sums stay on the device and are read once per epoch,
so the loop never waits on the GPU mid-epoch. Knows nothing of Ray.
"""

from __future__ import annotations

import io
import pickle
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from rlv import columns as col
from rlv.config import TrainConfig
from rlv.errors import RlvError
from rlv.store.files import first_line
from rlv.trial.models.vae import VAE, derived_seed
from rlv.trial.objective import Terms


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based: the number of epochs trained so far
    train_neg_elbo: float
    train_re: float
    train_rt: float
    epoch_time_s: float
    flow_logdet: float = 0.0  # mean log|det df/dz| of the prior over the epoch (0: normal)
    # the test split's terms after this epoch, where eval.test_every asked for them (else None)
    test_neg_elbo: float | None = None
    test_re: float | None = None
    test_rt: float | None = None


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a clock read measures it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str) -> Any:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


class Trainer:
    """Trains `model` on `train` (N, C, 32, 32), resumable through state_dict/load_state_dict."""

    def __init__(self, model: VAE, train: torch.Tensor, cfg: TrainConfig, seed: int) -> None:
        self.model = model
        self.train = train
        self.cfg = cfg
        self.device = train.device
        # the optimiser sees only what trains: frozen encoder layers have requires_grad False
        params = [p for p in model.parameters() if p.requires_grad]
        # fused Adam: one kernel for all parameters (8% of an fc epoch on a 2-core CPU)
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, fused=True)
        self.batches = torch.Generator(device=self.device)
        self.batches.manual_seed(derived_seed(seed, "batches"))
        self.precision = autocast(self.device, cfg.precision)
        self.epoch = 0
        self.history: list[EpochMetrics] = []  # every epoch so far, kept across resumes

    def run_epoch(self) -> EpochMetrics:
        model, x_all, bs = self.model, self.train, self.cfg.batch_size
        n = x_all.shape[0]
        model.train()
        sums = torch.zeros(3, device=self.device, dtype=torch.float64)  # RE, RT, logdet
        synchronize(self.device)
        start = time.perf_counter()
        order = torch.randperm(n, device=self.device, generator=self.batches)
        steps = -(-n // bs)  # batches per epoch
        for step, i in enumerate(range(0, n, bs)):
            x = x_all[order[i : i + bs]]  # (B, C, 32, 32), a gather on the device
            with self.precision:  # autocast the forward only: backward and Adam stay in fp32
                terms = model(x)
            loss = self.loss(terms, self.epoch * steps + step, steps)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            with torch.no_grad():  # one reduction per batch: (3, B) -> (3,)
                sums += torch.stack([terms.re, terms.rt, terms.logdet]).sum(1, dtype=torch.float64)
        re, rt, logdet = (sums / n).tolist()  # the epoch's one device-to-host read
        synchronize(self.device)
        elapsed = time.perf_counter() - start
        self.epoch += 1
        if any(col.is_nan(v) for v in (re, rt, logdet)):  # say so rather than train on garbage
            raise RlvError(f"training diverged at epoch {self.epoch}: the loss is NaN")
        metrics = EpochMetrics(self.epoch, re - rt, re, rt, elapsed, logdet)
        self.history.append(metrics)
        return metrics

    def loss(self, terms: Terms, step: int, steps_per_epoch: int) -> torch.Tensor:
        """The optimised scalar at batch `step`: mean of RE - w * RT with w = kl_weight times the
        warm-up's weight; the reported metrics stay the unweighted terms."""
        weight = self.rt_weight(step, steps_per_epoch) * self.cfg.kl_weight
        if weight == 1.0:
            return terms.neg_elbo.mean()  # neg_elbo (B,) = re - rt
        return (terms.re - weight * terms.rt).mean()

    def record_test(self, test: dict[str, float]) -> EpochMetrics:
        """Add the test split's terms (evaluate.test_metrics) to the last epoch's metrics."""
        last = replace(self.history[-1], test_neg_elbo=test[col.TEST_NEG_ELBO],
                       test_re=test[col.TEST_RE], test_rt=test[col.TEST_RT])
        self.history[-1] = last
        return last

    def rt_weight(self, step: int, steps_per_epoch: int) -> float:
        """KL warm-up: RT's weight in the loss at batch `step` (0-based, counted over the whole
        run), rising linearly from 0 at the first batch to 1 after warmup_epochs epochs."""
        warmup = self.cfg.warmup_epochs * steps_per_epoch
        return 1.0 if step >= warmup else step / warmup

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "history": [asdict(m) for m in self.history],
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "batches": self.batches.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.history = [EpochMetrics(**m) for m in state["history"]]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.set_state(state["batches"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])


STATE_KEYS = frozenset({"epoch", "history", "model", "optimizer", "batches", "torch_rng", "cuda_rng"})


def read_state(data: bytes, name: str) -> dict[str, Any]:
    """A Trainer.state_dict() saved with torch.save, read as data only: `weights_only` refuses
    any pickled object that is not a tensor or a plain container, so a crafted file in a shared
    bucket never runs code. RlvError naming `name` when the file is not such a state."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise RlvError(f"checkpoint {name} is not a valid rlv checkpoint "
                       f"({first_line(exc)[:200]})") from None
    if not isinstance(state, dict) or not STATE_KEYS - {"cuda_rng"} <= set(state) <= STATE_KEYS:
        raise RlvError(f"checkpoint {name} is not a valid rlv checkpoint (not a trainer state)")
    return state
