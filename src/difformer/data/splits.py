"""Split protocols (docs/protocols.md §1 and §8 item 7).

A dataset owns one :class:`SplitProtocol`; ``protocol.split(run, seed)`` gives the
(train, valid, test) node indices of run ``run`` of an experiment seeded with ``seed``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Split:
    train: Tensor
    valid: Tensor
    test: Tensor


def class_balanced_split(y: Tensor, per_class: int, valid_num: int, test_num: int | None,
                         generator: torch.Generator) -> Split:
    """The official ``class_rand_splits``: ``per_class`` random train nodes of every class,
    the rest pooled and shuffled; the first ``valid_num`` are valid, the next ``test_num``
    (all remaining when None) are test."""
    idx = torch.arange(y.shape[0])
    train, rest = [], []
    for c in y.unique():
        idx_c = idx[y == c]
        perm = idx_c[torch.randperm(idx_c.shape[0], generator=generator)]
        train.append(perm[:per_class])
        rest.append(perm[per_class:])
    rest = torch.cat(rest)
    rest = rest[torch.randperm(rest.shape[0], generator=generator)]
    end = None if test_num is None else valid_num + test_num
    return Split(torch.cat(train), rest[:valid_num], rest[valid_num:end])


class SplitProtocol:
    description = ""

    def split(self, run: int, seed: int) -> Split:
        raise NotImplementedError


@dataclass
class RandomClassSplit(SplitProtocol):
    """``per_class`` labelled nodes per class / ``valid_num`` / ``test_num`` (None = rest).

    ``shared=True`` draws one split from ``seed`` and reuses it in every run (the official
    Planetoid protocol: 5 runs = 5 initialisations on one split); otherwise run ``r`` draws
    its own split from ``seed + r`` (the image/text protocol).
    """
    y: Tensor
    per_class: int
    valid_num: int
    test_num: int | None
    shared: bool

    def __post_init__(self):
        counts = torch.bincount(self.y)
        counts = counts[counts > 0]
        if self.per_class < 1 or int(counts.min()) <= self.per_class:
            raise ValueError(f"labels_per_class={self.per_class} must be >= 1 and below the "
                             f"smallest class size {int(counts.min())}")
        pool = int(self.y.shape[0] - self.per_class * counts.numel())
        need = self.valid_num + (self.test_num or 1)
        if self.valid_num < 1 or need > pool:
            raise ValueError(f"valid_num={self.valid_num} and test_num={self.test_num} need "
                             f"{need} unlabelled nodes, but only {pool} remain")
        test = "the rest" if self.test_num is None else str(self.test_num)
        reuse = "one split shared by all runs" if self.shared else "a new split per run"
        self.description = (f"{self.per_class} per class / {self.valid_num} / {test} "
                            f"({reuse})")

    def split(self, run: int, seed: int) -> Split:
        g = torch.Generator().manual_seed(seed if self.shared else seed + run)
        return class_balanced_split(self.y, self.per_class, self.valid_num, self.test_num, g)


@dataclass
class FixedMaskSplits(SplitProtocol):
    """K published splits as boolean masks [K, N]; run ``r`` uses split ``r mod K``."""
    train_masks: Tensor
    valid_masks: Tensor
    test_masks: Tensor
    source: str = "fixed splits"

    def __post_init__(self):
        self.description = f"{self.train_masks.shape[0]} {self.source}, run i uses split i"

    def split(self, run: int, seed: int) -> Split:
        k = run % self.train_masks.shape[0]
        return Split(*(m[k].nonzero().view(-1)
                       for m in (self.train_masks, self.valid_masks, self.test_masks)))


@dataclass
class RandomFractionSplit(SplitProtocol):
    """Official ``rand_train_test_idx``: over the labelled nodes (label != -1), a random
    ``train_prop`` / ``valid_prop`` / rest split, a new one per run (seeded ``seed + run``)."""
    labelled: Tensor
    train_prop: float
    valid_prop: float

    def __post_init__(self):
        if not (0 < self.train_prop and 0 < self.valid_prop
                and self.train_prop + self.valid_prop < 1):
            raise ValueError(f"train_prop={self.train_prop} and valid_prop={self.valid_prop} "
                             "must be > 0 and sum to less than 1")
        rest = round(100 * (1 - self.train_prop - self.valid_prop))
        self.description = (f"random {round(100 * self.train_prop)}/"
                            f"{round(100 * self.valid_prop)}/{rest} over labelled nodes, "
                            "a new split per run")

    def split(self, run: int, seed: int) -> Split:
        g = torch.Generator().manual_seed(seed + run)
        idx = self.labelled[torch.randperm(self.labelled.numel(), generator=g)]
        n_train = int(self.train_prop * idx.numel())
        n_valid = int(self.valid_prop * idx.numel())
        return Split(idx[:n_train], idx[n_train:n_train + n_valid], idx[n_train + n_valid:])


@dataclass
class FixedIndexSplit(SplitProtocol):
    """One published split as index arrays (OGB's, or the Pokec split files), used by every run."""
    train: Tensor
    valid: Tensor
    test: Tensor
    source: str = "fixed split"

    def __post_init__(self):
        self.description = f"{self.source} ({self.train.numel()} / {self.valid.numel()} / " \
                           f"{self.test.numel()}), the same in every run"

    def split(self, run: int, seed: int) -> Split:
        return Split(self.train, self.valid, self.test)
