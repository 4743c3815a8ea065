"""grids/claims.yaml and grids/claims-gpu.yaml: the paper's claims grid from a base pretrained here,
validated by --dry-run against a tiny base; their base configs read no NLG text."""

import pytest
import yaml

from l2kd.gridspec import load_grid
from l2kd.plan import build_plan
from l2kd.pretrain import corpus_files, load_pretrain_config, overlap, read_documents

from conftest import GPT2_TOKENIZER, NLG_DIR, REPO, SHARED, needs_shared

GRIDS = {"claims": "claims-cpu", "claims-gpu": "claims-gpu"}
METHODS = ["finetune", "lamol", "word_kd", "seq_kd_soft", "seq_kd"]


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_claims_grid_has_the_papers_cells(grid, tmp_path):
    spec = load_grid(REPO / "grids" / f"{grid}.yaml", storage=str(tmp_path))
    plan = build_plan(spec, strict_data=False)
    lifelong = [c for c in plan.cells if c.method in METHODS]
    assert sorted({c.method for c in lifelong}) == sorted(METHODS)
    assert {c.seed for c in plan.cells} == {1, 2, 3}
    assert len(lifelong) == 5 * 2 * 3  # methods x (forward, reverse) x seeds
    (exp,) = spec.experiments
    forward, backward = [o.tasks for o in spec.orders(exp)]
    assert forward == ("e2enlg", "rnnlg.rest", "rnnlg.hotel", "rnnlg.tv", "rnnlg.laptop") == backward[::-1]
    assert {c.method for c in plan.cells} - set(METHODS) == {"multitask"}  # + the teachers' Single rows
    for cell in plan.cells:
        cfg = cell.config
        assert cfg.model.pretrained == f"./runs/bases/{GRIDS[grid]}"
    base = load_pretrain_config(REPO / "grids" / "bases" / f"{GRIDS[grid]}.yaml")
    assert base.disjoint_from == ["../shared/data/l2kd-nlg"]
    assert all("l2kd-nlg" not in c for c in base.corpus)


@needs_shared
@pytest.mark.realdata
def test_the_base_corpus_holds_no_nlg_text():
    base = load_pretrain_config(REPO / "grids" / "bases" / "claims-cpu.yaml")
    files = corpus_files([str(REPO / c) for c in base.corpus])
    assert files and all("lfpt5-fewshot" in str(f) for f in files)
    docs, _ = read_documents(files)
    o = overlap(docs, [str(NLG_DIR)])
    assert o["corpus_ngrams"] > 500_000 and o["shared_ngrams"] == 0


@needs_shared
@pytest.mark.realdata
def test_claims_grid_dry_run_against_a_tiny_base(tmp_path, capsys, monkeypatch):
    import cli

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"line {k} of a few words of plain text for a base\n" for k in range(20)))
    base_cfg = tmp_path / "base.yaml"
    base_cfg.write_text(yaml.safe_dump({
        "corpus": [str(corpus)], "model": {"config": {"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 64},
                                           "tokenizer": str(GPT2_TOKENIZER)},
        "training": {"steps": 1, "batch_size": 2, "seq_len": 16, "device": "cpu", "threads": 1}}))
    assert cli.main(["pretrain", str(base_cfg), "--out", str(tmp_path / "runs" / "bases" / "claims-cpu"),
                     "--quiet"]) == 0
    grid = yaml.safe_load((REPO / "grids" / "claims.yaml").read_text())
    grid["data"]["dir"] = str(SHARED / "l2kd-nlg")
    grid["model"]["tokenizer"] = str(GPT2_TOKENIZER)
    (tmp_path / "claims.yaml").write_text(yaml.safe_dump(grid))
    monkeypatch.chdir(tmp_path)  # ./runs/bases/claims-cpu is read from the folder you run from
    capsys.readouterr()
    assert cli.main(["grid", "claims.yaml", "--dry-run", "--storage", str(tmp_path / "grids")]) == 0
    text = " ".join(capsys.readouterr().out.split())
    # 30 lifelong cells (2 orders x 5 methods x 3 seeds) and 3 multitask runs; the Single row is the
    # 15 teachers themselves (5 tasks x 3 seeds)
    assert "cannot read" not in text and "33 cells" in text and "train 15 teacher(s)" in text
    assert not (tmp_path / "grids").exists()  # a dry run writes nothing
