"""Which stored results belong in one report (l2kd/report/load.py): a grid row's declared overrides
are its own business, the fields its overrides replace whole included."""

import pytest

from l2kd.errors import ArtifactError
from l2kd.report import collect

from test_report import A, B, cell, write_trial

LLAMA = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 96}
LORA = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}


def test_a_row_that_replaces_the_model_config_reports_beside_the_gpt2_rows(tmp_path):
    """The demo grid's LoRA row names its own `model.config` (a Llama, without GPT-2's n_embd) and a
    `model.lora`: the fields it leaves out are not a clash with the GPT-2 rows."""
    run = tmp_path / "run"
    write_trial(run / "cells" / "lamol", [A, B], "lamol", [[50, 0], [40, 60]], cell=cell("o", "lamol"))
    write_trial(run / "cells" / "lora", [A, B], "lamol", [[30, 0], [20, 40]],
                cell={**cell("o", "lamol_lora"), "overrides": {"model": {"config": LLAMA, "lora": LORA}}},
                **{"model.config": LLAMA, "model.lora": LORA})
    (section,) = collect(run)
    rows = {row for _, row in section.table("over_orders").df.index}
    assert {"lamol", "lamol_lora"} <= rows
    # the same results without the row's declared overrides do not belong together
    write_trial(run / "cells" / "lora", [A, B], "lamol", [[30, 0], [20, 40]], cell=cell("o", "lamol_lora"),
                **{"model.config": LLAMA, "model.lora": LORA})
    with pytest.raises(ArtifactError, match="model.config.n_embd"):
        collect(run)
