"""grids/modern.yaml (a hub model with LoRA) and the demo grid's LoRA row: every cell a valid trial,
and the dry run works without the weights (nothing fetched: the hub is switched off)."""

import os
import subprocess
import sys

import pytest

from l2kd.gridspec import load_grid
from l2kd.plan import build_plan

from conftest import REPO


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch):
    """Nothing may reach the hub (no retries either): read where the hub library looks, per call."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_every_modern_cell_is_a_lora_trial_on_the_hub_model(tmp_path):
    plan = build_plan(load_grid(REPO / "grids" / "modern.yaml", storage=str(tmp_path)), strict_data=False)
    methods = {c.method for c in plan.cells}
    assert {"finetune", "lamol", "word_kd", "o_lora", "o_lora_lamol", "multitask"} <= methods
    assert {c.experiment for c in plan.cells} == {"nlg", "tc"}
    for cell in plan.cells:
        cfg = cell.config
        assert cfg.model.pretrained == "HuggingFaceTB/SmolLM2-135M" and cfg.model.lora.r == 8
    assert len(plan.teachers) == 10


def test_the_modern_dry_run_needs_no_weights(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, str(REPO / "cli.py"), "grid", "grids/modern.yaml", "--dry-run",
                          "--storage", str(tmp_path)], capture_output=True, text=True, cwd=REPO, env=env,
                         timeout=300)
    # the plan is printed whole; without the hub's weights (or here the classification data) a run
    # would stop, which the dry run says in one line and exit code 2 (a pre-flight check)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "22 new cell(s)" in res.stdout and "cannot read the model inputs" in res.stdout
    assert "a run would stop" in res.stderr
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_the_demo_grid_has_a_lora_row_on_a_tiny_llama(tmp_path):
    plan = build_plan(load_grid(REPO / "grids" / "demo.yaml", storage=str(tmp_path)))
    rows = [c.config for c in plan.cells if c.method == "lamol_lora_llama"]
    assert len(rows) == 2  # one per order
    for cfg in rows:
        assert cfg.model.config["model_type"] == "llama" and cfg.model.lora is not None
        assert cfg.method.name == "lamol"
