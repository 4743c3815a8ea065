"""cli.py pretrain: a GPT-2 base on a tiny corpus, resumed after an interruption, loaded by
model.pretrained; the corpus checks."""

import json

import pytest
import torch
import yaml

from l2kd.config import ModelConfig
from l2kd.data.lamol_json import Example, to_lamol
from l2kd.errors import ArtifactError, ConfigError, DataError
from l2kd.io import file_sha256, write_json
from l2kd.model import build_model
from l2kd.pretrain import batch_indices, load_pretrain_config, lr_at, run_pretrain, PretrainTraining
from l2kd.tokenizer import Tokenizer

LINES = [f"the {a} {b} sat on the {c} near the river bank at dawn" for a in ("red", "old", "small", "tall")
         for b in ("cat", "dog", "bird", "horse") for c in ("mat", "hill", "wall")]


def write_corpus(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.txt").write_text("\n".join(LINES[:30]) + "\n")
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "b.txt").write_text("\n".join(LINES[20:]) + "\n\n")  # overlapping lines: deduplicated
    (folder / "notes.md").write_text("not read: only .txt files of a folder\n")
    return folder


def config_file(tmp_path, **training):
    corpus = write_corpus(tmp_path / "corpus")
    cfg = {"corpus": [str(corpus)],
           "model": {"config": {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64},
                     "tokenizer": "builtin", "builtin_vocab_size": 300},
           "training": {"steps": 6, "batch_size": 4, "seq_len": 16, "lr": 3e-3, "warmup_steps": 2,
                        "save_every": 3, "log_every": 1, "threads": 1, "device": "cpu", **training},
           "seed": 3}
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_batches_and_rates_are_a_pure_function_of_the_step():
    a = batch_indices(10, 3, 4, seed=1)
    assert (a == batch_indices(10, 3, 4, seed=1)).all() and len(a) == 4
    one_pass = sorted(int(i) for s in range(5) for i in batch_indices(10, s, 2, seed=1))
    assert one_pass == list(range(10))  # every block once per pass
    t = PretrainTraining(steps=10, lr=1.0, warmup_steps=2, min_lr_ratio=0.1)
    assert [lr_at(s, t) for s in (0, 1)] == [0.5, 1.0] and lr_at(9, t) == pytest.approx(1 - 0.9 * 7 / 8)


def test_pretrain_resumes_to_the_same_base_and_model_pretrained_loads_it(tmp_path):
    cfg = load_pretrain_config(config_file(tmp_path))
    whole = run_pretrain(cfg, tmp_path / "whole")

    events = []

    def stop_at_first_save(name, **e):
        events.append(name)
        if name == "saved":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pretrain(cfg, tmp_path / "split", on_event=stop_at_first_save)
    assert (tmp_path / "split" / "resume" / "state.json").is_file()
    assert not (tmp_path / "split" / "manifest.json").exists()  # nothing final from a partial run
    events.clear()
    split = run_pretrain(cfg, tmp_path / "split", on_event=lambda name, **e: events.append((name, e.get("step"))))
    assert ("resume", 3) in events
    assert not (tmp_path / "split" / "resume").exists()

    from safetensors.torch import load_file

    w1 = load_file(str(tmp_path / "whole" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "split" / "model.safetensors"))
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-5, atol=1e-6)
    assert [h["loss"] for h in split["loss"]["history"]] == pytest.approx([h["loss"] for h in whole["loss"]["history"]], rel=1e-4)

    m = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    files = {f["path"].rsplit("/", 1)[1]: f["sha256"] for f in m["corpus"]["files"]}
    assert files == {"a.txt": file_sha256(tmp_path / "corpus" / "a.txt"),
                     "b.txt": file_sha256(tmp_path / "corpus" / "sub" / "b.txt")}
    assert m["corpus"]["documents"] == len(LINES) and m["corpus"]["lines"] == len(LINES) + 10
    assert m["seen"] == {"steps": 6, "sequences": 24, "tokens": 6 * 4 * 16, "passes": pytest.approx(24 / m["corpus"]["blocks"])}
    assert m["loss"]["last"] < m["loss"]["first"]

    # the folder is a Hugging Face checkpoint: model.pretrained loads it, and its tokenizer
    base = str(tmp_path / "whole")
    tok = Tokenizer.load(base)
    assert tok.base_fingerprint() == Tokenizer.load("builtin", vocab_size=300).base_fingerprint()
    model = build_model(ModelConfig(pretrained=base, tokenizer=base), tok, seed=0)
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == tok.base_size + 3
    torch.testing.assert_close(model.get_input_embeddings().weight[: tok.base_size], w1["transformer.wte.weight"])

    # done: the same command is a no-op; other settings are refused
    assert run_pretrain(cfg, tmp_path / "whole")["created"] == m["created"]
    other = load_pretrain_config(config_file(tmp_path, steps=7))
    with pytest.raises(ArtifactError, match="other settings"):
        run_pretrain(other, tmp_path / "whole")


def test_a_corpus_holding_a_held_out_tasks_text_is_refused(tmp_path):
    nlg = tmp_path / "nlg"
    ex = Example(id="1", context="name[x]", question="q ?", answers=(LINES[5],), index=0)
    write_json(nlg / "e2enlg_to_squad-train-v2.0.json", to_lamol([ex]))
    path = config_file(tmp_path)
    cfg = load_pretrain_config(path, [f"disjoint_from=[{nlg}]"])
    with pytest.raises(DataError, match="not disjoint"):
        run_pretrain(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    far = tmp_path / "far"
    write_json(far / "e2enlg_to_squad-train-v2.0.json", to_lamol([Example(
        id="1", context="name[x]", question="q ?", answers=("an unrelated sentence about laptops and their batteries",),
        index=0)]))
    m = run_pretrain(load_pretrain_config(path, [f"disjoint_from=[{far}]", "training.steps=1"]), tmp_path / "ok")
    assert m["corpus"]["disjoint_from"]["shared_ngrams"] == 0 and m["corpus"]["disjoint_from"]["corpus_ngrams"] > 0


def test_bad_pretrain_input_is_one_line_and_exit_2(tmp_path, capsys):
    import cli

    path = config_file(tmp_path)
    assert cli.main(["pretrain", str(path), "--out", str(tmp_path / "o"), "--set", "training.stepz=3"]) == 2
    assert "training.stepz: unknown key" in capsys.readouterr().err
    assert cli.main(["pretrain", str(path), "--out", str(tmp_path / "o"), "--set", "corpus=[/nope]"]) == 2
    assert "corpus: /nope: no such file or folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="model.pretrained"):
        load_pretrain_config(path, ["model.pretrained=gpt2"])
    assert cli.main(["pretrain", str(path), "--out", str(tmp_path / "o"), "--quiet", "--set", "training.steps=2"]) == 0
    assert (tmp_path / "o" / "config.json").is_file()
