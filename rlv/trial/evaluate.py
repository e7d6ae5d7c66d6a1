"""After training: test-set ELBO terms, generated images for FID, and the thesis's image grids."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlv import columns as col
from rlv.config import EvalConfig
from rlv.trial.images import png_grid
from rlv.trial.models.vae import VAE, derived_seed

EVAL_BATCH = 1000  # no gradients: larger batches cost nothing extra in memory that matters


@torch.inference_mode()
def test_metrics(model: VAE, test: torch.Tensor, seed: int) -> dict[str, float]:
    """Mean test-set terms (one posterior sample per image, seeded): the store's test columns."""
    model.eval()
    with torch.random.fork_rng(devices=[test.device] if test.device.type == "cuda" else []):
        torch.manual_seed(derived_seed(seed, "test"))
        sums = torch.zeros(5, dtype=torch.float64, device=test.device)
        for i in range(0, test.shape[0], EVAL_BATCH):
            t = model(test[i : i + EVAL_BATCH])
            sums += torch.stack([t.neg_elbo.sum(), t.re.sum(), t.rt.sum(), t.rt_elbo.sum(),
                                 t.logdet.sum()]).double()
    means = (sums / test.shape[0]).tolist()
    return dict(zip(col.TEST_METRICS, means, strict=True))  # in the order of `sums`


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Decoder outputs (unbounded) to uint8 pixels: clamp to [0, 1], scale, round."""
    return images.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8)


@torch.inference_mode()
def generate_uint8(model: VAE, n: int, seed: int, batch: int = EVAL_BATCH) -> torch.Tensor:
    """n prior samples decoded to uint8 images (n, C, 32, 32) on the CPU, for FID."""
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device)
    gen.manual_seed(derived_seed(seed, "fid-samples"))
    chunks = [to_uint8(model.generate(min(batch, n - i), gen)).cpu() for i in range(0, n, batch)]
    return torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.uint8)


@dataclass(frozen=True)
class ImageGrids:
    """PNG bytes of the three grids of thesis tables 5.7-5.9."""

    reconstructions: bytes  # top row: test images, bottom row: their reconstructions
    samples: bytes  # an 8 x 8 grid of prior samples
    interpolations: bytes  # one row per pair of prior samples, steps + 1 columns

    def by_column(self) -> dict[str, bytes]:
        return {col.IMAGE_RECONSTRUCTIONS: self.reconstructions,
                col.IMAGE_SAMPLES: self.samples,
                col.IMAGE_INTERPOLATIONS: self.interpolations}


@torch.inference_mode()
def image_grids(model: VAE, test: torch.Tensor, cfg: EvalConfig, seed: int) -> ImageGrids:
    model.eval()
    device = test.device
    gen = torch.Generator(device=device)
    gen.manual_seed(derived_seed(seed, "images"))
    originals = test[: cfg.reconstructions]  # (8, C, 32, 32)
    recon = model.reconstruct(originals)
    samples = model.generate(cfg.samples, gen)
    # interpolate linearly in latent space between two prior samples per row
    ends = model.prior.sample(2 * cfg.interpolation_pairs, gen)  # (2P, D)
    z0, z1 = ends[: cfg.interpolation_pairs], ends[cfg.interpolation_pairs :]
    t = torch.linspace(0, 1, cfg.interpolation_steps + 1, device=device)  # (S+1,)
    path = z0[:, None] + t[None, :, None] * (z1 - z0)[:, None]  # (P, S+1, D)
    between = model.decoder(path.reshape(-1, path.shape[-1]))  # (P * (S+1), C, 32, 32)
    return ImageGrids(
        reconstructions=png_grid(to_uint8(torch.cat([originals, recon])), columns=cfg.reconstructions),
        samples=png_grid(to_uint8(samples), columns=8),
        interpolations=png_grid(to_uint8(between), columns=cfg.interpolation_steps + 1),
    )
