"""Faults survived and nothing silently wrong (issue #24): data identity on resume, torn
metrics lines, checksummed checkpoints, checkpoints that cannot choose code or files, one
command per run directory, children that die with their parent, a full disk."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, train_py
from difformer.runs import rundir
from difformer.runs.files import JsonlWriter, read_jsonl
from difformer.train.checkpoint import content_digest, with_checksum

FAST = ["model=mlp", "trainer.epochs=4", "trainer.progress=false", "threads=1"]


def npz_graph(path: Path, seed: int = 0, shift: float = 0.0) -> None:
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], 40)
    x = rng.normal(size=(120, 6)) + y[:, None] + shift
    np.savez(path, x=x, y=y)


def train_npz(tmp_path, *args, check=True):
    return train_py("dataset=npz", f"dataset.path={tmp_path / 'g.npz'}", *FAST, *args,
                    f"hydra.run.dir={tmp_path / 'run'}", check=check)


@pytest.mark.slow  # moved from the default tier to keep make test under 10 minutes
def test_a_resume_on_changed_data_is_refused_in_one_line(tmp_path):
    """Stop after run 0 (its summary and run 1's files gone), change the file in place, rerun:
    refused -- the runs would average two versions of the data; resume=false starts over."""
    npz_graph(tmp_path / "g.npz")
    train_npz(tmp_path, "trainer.runs=2")
    run = tmp_path / "run"
    assert json.loads((run / rundir.DATA).read_text())["num_nodes"] == 120
    (run / rundir.SUMMARY).unlink()
    (run / "checkpoints/run1_last.pt").unlink()
    (run / "checkpoints/run1.pt").unlink()
    npz_graph(tmp_path / "g.npz", seed=1)
    proc = train_npz(tmp_path, "trainer.runs=2", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {run} holds runs trained on other data (x: ")
    assert lines[0].endswith("or add resume=false to start over (the old files are moved "
                             "aside)")
    assert not (run / rundir.SUMMARY).exists() and (run / "checkpoints/run0_last.pt").exists()
    status = json.loads((run / rundir.STATUS).read_text())
    assert status["status"] == "failed" and status["error"].startswith("DataError: ")
    train_npz(tmp_path, "trainer.runs=2", "resume=false")
    assert json.loads((run / rundir.SUMMARY).read_text())["n_runs"] == 2
    assert list(run.glob("stale-*/checkpoints/run0_last.pt"))  # the old files, kept aside


def test_a_torn_metrics_line_is_dropped_and_never_appended_to(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"run": 0, "epoch": 0}\n{"run": 0, "epoch": 1}\n{"run": 0, "ep')
    assert read_jsonl(path) == [{"run": 0, "epoch": 0}, {"run": 0, "epoch": 1}]
    writer = JsonlWriter(path)
    writer.write({"run": 0, "epoch": 2})
    writer.close()
    assert path.read_text().splitlines()[-1] == '{"run": 0, "epoch": 2}'
    assert len(read_jsonl(path)) == 3
    path.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: not a JSON record"):
        read_jsonl(path)


@pytest.mark.slow  # ~20 s idle: make test-slow (keeps make test under 10 minutes)
def test_a_run_whose_metrics_file_was_torn_resumes(tmp_path):
    npz_graph(tmp_path / "g.npz")
    train_npz(tmp_path, "trainer.runs=2")
    run = tmp_path / "run"
    (run / rundir.SUMMARY).unlink()
    (run / "checkpoints/run1_last.pt").unlink()
    with open(run / rundir.METRICS, "a") as f:
        f.write('{"run": 1, "epoch": 0, "lo')  # a full disk in the middle of an append
    train_npz(tmp_path, "trainer.runs=2")
    lines = read_jsonl(run / rundir.METRICS)
    assert [(r["run"], r["epoch"]) for r in lines] == [(r, e) for r in (0, 1) for e in range(4)]


def flip_tensor_bytes(path: Path, tensor: torch.Tensor) -> None:
    """Overwrite 64 bytes of ``tensor``'s data where ``torch.save`` stored it in ``path``."""
    raw = path.read_bytes()
    needle = tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()[:64]
    at = raw.find(needle)
    assert at > 0
    path.write_bytes(raw[:at] + bytes(b ^ 0x5A for b in raw[at:at + 64]) + raw[at + 64:])


@pytest.mark.slow  # moved from the default tier to keep make test under 10 minutes
def test_damaged_and_diverged_checkpoints_are_refused(tmp_path):
    npz_graph(tmp_path / "g.npz")
    train_npz(tmp_path, "trainer.runs=1")
    run = tmp_path / "run"
    best = run / "checkpoints/run0.pt"
    ckpt = torch.load(best, weights_only=True)
    assert ckpt["checksum"] == content_digest({k: v for k, v in ckpt.items() if k != "checksum"})
    evaluate = ["mode=eval", "dataset=npz", f"dataset.path={tmp_path / 'g.npz'}", "threads=1"]

    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(best.read_bytes())
    flip_tensor_bytes(damaged, next(iter(ckpt["state_dict"].values())))
    proc = train_py(*evaluate, f"checkpoint={damaged}", f"hydra.run.dir={tmp_path / 'e1'}",
                    check=False)
    assert proc.returncode == 2 and proc.stderr == (
        f"error: {damaged} is damaged: its content does not match the checksum it was saved "
        "with (use another checkpoint, or train again)\n")

    diverged = tmp_path / "diverged.pt"
    body = {k: v for k, v in ckpt.items() if k != "checksum"}
    name = next(iter(body["state_dict"]))
    body["state_dict"] = {**body["state_dict"], name: body["state_dict"][name] * float("nan")}
    torch.save(with_checksum(body), diverged)
    proc = train_py(*evaluate, f"checkpoint={diverged}", f"hydra.run.dir={tmp_path / 'e2'}",
                    check=False)
    assert proc.returncode == 2 and proc.stderr == (
        f"error: {diverged} holds NaN or inf weights (1 tensor(s), first {name}); a checkpoint "
        "of a diverged model is refused\n")

    # the resume state: a damaged last checkpoint is refused, never resumed from silently
    (run / rundir.SUMMARY).unlink()
    last = run / "checkpoints/run0_last.pt"
    state = torch.load(last, weights_only=True)
    flip_tensor_bytes(last, next(iter(state["model"].values())))
    proc = train_npz(tmp_path, "trainer.runs=1", check=False)
    assert proc.returncode == 2 and proc.stderr == (
        f"error: {last} is damaged: its content does not match the checksum it was saved with "
        "(move it away to start this run again)\n")


@pytest.mark.parametrize("change,message", [
    (lambda c: c["model"].update(name="argparse.Namespace"),
     "names the model class 'argparse.Namespace', which is not one of this package's models: "
     "pass model=custom model._target_=argparse.Namespace to import it, or add "
     "eval_trust_checkpoint=true if you trust this file"),
    (lambda c: c["dataset"]["config"].update(_target_="this.hello"),
     "reads its data with your loader this.hello (recorded in the file): pass dataset=custom "
     "dataset._target_=this.hello to run it, or add eval_trust_checkpoint=true if you trust "
     "this file"),
    (lambda c: c["dataset"]["config"].update(path="/etc/passwd"),
     "reads the file(s) dataset.path=/etc/passwd (recorded in the checkpoint): pass dataset=npz "
     "dataset.path=/etc/passwd to confirm, or add eval_trust_checkpoint=true if you trust "
     "this file"),
])
def test_a_checkpoint_never_chooses_code_or_files(tmp_path, change, message):
    """A crafted checkpoint (a valid checksum is easy to forge) names a class to import, a
    loader to run, a file to read: refused unless the command line names it too."""
    npz_graph(tmp_path / "g.npz")
    train_npz(tmp_path, "trainer.runs=1", "trainer.epochs=1")
    ckpt = torch.load(tmp_path / "run/checkpoints/run0.pt", weights_only=True)
    ckpt.pop("checksum")
    change(ckpt)
    crafted = tmp_path / "crafted.pt"
    torch.save(with_checksum(ckpt), crafted)
    proc = train_py("mode=eval", f"checkpoint={crafted}", f"hydra.run.dir={tmp_path / 'e'}",
                    check=False)
    assert proc.returncode == 2 and proc.stderr == f"error: {crafted} {message}\n"
    assert "Zen of Python" not in proc.stdout and not (tmp_path / "e").exists()


def test_one_command_per_run_directory_and_orphans_cleaned(tmp_path):
    npz_graph(tmp_path / "g.npz")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    orphan = run / "checkpoints" / ".run0_last.pt.abc123.tmp"  # a SIGKILL during a save
    orphan.write_bytes(b"half a checkpoint")
    with rundir.RunDirLock(run):
        proc = train_npz(tmp_path, "trainer.runs=1", check=False)
        assert proc.returncode == 2 and proc.stderr.startswith(
            f"error: {run} is in use by another command (pid {os.getpid()}, since ")
        assert proc.stderr.endswith("wait for it to end, or give this one its own "
                                    "hydra.run.dir\n")
        assert orphan.exists() and not (run / rundir.STATUS).exists()
    train_npz(tmp_path, "trainer.runs=1")
    assert not orphan.exists() and (run / rundir.SUMMARY).exists()


def test_children_end_when_their_parent_is_killed(tmp_path):
    """SIGKILL cannot be passed on: the kernel ends a child started by processes.call."""
    marker = tmp_path / "child.pid"
    child = (f"from difformer.system.processes import die_with_parent; import os, time; "
             f"die_with_parent(); open({str(marker)!r}, 'w').write(str(os.getpid())); "
             "time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c",
                               "import sys; from difformer.system.processes import call; "
                               f"call([sys.executable, '-c', {child!r}])"])
    for _ in range(200):
        if marker.exists() and marker.read_text():
            break
        time.sleep(0.05)
    pid = int(marker.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    pytest.fail("the child outlived its SIGKILLed parent")


@contextlib.contextmanager
def tmpfs(mount: Path, options: str):
    """A tmpfs mounted at ``mount`` (root and a kernel that allows it; else the test skips)."""
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({options}) here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_one_line_naming_the_file(tmp_path):
    """A DIFFormer checkpoint does not fit in 256 KiB: the run stops with one line naming
    the file, and nothing half-written is left to be read as a result."""
    npz_graph(tmp_path / "g.npz")
    with tmpfs(tmp_path / "disk", "size=256k") as disk:
        run = disk / "run"
        proc = train_py("dataset=npz", f"dataset.path={tmp_path / 'g.npz'}",
                        "model=difformer_s", "model.hidden_channels=256", "model.use_graph=false",
                        "trainer.runs=1", "trainer.epochs=2", "trainer.progress=false",
                        "threads=1", f"hydra.run.dir={run}", check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"error: no space left on the device: {run}/checkpoints/")
        assert not (run / rundir.SUMMARY).exists()
        assert not list(run.rglob("*.tmp"))  # the atomic writes cleaned up after themselves


def test_a_read_only_run_directory_is_one_line(tmp_path):
    npz_graph(tmp_path / "g.npz")
    with tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        proc = train_py("dataset=npz", f"dataset.path={tmp_path / 'g.npz'}", *FAST,
                        f"hydra.run.dir={ro / 'run'}", check=False)
    assert proc.returncode == 2 and proc.stderr == (
        f"error: cannot write the run directory {ro / 'run'}: {ro} is on a read-only file "
        "system (choose another with hydra.run.dir=...)\n")


@pytest.mark.slow  # moved from the default tier to keep make test under 10 minutes
def test_options_that_would_be_silently_dropped_are_refused(tmp_path):
    proc = train_py("dataset=chickenpox", "trainer.batch_size=64",
                    f"hydra.run.dir={tmp_path / 'a'}", check=False)
    assert proc.returncode == 2 and proc.stderr == (
        "error: trainer.batch_size=64 does not apply to dataset chickenpox (a temporal task, "
        "trainer=temporal): remove it\n")
    assert not (tmp_path / "a").exists()
    npz_graph(tmp_path / "g.npz")
    train_npz(tmp_path, "trainer.runs=1", "trainer.epochs=1")
    ckpt = tmp_path / "run/checkpoints/run0.pt"
    proc = train_py("mode=eval", f"checkpoint={ckpt}", "dataset=npz",
                    f"dataset.path={tmp_path / 'g.npz'}", "model.hidden_channels=32",
                    f"hydra.run.dir={tmp_path / 'e'}", check=False)
    assert proc.returncode == 2 and proc.stderr == (
        f"error: mode=eval rebuilds the model from the keywords recorded in {ckpt}; "
        "model.hidden_channels=32 would not be used: remove it\n")
    assert not (tmp_path / "e").exists()
