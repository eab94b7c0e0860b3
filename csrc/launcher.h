/* Script tasks of run_tasks: started with xt_spawn (spawner.h), or forked by the worker's
 * fork server (xetrack_c/run/forkserver.py) when the task carries a launch request; waited
 * for on a pidfd (or a reaper thread) and the batch's cancel pipe; stopped on timeout or
 * cancel with SIGTERM, then SIGKILL, to their process group.  Called on worker threads,
 * without the GIL. */
#ifndef XT_LAUNCHER_H
#define XT_LAUNCHER_H

#include "pool.h"

/* Runs a script task with xt_spawn and fills in its outputs (status, exit code,
 * duration, stderr tail). */
void xt_run_script(xt_pool *pool, xt_task *task);
/* Runs a script task through w's fork server (started first if w has none), filling in
 * the same outputs. */
void xt_run_script_forked(xt_pool *pool, xt_worker *w, xt_task *task);
/* Ends w's fork server, if it has one, and reaps it. */
void xt_forkserver_stop(xt_worker *w);

#endif
