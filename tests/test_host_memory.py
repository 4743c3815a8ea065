"""Importing l2kd puts PyTorch's large CPU buffers on huge pages, unless the user said otherwise."""

import os
import subprocess
import sys

PROBE = "import l2kd, os; print(os.environ.get('THP_MEM_ALLOC_ENABLE'))"


def _probe(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if env_value is not None:
        env["THP_MEM_ALLOC_ENABLE"] = env_value
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_import_turns_huge_pages_on():
    assert _probe(None) == "1"


def test_the_users_choice_is_kept():
    assert _probe("0") == "0"
