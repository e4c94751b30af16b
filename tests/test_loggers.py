"""What the loggers wrote, read back: CSV, TensorBoard event files, W&B offline runs."""
import csv
import json
import struct

import pytest

from conftest import train_py


def wandb_records(path):
    """The records of a W&B offline run file: a 7-byte W&B header, then LevelDB-log blocks of
    32 KiB whose records have a 7-byte header (crc, length, type: 1 full, 2-4 first/middle/last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, out, partial = 7, [], b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            out.append(partial + chunk)
            partial = b""
        elif kind in (2, 3):
            partial += chunk
    history, summary = [], {}
    for raw in out:
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                            for i in record.history.item})
        elif kind == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                            for i in record.summary.update})
    return history, summary


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
def test_csv_tensorboard_and_wandb_read_back(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    proc = train_py("logger=[jsonl,csv,tensorboard,wandb]", "trainer.runs=2",
                    "trainer.epochs=3", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(records) == 6
    assert [(int(r["run"]), int(r["epoch"]), float(r["valid"])) for r in rows] == \
        [(r["run"], r["epoch"], r["valid"]) for r in records]
    for run in (0, 1):  # one TensorBoard folder per seed, each from step 0
        events = EventAccumulator(str(run_dir / "tensorboard" / f"run{run}"))
        events.Reload()
        valid = events.Scalars("valid")
        assert [e.step for e in valid] == [0, 1, 2]
        expected = [r["valid"] for r in records if r["run"] == run]
        assert [e.value for e in valid] == pytest.approx(expected, rel=1e-6)
    # WANDB_MODE=disabled in the test session: the offline runs need offline mode
    monkeypatch.setenv("WANDB_MODE", "offline")
    wandb_dir = tmp_path / "wandb-run"
    train_py("logger=[jsonl,wandb]", "trainer.runs=2", "trainer.epochs=3",
             f"hydra.run.dir={wandb_dir}")
    offline = sorted((wandb_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 2  # one W&B run per seed
    runs = [wandb_records(path) for path in offline]
    summary = json.loads((wandb_dir / "summary.json").read_text())
    records = [json.loads(x) for x in (wandb_dir / "metrics.jsonl").read_text().splitlines()]
    by_seed = {s["seed"]: (h, s) for h, s in runs}
    assert sorted(by_seed) == [123, 124]
    for record in summary["runs"]:
        history, run_summary = by_seed[record["seed"]]
        assert run_summary["best_test"] == pytest.approx(record["test"])
        assert run_summary["best_epoch"] == record["best_epoch"]
        assert [h["_step"] for h in history] == [0, 1, 2]  # each seed from its own step 0
        assert [h["valid"] for h in history] == pytest.approx(
            [r["valid"] for r in records if r["run"] == record["run"]])


@pytest.mark.slow  # real-data training or a long end-to-end case: make test-slow
def test_training_curves_are_drawn_beside_the_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFORMER_CURVES", "1")
    train_py("trainer.runs=2", "trainer.epochs=4", f"hydra.run.dir={tmp_path}")
    from PIL import Image

    image = Image.open(tmp_path / "curves.png")
    assert image.size[0] > 2 * image.size[1]  # three panels side by side
    monkeypatch.setenv("DIFFORMER_CURVES", "0")
    train_py("trainer.runs=1", "trainer.epochs=2", f"hydra.run.dir={tmp_path / 'off'}")
    assert not (tmp_path / "off/curves.png").exists()
