"""A generated corpus of malformed own-data files and config values (issue #24): every case
ends either in a correct result or in one line with exit code 1 or 2 -- never a traceback and
never a silent result.

A seeded generator (numpy, seed 2026) writes npz and CSV files with one or two faults drawn
from a list, plus well-formed files whose odd but legal features (class names, unlabelled
nodes, explicit tasks) must train; config cases draw a key and a bad value. Each case runs
in-process through :func:`difformer.invocation.run` and the command line's own mapping of
exceptions to exit codes (:func:`difformer.cli.outcome`): a case whose exception that mapping
does not know is a traceback, a bad case that finishes is a silent result. The counts are
printed (``pytest -s``) and stated in docs/reliability.md.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from difformer.cli import outcome
from difformer.invocation import run

N, F = 60, 5
SEED = 2026


@dataclasses.dataclass
class Case:
    name: str
    overrides: list[str]
    bad: bool  # must be refused (exit 1/2, one line); else must finish correctly
    check: object = None  # for a good case: summary -> None (raises on a wrong result)


def base_arrays(rng) -> dict:
    y = np.arange(N) % 3
    x = rng.normal(size=(N, F)) + y[:, None]
    src, dst = rng.integers(0, N, (2, 150))
    return {"x": x, "y": y, "edge_index": np.stack([src, dst])}


def masks(rng) -> dict:
    order = rng.permutation(N)
    out = {}
    for part, idx in zip(("train", "valid", "test"), np.split(order, [30, 45])):
        m = np.zeros(N, bool)
        m[idx] = True
        out[f"{part}_mask"] = m
    return out


# faults: name -> function(arrays, rng) mutating the arrays (all of them must be refused)
def _set(key, fn):
    def mutate(a, rng):
        a[key] = fn(a, rng)
    return mutate


def _at(key, value, dtype=None):
    def fn(a, rng):
        v = a[key].astype(dtype or a[key].dtype).copy()
        idx = tuple(rng.integers(0, s) for s in v.shape)
        v[idx] = value
        return v
    return _set(key, fn)


NPZ_FAULTS = {
    "x NaN": _at("x", np.nan),
    "x inf": _at("x", np.inf),
    "x -inf": _at("x", -np.inf),
    "x strings": _set("x", lambda a, r: a["x"].astype(str)),
    "x 1-D": _set("x", lambda a, r: a["x"][:, 0]),
    "x 3-D": _set("x", lambda a, r: a["x"][:, :, None]),
    "y NaN": _at("y", np.nan, float),
    "y -7": _at("y", -7),
    "y stray 1000": _at("y", 1000),
    "y 2.5 as a class": lambda a, r: (a.__setitem__("y", a["y"].astype(float)),
                                      a["y"].__setitem__(3, 2.5), a.__setitem__("task", None)),
    "y one class": _set("y", lambda a, r: np.zeros(N, int)),
    "y all unlabelled": _set("y", lambda a, r: -np.ones(N, int)),
    "y too short": _set("y", lambda a, r: a["y"][:-3]),
    "y strings": _set("y", lambda a, r: np.array([f"c{v}" for v in a["y"]])),
    "y inf": _at("y", np.inf, float),
    "no y": lambda a, r: a.pop("y"),
    "no x": lambda a, r: a.pop("x"),
    "edge 0.5": _at("edge_index", 0.5, float),
    "edge NaN": _at("edge_index", np.nan, float),
    "edge out of range": _at("edge_index", N),
    "edge negative": _at("edge_index", -2),
    "edge shape [3, E]": _set("edge_index", lambda a, r: np.vstack([a["edge_index"],
                                                                    a["edge_index"][:1]])),
    "masks equal": lambda a, r: a.update(valid_mask=a["train_mask"], test_mask=a["train_mask"]),
    "mask overlap": lambda a, r: a["test_mask"].__setitem__(np.flatnonzero(a["train_mask"])[0],
                                                            True),
    "test mask empty": lambda a, r: a.update(test_mask=np.zeros(N, bool)),
    "mask too short": lambda a, r: a.update(valid_mask=a["valid_mask"][:-1]),
    "idx out of range": lambda a, r: a.update(train_idx=np.arange(30), valid_idx=np.arange(30, 45),
                                              test_idx=np.arange(45, N + 1)),
    "idx overlap": lambda a, r: a.update(train_idx=np.arange(30), valid_idx=np.arange(25, 45),
                                         test_idx=np.arange(45, N)),
    "idx 1.5": lambda a, r: a.update(train_idx=np.arange(30) + 0.5, valid_idx=np.arange(30, 45),
                                     test_idx=np.arange(45, N)),
    "idx empty": lambda a, r: a.update(train_idx=np.arange(30), valid_idx=np.arange(0),
                                       test_idx=np.arange(45, N)),
    "idx duplicate": lambda a, r: a.update(train_idx=np.r_[np.arange(30), 0],
                                           valid_idx=np.arange(30, 45), test_idx=np.arange(45, N)),
}

# legal oddities: name -> (mutation, extra overrides, check(summary))
NPZ_GOOD = {
    "plain": (lambda a, r: None, [], lambda s: s["metric"] == "accuracy"),
    "unlabelled -1": (_at("y", -1), [], lambda s: s["metric"] == "accuracy"),
    "NaN unlabelled by key": (_at("y", np.nan, float), ["+dataset.missing_label=unlabelled"],
                              lambda s: s["metric"] == "accuracy"),
    "float whole labels": (_set("y", lambda a, r: a["y"].astype(float)), [],
                           lambda s: s["metric"] == "accuracy"),
    "regression target": (_set("y", lambda a, r: a["x"][:, 0] * 0.3), [],
                          lambda s: s["metric"] == "mse"),
    "regression by key": (lambda a, r: None, ["+dataset.task=regression"],
                          lambda s: s["metric"] == "mse"),
    "edges as [E, 2]": (_set("edge_index", lambda a, r: a["edge_index"].T.copy()), [],
                        lambda s: s["metric"] == "accuracy"),
    "float integral edges": (_set("edge_index", lambda a, r: a["edge_index"].astype(float)), [],
                             lambda s: s["metric"] == "accuracy"),
    "no edges": (lambda a, r: a.pop("edge_index"), [], lambda s: s["metric"] == "accuracy"),
    "int8 features": (_set("x", lambda a, r: a["x"].astype(np.int8)), [],
                      lambda s: s["metric"] == "accuracy"),
    "file masks": (lambda a, r: a.update(masks(r)), [], lambda s: "from the file" in s["split"]),
}

CSV_FAULTS = {
    "empty file": lambda rows: "",
    "header only": lambda rows: rows[0] + "\n",
    "no label column": lambda rows: "\n".join(r.split(",", 2)[0] + "," + r.split(",", 2)[2]
                                              for r in rows) + "\n",
    "duplicate id": lambda rows: "\n".join(rows + [rows[5]]) + "\n",
    "string feature": lambda rows: "\n".join(rows[:7] + [rows[7].rsplit(",", 1)[0] + ",abc"]
                                             + rows[8:]) + "\n",
    "empty feature": lambda rows: "\n".join(rows[:4] + [rows[4].rsplit(",", 1)[0] + ","]
                                            + rows[5:]) + "\n",
    "latin-1 bytes": lambda rows: ("\n".join(rows) + "\n").replace("n1,", "n\xe91,"),
    "ragged row": lambda rows: "\n".join(rows[:9] + [rows[9] + ",1,2,3"] + rows[10:]) + "\n",
    "label NaN": lambda rows: "\n".join(rows[:3] + [rows[3].split(",")[0] + ",," +
                                                    rows[3].split(",", 2)[2]] + rows[4:]) + "\n",
}


def csv_rows(rng, labels=None) -> list[str]:
    y = np.arange(N) % 3
    x = rng.normal(size=(N, 3)) + y[:, None]
    names = labels or [str(v) for v in y]
    return ["id,label,f0,f1,f2"] + [f"n{i},{names[i]}," + ",".join(f"{v:.4f}" for v in x[i])
                                    for i in range(N)]


def write_npz(path: Path, arrays: dict) -> None:
    arrays = {k: v for k, v in arrays.items() if v is not None and k != "task"}
    np.savez(path, **arrays)


CONFIG_FAULTS = {
    "optim.lr": ["-1", "0", "inf", "nan", "abc", "1e400"],
    "optim.weight_decay": ["-0.1", "inf", "x"],
    "trainer.epochs": ["0", "-3", "2.5", "many", "inf"],
    "trainer.runs": ["0", "-1", "1.5"],
    "seed": ["-1", "4294967296", "18446744073709551616", "seed"],
    "trainer.checkpoint_seconds": ["-1", "0", "inf"],
    "trainer.eval_step": ["0", "-2"],
    "trainer.device": ["cuda", "cuda:3", "tpu", "gpu"],
    "trainer.precision": ["16", "fp8"],
    "trainer.log_every": ["0", "-5", "often", "0s"],
    "trainer.parallel_runs": ["0", "-2", "lots"],
    "model.hidden_channels": ["0", "-8", "2.5"],
    "model.dropout": ["-0.1", "1.5"],
    "model.num_layers": ["0", "two"],
    "model.use_bn": ["2", "maybe"],
    "dataset.train_ratio": ["1.5", "-0.2"],
    "dataset.valid_ratio": ["0.9"],
}


def corpus(tmp: Path) -> list[Case]:
    rng = np.random.default_rng(SEED)
    cases = []
    common = ["trainer.epochs=2", "trainer.runs=1", "trainer.progress=false",
              "trainer.save_checkpoints=false", "threads=1"]

    def npz_case(name, arrays, extra, bad, check=None):
        path = tmp / f"case{len(cases)}.npz"
        write_npz(path, arrays)
        model = "model=mlp" if "edge_index" not in arrays or bad else "model=gcn"
        cases.append(Case(name, ["dataset=npz", f"dataset.path={path}", model, *common,
                                 *extra], bad, check))

    # every single fault, with and without file masks, then random pairs of faults
    for with_masks in (False, True):
        for fault, mutate in NPZ_FAULTS.items():
            arrays = base_arrays(rng)
            if with_masks and "mask" not in fault and "idx" not in fault:
                arrays.update(masks(rng))
            if "mask" in fault:
                arrays.update(masks(rng))
            mutate(arrays, rng)
            npz_case(f"npz: {fault}" + (" (+masks)" if with_masks else ""), arrays, [], True)
    names = list(NPZ_FAULTS)
    for _ in range(60):
        a, b = rng.choice(len(names), 2, replace=False)
        arrays = base_arrays(rng)
        arrays.update(masks(rng)) if ("mask" in names[a] + names[b]) else None
        NPZ_FAULTS[names[a]](arrays, rng)
        try:
            NPZ_FAULTS[names[b]](arrays, rng)
        except KeyError:  # the first fault removed what the second would change
            pass
        npz_case(f"npz: {names[a]} + {names[b]}", arrays, [], True)
    for good, (mutate, extra, check) in NPZ_GOOD.items():
        for _ in range(2):
            arrays = base_arrays(rng)
            mutate(arrays, rng)
            npz_case(f"npz ok: {good}", arrays, extra, False, check)
    for fault, make in CSV_FAULTS.items():
        for labels in (None, [f"class_{v}" for v in np.arange(N) % 3]):
            path = tmp / f"case{len(cases)}.csv"
            path.write_bytes(make(csv_rows(rng, labels)).encode("latin-1"))
            cases.append(Case(f"csv: {fault}", ["dataset=csv", f"dataset.nodes={path}",
                                                "model=mlp", *common], True))
    for labels in (None, [f"class_{v}" for v in np.arange(N) % 3]):
        path = tmp / f"case{len(cases)}.csv"
        path.write_text("\n".join(csv_rows(rng, labels)) + "\n")
        cases.append(Case("csv ok" + (": class names" if labels else ""),
                          ["dataset=csv", f"dataset.nodes={path}", "model=mlp", *common], False,
                          lambda s: s["metric"] == "accuracy"))
    for key, values in CONFIG_FAULTS.items():
        for value in values:
            cases.append(Case(f"config: {key}={value}", ["dataset=digits", "model=mlp", *common,
                                                         f"{key}={value}"], True))
    return cases


def attempt(case: Case, compose, run_dir: Path):
    """(exit code, stderr line or None, summary or None) as the command line would end."""
    try:
        cfg = compose(*case.overrides)
    except Exception as err:  # noqa: BLE001 - Hydra refuses the override itself
        from difformer.cli import preflight

        line = preflight(case.overrides)
        assert line is not None or "Could not override" in str(err) or "Error" in type(
            err).__name__, f"{case.name}: Hydra: {err}"
        return 2, f"error: {line or str(err).splitlines()[0]}", None
    try:
        summary = run(cfg, run_dir)
    except Exception as err:  # noqa: BLE001 - classified below as the command line does
        known = outcome(err)
        if known is None:
            raise AssertionError(f"{case.name}: a traceback ({type(err).__name__}: {err})") \
                from err
        return known[0], known[1], None
    return 0, None, summary


@pytest.mark.slow  # moved from the default tier to keep make test under 10 minutes
def test_a_generated_corpus_never_ends_in_a_traceback_or_a_silent_result(tmp_path, compose):
    cases = corpus(tmp_path)
    assert len(cases) >= 200
    counts = {"refused in one line": 0, "correct result": 0}
    for i, case in enumerate(cases):
        code, line, summary = attempt(case, compose, tmp_path / f"run{i}")
        if case.bad:
            assert code in (1, 2), f"{case.name}: a silent result {summary and summary.get('metric')}"
            assert line.startswith("error: ") and "\n" not in line, (case.name, line)
            counts["refused in one line"] += 1
        else:
            assert code == 0, f"{case.name}: refused a legal input: {line}"
            assert case.check(summary), (case.name, summary)
            counts["correct result"] += 1
    print(f"\n{len(cases)} generated cases (seed {SEED}): {counts}")
    assert sum(counts.values()) == len(cases)
