"""``run_multiple(executor=...)``: a batch on any ``concurrent.futures.Executor``-like object.

The driver (this process) submits one task per spec through ``executor.submit`` -- a
``dask.distributed.Client`` or ``client.get_executor()``, a submitit executor, a
``ProcessPoolExecutor`` -- and is the only process that writes the batch's database:
tasks ship the rows they log back with their outcome (:mod:`xetrack_c.run.remote_buffer`), and
the driver writes them, the experiment rows and the cache entries. Seeds, ids, resume
and the experiments table are the local pool's (:class:`xetrack_c.run.batch.Batch`).

What the driver decides: a task whose future has not finished ``spec.timeout`` seconds
after it was submitted is ``timeout`` (and cancelled); a script also stops itself on its
worker after ``spec.timeout`` seconds of running. A future that raises instead of
returning an outcome (a lost worker: Dask's ``KilledWorker``, a cancelled future, a
result that could not be sent) is ``failed`` with that exception in its message.
"""

from __future__ import annotations

import heapq
import os
import queue
import random
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from xetrack_c.run import child, remote_buffer, remote_dask, remote_submitit
from xetrack_c.run.batch import GRACE_SECONDS, Batch
from xetrack_c.run.result_data import metric_rows_from_chunks
from xetrack_c.run.task_cache import CachedTasks
from xetrack_c.run.tasks import describe_exception
from xetrack_c.run.types import BatchOptions, ExperimentResult, ExperimentSpec

#: Seconds before the first retry; each further retry waits twice as long (at most
#: RETRY_MAX_DELAY), times a random factor in [0.5, 1.5).
RETRY_BASE_DELAY = 0.1
RETRY_MAX_DELAY = 30.0
#: Seconds between two done() checks of futures that cannot call back (submitit's jobs).
POLL_INTERVAL = 1.0
#: On Dask, seconds between two done() checks of the futures in flight (more when many are:
#: DASK_POLL_PER_FUTURE seconds per future, so that a check, about 1 µs per future, takes
#: about 1% of the driver).
DASK_POLL_INTERVAL = 0.005
DASK_POLL_PER_FUTURE = 1e-4
#: Extra seconds the driver waits for a script that enforces its own timeout remotely.
SCRIPT_SLACK = GRACE_SECONDS + 3.0
#: On Dask, seconds a finished task's outcome may wait to be gathered with those that finish
#: after it (one client.gather for all of them, instead of one per handful of tasks).
GATHER_DELAY = 0.1


def run_on_executor(specs: List[ExperimentSpec], options: BatchOptions, executor: Any, *,
                    retries: int = 0, retry_on: Sequence[type] = (),
                    cache: Optional[str] = None, parallel: Optional[int] = None,
                    cache_key: Union[str, bytes, bool, None] = None) -> List[ExperimentResult]:
    """Run checked specs on ``executor``; one result per spec, in input order.

    Args:
        specs: Validated specs.
        options: The batch options, checked.
        executor: An object with ``submit(fn, *args)`` returning a future with
            ``add_done_callback``, ``result`` and ``cancel``.
        retries: Extra attempts for a failed task (see :func:`xetrack_c.run_multiple`).
        retry_on: Exception types to retry; empty: any failure.
        cache: Result-cache directory of function tasks, or None.
        parallel: Most tasks in flight at once; None submits every task at once.
        cache_key: The key that authenticates the cache's entries (see TaskCache).
    """
    if not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor must have a submit(fn, *args) method (a concurrent.futures "
                        f"Executor, a dask.distributed Client...), not {type(executor).__name__}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, got {retries!r}")
    retry_on = tuple(retry_on or ())
    if not all(isinstance(kind, type) and issubclass(kind, BaseException) for kind in retry_on):
        raise TypeError("retry_on must be a sequence of exception classes, e.g. (OSError,)")
    return RemoteBatch(specs, options, executor, retries, retry_on, cache, parallel,
                       cache_key).run()


class _Flight:
    """One submitted attempt."""

    __slots__ = ("future", "attempt", "stopping")

    def __init__(self, future: Any, attempt: int) -> None:
        self.future = future
        self.attempt = attempt
        self.stopping: Optional[str] = None  # why the driver cancelled it


class RemoteBatch(CachedTasks, Batch):
    """A batch whose tasks run on an executor; the driver records everything."""

    def __init__(self, specs: List[ExperimentSpec], options: BatchOptions, executor: Any,
                 retries: int, retry_on: Tuple[type, ...], cache: Optional[str],
                 parallel: Optional[int], cache_key: Union[str, bytes, bool, None] = None) -> None:
        super().__init__(specs, options)
        self.executor = executor
        self.retries = retries
        self.retry_on = retry_on
        self.cache_dir = cache
        self._cache_key_arg = cache_key  # handed to TaskCache; never shown
        self.window = parallel if parallel else len(specs)
        self.dask = remote_dask.is_dask_client(executor)
        self.submitit = remote_submitit.is_submitit_executor(executor)
        self.writer = remote_buffer.ChunkWriter(options.db)
        self.events: "queue.SimpleQueue[Tuple[int, int, Any]]" = queue.SimpleQueue()
        self.flights: Dict[int, _Flight] = {}
        self.deadlines: List[Tuple[float, int, int]] = []
        self.retry_at: List[Tuple[float, int, int]] = []
        self.stopped: Optional[str] = None
        self.polled: List[Tuple[int, int, Any]] = []  # futures watched through done()
        self.poll_at: Optional[float] = None  # when to check them next
        # Finished attempts whose outcome is not fetched yet (Dask: gathered together), and
        # when the oldest of them must be.
        self.finished: List[Tuple[int, _Flight, Any]] = []
        self.fetch_by: Optional[float] = None
        self.coalesce = self.dask and not options.fail_fast \
            and options.max_consecutive_failures is None
        self.total = 0
        self._blobs: Dict[int, bytes] = {}
        self._cache: Any = None

    # ------------------------------------------------------------------ submitting
    def _pickle_functions(self, todo: List[int]) -> None:
        """Pickle every function once and check the scripts' configs, before anything is
        submitted."""
        try:
            import cloudpickle
        except ImportError:
            raise ImportError("run_multiple(executor=...) ships tasks with cloudpickle, which "
                              "is not installed: pip install cloudpickle (or "
                              "'xetrack_c[dask]')") from None

        for index in todo:
            function = self.specs[index].function
            if function is None:
                self._args(index, 0)  # a script's config must have a JSON form
                continue
            if id(function) in self._blobs:
                continue
            try:
                self._blobs[id(function)] = cloudpickle.dumps(function)
            except Exception as exc:  # noqa: BLE001 - whatever pickling raises, say so
                raise ValueError(
                    f"Invalid ExperimentSpec at index {index}: its function cannot be pickled "
                    f"for the executor ({type(exc).__name__}: {exc}); define it at module "
                    "level or let it capture only picklable values"
                ) from exc

    def _args(self, index: int, attempt: int) -> Tuple[Any, ...]:
        import cloudpickle

        from xetrack_c.run import remote_task

        spec = self.specs[index]
        seed = self.seeds[index]
        if spec.function is not None:
            task = (self.ids[index], spec.config, seed, self.options.db, spec.name,
                    self.modes[index], self.retry_on, attempt)
            return (remote_task.run_function_task, self._blobs[id(spec.function)],
                    cloudpickle.dumps(task))
        try:
            env = child.child_environment(self.ids[index], spec.config, seed,
                                           self.options.db, spec.name)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Invalid ExperimentSpec at index {index}: {exc}") from exc
        argv = [os.path.abspath(os.fspath(spec.script_path)), *spec.script_args]
        destination = remote_buffer.BATCH if self.options.db else remote_buffer.STANDALONE
        return (remote_task.run_script_task, argv, env, spec.timeout, GRACE_SECONDS,
                os.getcwd(), destination, self.retry_on, attempt)

    def _submit(self, batch: List[Tuple[int, int]]) -> None:
        """Submit attempts ``(index, attempt)``; on Dask, in one ``client.map`` per kind."""
        prepared = []
        for index, attempt in batch:
            try:
                function, *args = self._args(index, attempt)
            except Exception as exc:  # noqa: BLE001 - a config that cannot travel fails its task
                if isinstance(exc, ValueError) and str(exc).startswith("Invalid ExperimentSpec"):
                    raise
                self._finish(index, "failed", f"its config cannot be pickled for the executor "
                             f"({type(exc).__name__}: {exc})", 0.0, None, [])
                continue
            prepared.append((index, attempt, function, args))
        if self.dask:
            futures = remote_dask.submit(self.executor, [
                (function, args, f"xetrack_c-{self.specs[index].name or 'task'}-"
                                 f"{self.ids[index]}-{attempt}")
                for index, attempt, function, args in prepared])
        elif self.submitit:
            futures = remote_submitit.submit(
                self.executor, [(function, args) for _, _, function, args in prepared])
        else:
            futures = [self.executor.submit(function, *args) for _, _, function, args in prepared]
        events = self.events
        now = time.monotonic()
        for (index, attempt, _, _), future in zip(prepared, futures, strict=True):
            self.flights[index] = _Flight(future, attempt)
            self.attempts[index] = attempt + 1
            timeout = self.specs[index].timeout
            if timeout is not None:
                slack = SCRIPT_SLACK if self.specs[index].script_path is not None else 0.0
                heapq.heappush(self.deadlines, (now + timeout + slack, index, attempt))
            if not self.dask and callable(getattr(future, "add_done_callback", None)):
                future.add_done_callback(
                    lambda done, index=index, attempt=attempt: events.put((index, attempt, done)))
            else:
                # submitit's Job: only done() says it has finished. A Dask future can call
                # back, but each callback costs a message to the client's event loop and a
                # hop through Dask's callback thread; checking done() of every future in
                # flight every DASK_POLL_INTERVAL costs the driver less.
                self.polled.append((index, attempt, future))
        if self.polled and self.poll_at is None:
            self.poll_at = now + self._poll_interval()

    def _poll_interval(self) -> float:
        if not self.dask:
            return POLL_INTERVAL
        return max(DASK_POLL_INTERVAL, len(self.polled) * DASK_POLL_PER_FUTURE)

    def _poll(self) -> None:
        """Queue the outcome of the watched futures that are done."""
        still = []
        for entry in self.polled:
            flight = self.flights.get(entry[0])
            if flight is None or flight.attempt != entry[1]:
                continue
            if remote_submitit.job_done(entry[2]):
                self.events.put(entry)
            else:
                still.append(entry)
        self.polled = still

    # ------------------------------------------------------------------ outcomes
    def _finish(self, index: int, status: str, error: Optional[str], duration: float,
                value: Any, chunks: List[remote_buffer.Chunk], started: bool = True) -> None:
        metrics: List[Dict[str, Any]] = []
        if chunks and self.options.db is None:  # log_metrics rows: to the result, no file
            metrics = metric_rows_from_chunks(chunks)
        elif chunks:
            self.writer.write(chunks)
        if status == "completed" and self.cache_dir is not None \
                and self.specs[index].function is not None:
            self._cache_fill(index, value)
        self._record_attempt(index, status, error, duration)  # of the attempt that ran
        result = self._result(index, status, error, duration,
                              value if status == "completed" else None)
        result.metrics = metrics
        self._settle(index, result)
        self._call_on_progress(self.total, result)
        if status == "completed":
            self.consecutive_failures = 0
            return
        if not started:
            return
        self.consecutive_failures += 1
        limit = self.options.max_consecutive_failures
        if self.options.fail_fast:
            self._stop("fail_fast: an experiment did not complete")
        elif limit is not None and self.consecutive_failures >= limit:
            self._stop(f"max_consecutive_failures={limit} reached")

    def _outcome(self, index: int, flight: _Flight, got: Tuple[bool, Any]) -> None:
        """Handle what the future of spec ``index``'s current attempt gave."""
        returned, payload = got
        if returned:
            status, value, error, duration, chunks, retryable = payload
        else:
            exc = payload
            if flight.stopping is not None:
                self._finish(index, "cancelled", f"cancelled while running: {flight.stopping}",
                             0.0, None, [], started=False)
                return
            status, value, duration, chunks = "failed", None, 0.0, []
            error = ("the executor did not return the task's outcome (its worker may have "
                     f"died): {describe_exception(exc)}")
            retryable = not self.retry_on or isinstance(exc, self.retry_on)
        if status == "failed" and retryable and flight.attempt < self.retries \
                and self.stopped is None:
            self._record_attempt(index, status, error, duration)
            self.waiting.add(index)
            self.results[index] = self._result(index, status, error, duration, None)
            delay = min(RETRY_MAX_DELAY, RETRY_BASE_DELAY * 2 ** flight.attempt)
            delay *= random.uniform(0.5, 1.5)
            heapq.heappush(self.retry_at, (time.monotonic() + delay, index, flight.attempt + 1))
            return  # the failed attempt's rows are dropped: only the last attempt's count
        if flight.attempt and error:
            error = f"{error}\n(attempt {flight.attempt + 1} of {self.retries + 1})"
        self._finish(index, status, error, duration, value, chunks)

    def _stop(self, why: str) -> None:
        """Start nothing more; cancel what the executor can still cancel."""
        if self.stopped is not None:
            return
        self.stopped = why
        for flight in list(self.flights.values()):
            flight.stopping = why
            try:
                flight.future.cancel()
            except Exception:  # noqa: BLE001 - best effort: it then runs to its end
                pass
        while self.retry_at:
            _, index, attempt = heapq.heappop(self.retry_at)
            self._finish(index, "failed", f"not retried: {why}", 0.0, None, [], started=False)

    def _expire(self, now: float) -> None:
        """Mark the attempts past their deadline ``timeout`` and cancel them."""
        while self.deadlines and self.deadlines[0][0] <= now:
            _, index, attempt = heapq.heappop(self.deadlines)
            flight = self.flights.get(index)
            if flight is None or flight.attempt != attempt:
                continue
            del self.flights[index]
            try:
                flight.future.cancel()
            except Exception:  # noqa: BLE001 - it may run on; its result is ignored
                pass
            timeout = self.specs[index].timeout or 0.0
            self._finish(index, "timeout", f"timed out after {timeout:g}s (its timeout, counted "
                         "from its submission to the executor); cancelled", timeout, None, [])

    # ------------------------------------------------------------------ running
    def run(self) -> List[ExperimentResult]:
        """Run the batch; the results in input order."""
        if self.options.db is not None:
            from xetrack_c.run.experiments import ExperimentTable

            self.table = ExperimentTable(self.options.db, self.options.table)
        try:
            skip = self._resumed()
            todo = [index for index in range(len(self.specs)) if index not in skip]
            self.total = len(todo)
            if todo and self._show_progress():
                from xetrack_c.run.progress import Progress

                self.progress = Progress(len(todo))
            self._pickle_functions(todo)
            # Ctrl-C lands only while the loop waits for an outcome; whatever ends the
            # batch, every spec gets its final record.
            with self._accounted(allow=False):
                self._run_loop(todo)
        finally:
            self._close()
            self.writer.close()
            if self._cache is not None:
                self._cache.close()
        return self._finished_results()

    def _run_loop(self, todo: List[int]) -> None:
        try:
            self._loop(self._skip_cached(todo))
        except BaseException as exc:  # Ctrl-C, or on_progress raised: stop the running ones
            why = "Ctrl-C" if isinstance(exc, KeyboardInterrupt) \
                else f"on_progress raised {type(exc).__name__}"
            self._stop(why)
            try:
                self._fetch()  # finished before the stop: their outcomes count
            except BaseException:  # noqa: BLE001 - the exception that stopped the batch is raised
                pass
            for index, flight, _ in self.finished:  # finished, but not fetched
                self.flights[index] = flight
            self.finished.clear()
            for index in list(self.flights):
                del self.flights[index]
                self._finish(index, "cancelled", f"cancelled while running ({why})", 0.0,
                             None, [], started=False)
            raise

    def _loop(self, todo: List[int]) -> None:
        pending = iter(todo)
        left = len(todo)
        batch_deadline = None
        if self.options.timeout is not None:
            batch_deadline = time.monotonic() + self.options.timeout
        while True:
            now = time.monotonic()
            if batch_deadline is not None and now >= batch_deadline:
                self._fetch()  # finished in time
                self._batch_timeout()
                return
            batch: List[Tuple[int, int]] = []
            while self.stopped is None and len(self.flights) + len(batch) < self.window:
                if self.retry_at and self.retry_at[0][0] <= now:
                    _, index, attempt = heapq.heappop(self.retry_at)
                elif left:
                    index, attempt, left = next(pending), 0, left - 1
                else:
                    break
                batch.append((index, attempt))
            if batch:
                self._submit(batch)
            if not self.flights and self.finished:
                self._fetch()  # nothing else to wait for; may queue retries
                continue
            if not self.flights and not self.retry_at and (not left or self.stopped):
                return
            wake = [when for when in (batch_deadline,
                                      self.deadlines[0][0] if self.deadlines else None,
                                      self.retry_at[0][0] if self.retry_at else None,
                                      self.poll_at if self.polled else None,
                                      self.fetch_by)
                    if when is not None]
            try:
                with self.guard.allow():
                    events = [self.events.get(timeout=max(0.0, min(wake) - now)
                                              if wake else None)]
            except queue.Empty:
                now = time.monotonic()
                self._expire(now)
                if self.polled and now >= (self.poll_at or now):
                    self._poll()
                    self.poll_at = time.monotonic() + self._poll_interval()
                if self.fetch_by is not None and now >= self.fetch_by:
                    self._fetch()
                continue
            while True:  # take every outcome already there: Dask gathers them at once
                try:
                    events.append(self.events.get_nowait())
                except queue.Empty:
                    break
            for index, attempt, future in events:
                flight = self.flights.get(index)
                if flight is None or flight.attempt != attempt:
                    continue  # an attempt already marked timeout or cancelled
                del self.flights[index]  # its slot in the window is free
                self.finished.append((index, flight, future))
            if self.finished and self.fetch_by is None:
                self.fetch_by = time.monotonic() + GATHER_DELAY
            if not self.coalesce or (self.fetch_by is not None
                                     and time.monotonic() >= self.fetch_by):
                self._fetch()

    def _fetch(self) -> None:
        """Fetch and record the outcomes of the finished attempts, in one gather on Dask.

        On Dask they wait up to GATHER_DELAY for the ones that finish after them (not with
        fail_fast or max_consecutive_failures, which must see each failure at once): a
        gather costs a round trip through the scheduler and the workers, whatever it
        fetches. A finished attempt is out of ``flights``, so its deadline no longer
        applies and its window slot is taken by the next task meanwhile.
        """
        done, self.finished, self.fetch_by = self.finished, [], None
        if not done:
            return
        try:
            fetched = remote_dask.fetch(self.executor if self.dask else None,
                                        [future for _, _, future in done])
        except BaseException:
            self.finished = done + self.finished  # still to record
            raise
        error = None
        for (index, flight, _), got in zip(done, fetched, strict=True):
            try:
                self._outcome(index, flight, got)
            except BaseException as exc:  # on_progress raised: record the others first
                error = error or exc
        if error is not None:
            raise error

    def _batch_timeout(self) -> None:
        why = f"the batch timeout of {self.options.timeout:g}s passed"
        self.stopped = why
        for index, flight in list(self.flights.items()):
            try:
                flight.future.cancel()
            except Exception:  # noqa: BLE001 - it may run on; its result is ignored
                pass
            self._finish(index, "timeout", f"timed out: {why}; cancelled", 0.0, None, [])
        self.flights.clear()
        while self.retry_at:
            _, index, _ = heapq.heappop(self.retry_at)
            self._finish(index, "failed", f"not retried: {why}", 0.0, None, [], started=False)
