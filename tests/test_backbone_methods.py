"""Every method on every backbone: one short two-task trial each, end to end (teachers included),
on tiny Llama-style (rotary + GQA), GPT-NeoX-style and GPT-2 models, full and LoRA fine-tuning."""

import pytest

from l2kd.teachers.store import TeacherStore
from l2kd.trial import run_trial
from l2kd.trialconfig import trial_config

from conftest import GPT2_TOKENIZER, tiny_trial
from test_backbones import BACKBONES

METHODS = ["finetune", "lamol", "word_kd", "seq_kd", "seq_kd_soft", "multitask",
           {"name": "multitask", "sampler": "temperature"}, {"name": "multitask", "sampler": "uncertainty"},
           "ewc", "mas", "gem", "o_lora", "o_lora_lamol"]
NEEDS_LORA = {"o_lora", "o_lora_lamol"}
# Llama-style runs in every test run (about a minute in all); the same matrix on the other two is
# a few minutes more, so it is marked slow.
KINDS = ["llama", pytest.param("gpt_neox", marks=pytest.mark.slow), pytest.param("gpt2", marks=pytest.mark.slow)]


def cfg_of(kind, method, lora=None, **over):
    over = {"model.config": BACKBONES[kind], "data.max_train_examples": 24, "data.max_test_examples": 6,
            "method": method, **over}
    if lora:
        over["model.lora"] = lora
    return trial_config(tiny_trial(**over))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return TeacherStore(tmp_path_factory.mktemp("teachers"))


def _name(m):
    return m if isinstance(m, str) else f"{m['name']}-{m['sampler']}"


def run(cfg, store, workdir):
    teachers = store.ensure_all(cfg)
    result = run_trial(cfg, workdir, teachers=teachers)
    stages = 1 if cfg.method.name == "multitask" else 2
    assert result.complete and len(result.R) == stages and all(len(r) == 2 for r in result.R)
    return result


@pytest.mark.parametrize("method", METHODS, ids=_name)
@pytest.mark.parametrize("kind", KINDS)
def test_every_method_on_every_backbone(kind, method, stores, tmp_path):
    name = method if isinstance(method, str) else method["name"]
    lora = {"r": 4} if name in NEEDS_LORA else None
    run(cfg_of(kind, method, lora), stores, tmp_path)


@pytest.mark.parametrize("method", ["lamol", "word_kd", "ewc", "gem"])
@pytest.mark.parametrize("kind", KINDS)
def test_lora_runs_every_kind_of_method(kind, method, stores, tmp_path):
    """LoRA students (and, for word_kd, LoRA teachers) on every backbone."""
    result = run(cfg_of(kind, method, {"r": 4, "alpha": 8}), stores, tmp_path)
    assert result.config["model"]["lora"]["r"] == 4


@pytest.mark.realdata
@pytest.mark.parametrize("kind", ["llama", "gpt_neox"])
def test_lamol_with_gpt2s_real_bpe(kind, stores, tmp_path):
    if not GPT2_TOKENIZER.is_dir():
        pytest.skip(f"GPT-2's tokenizer not found at {GPT2_TOKENIZER}")
    run(cfg_of(kind, "lamol", **{"model.tokenizer": str(GPT2_TOKENIZER)}), stores, tmp_path)
