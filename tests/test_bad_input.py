"""Every bad input: one line naming the value and what is allowed, exit code 2, before any
work, and no run directory left behind. The README's table is this list, produced here."""
import re
from pathlib import Path

import pytest
import torch

from conftest import REPO, train_py

README = REPO / "docs/guide/running.md"  # the user guide's table of bad inputs
START, END = "<!-- bad-inputs:start -->", "<!-- bad-inputs:end -->"


def bad_inputs(files: Path) -> list[tuple[str, list[str]]]:
    """(what the README shows, the command-line arguments)."""
    files.mkdir(parents=True, exist_ok=True)
    (files / "notes.txt").write_text("not a checkpoint\n")
    torch.save({"format": "difformer-checkpoint", "model": {"name": "difformer"}},
               files / "partial.pt")
    torch.save({"format": "difformer-checkpoint", "state_dict": {"w": torch.ones(300, 300)}},
               files / "whole.pt")
    (files / "truncated.pt").write_bytes((files / "whole.pt").read_bytes()[:4000])
    return [(a, a.replace("FILES", str(files)).split()) for a in [
        "optim.lr=-1", "optim.weight_decay=-0.1", "trainer.epochs=abc", "trainer.runs=0",
        "trainer.epochs=2.5", "model.hidden_channels=0", "model.num_heads=0",
        "model.num_layers=two", "model.dropout=1.5", "model.alpha=-0.2",
        "model.kernel=softmax", "model.foo=1", "+model.foo=1", "+trainer.epoch=3",
        "+optim.momentum=0.9", "dataset=coraa", "model=gcnn", "trainer=fast",
        "trainer.device=tpu", "trainer.precision=fp16", "trainer.log_every=often",
        "trainer.eval_step=0", "seed=-1", "mode=predict", "mode=eval",
        "mode=eval checkpoint=missing.pt", "mode=eval checkpoint=FILES/notes.txt",
        "mode=eval checkpoint=FILES/truncated.pt", "mode=eval checkpoint=FILES/partial.pt",
        "resume=FILES/nowhere", "optim.scheduler=step", "dataset=hiv model=difformer_s",
        "dataset=tu model=gin_graph trainer=minibatch", "trainer.parallel_runs=0",
        "trainer.parallel_runs=many",
        "trainer.compile=maybe", "model.dropout_mask=quick"]]


def table(rows: list[tuple[str, str]]) -> str:
    lines = ["| input | message (stderr, exit code 2) |", "| --- | --- |"]
    lines += [f"| `{arg}` | `{message}` |" for arg, message in rows]
    return "\n".join(lines)


def test_every_bad_input_is_one_line_and_the_readme_lists_them(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    cases = bad_inputs(tmp_path / "files")
    run_dirs = [tmp_path / "runs" / re.sub(r"\W", "_", shown) for shown, _ in cases]
    with ThreadPoolExecutor(3) as pool:  # independent processes, mostly start-up time
        procs = list(pool.map(lambda c: train_py(*c[0][1], f"hydra.run.dir={c[1]}",
                                                 check=False), zip(cases, run_dirs)))
    rows = []
    for (shown, _), run_dir, proc in zip(cases, run_dirs, procs):
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (shown, proc.stdout, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (shown, proc.stderr)
        assert not run_dir.exists(), shown  # nothing left behind
        message = lines[0].replace(str(tmp_path / "files"), "FILES")
        rows.append((shown, re.sub(r"\(\d+ bytes\)", "(N bytes)", message)))
    expected = table(rows)
    text = README.read_text()
    block = text.split(START, 1)[1].split(END, 1)[0].strip() if START in text else None
    assert block == expected, "README's bad-input table differs; it should read:\n" + expected


@pytest.mark.parametrize("arg,message", [
    ("trainer.epochs=abc", "trainer.epochs must be an integer, got 'abc'"),
    ("+trainer.epoch=3", "+trainer.epoch: no code reads trainer.epoch; known trainer keys:"),
    ("model.hidden_channels=0", "model.hidden_channels must be >= 1, got 0"),
])
def test_named_messages(arg, message, compose):
    from difformer.config.core import ConfigError
    from difformer.invocation import validate

    if arg.startswith("+"):
        from difformer.cli import preflight

        assert preflight([arg]).startswith(message)
        return
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose(arg))
