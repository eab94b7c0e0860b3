"""One ``run_multiple`` batch: builds the C pool's tasks, turns what the pool reports into
:class:`ExperimentResult` objects, records them and shows progress.

Function tasks run on the pool's threads (``call_function``) or, with
``backend="process"``, as pickled payloads on its worker processes (:mod:`xetrack_c.run.process_tasks`).
A task that fails in a way the retry policy accepts is handed back to the pool with a delay
(``on_done`` returns it) and reported again when its next attempt ends.

Script output goes to ``<tmp>/xetrack_c-run-*/NNNNN-<id>.out|.err``. The files of the
experiments that completed are deleted when the batch ends, and the folder with them when
nothing else is left; the files of the others are kept and named in their error message.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from xetrack_c import _core
from xetrack_c.run import child
from xetrack_c.run import process_tasks as procs
from xetrack_c.run.accounting import Accounting
from xetrack_c.run.child import DEFAULT_METRICS_TABLE, TaskInfo, current_task
from xetrack_c.run.tasks import (
    call_in_mode,
    call_mode,
    describe_exception,
    signal_name,
    stderr_tail,
    target_of,
)
from xetrack_c.run.types import BatchOptions, ExperimentResult, ExperimentSpec
from xetrack_c.run.workers import worker_state
from xetrack_c.seeding import derive_seed

#: Status names by the pool's status code (4: the script could not be started; 5: a
#: function task not started because too many of the batch's threads are stuck).
STATUS_NAMES = ("completed", "failed", "timeout", "cancelled", "failed", "cancelled")
#: The pool's code for a function task it refused to start (see ``_error``).
REFUSED = 5
#: Seconds between SIGTERM and SIGKILL for a script that must stop.
GRACE_SECONDS = 2.0
#: The variables child_environment sets (never inherited from this process).
_CHILD_VARIABLES = frozenset(
    (child.XETRACK_C_EXPERIMENT_ID, child.XETRACK_C_CONFIG, child.XETRACK_C_SEED,
     child.XETRACK_C_DB, child.XETRACK_C_EXPERIMENT_NAME, child.XETRACK_C_METRICS_TABLE)
)


class Batch(Accounting):
    """The specs of one call, their ids and seeds, and the results as they come in."""

    def __init__(self, specs: List[ExperimentSpec], options: BatchOptions) -> None:
        self.specs = specs
        self.options = options
        count = len(specs)
        ids = os.urandom(4 * count).hex()
        self.ids = [ids[8 * i: 8 * i + 8] for i in range(count)]
        self.seeds = [self._seed(spec, index) for index, spec in enumerate(specs)]
        self.results: List[Optional[ExperimentResult]] = [None] * count
        modes: Dict[Any, Optional[Tuple[str, ...]]] = {}
        self.modes = [None if spec.function is None else call_mode(spec.function, modes)
                      for spec in specs]
        self.order: List[int] = []  # spec index of each pool task
        self.log_dir: Optional[str] = None
        self.table: Any = None
        self.progress: Any = None
        self.done = 0
        self.consecutive_failures = 0
        self.attempts = [0] * count
        self._init_accounting(count)
        self.process = options.backend == "process"
        self._payloads: Optional[procs.Payloads] = None
        self._init_token = object()  # marks the worker threads that ran worker_init

    # ------------------------------------------------------------------ seeds
    def _seed(self, spec: ExperimentSpec, index: int) -> int:
        if spec.seed is not None:
            return spec.seed
        policy = self.options.seed_policy
        if policy is None:
            return derive_seed("run_multiple", spec.name or "", index)
        if hasattr(policy, "derive_seed"):
            return policy.derive_seed(spec.group or "run_multiple",
                                      spec.name or f"spec-{index}", index)
        seed = policy(spec, index)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**32 - 1:
            raise ValueError(f"Invalid ExperimentSpec at index {index}: seed_policy returned "
                             f"{seed!r}; it must return an int in [0, 2**32 - 1]")
        return seed

    # ------------------------------------------------------------------ function tasks
    def _worker_init(self) -> None:
        """Run worker_init once on this worker thread; raise again if it failed there."""
        state = getattr(worker_state, "init", None)
        if state is None or state[0] is not self._init_token:
            error = None
            try:
                self.options.worker_init()
            except Exception as exc:
                error = exc
            state = worker_state.init = (self._init_token, error)
        if state[1] is not None:
            raise RuntimeError(f"worker_init failed on this worker: "
                               f"{type(state[1]).__name__}: {state[1]}") from state[1]

    def call_function(self, index: int) -> Any:
        """Run spec ``index``'s function on a worker (the pool calls this with the GIL)."""
        if self.options.worker_init is not None:
            self._worker_init()
        spec = self.specs[index]
        mode = self.modes[index]
        config = spec.config
        sink = None
        if self.options.db is None:
            sink = self.sinks[index] = []  # log_metrics rows come back in the result
        # What child.task_context does, without re-checking values checked already.
        token = current_task.set(TaskInfo(self.ids[index], config, self.seeds[index],
                                           self.options.db, spec.name, DEFAULT_METRICS_TABLE,
                                           sink, abandoned=_core.abandon_flag()))
        try:
            return call_in_mode(spec.function, mode, config, self.seeds[index])
        finally:
            current_task.reset(token)

    # ------------------------------------------------------------------ building tasks
    def _script_task(self, index: int, base_env: List[str]) -> tuple:
        spec = self.specs[index]
        if self.log_dir is None:
            self.log_dir = tempfile.mkdtemp(prefix="xetrack_c-run-")
        # Without db, log_metrics writes a private file, read back when the script ends.
        db = self.options.db if self.options.db is not None else self._metrics_file(index)
        try:
            extra = child.child_environment(self.ids[index], spec.config, self.seeds[index],
                                             db, spec.name)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Invalid ExperimentSpec at index {index}: {exc}") from exc
        stem = os.path.join(self.log_dir, f"{index:05d}-{self.ids[index]}")
        argv = [sys.executable, os.path.abspath(os.fspath(spec.script_path)), *spec.script_args]
        env = base_env + [f"{key}={value}" for key, value in extra.items()]
        timeout = float(spec.timeout or 0.0)
        if self.options.launcher == "spawn":
            return (argv, env, None, stem + ".out", stem + ".err", timeout)
        request = json.dumps({
            "argv": [str(arg) for arg in argv[1:]],
            "env": dict(item.split("=", 1) for item in env),
            "cwd": os.getcwd(), "stdout": stem + ".out", "stderr": stem + ".err",
        }).encode()
        return (argv, env, None, stem + ".out", stem + ".err", timeout, request)

    def _payload(self, index: int) -> bytes:
        """The pickled call of spec ``index`` for a worker process."""
        if self._payloads is None:
            self._payloads = procs.Payloads()
        spec = self.specs[index]
        try:
            return self._payloads.payload(spec.function, spec.config, self.seeds[index],
                                          self.modes[index], self.ids[index], self.options.db,
                                          spec.name)
        except ValueError as exc:
            raise ValueError(f"Invalid ExperimentSpec at index {index}: {exc}") from None

    def _tasks(self, skip: set) -> List[tuple]:
        base_env: Optional[List[str]] = None
        call = self.call_function
        tasks = []
        for index, spec in enumerate(self.specs):
            if index in skip:
                continue
            self.order.append(index)
            if spec.function is not None:
                timeout = float(spec.timeout or 0.0)
                if self.process:
                    tasks.append((self._payload(index), timeout))
                else:
                    tasks.append((call, index, timeout))
                continue
            if base_env is None:
                base_env = [f"{key}={value}" for key, value in os.environ.items()
                            if key not in _CHILD_VARIABLES]
            tasks.append(self._script_task(index, base_env))
        return tasks

    def _fingerprint(self, index: int) -> str:
        from xetrack_c.run.experiments import fingerprint

        spec = self.specs[index]
        return fingerprint(target_of(spec)[1], spec.config, self.seeds[index])

    def _resumed(self) -> set:
        """Indices of specs that already completed in the experiments table."""
        if not self.options.resume:
            return set()
        done = self.table.completed_fingerprints()
        skip = {index for index in range(len(self.specs)) if self._fingerprint(index) in done}
        for index in skip:  # its final record is the completed row found there
            self.results[index] = self._result(index, "skipped", None, 0.0, None)
            self.final[index] = True
        return skip

    # ------------------------------------------------------------------ results
    def _result(self, index: int, status: str, error: Optional[str], duration: float,
                value: Any) -> ExperimentResult:
        return ExperimentResult(self.ids[index], status, error, duration, self.specs[index].name,
                                value, self.seeds[index])

    def _error(self, index: int, code: int, value: Any, duration: float,
               tail: Optional[bytes]) -> Optional[str]:
        spec = self.specs[index]
        if code == 0:
            return None
        if code == REFUSED:
            return (f"not started: {value} threads of this batch (its limit, one per worker) "
                    "are stuck in function tasks it stopped waiting for, so it starts no "
                    "more on threads; a thread cannot be killed -- run tasks that can hang "
                    "with backend=\"process\", which kills them")
        abandoned = ""  # the exception of a call the pool abandoned says so
        if isinstance(value, (_core.TaskTimeout, _core.TaskCancelled)) and value.args:
            abandoned = f"; {value}"
        if code == 3:
            if value is None:
                return "cancelled before it started"
            return "cancelled while running (Ctrl-C or a stopped batch)" + abandoned
        if code == 2:
            if spec.timeout is not None and duration >= spec.timeout:
                what = f"timed out after {spec.timeout:g}s (its timeout)"
            elif self.options.timeout is not None:
                what = f"timed out: the batch timeout of {self.options.timeout:g}s passed"
            else:
                what = "timed out: the batch running this one inside a task was stopped"
            if spec.script_path is not None:
                what += "; the script was stopped (SIGTERM, then SIGKILL)"
            elif self.process:
                what += "; its worker process was stopped (SIGTERM, then SIGKILL) and replaced"
            return what + abandoned + stderr_tail(tail)
        if spec.function is not None:
            if self.process and isinstance(value, int):
                return procs.death(value)
            return describe_exception(value) if isinstance(value, BaseException) else str(value)
        if code == 4:
            return str(value)
        how = f"exit code {value}" if value >= 0 else f"killed by {signal_name(-value)}"
        message = f"script {spec.script_path} failed: {how}" + stderr_tail(tail)
        stem = os.path.join(self.log_dir or "", f"{index:05d}-{self.ids[index]}")
        return message + f"\n(full output: {stem}.out, {stem}.err)"

    def _outcome(self, index: int, code: int, value: Any, duration: float,
                 tail: Optional[bytes]) -> Tuple[str, Optional[str], Any, bool]:
        """(status, error message, result, worth another attempt) of one report."""
        spec = self.specs[index]
        policy = self.options.retry
        if code == 0 and self.process and spec.function is not None:
            outcome = procs.decode_reply(value)
            self.sinks[index] = outcome.metrics
            retry = outcome.status == "failed" and outcome.type_names != () \
                and policy.matches(outcome.exception, outcome.type_names)
            return outcome.status, outcome.error, outcome.result, retry
        status = STATUS_NAMES[code]
        error = self._error(index, code, value, duration, tail)
        result_value = value if code == 0 and spec.function is not None else None
        retry = False
        if code == 1 and spec.function is not None and isinstance(value, BaseException):
            retry = policy.matches(value)
        elif code == 2 and spec.timeout is not None and duration >= spec.timeout:
            retry = policy.timeout_matches()
        return status, error, result_value, retry

    def on_done(self, position: int, code: int, value: Any, duration: float,
                tail: Optional[bytes]) -> Any:
        """Called by the pool for each report: True asks it to start no new task, a float
        to run this one again after that many seconds."""
        index = self.order[position]
        started = not (code == 3 and value is None) and code != REFUSED
        if not started and self.attempts[index] and self.results[index] is not None:
            # Waiting for a retry when the batch stopped: its last failure is its result.
            result = self.results[index]
            result.error_message = (result.error_message or "") + \
                "\n(no further attempt: the batch stopped first)"
            return self._finish(index, result, False)
        status, error, result_value, retry = self._outcome(index, code, value, duration, tail)
        if started:
            self.attempts[index] += 1
            self._record_attempt(index, status, error, duration)
        attempts = self.attempts[index]
        if attempts > 1 and error is not None:
            error += f"\n(attempt {attempts} of {self.options.retry.retries + 1})"
        result = self._result(index, status, error, duration, result_value)
        if self.options.db is None:
            result.metrics = self._metrics(index)
        if retry and attempts <= self.options.retry.retries:
            self.results[index] = result  # kept if no further attempt runs
            self.waiting.add(index)
            return self.options.retry.delay(attempts)
        return self._finish(index, result, started)

    def _finish(self, index: int, result: ExperimentResult, started: bool) -> bool:
        status = result.status
        self._settle(index, result)
        self._call_on_progress(len(self.order), result)
        if status == "completed":
            self.consecutive_failures = 0
            return False
        if status == "cancelled" and not started:
            return False  # never started: not a failure of its own
        self.consecutive_failures += 1
        limit = self.options.max_consecutive_failures
        return self.options.fail_fast or (limit is not None and self.consecutive_failures >= limit)

    # ------------------------------------------------------------------ running
    def dry_run(self) -> List[ExperimentResult]:
        """Every spec as ``skipped``, with its id and seed; nothing runs or is written.

        With ``backend="process"`` every function and config is pickled as for the run,
        so what a worker process could not receive is refused here too."""
        if self.process:
            for index, spec in enumerate(self.specs):
                if spec.function is not None:
                    self._payload(index)
            if self.options.worker_init is not None:
                try:
                    procs.dumps(self.options.worker_init, "worker_init")
                except ValueError as exc:
                    raise ValueError(f"run_multiple: {exc}") from None
        return [self._result(index, "skipped", None, 0.0, None) for index in range(len(self.specs))]

    def _show_progress(self) -> bool:
        if self.options.progress is not None:
            return self.options.progress
        if current_task.get() is not None:
            return False  # a batch inside a task: the outer batch shows progress
        from xetrack_c.run.progress import shown_by_default

        return shown_by_default()  # a terminal or a notebook; not a redirected stderr

    def run(self) -> List[ExperimentResult]:
        """Run the batch; the results in input order."""
        if self.options.db is not None:
            from xetrack_c.run.experiments import ExperimentTable

            self.table = ExperimentTable(self.options.db, self.options.table)
        try:
            tasks = self._tasks(self._resumed())
            if tasks:
                if self._show_progress():
                    from xetrack_c.run.progress import Progress

                    self.progress = Progress(len(tasks))
                workers = min(self.options.workers, len(tasks))
                with self._accounted():  # one final record per spec; Ctrl-C waits for them
                    # Gated: a task starts only after the verdict on the one its worker
                    # ran, so fail_fast never starts a task after a failure it knew of.
                    # Retries too: the worker waits for the verdict on its task.
                    gated = self.options.fail_fast or self.options.max_consecutive_failures \
                        or self.options.retry.retries
                    _core.run_tasks(tasks, workers, self.report, self.options.timeout or 0.0,
                                    GRACE_SECONDS, bool(gated), self.options.rate_interval,
                                    self._groups(), self._worker_processes(tasks),
                                    self._forkserver())
        finally:
            self._close()
        return self._finished_results()

    def _forkserver(self) -> Optional[tuple]:
        """The command and environment of the workers' fork servers, when scripts use one."""
        if self.options.launcher != "forkserver":
            return None
        server = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forkserver.py")
        env = [f"{key}={value}" for key, value in os.environ.items()
               if key not in _CHILD_VARIABLES]
        # -P: the server file's folder stays off sys.path from the start, before site runs
        # the .pth files (one that imports "types" would find run/types.py there).
        return ([sys.executable, "-P", server], env)

    def _groups(self) -> Optional[List[Optional[int]]]:
        """Group number of each pool task (None: no group), or None when there are none."""
        numbers: Dict[str, int] = {}
        groups = [None if self.specs[index].group is None
                  else numbers.setdefault(self.specs[index].group, len(numbers))
                  for index in self.order]
        return groups if numbers else None

    def _worker_processes(self, tasks: List[tuple]) -> Optional[tuple]:
        """(argv, env, init frame, server argv, server frame) of the worker processes, when
        there are process tasks: forks of a warm server that loads the batch's functions."""
        if not self.process or not any(len(task) == 2 for task in tasks):
            return None
        functions = self._payloads.functions() if self._payloads is not None else []
        return (procs.worker_command(), procs.environment(),
                procs.init_frame(self.options.worker_init), procs.server_command(),
                procs.server_frame(functions))

    def _close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        if self.table is not None:
            self.table.close()
        if self.log_dir is not None:
            self._remove_logs()

    def _remove_logs(self) -> None:
        if self.options.db is None:
            self._remove_metric_files()
        for index, result in enumerate(self.results):
            if result is not None and result.status in ("completed", "skipped"):
                stem = os.path.join(self.log_dir, f"{index:05d}-{self.ids[index]}")
                for suffix in (".out", ".err"):
                    try:
                        os.unlink(stem + suffix)
                    except FileNotFoundError:
                        pass
        try:
            os.rmdir(self.log_dir)
        except OSError:
            pass  # logs of failed experiments are kept
