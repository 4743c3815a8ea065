"""The aggregator: CL figures pinned on hand-computed matrices, tables, outputs, refusals, the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from l2kd.report import figures as F

# R[i][j]: task j (position in the order) after stage i. Hand-computed figures below.
R3 = [[80.0, 10.0, 5.0],
      [60.0, 70.0, 20.0],
      [50.0, 65.0, 90.0]]
B3 = [2.0, 4.0, 6.0]


def test_final_average_uses_the_last_row():
    assert F.final_average(R3) == pytest.approx((50 + 65 + 90) / 3)


def test_bwt_uses_the_diagonal_and_leaves_out_the_task_seen_last():
    # (R[2][0] - R[0][0]) + (R[2][1] - R[1][1]) = -30 + -5, over T-1 = 2 (not 3: the last task has no term)
    assert F.backward_transfer(R3) == pytest.approx(-17.5)
    per_task = F.backward_transfer_per_task(R3)
    assert per_task[:2].tolist() == [-30.0, -5.0] and math.isnan(per_task[2])


def test_fwt_starts_at_the_second_task_and_reads_the_stage_before():
    # (R[0][1] - b1) + (R[1][2] - b2) = (10 - 4) + (20 - 6), over 2; the first task has no term
    assert F.forward_transfer(R3, B3) == pytest.approx(10.0)
    per_task = F.forward_transfer_per_task(R3, B3)
    assert math.isnan(per_task[0]) and per_task[1:].tolist() == [6.0, 14.0]


def test_fwt_without_a_baseline_is_undefined_not_zero():
    assert math.isnan(F.forward_transfer(R3, None))
    assert np.isnan(F.forward_transfer_per_task(R3, None)).all()


def test_forgetting_leaves_out_the_last_task():
    # f0 = max(80, 60) - 50 = 30; f1 = max(10, 70) - 65 = 5; the last task (90) has no forgetting
    per_task = F.forgetting_per_task(R3)
    assert per_task[:2].tolist() == [30.0, 5.0] and math.isnan(per_task[2])
    assert F.forgetting(R3) == pytest.approx(17.5)


def test_forgetting_takes_the_max_over_every_earlier_stage():
    # Task 1 scored 75 before it was trained (forward transfer) and 70 after: the max is 75.
    R = [[80.0, 75.0, 5.0], [60.0, 70.0, 20.0], [50.0, 65.0, 90.0]]
    assert F.forgetting_per_task(R)[1] == pytest.approx(10.0)


def test_average_incremental_averages_the_tasks_seen_so_far():
    # stage 0: 80; stage 1: (60 + 70) / 2 = 65; stage 2: (50 + 65 + 90) / 3
    assert F.average_incremental(R3) == pytest.approx((80 + 65 + 205 / 3) / 3)


def test_gap_to_single_skips_tasks_without_a_single_score():
    gaps = F.gap_to_single_per_task(R3, [55.0, None, 85.0])
    assert gaps[0] == -5.0 and math.isnan(gaps[1]) and gaps[2] == 5.0
    assert F.gap_to_single(R3, [55.0, None, 85.0]) == pytest.approx(0.0)


def test_two_tasks():
    R = [[40.0, 12.0], [30.0, 60.0]]
    got = F.figures(R, baseline=[1.0, 2.0], single=[50.0, 70.0])
    assert got == pytest.approx({"final_avg": 45.0, "avg_incremental": (40 + 45) / 2, "bwt": -10.0,
                                 "fwt": 10.0, "forgetting": 10.0, "gap_to_single": -15.0})


def test_one_task_has_no_transfer_figures():
    got = F.figures([[33.0]], baseline=[3.0])
    assert got["final_avg"] == 33.0 and got["avg_incremental"] == 33.0
    assert all(math.isnan(got[k]) for k in ("bwt", "fwt", "forgetting", "gap_to_single"))


def test_a_non_square_matrix_is_refused():
    with pytest.raises(ValueError, match="square"):
        F.final_average([[1.0, 2.0]])
