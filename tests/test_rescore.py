"""Rescoring: every metric computed again from the stored predictions, without training."""

import dataclasses
import json
import subprocess
import sys

import pytest

from l2kd.rescore import RESCORED_FILE, rescore_run
from l2kd.report import build_report
from l2kd.results import TrialResult
from l2kd.tasks import TASKS
from l2kd.trial import run_trial
from l2kd.trialconfig import trial_config

from conftest import REPO, tiny_trial


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    run_trial(trial_config(tiny_trial(**{"eval.before_training": True})), run / "cells" / "a")
    return run


def test_rescoring_with_the_same_metrics_gives_the_same_figures(finished):
    original = TrialResult.load(finished / "cells" / "a")
    done = rescore_run(finished)
    assert [d.scored for d in done] == [2 * 2 + 2]  # 2 stages x 2 tasks, and the untrained model
    again = json.loads((finished / "cells" / "a" / RESCORED_FILE).read_text())
    assert again["R"] == original.R and again["metrics"] == original.metrics
    assert again["baseline"] == original.baseline and again["rescored"]["kept_original"] == []


def test_a_changed_metric_list_is_rescored_without_training(finished, monkeypatch):
    """Add a metric to a task and make it the primary score: a rescore gives its figures and R."""
    before = (finished / "cells" / "a" / "results.json").read_text()
    spec = TASKS.get("synth.sentiment")
    monkeypatch.setitem(TASKS._items, "synth.sentiment",
                        dataclasses.replace(spec, extra_metrics=("rouge",), primary_metric="rouge1"))
    rescore_run(finished)
    r = json.loads((finished / "cells" / "a" / RESCORED_FILE).read_text())
    assert (finished / "cells" / "a" / "results.json").read_text() == before  # the original stays
    for s in range(2):
        assert "rouge1" in r["metrics"][s]["synth.sentiment"]
        assert r["R"][s][1] == r["metrics"][s]["synth.sentiment"]["rouge1"]
    assert r["primary"]["synth.sentiment"] == "rouge1"
    report = build_report(finished, results_name=RESCORED_FILE)
    assert report.out_dir == finished / "report-rescored" and (report.out_dir / "report.md").is_file()


def test_cli_report_rescore(finished):
    res = subprocess.run([sys.executable, str(REPO / "cli.py"), "report", str(finished), "--rescore"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "rescored 6 evaluations of 1 trial(s)" in res.stderr
    assert (finished / "report-rescored" / "report.md").is_file()
