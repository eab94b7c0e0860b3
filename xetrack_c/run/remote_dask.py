"""What ``run_multiple(executor=client)`` does differently on a ``dask.distributed`` Client:
submit a batch of tasks in one ``client.map`` and gather finished outcomes in one call.
Nothing here imports dask."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple


def is_dask_client(executor: Any) -> bool:
    """True for a ``distributed.Client`` (not ``client.get_executor()``)."""
    kind = type(executor)
    return kind.__name__ == "Client" and kind.__module__.split(".")[0] == "distributed"


def submit(client: Any, tasks: Sequence[Tuple[Any, Sequence[Any], str]]) -> List[Any]:
    """Futures of ``(function, args, key)`` tasks, in order: one ``client.map`` per function."""
    futures: List[Any] = [None] * len(tasks)
    kinds: Dict[Any, List[int]] = {}
    for position, (function, _, _) in enumerate(tasks):
        kinds.setdefault(function, []).append(position)
    for function, positions in kinds.items():
        columns = zip(*(tasks[position][1] for position in positions), strict=True)
        keys = [tasks[position][2] for position in positions]
        mapped = client.map(function, *columns, key=keys, pure=False)
        for position, future in zip(positions, mapped, strict=True):
            futures[position] = future
    return futures


def fetch(client: Optional[Any], futures: Sequence[Any]) -> List[Tuple[bool, Any]]:
    """``(True, value)`` or ``(False, exception)`` of finished futures; with a Dask
    ``client``, the finished ones are gathered in one call."""
    got: List[Optional[Tuple[bool, Any]]] = [None] * len(futures)
    if client is not None:
        ready = [i for i, future in enumerate(futures) if future.status == "finished"]
        if len(ready) > 1:
            try:
                values = client.gather([futures[i] for i in ready])
            except Exception:  # noqa: BLE001 - fetched one by one below
                pass
            else:
                for i, value in zip(ready, values, strict=True):
                    got[i] = (True, value)
    for i, future in enumerate(futures):
        if got[i] is None:
            try:
                got[i] = (True, future.result())
            except BaseException as exc:  # noqa: BLE001 - the outcome of that task
                got[i] = (False, exc)
    return got  # type: ignore[return-value]
