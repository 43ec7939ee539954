"""The device mesh and the placement of batches and state on it.

One 1-D mesh with axis "data" spans every device of every host (`jax.devices()`, ordered by
process), so host p's devices hold rows [p * B_local, (p + 1) * B_local) of the global batch.
Each host passes only its own rows; `host_batch_to_global` assembles the global jax.Array.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis "data" over `devices` (default: all devices of all hosts)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Shards dimension `batch_axis` over "data"; the other dimensions are whole on each device."""
    return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same full value on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """Rows of the global batch this host feeds; refuses sizes that do not split evenly."""
    n_devices, n_hosts = mesh.devices.size, jax.process_count()
    if global_batch_size % n_devices:
        raise ValueError(
            f"training.batch_size={global_batch_size} must be divisible by the number of "
            f"devices ({n_devices})."
        )
    return global_batch_size // n_hosts


def padded_batch_size(batch_size: int, mesh: Mesh, what: str = "training.batch_size") -> int:
    """The global batch the devices run: `batch_size` rounded up to a multiple of the devices
    in a single-process run (the extra rows are padding, weighted 0); several processes must
    split it evenly (each host reads its own rows, so padding would not sit at the end)."""
    n_devices, n_hosts = mesh.devices.size, jax.process_count()
    if n_hosts == 1:
        return -(-batch_size // n_devices) * n_devices
    if batch_size % n_devices:
        raise ValueError(
            f"config.{what}={batch_size} must be divisible by the number of devices "
            f"({n_devices}) in a run of {n_hosts} processes."
        )
    return batch_size


def pad_rows(batch: np.ndarray, rows: int, axis: int = 0) -> np.ndarray:
    """`batch` with zero rows appended along `axis` up to `rows`."""
    missing = rows - batch.shape[axis]
    if missing <= 0:
        return batch
    widths = [(0, 0)] * batch.ndim
    widths[axis] = (0, missing)
    return np.pad(batch, widths)


def host_batch_to_global(batch: Any, mesh: Mesh, batch_axis: int = 0) -> Any:
    """Host-local numpy pytree [..., B_local, ...] -> global jax.Arrays [..., B_global, ...].

    Every leaf is split along `batch_axis` over "data". In a single process this is a plain
    sharded device_put; across hosts each host contributes its own rows.
    """
    sharding = data_sharding(mesh, batch_axis)

    def to_global(x):
        x = np.asarray(x)
        shape = list(x.shape)
        shape[batch_axis] *= jax.process_count()
        return jax.make_array_from_process_local_data(sharding, x, tuple(shape))

    return jax.tree.map(to_global, batch)


def padded_batch_to_global(batch: Any, mesh: Mesh, batch_size: int, batch_axis: int = 0) -> Any:
    """host_batch_to_global of `batch` zero-padded to padded_batch_size(batch_size) rows (in a
    single process; several processes split `batch_size` evenly and never pad)."""
    rows = padded_batch_size(batch_size, mesh)
    if jax.process_count() > 1:
        return host_batch_to_global(batch, mesh, batch_axis)
    return host_batch_to_global(
        jax.tree.map(lambda x: pad_rows(np.asarray(x), rows, batch_axis), batch), mesh, batch_axis
    )


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a pytree (identical on every host) fully on every device of the mesh."""
    sharding = replicated(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree
    )


def prefetch_to_mesh(
    batches: Iterable[Any], mesh: Mesh, size: int = 2, batch_axis: int = 0
) -> Iterator[Any]:
    """Yields global sharded batches, keeping `size` transfers in flight ahead of the consumer."""
    queue: list[Any] = []
    iterator = iter(batches)
    for batch in iterator:
        queue.append(host_batch_to_global(batch, mesh, batch_axis))
        if len(queue) > size:
            yield queue.pop(0)
    yield from queue


def fetch_to_host(tree: Any) -> Any:
    """Numpy copies of (possibly multi-host) fully replicated arrays; other leaves as arrays."""
    return jax.tree.map(
        lambda x: np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x), tree
    )
