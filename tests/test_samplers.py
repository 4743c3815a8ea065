"""Multitask samplers: proportions over many draws, epoch length, MT-Uncertainty on hand-built cases."""

import math

import numpy as np
import pytest
import torch

from l2kd.trialconfig import trial_config
from l2kd.samplers import (MixtureSampler, TaskStreams, UncertaintySampler, answer_entropy,
                           epoch_shape, select_uncertain, task_probabilities)
from l2kd.trial import run_trial

from conftest import tiny_trial

SIZES = [900, 100]


def groups(sizes=SIZES):
    start = np.cumsum([0] + sizes[:-1])
    return [np.arange(s, s + n) for s, n in zip(start, sizes)]


def task_shares(plan, sizes=SIZES) -> np.ndarray:
    idx = np.concatenate(list(plan))
    return np.bincount(np.searchsorted(np.cumsum(sizes), idx, side="right"), minlength=len(sizes)) / len(idx)


def test_probabilities_by_definition():
    assert task_probabilities(SIZES, "uniform").tolist() == [0.5, 0.5]
    assert np.allclose(task_probabilities(SIZES, "temperature", 1.0), [0.9, 0.1])
    assert np.allclose(task_probabilities(SIZES, "temperature", 2.0), [30 / 40, 10 / 40])  # √900, √100


@pytest.mark.parametrize("mode, tau, expected", [("uniform", 1.0, [0.5, 0.5]),
                                                 ("temperature", 2.0, [0.75, 0.25]),
                                                 ("temperature", 1.0, [0.9, 0.1])])
def test_mixture_proportions_over_many_draws(mode, tau, expected):
    probs = task_probabilities(SIZES, mode, tau)
    shares = np.mean([task_shares(MixtureSampler(groups(), probs, 8, np.random.default_rng(s)))
                      for s in range(20)], axis=0)  # 20 epochs of 1000 rows
    assert np.allclose(shares, expected, atol=0.01)


def test_epoch_has_the_union_size_in_batches_of_B_and_is_seeded():
    s = MixtureSampler(groups(), [0.5, 0.5], 8, np.random.default_rng(1))
    plan = list(s)
    assert len(s) == len(plan) == math.ceil(1000 / 8) and [len(b) for b in plan] == epoch_shape(1000, 8)
    again = list(MixtureSampler(groups(), [0.5, 0.5], 8, np.random.default_rng(1)))
    assert all((a == b).all() for a, b in zip(plan, again))
    assert epoch_shape(10, 4) == [4, 4, 2]


def test_task_streams_draw_without_replacement_within_a_pass():
    streams = TaskStreams([np.arange(5)], np.random.default_rng(0))
    first, second = streams.take(0, 5), streams.take(0, 5)
    assert sorted(first) == sorted(second) == [0, 1, 2, 3, 4]


def test_select_uncertain_hand_built():
    # task 0 candidates are confident, task 1 uncertain; one task-1 row is the most uncertain of all
    H = np.array([0.1, 0.2, 0.15, 0.9, 0.8, 0.05])
    task = np.array([0, 0, 0, 1, 1, 1])
    # means: t0 0.15, t1 0.5833 -> w = (0.2571, 1); scores 0.026 0.051 0.039 0.9 0.8 0.05
    assert select_uncertain(H, task, 3, "code").tolist() == [1, 3, 4]
    # paper form: entropy alone -> 0.9, 0.8, 0.2
    assert select_uncertain(H, task, 3, "paper").tolist() == [1, 3, 4]
    # where the two differ: the code's task weight demotes a confident task's outlier
    H2 = np.array([0.6, 0.0, 0.0, 0.5, 0.5, 0.5])
    assert select_uncertain(H2, task, 1, "paper").tolist() == [0]
    assert select_uncertain(H2, task, 1, "code").tolist() == [3]  # 0.6·0.4 < 0.5·1


def test_answer_entropy_by_hand():
    V = 4
    uniform = torch.zeros(V)
    peaked = torch.tensor([20.0, 0.0, 0.0, 0.0])
    half = torch.log(torch.tensor([0.5, 0.5, 1e-30, 1e-30]))
    logits = torch.stack([uniform, peaked, half, peaked, half])
    row = torch.tensor([0, 0, 1, 2, 2])
    H = answer_entropy(logits, row, 3, [None, None, torch.tensor([0, 1])])
    assert H[0].item() == pytest.approx(0.5, abs=1e-6)  # mean of 1 (uniform) and ~0 (peaked)
    assert H[1].item() == pytest.approx(math.log(2) / math.log(4), abs=1e-6)
    # classification row: the first answer position only, restricted to the label tokens {0, 1}:
    # peaked on token 0 -> ~0, though its second position is uncertain
    assert H[2].item() == pytest.approx(0.0, abs=1e-6)


def test_uncertainty_sampler_keeps_the_highest_entropy_candidates():
    entropy_of = {i: (0.9 if i % 10 == 0 else 0.1) for i in range(1000)}  # every 10th row uncertain
    calls = []

    def score(idx):
        calls.append(list(idx))
        return np.array([entropy_of[i] for i in idx])

    s = UncertaintySampler(groups(), 4, 20, score, np.random.default_rng(0), form="paper")
    plan = list(s)
    assert len(plan) == 250 and len(calls) == 250 and all(len(c) == 40 for c in calls)
    for batch, cand in zip(plan, calls):
        n_uncertain = sum(entropy_of[i] == 0.9 for i in cand)
        assert sum(entropy_of[i] == 0.9 for i in batch) == min(4, n_uncertain)


@pytest.mark.parametrize("sampler", ["uniform", "uncertainty"])  # temperature: uniform's code path
def test_multitask_trial_with_each_sampler(tmp_path, sampler):
    cfg = trial_config(tiny_trial(method={"name": "multitask", "sampler": sampler, "qa_only": True}))
    result = run_trial(cfg, tmp_path)
    info = result.stage_info[0]
    assert info["sampler"] == sampler and info["train"]["examples"] == 96 and info["train"]["steps"] == 24
    assert sum(info["trained_rows_per_task"].values()) == 96


def test_concat_sees_every_row_once_per_epoch():
    from l2kd.config import TrainingConfig
    from l2kd.data.batching import plan_epoch

    rows = list(range(1000))  # plan_epoch only needs len(rows) under the paper policy
    plan = plan_epoch(rows, TrainingConfig(), np.random.default_rng(0))
    assert sorted(np.concatenate(plan).tolist()) == rows and len(plan) == 250  # B = max(1000//1500, 4)
    assert np.allclose(task_shares(plan), [0.9, 0.1])  # size-proportional, exactly
