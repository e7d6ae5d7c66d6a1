"""The settings that test explanations of the thesis's fc numbers (issue: fidelity at full budget):
test metrics during training (eval.test_every), a test split drawn independently of the training
split (data.test_overlap) and RT's weight in the loss (train.kl_weight). Outside Ray, tiny data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_trial import tiny

from rlv import columns as col
from rlv.config import DataConfig
from rlv.datasets import split_indices
from rlv.errors import RlvError
from rlv.levels import DATASETS
from rlv.sweep.validation import check_trial_config
from rlv.trial.data import trial_indices
from rlv.trial.loop import Trainer
from rlv.trial.run import build_model, run_trial


def test_test_every_adds_the_test_terms_per_epoch_without_changing_training() -> None:
    plain = run_trial(tiny(model={"encoder": "L"}))
    watched = run_trial(tiny(model={"encoder": "L"}, eval={"test_every": 1}))
    one_epoch = run_trial(tiny(model={"encoder": "L"}, train={"epochs": 1}))
    # the evaluations fork the RNG: the same batches and samples, so the same training
    for a, b in zip(plain.epochs, watched.epochs, strict=True):
        assert (a.train_neg_elbo, a.train_re, a.train_rt) == (b.train_neg_elbo, b.train_re, b.train_rt)
    assert all(m.test_re is None for m in plain.epochs)
    first, last = watched.epochs
    # after epoch 1: what a trial trained for one epoch reports as its test terms
    assert (first.test_neg_elbo, first.test_re, first.test_rt) == (
        one_epoch.row[col.TEST_NEG_ELBO], one_epoch.row[col.TEST_RE], one_epoch.row[col.TEST_RT])
    assert (last.test_neg_elbo, last.test_re, last.test_rt) == (
        plain.row[col.TEST_NEG_ELBO], plain.row[col.TEST_RE], plain.row[col.TEST_RT])
    assert first.test_neg_elbo == pytest.approx(first.test_re - first.test_rt)


def test_test_every_evaluates_only_on_its_epochs() -> None:
    result = run_trial(tiny(model={"encoder": "NL"}, train={"epochs": 3}, eval={"test_every": 2}))
    assert [m.test_re is not None for m in result.epochs] == [False, True, False]


@pytest.mark.parametrize("overlap", ["disjoint", "independent"])
def test_the_test_split_overlaps_the_training_split_only_when_asked(overlap: str) -> None:
    dataset = DATASETS.build("mnist")
    cfg = DataConfig(test_overlap=overlap)  # the thesis's sizes: 25,000 train, 25,000 test
    train, test = trial_indices(dataset, cfg, seed=3)
    faithful_train, _, faithful_test = split_indices(dataset.total, dataset.sizes, 3)
    assert np.array_equal(train, faithful_train)  # the training split never changes
    assert len(test) == dataset.sizes.test and len(set(test.tolist())) == len(test)
    shared = len(np.intersect1d(train, test))
    if overlap == "disjoint":
        assert np.array_equal(test, faithful_test) and shared == 0
    else:
        # test images drawn without replacement from all images: the count that are training
        # images is hypergeometric, mean n K / N, variance n K/N (1 - K/N) (N - n) / (N - 1)
        n, big_k, big_n = len(test), len(train), dataset.total
        mean = n * big_k / big_n
        sd = math.sqrt(n * big_k / big_n * (1 - big_k / big_n) * (big_n - n) / (big_n - 1))
        assert abs(shared - mean) < 5 * sd, (shared, mean, sd)


def test_an_unknown_test_overlap_is_one_line_naming_it() -> None:
    with pytest.raises(RlvError, match="unknown data.test_overlap 'some'; choose one of: "
                                       "disjoint, independent"):
        check_trial_config(tiny(data={"test_overlap": "some"}))
    with pytest.raises(RlvError, match="kl_weight = 0.0 is not allowed"):
        check_trial_config(tiny(train={"kl_weight": 0.0}))
    with pytest.raises(RlvError, match="test_every = -1 is not allowed"):
        check_trial_config(tiny(eval={"test_every": -1}))


@pytest.mark.parametrize("weight", [1.0, 16.0])
def test_kl_weight_scales_rt_in_the_optimised_loss_only(weight: float) -> None:
    cfg = tiny(model={"encoder": "L"}, train={"kl_weight": weight})
    dataset = DATASETS.build("mnist")
    model = build_model(cfg, dataset, torch.device("cpu"))
    x = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    trainer = Trainer(model, x, cfg.train, seed=0)
    torch.manual_seed(1)
    terms = model(x)
    got = trainer.loss(terms, step=0, steps_per_epoch=1)
    # by hand: the mean over images of RE - w * RT, w = kl_weight (no warm-up)
    expected = (terms.re.detach() - weight * terms.rt.detach()).mean()
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert got.requires_grad


def test_a_heavier_kl_weight_trains_a_posterior_closer_to_the_prior() -> None:
    light = run_trial(tiny(model={"encoder": "L"}, train={"epochs": 3}))
    heavy = run_trial(tiny(model={"encoder": "L"}, train={"epochs": 3, "kl_weight": 16.0}))
    # RT = -KL per dimension; weighting it 16 times pushes the KL towards 0
    assert heavy.epochs[-1].train_rt > light.epochs[-1].train_rt
    assert heavy.row[col.TEST_RT] > light.row[col.TEST_RT]
