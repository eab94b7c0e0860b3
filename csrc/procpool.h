/* Persistent Python worker processes for run_multiple's process backend.
 *
 * A worker process is started with xt_spawn (spawner.h: never a fork of this threaded
 * process; SIGKILLed when the worker thread that started it ends, so when this process
 * dies) in a process group of its own, with two pipes: it reads frames on fd 3 and writes
 * frames on fd 4.  A frame is an 8-byte little-endian length, then that many bytes.  The
 * first frame a new worker gets is the batch's init frame; then one task frame at a time,
 * each answered by one reply frame.  The bytes are opaque here (pickles made and read by the Python
 * layer).  No function of this file touches Python objects: they run without the GIL.
 */
#ifndef XT_PROCPOOL_H
#define XT_PROCPOOL_H

#include <stddef.h>

typedef struct xt_proc xt_proc; /* one running worker process */

/* How a batch starts its worker processes (owned by the pool, read-only while it runs). */
typedef struct {
    char **argv;     /* worker command, NULL-terminated */
    char **envp;     /* its environment, NULL-terminated */
    char *init;      /* first frame sent to every new worker */
    size_t init_len;
    double grace;    /* seconds between SIGTERM and SIGKILL */
    int cancel_fd;   /* becomes readable when running tasks must stop */
} xt_proc_setup;

/* How one task ended (xt_proc_result.outcome). */
enum {
    XT_PROC_REPLIED = 0,    /* reply holds the worker's answer */
    XT_PROC_DIED = 1,       /* the worker ended without answering; exit_code says how */
    XT_PROC_TIMEOUT = 2,    /* the deadline passed; the worker was stopped */
    XT_PROC_CANCELLED = 3,  /* cancel_fd became readable; the worker was stopped */
    XT_PROC_SPAWN_ERROR = 4 /* no worker could be started; error is the errno */
};

typedef struct {
    int outcome;
    long exit_code;   /* a stopped or dead worker: exit code, or -signal number */
    int error;        /* XT_PROC_SPAWN_ERROR: errno */
    char *reply;      /* XT_PROC_REPLIED: malloc'd, the caller frees it */
    size_t reply_len;
} xt_proc_result;

/* Run one task on *proc (started first when NULL).  A worker that died, timed out or was
 * cancelled is killed with its process group, reaped and *proc set to NULL, so the next
 * task starts a new one.  timeout <= 0: none.  Returns out->outcome. */
int xt_proc_run(xt_proc **proc, const xt_proc_setup *setup, const char *payload,
                size_t payload_len, double timeout, xt_proc_result *out);

/* Pipelining: send several task frames, then receive their replies in order.
 * xt_proc_send starts the worker when *proc is NULL and returns 0 once the frame is
 * written.  On failure it returns -1 with out filled in; the worker is then ended (and
 * *proc NULL) unless frames sent earlier still await their replies, which come first:
 * xt_proc_receive then reports how the worker ended.  deadline: monotonic seconds
 * (CLOCK_MONOTONIC), 0 for none. */
int xt_proc_send(xt_proc **proc, const xt_proc_setup *setup, const char *payload,
                 size_t payload_len, double deadline, xt_proc_result *out);
/* The reply to the oldest frame sent and not yet answered; returns out->outcome, and for
 * anything but XT_PROC_REPLIED the worker has been ended and *proc set to NULL. */
int xt_proc_receive(xt_proc **proc, const xt_proc_setup *setup, double deadline,
                    xt_proc_result *out);

/* Seconds on the clock xt_proc_send and xt_proc_receive take deadlines on. */
double xt_proc_now(void);

/* End an idle worker: close its input (it exits on end of input), wait up to `grace`
 * seconds, then SIGKILL its process group and reap it.  NULL is a no-op. */
void xt_proc_close(xt_proc *proc, double grace);

#endif
