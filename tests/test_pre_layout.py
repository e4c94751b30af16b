"""Files written before the package was laid out anew (main 30be812, 2026-12-07) still work:
a best checkpoint evaluates to its recorded score, a run stopped mid-way resumes and ends
bit-identical to the uninterrupted run of that code, and the settings hash is unchanged.

tests/fixtures/pre_layout/ holds them: eval/run0.pt of ``python train.py trainer.runs=2
trainer.epochs=3 threads=1``; resume/, the run directory of ``python train.py trainer.runs=1
trainer.epochs=400 trainer.checkpoint_every=1 model.hidden_channels=16 threads=1`` stopped by
SIGTERM after epoch 16, and expected_summary.json, that command's uninterrupted summary."""
import json
import shutil

import pytest

from conftest import REPO, train_py

FIXTURES = REPO / "tests" / "fixtures" / "pre_layout"


def test_an_old_best_checkpoint_evaluates_to_its_recorded_score(tmp_path):
    proc = train_py("mode=eval", f"checkpoint={FIXTURES / 'eval' / 'run0.pt'}",
                    f"hydra.run.dir={tmp_path / 'eval'}")
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    recorded = json.loads((FIXTURES / "eval" / "summary.json").read_text())["runs"][0]
    assert result["matches_recorded"] and result["test"] == recorded["test"], proc.stdout
    assert result["mismatches"] == []


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
def test_an_old_stopped_run_resumes_bit_identical(tmp_path):
    run_dir = tmp_path / "resume"
    shutil.copytree(FIXTURES / "resume", run_dir)
    (run_dir / "expected_summary.json").unlink()
    proc = train_py(f"resume={run_dir}", "trainer.progress=false")
    assert "run 0: resuming after epoch 16" in proc.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    expected = json.loads((FIXTURES / "resume" / "expected_summary.json").read_text())
    assert summary["config_hash"] == expected["config_hash"]  # the settings hash is unchanged
    keys = ("run", "seed", "split_fingerprint", "best_epoch", "train", "valid", "test")
    assert [{k: r[k] for k in keys} for r in summary["runs"]] == \
        [{k: r[k] for k in keys} for r in expected["runs"]]
