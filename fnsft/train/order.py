"""Worst batch first: the training order puts the heaviest micro-batch at step 1, so a run that will not fit fails
in its first step rather than hours in ("it OOMed at step 4,000").

Each epoch is a seeded permutation of the rows (``seed + epoch``, like accelerate's ``SeedableRandomSampler``) with
the ``first`` longest rows (tokens after packing: ``len(input_ids)`` of the rows the trainer sees) moved to the
front. Those rows form the first micro-batch of every rank: the batch with the longest row (what padding pads to)
and the most tokens that any order could make, so no later step needs more activation memory. The order depends only
on the seed and the lengths, so the same recipe and seed give bitwise the same weights run to run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cache
from typing import Any


def longest_first(order: Sequence[int], lengths: Sequence[int], first: int) -> list[int]:
    """``order`` with its ``first`` longest rows moved to the front (longest first; ties keep their order)."""
    positions = sorted(range(len(order)), key=lambda pos: (-lengths[order[pos]], pos))[:first]
    chosen = set(positions)
    return [order[pos] for pos in positions] + [index for pos, index in enumerate(order) if pos not in chosen]


class LongestBatchFirstSampler:
    """A seeded shuffle whose first ``first`` indices are the longest rows (a torch ``Sampler`` of row indices)."""

    def __init__(self, lengths: Sequence[int], first: int, seed: int) -> None:
        self.lengths, self.first, self.seed, self.epoch = list(lengths), first, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by accelerate's data loader at the start of each epoch (also when resuming)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        import torch

        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        return iter(longest_first(order, self.lengths, self.first))


def row_lengths(dataset: Any) -> list[int] | None:
    """Tokens per row of a tokenized (possibly packed) dataset, or None when it has no ``input_ids`` column."""
    if getattr(dataset, "column_names", None) is None or "input_ids" not in dataset.column_names:
        return None
    return [len(ids) for ids in dataset["input_ids"]]


@cache
def longest_batch_first_trainer() -> type:
    """TRL's SFTTrainer whose training sampler puts the longest micro-batch first (built lazily: imports TRL)."""
    from trl import SFTTrainer

    class LongestBatchFirstTrainer(SFTTrainer):
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            dataset = self.train_dataset if train_dataset is None else train_dataset
            lengths = row_lengths(dataset)
            if lengths is None:
                return super()._get_train_sampler(train_dataset)
            first = self.args.per_device_train_batch_size * max(1, self.args.world_size)
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return LongestBatchFirstSampler(lengths, first, seed)

    return LongestBatchFirstTrainer
