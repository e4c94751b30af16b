"""The paper's Cora cell end to end (5 runs x 500 epochs, ~5 minutes): `make test-slow`."""
import json

import pytest

from conftest import needs_data, train_py


@pytest.mark.slow
@needs_data("Planetoid/Cora/raw/ind.cora.x")
def test_cora_difformer_s_reaches_the_paper(tmp_path):
    train_py("dataset=cora", "model=difformer_s", f"hydra.run.dir={tmp_path}", timeout=3600)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_runs"] == 5
    # paper 85.9 ± 0.4; the official code gives 85.7 ± 0.6 on a 2-core CPU
    assert summary["test_mean"] >= 0.845, summary
