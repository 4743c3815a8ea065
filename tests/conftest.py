"""Shared fixtures. Real-data tests use ../shared/data when it exists and skip with a reason when not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("L2KD_SHARED", REPO.parent / "shared")) / "data"
NLG_DIR = SHARED / "l2kd-nlg"
GPT2_TOKENIZER = SHARED / "gpt2-tokenizer"

needs_shared = pytest.mark.skipif(not NLG_DIR.is_dir() or not GPT2_TOKENIZER.is_dir(),
                                  reason=f"real data not found at {SHARED}")
# The raw public sources the converters read (SOURCES.md), beside the NLG files and the tokenizer.
RAW_DIRS = [SHARED / d for d in ("woz2.0-nbt", "wikisql-raw", "wikisql-mlx-examples", "lfpt5-fewshot",
                                 "cl-benchmark-deal", "lamol-tc-adapterlamol")]
needs_raw = pytest.mark.skipif(not all(d.is_dir() for d in RAW_DIRS + [NLG_DIR, GPT2_TOKENIZER]),
                               reason=f"raw public data not found at {SHARED}")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Synthetic benchmark files go to a per-session folder, not the user's cache."""
    os.environ["L2KD_CACHE"] = str(tmp_path_factory.mktemp("l2kd-cache"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield


def tiny_trial(**over) -> dict:
    """A trial config dict that trains in seconds on a CPU."""
    cfg = {
        "name": "t",
        "tasks": ["synth.nlg", "synth.sentiment"],
        "method": "lamol",
        "seed": 7,
        "data": {"dir": "builtin", "max_train_examples": 48, "max_test_examples": 12},
        "model": {"config": {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 96}},
        "training": {"epochs": 1, "lr": 1e-3, "log_every": 5, "threads": 1},
        "eval": {"before_training": False},
    }
    for key, value in over.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg


class InjectedCrash(RuntimeError):
    """A fault a test injects into a trial (never raised by the code under test)."""


def crash_in_stage(cfg, workdir, stage: int = 1) -> None:
    """Run the trial `cfg` in `workdir` until its first step of stage `stage` (0-based) and fail it
    there, as a killed or failed run would: what it finished before stays on disk."""
    from l2kd.trial import run_trial

    def fail(name, **e):
        if name == "step" and e["stage"] == stage:
            raise InjectedCrash("injected")

    with pytest.raises(InjectedCrash):
        run_trial(cfg, workdir, on_event=fail)



@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the group marks into the test ids
def pytest_collection_modifyitems(config, items):
    """`make test` runs two test processes (`pytest -n 2 --dist loadgroup --no-loadscope-reorder`),
    each given whole groups in the order collected here:
    every test marked `ray` (it starts a Ray cluster or a grid driver with its own local Ray) in one
    group, so two Ray instances never share the machine and no fault test's timing is halved, and
    every other module as a group of its own, so a module's fixtures are built once. The Ray group is
    the longest (the fault proofs), so it is put first (xdist would otherwise order groups by
    their number of tests, and start it late). Without xdist the group marks do nothing."""
    ray_tests = [item for item in items if item.get_closest_marker("ray") is not None]
    others = [item for item in items if item.get_closest_marker("ray") is None]
    for item in ray_tests:
        item.add_marker(pytest.mark.xdist_group("ray"))
    for item in others:
        item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    items[:] = ray_tests + others
