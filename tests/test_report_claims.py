"""The report's claims section on hand-made result folders: figures, paired comparisons, verdicts,
and the teacher / KD-stage diagnostics beside them."""

import json

import numpy as np
import pytest

from l2kd.io import write_json
from l2kd.report import build_report, collect
from l2kd.report import claims as C

from test_report import A, B, cell, write_trial

ORDERS = {"fw": [A, B], "bw": [B, A]}


def kd_stage(task, flags=()):
    return {"kd": {"task": task, "temperature": 2.0, "entropy_ratio": 0.95 if flags else 0.4,
                   "unseen_mass": 0.9 if flags else 0.1, "distinct_predictions": 0.5, "agreement": 0.7,
                   "flags": list(flags)}}


def with_stage_info(folder, info):
    path = folder / "results.json"
    d = json.loads(path.read_text())
    d["stage_info"] = info
    path.write_text(json.dumps(d))


@pytest.fixture
def claims_run(tmp_path):
    """3 seeds x 2 orders of finetune, lamol and word_kd; word_kd 2 points above lamol in every
    pair; finetune forgets 40 points, lamol 5; a multitask run per seed; one degenerate KD stage."""
    run = tmp_path / "run"
    for seed in (1, 2, 3):
        for oid, order in ORDERS.items():
            base = 50 + seed + (3 if oid == "bw" else 0)  # order and seed effects, shared by all methods
            lam = [[base + 5, 10], [base, base]]
            ft = [[base + 5, 10], [base - 35, base]]
            wk = [[base + 7, 10], [base + 2, base + 2]]
            for method, R in (("lamol", lam), ("finetune", ft), ("word_kd", wk)):
                folder = write_trial(run / "cells" / f"{oid}-{method}-s{seed}", order, method, R, seed=seed,
                                     cell=cell(oid, method, seed))
                if method == "word_kd":
                    flags = ("unseen_mass",) if (seed, oid) == (1, "fw") else ()
                    with_stage_info(folder, [kd_stage(order[0], flags), kd_stage(order[1])])
        write_trial(run / "cells" / f"multi-s{seed}", [A, B], "multitask", [[60 + seed, 60 + seed]], seed=seed,
                    cell=cell("all", "multitask", seed))
    teacher = write_trial(run / "teachers" / f"{A}-abc", [A], "single", [[70]], **{"eval.before_training": False})
    write_json(teacher / "manifest.json", {"diagnostics": {
        "by_temperature": {"1": {"entropy_ratio": 0.3, "unseen_mass": 0.05},
                           "2": {"entropy_ratio": 0.85, "unseen_mass": 0.6}},
        "distinct_predictions": 0.4, "top_prediction_share": 0.1, "flags": {"1": [], "2": ["entropy_ratio", "unseen_mass"]}}})
    (run / "grid.yaml").write_text(f"tasks: [{A}, {B}]\n")
    return run


def test_sign_flip_p_and_verdicts():
    assert C.sign_flip_p(np.array([1.0, 2, 3, 4, 5, 6])) == pytest.approx(2 / 64)
    assert C.sign_flip_p(np.array([1.0, -1.0])) == 1.0
    assert C.verdict(np.full(6, 2.0))[0] == "holds"
    assert C.verdict(np.full(6, -2.0))[0] == "does not hold"
    assert C.verdict(np.full(3, 2.0))[0] == "cannot tell at this size (3 pairs)"  # p = 0.25 at best
    assert C.verdict(np.array([2.0, -1, 3, -2, 1, 0.5]))[0].startswith("cannot tell")
    assert C.verdict(np.array([]))[0] == "cannot tell: not measured"


def test_claims_rows_measure_pair_and_judge(claims_run):
    (sec,) = collect(claims_run)
    t = sec.table("claims").df
    forgets = t.loc["Sequential fine-tuning forgets (Finetune's forgetting > 0)"]
    assert forgets.verdict == "holds" and "Finetune forgetting 40.0 ± 0.0" in forgets.measured
    retains = t.loc["LAMOL retains (forgets less than Finetune)"]
    assert retains.verdict == "holds" and "Δ = 35.0 ± 0.0 (6 pairs, 6 positive, p = 0.031)" == retains.paired
    wk = t.loc["Word-KD beats LAMOL on average"]
    assert wk.verdict == "holds" and wk.paired.startswith("Δ = 2.0 ± 0.0 (6 pairs")
    assert "T3 57.0, T4 63.5 / 68.0" in wk.paper and "LAMOL T3 54.9, T4 63.2 / 66.7" in wk.paper
    assert "1 of 12 stages flagged degenerate" in wk.diagnostics and "agreement 0.70" in wk.diagnostics
    # no Seq-KD results: said, not invented
    assert t.loc["Seq-KD beats LAMOL on average"].verdict == "cannot tell: not measured"
    # STD over orders pairs seeds: 3 pairs can never reach p <= 0.05
    std = t.loc["Word-KD lowers the STD over orders"]
    assert std.verdict == "cannot tell at this size (3 pairs)" and "LAMOL 2.1 ± 0.0" in std.measured
    gap = t.loc["Seq-KDsoft narrows the gap to Multi (per seed: Multi − method)"]
    assert gap.verdict == "cannot tell: not measured"


def test_diagnostics_tables_and_report_header(claims_run):
    report = build_report(claims_run)
    (sec,) = report.sections
    stages = sec.table("kd_stages").df
    assert len(stages) == 12 and (stages["flags"] != "—").sum() == 1
    teachers = sec.table("teacher_diagnostics").df
    assert teachers.loc[(A, 1, 2.0)]["flags"] == "entropy_ratio, unseen_mass"
    assert any("1 of 12 KD stages had a degenerate teacher" in n for n in sec.notes)
    md = (claims_run / "report" / "report.md").read_text()
    assert "entropy_ratio >= 0.8 or unseen_mass >= 0.5 or distinct_predictions <= 0.2" in md
    assert "The paper's claims" in md and (claims_run / "report" / "claims.csv").is_file()


def test_kd_stages_set_each_teacher_against_lamols_student(claims_run):
    """The fixture's one teacher (task A, seed 1) scores 70; LAMOL scores 56 on A right after
    learning it in seed 1's forward order and 54 in its backward order (A second): gaps +14, +16."""
    (sec,) = collect(claims_run)
    stages = sec.table("kd_stages").df.reset_index()
    taught = stages[stages.teacher_score.notna()]
    assert sorted(zip(taught.order, taught.stage, taught.seed)) == [("bw", 1, 1), ("fw", 0, 1)]
    fw = taught[taught.order == "fw"].iloc[0]
    assert (fw.teacher_score, fw.lamol_score, fw.teacher_gap) == (70.0, 56.0, 14.0)
    assert fw.student_score == 58.0  # the word_kd cell's own R[0][0] (base + 7)
    assert taught[taught.order == "bw"].iloc[0].teacher_gap == 70.0 - 54.0
    assert stages.teacher_gap.isna().sum() == len(stages) - 2  # no teacher, no gap: not invented
    wk = sec.table("claims").df.loc["Word-KD beats LAMOL on average"]
    assert "teacher − LAMOL on the stage's task +15.0 (0 of 2 stages below)" in wk.diagnostics
    assert not any("scores below LAMOL" in n for n in sec.notes)


def test_a_teacher_below_lamols_student_is_said(claims_run):
    teacher = claims_run / "teachers" / f"{A}-abc" / "results.json"
    d = json.loads(teacher.read_text())
    d["R"] = [[40.0]]
    teacher.write_text(json.dumps(d))
    # a Single (QA) row of the same task and seed is no teacher: it must not lift the teacher's score
    write_trial(claims_run / "teachers" / f"{A}-qa", [A], "single", [[90]], params={"qa_only": True},
                **{"eval.before_training": False})
    (sec,) = collect(claims_run)
    stages = sec.table("kd_stages").df
    assert set(stages.teacher_score.dropna()) == {40.0}
    assert any(n.startswith("2 of 2 KD stages had a teacher that scores below LAMOL") for n in sec.notes)
    wk = sec.table("claims").df.loc["Word-KD beats LAMOL on average"]
    assert "(2 of 2 stages below)" in wk.diagnostics
