/* Persistent Python worker processes for run_multiple's process backend.
 *
 * A worker process is a fork of this process's warm server (xt_proc_server_start): an
 * interpreter started by the first batch that needs it with xt_spawn (spawner.h: never a
 * fork of this threaded process), kept for the later batches until the interpreter exits,
 * ending by itself when this process dies, that has already imported xetrack_c and each
 * batch's functions, and forks a worker on request (procserver.c; each worker is SIGKILLed when the server dies).  Where there
 * is no server, or it refused to fork or died, a worker is a new interpreter started with
 * xt_spawn by the worker thread itself.  Either way a worker runs in a process group of
 * its own, with two pipes: it reads frames on fd 3 and writes frames on fd 4.  A frame is
 * an 8-byte little-endian length, then that many bytes.  The first frame a new worker
 * gets is the batch's init frame; then one task frame at a time, each answered by one
 * reply frame.  The bytes are opaque here (pickles made and read by the Python layer).
 * No function of this file touches Python objects: they run without the GIL.
 */
#ifndef XT_PROCPOOL_H
#define XT_PROCPOOL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct xt_proc xt_proc; /* one running worker process */

/* How a batch starts its worker processes (owned by the pool, read-only while it runs). */
typedef struct {
    char **argv;     /* worker command, NULL-terminated */
    char **envp;     /* its environment, NULL-terminated */
    char *init;      /* first frame sent to every new worker */
    size_t init_len;
    double grace;    /* seconds between SIGTERM and SIGKILL */
    int cancel_fd;   /* becomes readable when running tasks must stop */
    /* The warm server (xt_proc_server_start), shared by every batch of this process. */
    char **server_argv;  /* its command, NULL-terminated; NULL: no server */
    char *server_init;   /* the batch's frame the server loads before it forks for it */
    size_t server_init_len;
    unsigned long server_gen; /* the server this batch uses; 0: none (workers start cold) */
} xt_proc_setup;

/* Requests on the warm server's control socket (a SOCK_SEQPACKET socket: one message per
 * send).  A request is three int32 in host order, {command, argument, sequence number};
 * its answer is two, {the request's sequence number, value}, the value being the new
 * worker's pid, the reaped worker's raw wait status, or -errno.
 * XT_SERVER_FORK carries the worker's two pipe ends (the read end of its input, the write
 * end of its output) as SCM_RIGHTS; the server answers only once the worker is in a
 * process group of its own.  XT_SERVER_REAP's argument is the pid of a worker that has
 * ended or been SIGKILLed: the server leaves every worker a zombie until then, so its pid
 * and process group cannot be reused while the pool may still signal them.
 * XT_SERVER_LOAD carries three descriptors: a memory file holding a batch's frame (the
 * pickle process_tasks.server_frame makes), and the pool's stdout and stderr, which the
 * server puts on its fds 1 and 2 for its forks: the server answers at once, then loads it before it
 * reads the next request. */
enum { XT_SERVER_FORK = 1, XT_SERVER_REAP = 2, XT_SERVER_LOAD = 3 };

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
int xt_proc_run(xt_proc **proc, xt_proc_setup *setup, const char *payload,
                size_t payload_len, double timeout, xt_proc_result *out);

/* Pipelining: send several task frames, then receive their replies in order.
 * xt_proc_send starts the worker when *proc is NULL and returns 0 once the frame is
 * written.  On failure it returns -1 with out filled in; the worker is then ended (and
 * *proc NULL) unless frames sent earlier still await their replies, which come first:
 * xt_proc_receive then reports how the worker ended.  deadline: monotonic seconds
 * (CLOCK_MONOTONIC), 0 for none. */
int xt_proc_send(xt_proc **proc, xt_proc_setup *setup, const char *payload,
                 size_t payload_len, double deadline, xt_proc_result *out);
/* The reply to the oldest frame sent and not yet answered; returns out->outcome, and for
 * anything but XT_PROC_REPLIED the worker has been ended and *proc set to NULL. */
int xt_proc_receive(xt_proc **proc, xt_proc_setup *setup, double deadline,
                    xt_proc_result *out);

/* Seconds on the clock xt_proc_send and xt_proc_receive take deadlines on. */
double xt_proc_now(void);

/* Make sure this process's warm server runs (started from `setup->server_argv` on the
 * first batch, replaced when it died or was retired since) and hand it the batch's
 * frame; the batch then uses that server.  Nothing to do without server_argv; a server
 * that cannot start leaves every worker to start cold. */
void xt_proc_server_start(xt_proc_setup *setup);

/* After every worker of the batch has been closed: the batch no longer uses the server
 * (a retired server is ended once no batch does). */
void xt_proc_server_release(xt_proc_setup *setup);

/* End this process's warm server (at interpreter exit) and reap it; nothing in a process
 * that did not start it. */
void xt_proc_server_shutdown(void);

/* In the child of a fork of this process: forget the parent's server without touching it
 * (the next batch starts one of its own). */
void xt_proc_server_forget(void);

/* End an idle worker: close its input (it exits on end of input), wait up to
 * setup->grace seconds, then SIGKILL its process group and reap it.  NULL is a no-op. */
void xt_proc_close(xt_proc *proc, xt_proc_setup *setup);

#endif
