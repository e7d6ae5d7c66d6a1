"""Training-speed benchmark: rlv's loop against a plain PyTorch loop, measured in the same run.

The plain loop is what a careful user writes first: a DataLoader over a TensorDataset, the same
model and initial weights with the thesis's layers as written (nn.Upsample then nn.Conv2d, default
memory format), the same batch size and loss, `loss.item()` per batch. Both loops
train the same cell from the same initial weights; the report gives seconds per epoch, their
ratio, the epoch's FLOPs (torch's FLOP counter) and the fraction of this machine's measured fp32
matrix-multiply peak. Runs of one setup vary by 15-20% on shared CPUs: compare ratios
measured together, and use several epochs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from rlv.config import DataConfig, ModelConfig, TrainConfig
from rlv.errors import RlvError
from rlv.levels import DATASETS, LAYERS, OBJECTIVES
from rlv.trial.data import load_split
from rlv.trial.loop import Trainer, autocast, synchronize
from rlv.trial.models import build_vae
from rlv.trial.models.layers import UpsampleConv
from rlv.trial.run import choose_device


@dataclass(frozen=True)
class BenchRow:
    layer: str
    prior: str
    encoder: str
    precision: str
    plain_s: float  # median seconds per epoch of the plain loop
    rlv_s: float  # median seconds per epoch of rlv's loop
    tflop_per_epoch: float
    peak_gflops: float

    @property
    def speedup(self) -> float:
        return self.plain_s / self.rlv_s

    @property
    def floor_s(self) -> float:
        """Seconds an epoch would take at the fp32 matrix-multiply peak."""
        return self.tflop_per_epoch * 1e3 / self.peak_gflops

    @property
    def rlv_fraction_of_peak(self) -> float:
        return self.floor_s / self.rlv_s

    @property
    def plain_fraction_of_peak(self) -> float:
        return self.floor_s / self.plain_s


def matmul_peak_gflops(device: torch.device, n: int = 2048, repeats: int = 20) -> float:
    """Best observed fp32 GEMM throughput of this device (GFLOP/s)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        t = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def epoch_flops(trainer: Trainer) -> float:
    """FLOPs of one training epoch: one full batch's forward and backward, scaled to N images."""
    bs = trainer.cfg.batch_size
    x = trainer.train[:bs]
    counter = FlopCounterMode(display=False)
    with counter, autocast(trainer.device, trainer.cfg.precision):
        terms = trainer.model(x)
        (terms.re - terms.rt).mean().backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops() * trainer.train.shape[0] / bs


def plain_layers(model: torch.nn.Module) -> torch.nn.Module:
    """The same model and parameters with the thesis's layers as written (no rlv rewrites):
    each UpsampleConv becomes nn.Upsample followed by its nn.Conv2d."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, UpsampleConv):
                setattr(parent, name, torch.nn.Sequential(
                    torch.nn.Upsample(scale_factor=2, mode="nearest"), child.conv))
    return model


def plain_epoch(model: torch.nn.Module, loader: DataLoader, opt: torch.optim.Optimizer) -> float:
    model.train()
    start = time.perf_counter()
    total = 0.0
    for (x,) in loader:
        terms = model(x)
        loss = (terms.re - terms.rt).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item()
    return time.perf_counter() - start


def bench_cell(model_cfg: ModelConfig, *, epochs: int, train_size: int | None, precision: str,
               peak: float, device: torch.device, log: Callable[[str], None]) -> BenchRow:
    dataset = DATASETS.build("mnist")
    layers_cls = LAYERS.get(model_cfg.layer).cls
    split = load_split(DataConfig(train_size=train_size), 0, device, layers_cls.memory_format)
    objective = OBJECTIVES.build("elbo")

    def fresh_model(memory_format: torch.memory_format) -> torch.nn.Module:
        model = build_vae(model_cfg, channels=dataset.channels, dataset_latent=dataset.latent_dim,
                          seed=0, objective=objective)
        return model.to(device).to(memory_format=memory_format)

    cfg = TrainConfig(epochs=epochs, precision=precision)
    trainer = Trainer(fresh_model(layers_cls.memory_format), split.train, cfg, seed=0)  # type: ignore[arg-type]
    flops = epoch_flops(trainer)

    plain_model = plain_layers(fresh_model(torch.contiguous_format))
    plain_opt = torch.optim.Adam([p for p in plain_model.parameters() if p.requires_grad], lr=cfg.lr)
    plain_x = split.train.contiguous()
    loader = DataLoader(TensorDataset(plain_x), batch_size=cfg.batch_size, shuffle=True)

    plain_times, rlv_times = [], []
    # alternate the two loops so that drifts of a shared machine hit both alike
    for _ in range(epochs):
        plain_times.append(plain_epoch(plain_model, loader, plain_opt))
        rlv_times.append(trainer.run_epoch().epoch_time_s)
    row = BenchRow(model_cfg.layer, model_cfg.prior, model_cfg.encoder, precision,
                   statistics.median(plain_times), statistics.median(rlv_times), flops / 1e12, peak)
    log(format_row(row))
    return row


HEADER = (f"{'cell':<22} {'prec':<5} {'plain s/ep':>10} {'rlv s/ep':>9} {'speedup':>8} "
          f"{'TFLOP/ep':>9} {'floor s':>8} {'rlv/floor':>9} {'rlv %peak':>9} {'plain %peak':>11}")


def format_row(row: BenchRow) -> str:
    cell = f"{row.encoder}-{row.layer}-{row.prior}"
    return (f"{cell:<22} {row.precision:<5} {row.plain_s:>10.3f} {row.rlv_s:>9.3f} "
            f"{row.speedup:>7.2f}x {row.tflop_per_epoch:>9.3f} {row.floor_s:>8.3f} "
            f"{row.rlv_s / row.floor_s:>8.2f}x {100 * row.rlv_fraction_of_peak:>8.0f}% "
            f"{100 * row.plain_fraction_of_peak:>10.0f}%")


def run_benchmark(*, layers: list[str], priors: list[str], encoder: str, epochs: int,
                  train_size: int | None, precisions: list[str],
                  log: Callable[[str], None]) -> list[BenchRow]:
    if epochs < 1:
        raise RlvError(f"epochs = {epochs}: the benchmark needs at least 1 epoch per loop")
    if train_size is not None and not 0 < train_size <= DATASETS.build("mnist").sizes.train:
        raise RlvError(f"train_size = {train_size}: use 1 to 25000 (MNIST's training split)")
    device = choose_device()
    peak = matmul_peak_gflops(device)
    log(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"fp32 matmul peak {peak:.0f} GFLOP/s; {epochs} epochs each, medians")
    log(HEADER)
    rows = []
    for layer in layers:
        for prior in priors:
            for precision in precisions:
                cfg = ModelConfig(encoder=encoder, layer=layer, prior=prior)
                rows.append(bench_cell(cfg, epochs=epochs, train_size=train_size,
                                       precision=precision, peak=peak, device=device, log=log))
    return rows
