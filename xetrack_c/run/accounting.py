"""Every spec of a batch accounted for: one final record each, whatever ends the batch.

:class:`Accounting` is the part of :class:`xetrack_c.run.batch.Batch` (and so of the
executor path's ``RemoteBatch``) that settles outcomes:

* :meth:`Accounting._settle` makes a result final: its one row of the experiments table
  (with what the function returned, :mod:`xetrack_c.run.result_data`), the progress bar;
  ``on_progress`` is called after it (until it raises once: that error stops the batch);
* with retries, every attempt is a row of the attempts table
  (:meth:`Accounting._record_attempt`);
* :meth:`Accounting._accounted` runs the batch with Ctrl-C held back while an outcome is
  being recorded (:meth:`Accounting.report` wraps the pool's ``on_done``) (:class:`xetrack_c.run.interrupts.InterruptGuard`), then gives every spec
  still without a final record one (:meth:`Accounting._account_for_all`): ``cancelled``,
  or the last failure of a task that waited for a retry; whatever escapes (Ctrl-C, an
  exception of ``on_progress``) carries the results as ``.results``;
* in a batch without ``db``, the ``log_metrics`` rows of each task come back in its
  ``ExperimentResult.metrics`` (:meth:`Accounting._metrics`).

It uses the batch's attributes (``specs``, ``ids``, ``options``, ``results``,
``attempts``, ``table``, ``progress``, ``log_dir``...) and its ``_result`` and
``_fingerprint``; :meth:`Accounting._init_accounting` adds its own.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, Dict, List, Optional

from xetrack_c import _core
from xetrack_c.run.interrupts import InterruptGuard
from xetrack_c.run.task_info import DEFAULT_METRICS_TABLE
from xetrack_c.run.tasks import target_of
from xetrack_c.run.types import ExperimentResult

__all__ = ["Accounting"]

#: Suffix of a script task's private metrics file in a batch without db.
METRICS_FILE = ".metrics.db"


class Accounting:
    """Mixin of the batches: final records, attempts, the closing sweep, metrics rows."""

    specs: List[Any]
    ids: List[str]
    options: Any
    results: List[Optional[ExperimentResult]]
    attempts: List[int]
    table: Any
    progress: Any
    done: int
    log_dir: Optional[str]
    _result: Callable[..., ExperimentResult]
    _fingerprint: Callable[[int], str]
    on_done: Callable[..., Any]

    def _init_accounting(self, count: int) -> None:
        self.final = [False] * count  # its final record is written (or not needed)
        self.attempts_recorded = [0] * count  # attempts with their attempts row
        self.waiting: set = set()  # indices waiting for a retry
        self.sinks: List[Any] = [None] * count  # log_metrics rows of a batch without db
        self.guard = InterruptGuard()
        self._progress_error: Optional[BaseException] = None

    # ------------------------------------------------------------------ one outcome
    def _settle(self, index: int, result: ExperimentResult) -> None:
        """Make ``result`` spec ``index``'s final outcome: its one experiments row."""
        self.results[index] = result
        self.final[index] = True
        self.waiting.discard(index)
        self.done += 1
        if self.table is not None:
            self._record(index, result)
        if self.progress is not None:
            self.progress.update(result.status, abandoned=_core.abandoned_threads())

    def _call_on_progress(self, total: int, result: ExperimentResult) -> None:
        """on_progress, until it raises once: that error then stops the batch."""
        if self.options.on_progress is None or self._progress_error is not None:
            return
        try:
            self.options.on_progress(self.done, total, result)
        except BaseException as exc:
            self._progress_error = exc
            raise

    def _record(self, index: int, result: ExperimentResult) -> None:
        spec = self.specs[index]
        kind, target = target_of(spec)
        self.table.record(
            experiment_id=result.experiment_id, name=spec.name, status=result.status,
            duration=result.duration, seed=result.seed, error_message=result.error_message,
            tags=spec.tags, config=spec.config, kind=kind, target=target,
            fingerprint=self._fingerprint(index), description=spec.description,
            script_args=spec.script_args, attempts=self.attempts[index],
            result=result.result if result.status == "completed" else None,
        )

    def _record_attempt(self, index: int, status: str, error: Optional[str],
                        duration: Optional[float]) -> None:
        """The attempts-table row of spec ``index``'s latest attempt (once), in a batch
        with db and retries."""
        attempt = self.attempts[index]
        if attempt <= self.attempts_recorded[index]:
            return
        self.attempts_recorded[index] = attempt
        if self.table is not None and getattr(self.options.retry, "retries", 0):
            self.table.record_attempt(self.ids[index], attempt, status, error, duration)

    # ------------------------------------------------------------------ the whole batch
    @contextlib.contextmanager
    def _accounted(self, allow: bool = True) -> Iterator[None]:
        """Run the batch's block with Ctrl-C held back while outcomes are recorded; then
        every spec gets its final record. What escapes carries ``.results``.

        ``allow``: Ctrl-C may land anywhere in the block except where a callback holds
        it back (:meth:`report`); False: only inside ``with self.guard.allow()``."""
        try:
            with self.guard:
                try:
                    if allow:
                        with self.guard.allow():
                            yield
                    else:
                        yield
                finally:
                    self._account_for_all()
        except BaseException as error:  # Ctrl-C, or on_progress raised
            try:
                error.results = self._finished_results()  # type: ignore[attr-defined]
            except AttributeError:  # an exception type with __slots__
                pass
            raise

    def report(self, position: int, code: int, value: Any, duration: float,
               tail: Optional[bytes]) -> Any:
        """The pool's on_done, with Ctrl-C held back until the outcome is recorded."""
        guard = self.guard
        guard.depth += 1
        try:
            verdict = self.on_done(position, code, value, duration, tail)
        finally:
            guard.depth -= 1
        if guard.pending:
            guard.raise_pending()
        return verdict

    def _account_for_all(self) -> None:
        """Give every spec without one its final record, whatever ended the batch (an
        exception of on_progress, Ctrl-C while a task waited for its retry...)."""
        for index in range(len(self.specs)):
            if self.final[index]:
                continue
            result = self.results[index]
            if index in self.waiting and result is not None:  # its last failure stands
                result.error_message = (result.error_message or "") + \
                    "\n(no further attempt: the batch stopped first)"
            else:
                result = self._result(index, "cancelled", "cancelled before it started", 0.0,
                                      None)
            self._settle(index, result)

    def _finished_results(self) -> List[ExperimentResult]:
        return [result if result is not None else self._result(index, "cancelled",
                                                               "cancelled before it started",
                                                               0.0, None)
                for index, result in enumerate(self.results)]

    # ------------------------------------------------------------------ metrics, no db
    def _metrics_file(self, index: int) -> str:
        """The file a script task's log_metrics writes in a batch without db."""
        return os.path.join(self.log_dir or "",
                            f"{index:05d}-{self.ids[index]}{METRICS_FILE}")

    def _metrics(self, index: int) -> List[Dict[str, Any]]:
        """The log_metrics rows of spec ``index``'s last attempt, in a batch without db."""
        rows, self.sinks[index] = self.sinks[index], None
        if self.specs[index].script_path is not None and self.log_dir is not None:
            from xetrack_c.run.result_data import metric_rows_from_file

            return metric_rows_from_file(self._metrics_file(index), DEFAULT_METRICS_TABLE)
        return list(rows or ())

    def _remove_metric_files(self) -> None:
        """The metrics files of scripts that never reported (a batch stopped early)."""
        for index, spec in enumerate(self.specs):
            if spec.script_path is not None:
                for suffix in ("", "-wal", "-shm"):
                    try:
                        os.unlink(self._metrics_file(index) + suffix)
                    except FileNotFoundError:
                        pass
