/* Starting a child process that dies with this one: the one way run_tasks starts a process
 * (script tasks, fork servers, worker processes).  Like posix_spawn -- a child that shares
 * this process's memory until it execs, file descriptors opened or dup'ed into place, a
 * working directory, a process group of its own, default signal handling and an empty
 * signal mask -- plus a parent-death signal: the child is SIGKILLed when the thread that
 * started it ends (Linux PR_SET_PDEATHSIG), so nothing a batch started outlives the
 * process that runs it, even one killed with SIGKILL.  No Python objects: called on worker
 * threads without the GIL. */
#ifndef XT_SPAWNER_H
#define XT_SPAWNER_H

#include <sys/types.h>

/* One descriptor of the child: `source` dup'ed onto `fd`, or, with `path`, the file opened
 * with `flags` (mode 0644 when created) onto `fd`. */
typedef struct {
    int fd;
    int source; /* -1 with path */
    const char *path;
    int flags;
} xt_spawn_fd;

typedef struct {
    char *const *argv; /* argv[0] is the program's path (no PATH search) */
    char *const *envp;
    const xt_spawn_fd *fds; /* set up in this order */
    int nfds;
    const char *cwd; /* changed to after the descriptors; NULL: this process's */
    /* 1: SIGINT, SIGTERM, SIGPIPE, SIGXFSZ, SIGHUP and SIGQUIT start with their default
     * action even where this process ignores them; 0: ignored signals stay ignored.
     * Signals with a handler here start with the default action either way. */
    int reset_signals;
    /* 1: no parent-death signal (a child that outlives the calling thread, such as the
     * process backend's warm server started on a short-lived thread: it ends by itself
     * when its control socket ends instead). */
    int no_death_signal;
} xt_spawn_args;

/* Starts args->argv in a process group of its own that gets SIGKILL when the calling
 * thread ends (unless args->no_death_signal); the caller must therefore wait for the child (or stop it) on the thread
 * that started it.  0 with *pid set, or an errno value (the child's, when it could not set
 * itself up or exec: it is then reaped). */
int xt_spawn(const xt_spawn_args *args, pid_t *pid);

#endif
