"""The report's arithmetic: CL figures pinned on hand-computed matrices, and the paper's Table 3
(means and STDs over orders) recomputed from its Table 2."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from l2kd.report import figures as F
from l2kd.report import tables as T

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


# --------------------------------------------------------------------------- tables

# The paper's Table 2 (WOZ, CNN, SQL final scores in six orders) and its Table 3 rows derived from it.
PAPER_T2 = {
    "finetune": [[0.0, 26.3, 64.3], [84.6, 6.8, 2.1], [0.1, 26.0, 0.0], [0.0, 25.8, 0.0], [3.6, 24.5, 64.0],
                 [85.0, 7.3, 0.0]],
    "lamol": [[67.6, 27.3, 62.5], [83.0, 27.8, 60.8], [76.1, 26.0, 55.0], [76.1, 26.3, 59.3], [79.8, 27.3, 64.1],
              [84.0, 27.2, 58.7]],
    "word_kd": [[82.4, 27.6, 65.0], [86.1, 27.5, 63.2], [79.5, 26.2, 59.6], [81.4, 26.7, 59.6],
                [83.5, 27.8, 65.0], [78.7, 26.4, 59.0]],
}
PAPER_T3_MEAN = {"finetune": [28.9, 19.5, 21.7, 23.4], "lamol": [77.7, 27.0, 60.0, 54.9],
                 "word_kd": [81.9, 27.0, 61.9, 57.0]}
PAPER_T3_STD = {"finetune": [43.3, 9.6, 32.9, 28.6], "lamol": [6.0, 0.7, 3.2, 3.3], "word_kd": [2.7, 0.7, 2.8, 2.1]}
WCS = ["woz.en", "cnn_dailymail", "wikisql"]


def test_the_papers_table3_follows_from_its_table2():
    rows = [{"role": "lifelong", "method": m, "order_id": f"o{k}", "order": f"o{k}", "seed": 1, "task": task,
             "score": v, "trial": ""}
            for m, orders in PAPER_T2.items() for k, scores in enumerate(orders) for task, v in zip(WCS, scores)]
    table = T.over_orders(pd.DataFrame(rows), WCS)
    mean = table.loc["Lifelong: mean over orders"]
    std = table.loc["Lifelong: STD over orders"]
    for m in PAPER_T2:
        # Means agree to the rounding of Table 2's one-decimal inputs.
        assert mean.loc[m, WCS + ["Avg"]].tolist() == pytest.approx(PAPER_T3_MEAN[m], abs=0.11)
        # STD: n-1, and the Avg of an STD row is the mean of the task STDs; population STD would give
        # 39.6 for Finetune's WOZ, the STD of the Avg column 11.4 instead of 28.6.
        assert std.loc[m, WCS + ["Avg"]].round(1).tolist() == PAPER_T3_STD[m]
        assert mean.loc[m, "orders"] == 6
