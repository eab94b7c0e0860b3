/* The data of one run_tasks batch, shared by the files that run it: a task (xt_task), a
 * function call in progress (xt_call), a worker thread (xt_worker) and the pool itself
 * (xt_pool), plus the pool's clock, its building from run_tasks' Python arguments and its
 * lifetime (pool.c).  executor.c runs the pool (threads, the process-wide worker limit,
 * the calling thread, abandoned calls); schedule.c decides which task a worker takes next;
 * launcher.c runs script tasks.  Internal to those four files. */
#ifndef XT_POOL_H
#define XT_POOL_H

#include "executor.h"
#include "procpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/types.h>

/* Process tasks sent to a worker process at once (see xt_take_chunk_locked in schedule.c). */
#define XT_CHUNK_MAX 16

enum { TASK_FUNCTION, TASK_SCRIPT, TASK_PROCESS };
/* Where a task is (xt_task.state, under the pool mutex). */
enum { STATE_QUEUED = 0, STATE_RUNNING, STATE_DONE, STATE_RETRY };
/* Cancel levels of a batch: start nothing new; also stop what runs. */
enum { CANCEL_NONE = 0, CANCEL_PENDING = 1, CANCEL_ALL = 2 };

typedef struct {
    int kind;
    double timeout; /* seconds; <= 0: none */
    /* function task (strong references) */
    PyObject *callable;
    PyObject *arg;
    /* script task (malloc'd, NULL-terminated lists) */
    char **argv;
    char **envp;
    char *cwd;
    char *out_path;
    char *err_path;
    char *request; /* launch request for the worker's fork server, or NULL: xt_spawn */
    size_t request_len;
    /* process task: the pickled call (a strong reference to immutable bytes, read
     * without the GIL) and the worker's reply (malloc'd) */
    PyObject *payload;
    const char *payload_data;
    size_t payload_len;
    char *reply;
    size_t reply_len;
    /* scheduling, under the pool mutex */
    int state;
    int follower;          /* runs after the previous task of its group, on its worker */
    Py_ssize_t group_next; /* next task of the same group, or -1 */
    int ran_on;            /* index of the worker that ran it last */
    double not_before;     /* STATE_RETRY: monotonic time it may start again */
    /* outputs, written by the worker before the task is queued as done */
    int status;
    long exit_code; /* >= 0: exit code; < 0: killed by signal -exit_code */
    int spawn_errno;
    double duration;
    char *tail;
    size_t tail_len;
    PyObject *value; /* function: the return value or the exception */
    /* function supervision, read and written under the GIL */
    double started;
    int interrupted; /* 0, XT_TASK_TIMEOUT or XT_TASK_CANCELLED: async exception sent */
    double interrupt_sent; /* when: the call is abandoned XT_ABANDON_SECONDS later */
} xt_task;

/* A function call in progress on a worker thread: on that thread's stack for the call's
 * duration, reached by the calling thread through xt_worker.call; read and written under
 * the GIL.  When the batch stops waiting for the call (abandons it), the thread keeps its
 * own thread state (copied here) and the worker's place goes to a new thread. */
typedef struct {
    int abandoned;         /* 0, or XT_TASK_TIMEOUT / XT_TASK_CANCELLED: why it was abandoned */
    PyObject *flag;        /* bytearray(1) the task's context holds (abandon_flag()), or NULL */
    PyThreadState *tstate; /* this thread's own state and its PyGILState_Ensure result */
    PyGILState_STATE gil;
} xt_call;

typedef struct xt_pool xt_pool;

typedef struct {
    pthread_t thread;
    xt_pool *pool;
    PyThreadState *tstate; /* made on the first function task, kept until the worker ends */
    PyGILState_STATE gil;
    unsigned long ident;
    Py_ssize_t running; /* function task being called, or -1; under the GIL */
    xt_call *call;      /* its call while running >= 0; under the GIL */
    int holds_slot;
    int has_thread;     /* `thread` runs this worker and is joined at the end of the batch */
    int replace;        /* its call was just abandoned: start a new thread in its place */
    Py_ssize_t await_index; /* abandoned task whose verdict a new thread awaits first, or -1 */
    Py_ssize_t await_position; /* its entry in done_order */
    /* This worker's fork server (xetrack_c/_zygote.py), started on its first script task
     * that asks for one: pid, request pipe (write end), answer pipe (read end). */
    pid_t fs_pid;
    int fs_in;
    int fs_out;
    int index;           /* position in pool->workers */
    xt_proc *proc;       /* its worker process (process tasks), or NULL */
    Py_ssize_t follow;   /* next task of the group it runs, or -1; under mu */
    Py_ssize_t held;     /* a task of its group waiting for a retry, or -1; under mu */
    int from_queue;      /* its last task came from the queue (not a retry or a group) */
    Py_ssize_t chunk[XT_CHUNK_MAX]; /* process tasks sent to its worker process at once */
} xt_worker;

struct xt_pool {
    pthread_mutex_t mu;
    pthread_cond_t cond; /* signalled on each completion and when a worker exits */
    xt_task *tasks;
    Py_ssize_t n;
    Py_ssize_t next;  /* first task not started; under mu */
    Py_ssize_t ndone; /* entries of done_order; under mu */
    Py_ssize_t judged; /* entries of done_order handed to on_done; under mu */
    int gated;         /* a worker waits for on_done's verdict before its next task */
    pthread_cond_t judged_cond;
    Py_ssize_t *done_order;
    int live; /* workers not yet exited; under mu */
    atomic_int cancel;
    atomic_int cancel_status; /* status of running tasks stopped by CANCEL_ALL */
    int wake_fds[2];          /* written once at CANCEL_ALL: wakes script workers */
    double grace;
    xt_worker *workers;
    int nworkers;
    xt_pool *parent;
    PyObject *drain; /* a Python no-op (borrowed from the module state) */
    char **fs_argv;  /* command and environment of the fork servers, or NULL */
    char **fs_envp;
    Py_ssize_t done_cap; /* done_order is a ring of this size: fewer are ever unreported */
    /* retries and the start rate, under mu */
    pthread_cond_t work_cond; /* a retry was queued, or the batch stops */
    unsigned long work_gen;   /* bumped with each work_cond broadcast */
    Py_ssize_t *retry_list;   /* tasks waiting for a retry on any worker */
    Py_ssize_t nretry;
    double rate_interval; /* seconds between task starts; 0: no limit */
    double next_start;
    /* worker processes of process tasks */
    xt_proc_setup procs;
    int have_procs;
    int chunking; /* send several process tasks at once: no gating, no start rate */
    int planned;  /* workers start_workers starts (set before any of them runs) */
    /* Abandoned calls (see xt_call).  The pool's C memory lives until the calling thread
     * and every abandoned thread have let it go (refs); `stuck` counts the abandoned
     * threads still running, and once it reaches `cap` no further function task starts
     * (`refusing`: each is reported XT_TASK_REFUSED instead). */
    atomic_int refs;
    atomic_int stuck;
    atomic_int refusing;
    int cap;
};

/* Seconds on CLOCK_MONOTONIC: the clock of a batch's deadlines and durations. */
double xt_monotonic_now(void);

/* ------------------------------------------------------------------ schedule.c
 * The xt_*_locked functions run under pool->mu. */
enum { TAKE_NOTHING = -1, TAKE_WAIT = -2 };
/* The next task for worker w (now running), TAKE_NOTHING, or TAKE_WAIT until *wait_until. */
Py_ssize_t xt_take_task_locked(xt_pool *pool, xt_worker *w, double *wait_until);
/* Wait until `until` (monotonic), new work (work_gen moved past `generation`) or a stop. */
void xt_wait_for_work_locked(xt_pool *pool, unsigned long generation, double until);
/* Process tasks to send to w's worker process with `first` (in w->chunk); their count. */
int xt_take_chunk_locked(xt_pool *pool, xt_worker *w, Py_ssize_t first);
/* One more process task for w's worker process, which has `inflight` tasks (`bytes` of
 * payload) sent and not answered yet; -1 when none should follow them now. */
Py_ssize_t xt_take_more_locked(xt_pool *pool, xt_worker *w, int inflight, size_t bytes);
/* Queue a task taken but never started, for any worker. */
void xt_requeue_unstarted(xt_pool *pool, Py_ssize_t index);
/* Hand a finished task to the calling thread; its position in done_order. */
Py_ssize_t xt_publish_done_locked(xt_pool *pool, Py_ssize_t index);
/* When gated, wait for the verdict on the task published at `position`; then w goes on
 * with its group unless the task waits for a retry. */
void xt_await_verdict_locked(xt_pool *pool, xt_worker *w, Py_ssize_t index,
                             Py_ssize_t position);
/* xt_publish_done_locked then xt_await_verdict_locked, taking the mutex. */
void xt_post_done(xt_pool *pool, xt_worker *w, Py_ssize_t index);
/* Queue task `index` again after `delay` seconds (GIL held: released while queueing). */
void xt_pool_retry(xt_pool *pool, Py_ssize_t index, double delay);

/* ------------------------------------------------------------------ pool.c */
/* A pool holding a C copy of `tasks` (the list of run_tasks task tuples), with no workers
 * yet; NULL with an exception set. */
xt_pool *xt_pool_new(PyObject *tasks, double grace);
/* Drops the Python references the pool's tasks hold (GIL held). */
void xt_pool_clear(xt_pool *pool);
/* Lets go of one reference to the pool (the calling thread's, or an abandoned thread's);
 * the last frees its C memory.  Needs no GIL: clear the pool first. */
void xt_pool_release(xt_pool *pool);
/* xt_pool_clear, then xt_pool_release (GIL held).  NULL is a no-op. */
void xt_pool_free(xt_pool *pool);
/* Applies run_tasks' optional arguments rate, groups, procs and forkserver (`extra`, that
 * many of them); 0, or -1 with an exception set. */
int xt_configure_pool(xt_pool *pool, PyObject *const *extra, Py_ssize_t nextra);

#endif
