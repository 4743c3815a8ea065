"""A LoRA Word-KD teacher over the student's base holds the student's frozen base tensors, not a copy:
the same logits, less memory, the same R, and the student's base untouched by the teacher."""

import gc
import weakref

import pytest
import torch
from safetensors.torch import load_file

from l2kd import lora
from l2kd.model import TargetLogits, build_model, load_weights, save_weights
from l2kd.config import ModelConfig
from l2kd.teachers import loading
from l2kd.teachers.store import TeacherStore
from l2kd.trial import run_trial

from conftest import GPT2_TOKENIZER
from test_backbone_methods import cfg_of
from test_backbones import BACKBONES
from test_lora import lora_model

KINDS = ["llama", "gpt2", "gpt_neox"]


def unique_bytes(*models) -> int:
    """Bytes of the distinct storages the models' parameters live in."""
    seen = {}
    for m in models:
        for p in m.parameters():
            s = p.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def lora_with(kind, tok, seed):
    return build_model(ModelConfig(config=BACKBONES[kind], lora={"r": 4}), tok, seed)


def trained_teacher(kind, tmp_path, seed=3, tok=None):
    """A LoRA student, and in `tmp_path` a teacher over the same base as a checkpoint saves it (its
    adapter and LAMOL rows moved as training would move them)."""
    if tok is None:
        _, tok = lora_model(kind)
    student, teacher = lora_with(kind, tok, seed), lora_with(kind, tok, seed)
    with torch.no_grad():
        for n, p in teacher.named_parameters():
            if "lora_" in n:
                p.add_(torch.randn_like(p) * 0.1)
            elif p.requires_grad:
                p[tok.lamol_start:].add_(torch.randn_like(p[tok.lamol_start:]) * 0.1)
    save_weights(teacher, tmp_path)
    return student, tok


def frozen_base(model):
    return {n: p for n, p in model.named_parameters() if not p.requires_grad and "lora_" not in n}


@pytest.mark.parametrize("kind", KINDS)
def test_the_shared_teacher_gives_the_unshared_teachers_logits(kind, tmp_path):
    student, tok = trained_teacher(kind, tmp_path)
    alone, shared_one = load_weights(tmp_path), load_weights(tmp_path)
    shared = lora.share_frozen_base(shared_one, student)
    assert shared and all(any(p is q for q in student.parameters()) for p in shared)
    x = torch.randint(0, len(tok), (3, 10), generator=torch.Generator().manual_seed(2))
    pos = torch.arange(30)
    with torch.no_grad():
        want = TargetLogits.frozen(alone)(x, pos)
        got = TargetLogits.frozen(shared_one, keep=shared)(x, pos)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_a_shared_gpt2_teachers_stored_casts_leave_the_students_base_in_fp32(tmp_path):
    """TargetLogits.frozen stores GPT-2's block weights in the autocast dtype; a shared block is the
    student's and stays as the student holds it (autocast casts it per call, to the same values)."""
    student, tok = trained_teacher("gpt2", tmp_path)
    before = {n: p.clone() for n, p in frozen_base(student).items()}
    alone, shared_one = load_weights(tmp_path), load_weights(tmp_path)
    shared = lora.share_frozen_base(shared_one, student)
    t_alone = TargetLogits.frozen(alone, torch.bfloat16)
    t_shared = TargetLogits.frozen(shared_one, torch.bfloat16, keep=shared)
    for n, p in frozen_base(student).items():
        assert p.dtype == torch.float32 and torch.equal(p, before[n]), n
    x = torch.randint(0, len(tok), (2, 9), generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        torch.testing.assert_close(t_shared(x, torch.arange(18)), t_alone(x, torch.arange(18)), rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_sharing_saves_the_frozen_base_bytes(kind, tmp_path):
    student, _ = trained_teacher(kind, tmp_path)
    alone, shared_one = load_weights(tmp_path), load_weights(tmp_path)
    before = unique_bytes(student, alone)
    shared = lora.share_frozen_base(shared_one, student)
    base = sum(p.numel() * p.element_size() for p in frozen_base(student).values())
    assert base > 0 and sum(p.numel() * p.element_size() for p in shared) == base
    assert unique_bytes(student, shared_one) == before - base
    # what stays the teacher's own: its adapter and its embedding matrices
    own = [n for n, p in shared_one.named_parameters() if not any(p is q for q in shared)]
    assert own and all("lora_" in n or p.requires_grad for n, p in shared_one.named_parameters()
                       if n in own)


@pytest.mark.realdata
def test_sharing_with_gpt2s_real_bpe(tmp_path):
    if not GPT2_TOKENIZER.is_dir():
        pytest.skip(f"GPT-2's tokenizer not found at {GPT2_TOKENIZER}")
    from l2kd.tokenizer import Tokenizer

    tok = Tokenizer.load(str(GPT2_TOKENIZER))
    tok.add_task("synth.nlg")
    student, tok = trained_teacher("llama", tmp_path, tok=tok)
    alone, shared_one = load_weights(tmp_path), load_weights(tmp_path)
    before = unique_bytes(student, alone)
    shared = lora.share_frozen_base(shared_one, student)
    assert unique_bytes(student, shared_one) == before - sum(p.numel() * p.element_size() for p in shared)
    x = torch.randint(0, len(tok), (2, 8), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(TargetLogits.frozen(shared_one, keep=shared)(x, torch.arange(16)),
                                   TargetLogits.frozen(alone)(x, torch.arange(16)), rtol=0, atol=1e-6)


def test_other_bases_share_nothing(tmp_path):
    """A full fine-tuned model, another initialisation, or a base the student changed in place keep
    the teacher's own tensors, exactly as before sharing existed."""
    student, tok = trained_teacher("llama", tmp_path)
    full = build_model(ModelConfig(config=BACKBONES["llama"]), tok, 3)
    assert lora.share_frozen_base(load_weights(tmp_path), full) == []
    assert lora.share_frozen_base(full, student) == []
    other, _ = lora_model("llama", seed=4)
    assert lora.share_frozen_base(load_weights(tmp_path), other) == []
    name, changed = next(iter(frozen_base(student).items()))
    with torch.no_grad():
        changed.add_(1e-3)  # as a merged adapter would (the fingerprint is the one taken at attach)
    teacher = load_weights(tmp_path)
    shared = lora.share_frozen_base(teacher, student)
    assert shared and not any(p is changed for p in shared)
    assert not torch.equal(dict(teacher.named_parameters())[name], changed)


def test_releasing_the_teacher_leaves_the_students_base(tmp_path):
    student, tok = trained_teacher("llama", tmp_path)
    base = frozen_base(student)
    ptrs = {n: p.data_ptr() for n, p in base.items()}
    values = {n: p.clone() for n, p in base.items()}
    teacher = load_weights(tmp_path)
    assert lora.share_frozen_base(teacher, student)
    head = TargetLogits.frozen(teacher)
    gone = weakref.ref(teacher)
    del teacher, head
    gc.collect()
    assert gone() is None
    for n, p in frozen_base(student).items():
        assert p.data_ptr() == ptrs[n] and torch.equal(p, values[n]), n


def _run_word_kd(cfg, store, workdir, share: bool, monkeypatch, on_stage_end=None):
    monkeypatch.setattr(loading, "SHARE_STUDENT_BASE", share)
    return run_trial(cfg, workdir, teachers=store.ensure_all(cfg), on_event=on_stage_end)


@pytest.mark.parametrize("kind,method,epochs", [("llama", "word_kd", 2), ("gpt2", "seq_kd_soft", 1)])
def test_a_lora_word_kd_trial_gives_the_same_R_with_and_without_sharing(kind, method, epochs, tmp_path,
                                                                        monkeypatch):
    """Two epochs: the teacher's hidden-state cache is made from the shared teacher; seq_kd_soft
    also decodes its teacher's answers. After each stage the released teacher is freed and the
    student's base is where and what it was."""
    cfg = cfg_of(kind, method, {"r": 4}, **{"training.epochs": epochs})
    store = TeacherStore(tmp_path / "teachers")
    calls = []
    real = lora.share_frozen_base

    def spy(teacher, student):
        shared = real(teacher, student)
        calls.append((weakref.ref(teacher), student, {id(p): (p.data_ptr(), p.clone()) for p in shared}))
        return shared

    def on_event(name, **e):
        if name != "stage_end":
            return
        gc.collect()
        gone, student, snap = calls[-1]
        assert gone() is None  # the stage's teacher is released ...
        held = {id(p): p for p in student.parameters()}
        for key, (ptr, value) in snap.items():  # ... and the student's base is untouched
            assert held[key].data_ptr() == ptr and torch.equal(held[key], value)

    monkeypatch.setattr(lora, "share_frozen_base", spy)
    shared = _run_word_kd(cfg, store, tmp_path / "shared", True, monkeypatch, on_event)
    assert len(calls) == 2 and all(snap for _, _, snap in calls)
    alone = _run_word_kd(cfg, store, tmp_path / "alone", False, monkeypatch)
    assert len(calls) == 2  # the switch off: nothing shared
    assert shared.complete and shared.R == alone.R and shared.metrics == alone.metrics
    weights = [load_file(str(next((tmp_path / run / "checkpoints").glob("stage-*/model.safetensors"))))
               for run in ("shared", "alone")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # the same adapters trained


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                       reason="needs a CUDA GPU")])


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_load_teacher_shares_on_the_students_device_under_autocast(device, tmp_path, monkeypatch):
    """`load_teacher` as Word-KD calls it, with bf16 stored casts asked for: the shared GPT-2 teacher
    gives the unshared one's logits, the student's base stays fp32 where it was, and on a GPU the
    teacher takes only its own tensors' memory."""
    from l2kd.checkpoint import PackedCheckpoint
    from l2kd.model import read_weights

    student, tok = trained_teacher("gpt2", tmp_path)
    student.to(device)
    packed = PackedCheckpoint(tmp_path, 1, True, *read_weights(tmp_path), tok.to_json())
    dev = torch.device(device)
    base = {n: (p.data_ptr(), p.clone()) for n, p in frozen_base(student).items()}
    heads, grown = [], []
    for share in (False, True):
        monkeypatch.setattr(loading, "SHARE_STUDENT_BASE", share)
        used = torch.cuda.memory_allocated() if device == "cuda" else 0
        heads.append(loading.load_teacher(packed, dev, torch.bfloat16, student=student)[0])
        grown.append((torch.cuda.memory_allocated() if device == "cuda" else 0) - used)
    for n, p in frozen_base(student).items():
        assert p.dtype == torch.float32 and p.data_ptr() == base[n][0] and torch.equal(p, base[n][1]), n
    x = torch.randint(0, len(tok), (2, 9), generator=torch.Generator().manual_seed(4)).to(dev)
    with torch.no_grad(), torch.autocast(device, torch.bfloat16):
        alone, shared = (h(x, torch.arange(18, device=dev)).float() for h in heads)
    torch.testing.assert_close(shared, alone, rtol=0, atol=1e-2 if device == "cuda" else 0)
    if device == "cuda":  # the unshared teacher holds its blocks in bf16 besides its own embeddings
        blocks = sum(p.numel() * 2 for n, p in frozen_base(student).items() if ".h." in n)
        assert grown[0] - grown[1] >= blocks
