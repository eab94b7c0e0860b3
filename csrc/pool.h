/* The data of one run_tasks batch, shared by the files that run it: a task (xt_task), a
 * worker thread (xt_worker) and the pool itself (xt_pool), plus the pool's clock and the
 * building of a pool from run_tasks' Python arguments (pool.c).  executor.c runs the pool
 * (threads, scheduling, the process-wide worker limit, the calling thread); launcher.c
 * runs script tasks.  Internal to those three files. */
#ifndef XT_POOL_H
#define XT_POOL_H

#include "executor.h"
#include "procpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/types.h>

/* Process tasks sent to a worker process at once (see take_chunk_locked in executor.c). */
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
    double interrupt_sent;
} xt_task;

typedef struct xt_pool xt_pool;

typedef struct {
    pthread_t thread;
    xt_pool *pool;
    PyThreadState *tstate; /* made on the first function task, kept until the worker ends */
    PyGILState_STATE gil;
    unsigned long ident;
    Py_ssize_t running; /* function task being called, or -1; under the GIL */
    int holds_slot;
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
};

/* Seconds on CLOCK_MONOTONIC: the clock of a batch's deadlines and durations. */
double xt_monotonic_now(void);

/* A pool holding a C copy of `tasks` (the list of run_tasks task tuples), with no workers
 * yet; NULL with an exception set. */
xt_pool *xt_pool_new(PyObject *tasks, double grace);
/* Frees the pool, its tasks and their references (GIL held).  NULL is a no-op. */
void xt_pool_free(xt_pool *pool);
/* Applies run_tasks' optional arguments rate, groups, procs and forkserver (`extra`, that
 * many of them); 0, or -1 with an exception set. */
int xt_configure_pool(xt_pool *pool, PyObject *const *extra, Py_ssize_t nextra);

#endif
