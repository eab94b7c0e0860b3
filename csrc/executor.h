/* The worker pool behind run_multiple: pthread workers that run Python function tasks
 * (taking the GIL only for the call) and script tasks (spawner.c, pidfd + poll,
 * SIGTERM then SIGKILL on timeout), with a process-wide limit on running workers shared
 * by nested batches.  run_tasks and the pool's threads are in executor.c, the pool's data
 * and its building from Python arguments in pool.h/pool.c, script tasks in launcher.c. */
#ifndef XT_EXECUTOR_H
#define XT_EXECUTOR_H

#include "module.h"

/* Task outcomes reported to the Python layer (on_done's `status`). */
enum {
    XT_TASK_COMPLETED = 0, /* function returned / script exited with 0 */
    XT_TASK_FAILED = 1,    /* function raised / script exited non-zero or by a signal */
    XT_TASK_TIMEOUT = 2,   /* deadline passed (task or batch) */
    XT_TASK_CANCELLED = 3, /* never started, or stopped by Ctrl-C / a cancelled parent */
    XT_TASK_SPAWN_ERROR = 4, /* the script could not be started */
    XT_TASK_REFUSED = 5      /* a function task not started: too many of the batch's
                              * threads are stuck in calls it abandoned */
};

#endif
