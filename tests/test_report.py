"""The aggregator on a synthetic run folder (result files as the trial writes them): tables, CL
figures per trial and task, curves, output files, sections, and the refusals of what it cannot merge
or read; and on real trial outputs. The figures' arithmetic: test_report_figures.py; what is shown:
test_report_cli.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from l2kd.methods import method_params
from l2kd.trialconfig import trial_config
from l2kd.errors import ArtifactError, ConfigError
from l2kd.io import write_json, write_jsonl
from l2kd.report import build_report, collect
from l2kd.report import tables as T
from l2kd.results import TrialResult
from l2kd.tasks import TASKS

from conftest import tiny_trial
from test_report_figures import B3, R3

# --------------------------------------------------------------------------- a synthetic run folder
A, B, C = "synth.nlg", "synth.sentiment", "synth.state"


def write_trial(folder: Path, tasks, method: str, R, *, seed: int = 1, baseline=None, curves=(), params=None,
                complete=True, cell: dict | None = None, preds: dict | None = None, **over) -> Path:
    """A results.json as the trial writes it (the real TrialResult and resolved config), R given."""
    cfg = trial_config(tiny_trial(tasks=list(tasks), method={"name": method, **(params or {})}, seed=seed, **over))
    primary = {t: TASKS.get(t).primary_metric for t in tasks}
    stages = [list(tasks)] if method == "multitask" else [[t] for t in tasks]
    result = TrialResult(
        name="t", tasks=list(tasks), method=method, method_params=method_params(cfg.method).model_dump(mode="json"),
        seed=seed, stages=stages, primary=primary, config=cfg.to_dict(), config_hash="h",
        R=[list(map(float, row)) for row in R],
        metrics=[{t: {primary[t]: float(v), "nf1": 0.0} for t, v in zip(tasks, row)} for row in R],
        baseline=None if baseline is None else {t: {primary[t]: float(b)} for t, b in zip(tasks, baseline)},
        curves=list(curves), complete=complete)
    result.save(folder)
    if cell is not None:
        write_json(folder / "cell.json", {"cell_id": folder.name, "grid": "g", "order": list(tasks), **cell})
    for (stage, task), ems in (preds or {}).items():
        write_jsonl(folder / "predictions" / f"stage-{stage:02d}" / f"{task}.jsonl",
                    [{"index": i, "id": f"q{i}", "prediction": "", "references": ["x"], "em": float(e)}
                     for i, e in enumerate(ems)])
    return folder


def cell(order_id: str, method: str, seed: int = 1) -> dict:
    return {"order_id": order_id, "method": method, "seed": seed}


def synthetic_run(tmp_path) -> Path:
    """Two orders x (lamol, finetune), lamol with two seeds in order o1, teachers, a multitask run."""
    run = tmp_path / "run"
    curves = [{"stage": s, "epoch": 1, "scores": {t: {TASKS.get(t).primary_metric: 10.0 * s + k}
                                                  for k, t in enumerate([A, B, C])}} for s in range(3)]
    write_trial(run / "cells" / "o1-lamol-s1", [A, B, C], "lamol", R3, baseline=B3, cell=cell("o1", "lamol"),
                preds={(2, B): [1, 1, 0, 0, 1]}, **{"eval.every_epoch": True})
    write_trial(run / "cells" / "o1-lamol-s2", [A, B, C], "lamol", [[0, 0, 0], [0, 0, 0], [52, 67, 92]], seed=2,
                baseline=B3, cell=cell("o1", "lamol", 2), preds={(2, B): [1, 1, 1, 1, 1]})
    write_trial(run / "cells" / "o2-lamol-s1", [C, B, A], "lamol", [[90, 5, 10], [70, 80, 20], [60, 70, 55]],
                baseline=[1, 1, 1], cell=cell("o2", "lamol"), preds={(2, B): [1, 0, 0, 1, 1]})
    write_trial(run / "cells" / "o1-finetune-s1", [A, B, C], "finetune", [[80, 10, 5], [20, 70, 20], [10, 15, 90]],
                cell=cell("o1", "finetune"), curves=curves)
    write_trial(run / "cells" / "o2-finetune-s1", [C, B, A], "finetune", [[90, 5, 10], [20, 80, 20], [10, 10, 50]],
                cell=cell("o2", "finetune"))
    write_trial(run / "cells" / "o2-finetune-s2", [C, B, A], "finetune", [[90, 5, 10]], seed=2,
                cell=cell("o2", "finetune", 2), complete=False)
    write_trial(run / "cells" / "multi", [A, B, C], "multitask", [[70, 75, 85]], cell=cell("all", "multitask"))
    write_trial(run / "cells" / "multi-qa", [A, B, C], "multitask", [[68, 74, 83]], params={"qa_only": True},
                cell=cell("all", "multitask"))
    for task, score, preds in [(A, 60, None), (B, 72, [1, 1, 1, 0, 0]), (C, 92, None)]:
        write_trial(run / "teachers" / f"{task}-abc", [task], "single", [[score]],
                    preds={(0, task): preds} if preds else None,
                    **{"eval.before_training": False})
    (run / "grid.yaml").write_text(f"tasks: [{A}, {B}, {C}]\n")
    return run


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return synthetic_run(tmp_path)


def test_tables_of_a_run_folder(run_dir):
    (sec,) = collect(run_dir)
    assert sec.tasks == [A, B, C]
    per_order = sec.table("per_order").df
    o1 = "synth.nlg → synth.sentiment → synth.state"
    # lamol in o1: seeds 1 and 2 averaged: (50 + 52) / 2, (65 + 67) / 2, (90 + 92) / 2
    assert per_order.loc[(o1, "lamol"), [A, B, C]].tolist() == [51.0, 66.0, 91.0]
    assert per_order.loc[(o1, "lamol"), "Avg"] == pytest.approx(208 / 3)
    assert per_order.loc[(o1, "lamol"), "seeds"] == 2
    over = sec.table("over_orders").df
    # lamol per order (by task name, not position): o1 = 51, 66, 91; o2 = 55, 70, 60
    assert over.loc[("Lifelong: mean over orders", "lamol"), [A, B, C]].tolist() == [53.0, 68.0, 75.5]
    sd = over.loc[("Lifelong: STD over orders", "lamol"), [A, B, C, "Avg"]].tolist()
    assert sd == pytest.approx([np.sqrt(8), np.sqrt(8), np.sqrt(480.5), (2 * np.sqrt(8) + np.sqrt(480.5)) / 3])
    refs = over.loc["References (not lifelong)"]
    assert list(refs.index) == ["Single (QA+LM)", "Multi (QA)", "Multi (QA+LM)"]
    assert refs.loc["Single (QA+LM)", [A, B, C]].tolist() == [60.0, 72.0, 92.0]
    # the incomplete finetune trial is listed, not averaged
    assert sec.table("incomplete").df.index.tolist() == ["cells/o2-finetune-s2"]
    assert over.loc[("Lifelong: mean over orders", "finetune"), A] == pytest.approx((10 + 50) / 2)


def test_seeds_are_a_separate_labelled_table(run_dir):
    (sec,) = collect(run_dir)
    seeds = sec.table("over_seeds")
    assert "SEEDS" in seeds.title and "not orders" in seeds.title
    # lamol seed 1 averaged over its two orders: nlg (50 + 55) / 2; seed 2 has only o1: 52
    mean = seeds.df.loc[("Mean over seeds", "lamol")]
    assert mean[A] == pytest.approx((52.5 + 52) / 2) and mean["seeds"] == 2
    assert seeds.df.loc[("STD over seeds", "lamol"), A] == pytest.approx(np.std([52.5, 52], ddof=1))


def test_cl_figures_per_trial_and_per_task(run_dir):
    (sec,) = collect(run_dir)
    trials = sec.table("cl_trials").df.reset_index()
    row = trials[(trials.method == "lamol") & (trials.trial == "cells/o1-lamol-s1")].iloc[0]
    assert row["BWT"] == pytest.approx(-17.5) and row["FWT"] == pytest.approx(10.0)
    assert row["forgetting"] == pytest.approx(17.5)
    # gap to the teachers' scores: (50 - 60) + (65 - 72) + (90 - 92), over 3
    assert row["gap to single"] == pytest.approx(-19 / 3)
    ft = trials[trials.trial == "cells/o1-finetune-s1"].iloc[0]
    assert np.isnan(ft["FWT"])  # no untrained-model scores recorded
    tasks = sec.table("cl_tasks").df.reset_index()
    last = tasks[(tasks.method == "lamol") & (tasks.order.str.startswith("synth.state")) & (tasks.task == A)]
    assert last.position.tolist() == [3] and np.isnan(last.forgetting.iloc[0])  # seen last: none
    forgetting = sec.table("forgetting").df
    # lamol forgetting of synth.nlg: o1 seeds (30, -52 -> max(0,0)-52 = -52) averaged = -11; o2: last
    assert forgetting.loc["lamol", A] == pytest.approx((30 + (0 - 52)) / 2)


def test_teacher_agreement_splits_by_the_teachers_right_and_wrong_items(run_dir):
    (sec,) = collect(run_dir)
    t8 = sec.table("teacher_agreement_by_task").df.loc[B]
    # teacher right on items 0-2 (A), wrong on 3-4 (B).
    # lamol o1: seed 1 [1,1,0,0,1] -> A 2/3, B 1/2; seed 2 all right -> A 1, B 1; mean over seeds.
    # lamol o2: [1,0,0,1,1] -> A 1/3, B 1. Then the mean over orders.
    o1_a, o1_b = (200 / 3 + 100) / 2, (50 + 100) / 2
    assert t8.loc["lamol", "Acc (A)"] == pytest.approx((o1_a + 100 / 3) / 2)
    assert t8.loc["lamol", "Acc (B)"] == pytest.approx((o1_b + 100) / 2)
    assert t8.loc["Teacher", ["Acc", "Acc (A)", "Acc (B)"]].tolist() == [60.0, 100.0, 0.0]
    t6 = sec.table("teacher_agreement").df
    assert t6.index.tolist() == ["Teacher", "lamol"]  # finetune has no predictions: left out
    assert t6.loc["lamol", "Δ (A) vs lamol"] == 0.0


def test_learning_curves_use_epochs_where_recorded(run_dir):
    (sec,) = collect(run_dir)
    pts = sec.curves
    ft = pts[(pts.method == "finetune") & (pts.order_id == "o1") & (pts.task == B)].sort_values("x")
    assert ft.x.tolist() == [1, 2, 3] and ft.score.tolist() == [1.0, 11.0, 21.0]  # from `curves`, 1 epoch
    lam = pts[(pts.method == "lamol") & (pts.order_id == "o2") & (pts.task == B)].sort_values("x")
    assert lam.x.tolist() == [0, 1, 2, 3] and lam.score.tolist() == [1.0, 5.0, 80.0, 70.0]  # baseline, R


def test_every_output_file_is_written(run_dir):
    report = build_report(run_dir)
    out = run_dir / "report"
    assert report.out_dir == out
    for stem in ("per_order", "over_orders", "over_seeds", "teacher_agreement"):
        for ext in ("csv", "md", "tex"):
            assert (out / f"{stem}.{ext}").is_file(), f"{stem}.{ext}"
    for stem in ("cl_summary", "cl_trials", "cl_tasks", "forgetting", "incomplete", "trials"):
        assert (out / f"{stem}.csv").is_file() and (out / f"{stem}.md").is_file()
    for order in ("o1", "o2"):
        assert (out / f"curves-{order}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "report.md").read_text()
    assert "## Definitions" in text and "BWT (backward transfer, GEM)" in text and "curves-o1.png" in text
    assert "| **Lifelong: STD over orders** |" in text
    assert set(report.files) == {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    csv = pd.read_csv(out / "over_orders.csv", index_col=[0, 1])
    assert csv.loc[("Lifelong: mean over orders", "lamol"), C] == pytest.approx(75.5)
    build_report(run_dir)  # a second run replaces the folder (and does not read its own output)
    assert not any(p.name.startswith(".") for p in run_dir.iterdir())


# --------------------------------------------------------------------------- belonging together
def test_results_with_other_settings_are_refused_naming_the_field(run_dir):
    write_trial(run_dir / "cells" / "o3-lamol", [B, A, C], "lamol", R3, cell=cell("o3", "lamol"),
                **{"training.epochs": 2})
    with pytest.raises(ArtifactError) as err:
        collect(run_dir)
    msg = str(err.value)
    assert "training.epochs = 1 (" in msg and "vs 2 (cells/o3-lamol)" in msg and "--group-by training.epochs" in msg
    assert "\n" not in msg


def test_group_by_splits_into_sections(run_dir):
    write_trial(run_dir / "cells" / "o3-lamol", [B, A, C], "lamol", R3, cell=cell("o3", "lamol"),
                **{"training.epochs": 2})
    report = build_report(run_dir, group_by=["training.epochs"])
    assert [s.title for s in report.sections] == ["training.epochs=1", "training.epochs=2"]
    assert len(report.sections[1].trials) == 1
    assert (run_dir / "report" / "training.epochs=2" / "per_order.csv").is_file()
    assert "## training.epochs=1" in (run_dir / "report" / "report.md").read_text()


def test_group_by_an_unknown_field_suggests_one(run_dir):
    with pytest.raises(ConfigError, match="did you mean 'training.epochs'"):
        collect(run_dir, group_by=["training.epoch"])


def test_a_different_primary_metric_is_a_clash(tmp_path):
    write_trial(tmp_path / "a", [A], "single", [[50]])
    r = TrialResult.load(tmp_path / "a")
    r.primary = {A: "rougeL"}
    r.save(tmp_path / "b")
    with pytest.raises(ArtifactError, match="primary.synth.nlg = avg_rouge"):
        collect(tmp_path)


def test_plain_train_folders_without_cell_files(tmp_path):
    write_trial(tmp_path / "x", [A, B], "lamol", [[40, 12], [30, 60]])
    write_trial(tmp_path / "y", [A, B], "lamol", [[40, 12], [30, 62]], seed=3)
    write_trial(tmp_path / "z", [B, A], "lamol", [[60, 1], [50, 70]], params={"lm_lambda": 0.5})
    (sec,) = collect(tmp_path)
    long = T.finals(sec.trials)
    assert set(long.order_id) == {f"{A}>{B}", f"{B}>{A}"}
    assert set(long.method) == {"lamol(lm_lambda=0.25)", "lamol(lm_lambda=0.5)"}
    assert set(long.seed) == {1, 3}  # from the results themselves


def test_two_results_of_one_cell_are_refused(tmp_path):
    write_trial(tmp_path / "x", [A, B], "lamol", [[40, 12], [30, 60]])
    write_trial(tmp_path / "copy", [A, B], "lamol", [[40, 12], [30, 60]])
    with pytest.raises(ArtifactError, match="two complete results for lamol"):
        collect(tmp_path)


def test_an_existing_folder_that_is_not_a_report_is_not_replaced(run_dir, tmp_path):
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="not a report folder"):
        build_report(run_dir, out_dir=keep)
    assert (keep / "notes.txt").read_text() == "mine"




# --------------------------------------------------------------------------- on real trial outputs
def test_report_on_real_trial_outputs(tmp_path):
    """The contract with the trial writer: R, baseline, per-epoch curves and prediction files."""
    from l2kd.trial import run_trial

    small = {"data.max_train_examples": 24, "data.max_test_examples": 6}
    run = tmp_path / "run"
    results = {}
    for name, tasks, method, extra in [("ab", [A, B], "lamol", {"eval.every_epoch": True, "eval.before_training": True}),
                                       ("ba", [B, A], "lamol", {"eval.every_epoch": True, "eval.before_training": True}),
                                       ("tb", [B], "single", {}), ("ta", [A], "single", {})]:
        cfg = trial_config(tiny_trial(tasks=tasks, method=method, **small, **extra))
        results[name] = run_trial(cfg, run / name)
    report = build_report(run)
    (sec,) = report.sections
    per_order = sec.table("per_order").df
    for name in ("ab", "ba"):
        r = results[name]
        order = " → ".join(r.tasks)
        assert per_order.loc[(order, "lamol"), r.tasks].tolist() == pytest.approx(r.R[-1])
    refs = sec.table("over_orders").df.loc["References (not lifelong)"]
    assert refs.loc["Single (QA+LM)", [A, B]].tolist() == pytest.approx([results["ta"].R[0][0], results["tb"].R[0][0]])
    figs = sec.table("cl_trials").df.reset_index().set_index("trial")
    r = results["ab"]
    b = [r.baseline[t][r.primary[t]] for t in r.tasks]
    assert figs.loc["ab", "BWT"] == pytest.approx(r.R[1][0] - r.R[0][0])
    assert figs.loc["ab", "FWT"] == pytest.approx(r.R[0][1] - b[1])
    # one epoch per stage: curve points at x = 0 (untrained), 1 and 2, equal to R's rows
    pts = sec.curves[(sec.curves.order_id == f"{A}>{B}") & (sec.curves.task == B)].sort_values("x")
    assert pts.x.tolist() == [0, 1, 2] and pts.score.tolist() == pytest.approx([b[1], r.R[0][1], r.R[1][1]])
    # teacher agreement: the per-example exact matches average to the aggregate scores
    t8 = sec.table("teacher_agreement_by_task").df.loc[B]
    assert t8.loc["Teacher", "Acc"] == pytest.approx(results["tb"].metrics[-1][B]["em"])
    assert t8.loc["lamol", "Acc"] == pytest.approx((results["ab"].R[-1][1] + results["ba"].R[-1][0]) / 2)
    assert (run / "report" / f"curves-{A}_{B}.png").is_file()


def test_a_grid_of_several_experiments_gets_a_section_each(tmp_path):
    """The paper's grid: task sets per experiment; teachers join the experiment of their task; a
    reference row's declared overrides (27 epochs) are not a clash, and its label keeps it apart."""
    from l2kd.report import collect

    run = tmp_path / "run"
    for exp, (x, y) in {"e1": (A, B), "e2": (C, B)}.items():
        write_trial(run / "cells" / f"{exp}-lamol", [x, y], "lamol", [[50, 0], [40, 60]],
                    cell={**cell("o", "lamol"), "experiment": exp})
        write_trial(run / "cells" / f"{exp}-multi", [x, y], "multitask", [[55, 65]],
                    cell={**cell("all", "multitask"), "experiment": exp})
        write_trial(run / "cells" / f"{exp}-multi-long", [x, y], "multitask", [[58, 66]],
                    cell={**cell("all", "multi_long"), "experiment": exp,
                          "overrides": {"training": {"epochs": 27}}}, **{"training.epochs": 27})
    write_trial(run / "teachers" / f"{A}-k", [A], "single", [[70]], **{"eval.before_training": False})
    (run / "grid.yaml").write_text(yaml.safe_dump({"experiments": [{"name": "e1", "tasks": [A, B]},
                                                                   {"name": "e2", "tasks": [C, B]}]}))
    sections = collect(run)
    assert [s.title for s in sections] == ["experiment=e1", "experiment=e2"]
    e1, e2 = sections
    assert e1.tasks == [A, B] and e2.tasks == [C, B]
    assert {t.rel for t in e1.trials} == {"cells/e1-lamol", "cells/e1-multi", "cells/e1-multi-long", f"teachers/{A}-k"}
    rows = [row for _, row in e1.table("over_orders").df.index]
    assert "Multi (QA+LM)" in rows and "multi_long (QA+LM)" in rows and "Single (QA+LM)" in rows
    # without the declared override, 27 epochs is a clash
    write_trial(run / "cells" / "e2-multi-long", [C, B], "multitask", [[58, 66]],
                cell={**cell("all", "multi_long"), "experiment": "e2"}, **{"training.epochs": 27})
    with pytest.raises(ArtifactError, match="training.epochs"):
        collect(run)


@pytest.mark.parametrize("change, fragment", [
    (lambda d: [1, 2], "not an l2kd trial result (format 'list')"),
    (lambda d: {"format": d["format"]}, "a trial result without name, tasks"),
    (lambda d: d | {"R": "abc"}, "R: expected at most 2 rows of 2 scores"),
    (lambda d: d | {"R": [[1.0]]}, "R: expected at most 2 rows of 2 scores"),
    (lambda d: d | {"tasks": "synth.nlg"}, "tasks: expected a list of task names"),
])
def test_a_result_file_of_the_wrong_shape_is_one_error(tmp_path, change, fragment):
    """A report reads files it did not write: a wrong shape names the file, never a traceback."""
    import json

    folder = write_trial(tmp_path / "a", ["synth.nlg", "synth.sentiment"], "lamol", [[1, 2], [3, 4]])
    d = json.loads((folder / "results.json").read_text())
    (folder / "results.json").write_text(json.dumps(change(d)))
    with pytest.raises(ArtifactError, match="a/results.json: " + fragment.replace("(", r"\(").replace(")", r"\)")):
        collect(tmp_path)


def test_a_cell_file_of_the_wrong_shape_is_one_error(tmp_path):
    write_trial(tmp_path / "a", ["synth.nlg", "synth.sentiment"], "lamol", [[1, 2], [3, 4]],
                cell={"order": 5, "seed": "abc"})
    with pytest.raises(ArtifactError, match="a/cell.json: order: unexpected value 5"):
        collect(tmp_path)


def test_compute_is_shown_per_method_as_the_mean_over_orders_and_old_results_stay_blank(run_dir):
    def spend(rel, tokens, train_s):
        f = run_dir / "cells" / rel / "results.json"
        r = TrialResult.load(f)
        r.compute = {"trained_tokens": tokens, "generated_tokens": 10, "peak_memory_bytes": 2e9,
                     "seconds": {"train": train_s, "pseudo": 1.0, "eval": 2.0, "teacher": 0.0}, "device": "cpu"}
        r.save(f.parent)
    spend("o1-lamol-s1", 1000, 10.0)
    spend("o1-lamol-s2", 3000, 30.0)  # order o1: the mean over its seeds, 2000 tokens and 20 s
    spend("o2-lamol-s1", 4000, 40.0)  # the mean over orders: 3000 tokens and 30 s
    (sec,) = collect(run_dir)
    df = sec.table("compute").df
    assert df.loc["lamol", "trained tokens"] == 3000 and df.loc["lamol", "train s"] == 30.0
    assert df.loc["lamol", "total s"] == 33.0 and df.loc["lamol", "peak memory (GB)"] == 2.0
    assert df.loc["lamol", "orders"] == 2
    assert math.isnan(df.loc["finetune", "train s"])  # written before compute was recorded: blank
    assert df.loc["finetune", "Avg score"] == pytest.approx(((10 + 15 + 90) / 3 + (50 + 10 + 10) / 3) / 2)
    report = build_report(run_dir)
    assert "Compute per method" in (report.out_dir / "report.md").read_text()


def test_the_report_points_at_the_trials_tensorboard_folders(run_dir):
    assert "TensorBoard" not in (build_report(run_dir).out_dir / "report.md").read_text()  # none written
    for rel in ("o1-lamol-s1", "o2-lamol-s1"):
        (run_dir / "cells" / rel / "tensorboard").mkdir()
    text = (build_report(run_dir).out_dir / "report.md").read_text()
    assert f"TensorBoard: 2 trial(s) wrote event files (each trial's `tensorboard/` folder): " \
           f"`tensorboard --logdir {run_dir}`" in text
