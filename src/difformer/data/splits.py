"""Split protocols (docs/protocols.md §1 and §8 item 7).

A dataset owns one :class:`SplitProtocol`; ``protocol.split(run, seed)`` gives the
(train, valid, test) item indices -- nodes of a node dataset, graphs of a graph dataset -- of
run ``run`` of an experiment seeded with ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Split:
    train: Tensor
    valid: Tensor
    test: Tensor


def class_balanced_split(
    y: Tensor, per_class: int, valid_num: int, test_num: int | None, generator: torch.Generator
) -> Split:
    """The official ``class_rand_splits``: ``per_class`` random train nodes of every class,
    the rest pooled and shuffled; the first ``valid_num`` are valid, the next ``test_num``
    (all remaining when None) are test."""
    idx = torch.arange(y.shape[0])
    train: list[Tensor] = []
    rest_parts: list[Tensor] = []
    for c in y.unique():
        idx_c = idx[y == c]
        perm = idx_c[torch.randperm(idx_c.shape[0], generator=generator)]
        train.append(perm[:per_class])
        rest_parts.append(perm[per_class:])
    rest = torch.cat(rest_parts)
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
            raise ValueError(
                f"labels_per_class={self.per_class} must be >= 1 and below the "
                f"smallest class size {int(counts.min())}"
            )
        pool = int(self.y.shape[0] - self.per_class * counts.numel())
        need = self.valid_num + (self.test_num or 1)
        if self.valid_num < 1 or need > pool:
            raise ValueError(
                f"valid_num={self.valid_num} and test_num={self.test_num} need "
                f"{need} unlabelled nodes, but only {pool} remain"
            )
        test = "the rest" if self.test_num is None else str(self.test_num)
        reuse = "one split shared by all runs" if self.shared else "a new split per run"
        self.description = f"{self.per_class} per class / {self.valid_num} / {test} ({reuse})"

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
        return Split(
            *(
                m[k].nonzero().view(-1)
                for m in (self.train_masks, self.valid_masks, self.test_masks)
            )
        )


@dataclass
class RandomFractionSplit(SplitProtocol):
    """Official ``rand_train_test_idx``: over ``items`` (the labelled nodes, label != -1, or
    every graph of a graph dataset), a random ``train_prop`` / ``valid_prop`` / rest split, a
    new one per run (seeded ``seed + run``)."""

    items: Tensor
    train_prop: float
    valid_prop: float
    of: str = "over labelled nodes"  # what ``items`` are, in words
    keys: tuple[str, str] = ("train_prop", "valid_prop")  # their config keys, for errors

    def __post_init__(self):
        if not (
            self.train_prop > 0 and self.valid_prop > 0 and self.train_prop + self.valid_prop < 1
        ):
            raise ValueError(
                f"{self.keys[0]}={self.train_prop} and {self.keys[1]}="
                f"{self.valid_prop} must be > 0 and sum to less than 1"
            )
        rest = round(100 * (1 - self.train_prop - self.valid_prop))
        self.description = (
            f"random {round(100 * self.train_prop)}/"
            f"{round(100 * self.valid_prop)}/{rest} {self.of}, "
            "a new split per run"
        )

    @classmethod
    def of_graphs(
        cls, num_graphs: int, train_ratio: float = 0.8, valid_ratio: float = 0.1
    ) -> RandomFractionSplit:
        """The same protocol over the graphs of a graph dataset."""
        return cls(
            torch.arange(num_graphs),
            train_ratio,
            valid_ratio,
            "of the graphs",
            ("train_ratio", "valid_ratio"),
        )

    def split(self, run: int, seed: int) -> Split:
        g = torch.Generator().manual_seed(seed + run)
        idx = self.items[torch.randperm(self.items.numel(), generator=g)]
        n_train = int(self.train_prop * idx.numel())
        n_valid = int(self.valid_prop * idx.numel())
        return Split(idx[:n_train], idx[n_train : n_train + n_valid], idx[n_train + n_valid :])


@dataclass
class FixedIndexSplit(SplitProtocol):
    """One published split as index arrays (OGB's, or the Pokec split files), used by every run."""

    train: Tensor
    valid: Tensor
    test: Tensor
    source: str = "fixed split"

    def __post_init__(self):
        self.description = (
            f"{self.source} ({self.train.numel()} / {self.valid.numel()} / "
            f"{self.test.numel()}), the same in every run"
        )

    def split(self, run: int, seed: int) -> Split:
        return Split(self.train, self.valid, self.test)


@dataclass
class StratifiedFolds(SplitProtocol):
    """Stratified k-fold cross-validation (Errica et al., ICLR 2020, the usual TU protocol):
    run r tests on fold r mod k; a stratified ``valid_ratio`` of the other folds is the
    validation set (model selection), the rest trains. Folds come from the split seed."""

    y: torch.Tensor
    folds: int = 10
    valid_ratio: float = 0.1

    def __post_init__(self):
        counts = torch.bincount(self.y)
        if self.folds < 2 or int(counts[counts > 0].min()) < self.folds:
            raise ValueError(
                f"folds={self.folds} needs at least that many graphs in every "
                f"class (smallest class: {int(counts[counts > 0].min())})"
            )
        self.description = (
            f"stratified {self.folds}-fold cross-validation, run i tests on "
            f"fold i, {round(100 * self.valid_ratio)} % of the rest validates"
        )

    def split(self, run: int, seed: int) -> Split:
        from sklearn.model_selection import StratifiedKFold, train_test_split

        y = self.y.numpy()
        folds = list(
            StratifiedKFold(self.folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
        )
        rest, test = folds[run % self.folds]
        train, valid = train_test_split(
            rest, test_size=self.valid_ratio, stratify=y[rest], random_state=seed + run
        )
        return Split(*(torch.as_tensor(np.sort(a), dtype=torch.long) for a in (train, valid, test)))
