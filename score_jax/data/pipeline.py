"""Batching: per-host shards of reproducible global batches, flips, and background prefetch.

The global order is a function of (seed, epoch) only: epoch e visits the examples in the order
`default_rng([seed, e]).permutation(N)` (index order without shuffling), global batch s of the
epoch is positions [s * B, (s + 1) * B) of that order, and host p of P reads only rows
[p * B / P, (p + 1) * B / P) of it. So the global batch -- and the flip of every row, drawn from
`default_rng([seed, e, s])` -- is the same for any number of hosts, every example is seen once
per epoch, and batch k can be produced directly (exact resume after preemption).

Each epoch ends with its partial batch dropped (drop_remainder) or padded to full size with
zero rows and a boolean "mask" [B_local] marking real rows (then every batch carries "mask").

Why not grain: its per-process sharding (ShardByJaxProcess) makes the global batch depend on
the number of hosts, which breaks "P hosts train exactly like one", and on this project's
2-core test machine grain's MapDataset was slower: 2.8-4.4k img/s (1-8 read threads) against
7.3k img/s here for PNG-decoded 32x32 tfds data (batch 128), and 29k against 149k img/s for
in-memory arrays, where this pipeline reads a batch with one fancy index.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Iterator

import numpy as np

from score_jax.data.preprocess import flip_left_right
from score_jax.data.source import Source

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """Which examples host `process_index` reads for each global batch."""

    num_examples: int
    batch_size: int
    shuffle: bool
    seed: int
    drop_remainder: bool = True
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self):
        if self.batch_size <= 0 or self.batch_size % self.process_count:
            raise ValueError(
                f"batch_size={self.batch_size} must be a positive multiple of the number of "
                f"processes ({self.process_count})."
            )
        if not 0 <= self.process_index < self.process_count:
            raise ValueError(
                f"process_index={self.process_index} not in [0, {self.process_count})."
            )
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"batch_size={self.batch_size} is larger than the {self.num_examples} examples "
                f"of the split and drop_remainder=True, so there is no batch at all."
            )

    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.process_count

    @property
    def steps_per_epoch(self) -> int:
        full, rest = divmod(self.num_examples, self.batch_size)
        return full + (rest > 0 and not self.drop_remainder)

    def _entropy(self, *more: int) -> list[int]:
        return [self.seed % (1 << 64), *more]

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The example indices [N] in the order epoch `epoch` visits them."""
        if not self.shuffle:
            return np.arange(self.num_examples)
        return np.random.default_rng(self._entropy(epoch)).permutation(self.num_examples)

    def host_positions(self, step: int) -> tuple[int, int]:
        """[start, stop) positions in the epoch order of this host's rows of global batch `step`."""
        start = step * self.batch_size + self.process_index * self.local_batch_size
        stop = min(start + self.local_batch_size, self.num_examples)
        return min(start, stop), stop

    def host_flips(self, epoch: int, step: int) -> np.ndarray:
        """Random horizontal flips bool [B_local] of this host's rows (same for any host count)."""
        flips = np.random.default_rng(self._entropy(epoch, step)).random(self.batch_size) < 0.5
        offset = self.process_index * self.local_batch_size
        return flips[offset : offset + self.local_batch_size]


def _pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    padding = np.zeros((rows - len(array), *array.shape[1:]), array.dtype)
    return np.concatenate([array, padding])


def host_batches(
    source: Source,
    plan: BatchPlan,
    *,
    random_flip: bool,
    num_epochs: int | None = None,
    start_step: int = 0,
) -> Iterator[Batch]:
    """This host's batches from global batch number `start_step` on (counted over all epochs)."""
    steps = plan.steps_per_epoch
    epoch, step = divmod(start_step, steps)
    order = plan.epoch_order(epoch)
    while num_epochs is None or epoch < num_epochs:
        start, stop = plan.host_positions(step)
        # A host whose rows all lie past the end of the data still reads one example so that
        # its padded batch has the right shape and dtype.
        valid = stop - start
        batch = source.read(order[start:stop] if valid else order[:1])
        if not valid:
            batch = {key: value[:0] for key, value in batch.items()}
        if random_flip:
            batch["image"] = flip_left_right(batch["image"], plan.host_flips(epoch, step)[:valid])
        if not plan.drop_remainder:
            rows = plan.local_batch_size
            batch = {key: _pad_rows(value[:valid], rows) for key, value in batch.items()}
            batch["mask"] = np.arange(rows) < valid
        yield batch
        step += 1
        if step == steps:
            epoch, step = epoch + 1, 0
            if num_epochs is None or epoch < num_epochs:
                order = plan.epoch_order(epoch)


_END = object()


def _put(items: queue.Queue, stop: threading.Event, item) -> bool:
    while not stop.is_set():
        try:
            items.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _produce(iterator: Iterator, items: queue.Queue, stop: threading.Event) -> None:
    # A plain function, not a method: the thread must not keep the Prefetcher alive, so that
    # dropping an unfinished iterator stops its thread (through __del__).
    try:
        for item in iterator:
            if not _put(items, stop, item):
                return
        _put(items, stop, _END)
    except BaseException as error:  # noqa: BLE001 -- handed to the consumer
        _put(items, stop, error)


class Prefetcher:
    """Runs an iterator on a background thread, keeping up to `size` items ready in a queue.

    Errors raised by the producer are re-raised in the consumer; `close()` (also on garbage
    collection) stops the thread.
    """

    def __init__(self, iterator: Iterator, size: int = 4):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_produce,
            args=(iterator, self._queue, self._stop),
            daemon=True,
            name="data-prefetch",
        )
        self._thread.start()

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self):
        if self._stop.is_set():
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._stop.set()
            raise StopIteration
        if isinstance(item, BaseException):
            self._stop.set()
            raise item
        return item

    def close(self) -> None:
        self._stop.set()

    def __del__(self):
        self._stop.set()


@dataclasses.dataclass(frozen=True)
class Dataset:
    """An iterable of this host's batches; each `iter()` starts again at `start_step`."""

    source: Source
    plan: BatchPlan
    random_flip: bool
    num_epochs: int | None = None
    start_step: int = 0
    prefetch: int = 16

    @property
    def num_examples(self) -> int:
        return self.plan.num_examples

    @property
    def steps_per_epoch(self) -> int:
        return self.plan.steps_per_epoch

    @property
    def local_batch_size(self) -> int:
        return self.plan.local_batch_size

    def __len__(self) -> int:
        if self.num_epochs is None:
            raise TypeError("A dataset repeated forever (num_epochs=None) has no length.")
        return self.num_epochs * self.plan.steps_per_epoch - self.start_step

    def iterate(self, start_step: int | None = None) -> Iterator[Batch]:
        """Batches from global batch `start_step` (default: the dataset's) on, prefetched."""
        batches = host_batches(
            self.source,
            self.plan,
            random_flip=self.random_flip,
            num_epochs=self.num_epochs,
            start_step=self.start_step if start_step is None else start_step,
        )
        return Prefetcher(batches, self.prefetch) if self.prefetch > 0 else batches

    def __iter__(self) -> Iterator[Batch]:
        return self.iterate()


def stack_batches(batches: Iterator[Batch], n: int) -> Iterator[Batch]:
    """Groups of n consecutive batches stacked on a new leading axis [n, B_local, ...]."""
    group: list[Batch] = []
    for batch in batches:
        group.append(batch)
        if len(group) == n:
            yield {key: np.stack([b[key] for b in group]) for key in group[0]}
            group = []
