/* Starting a child process that dies with this one (spawner.h).
 *
 * The child is a clone of the calling thread that shares this process's memory and runs on
 * a stack of its own until it execs, while the calling thread waits (CLONE_VM |
 * CLONE_VFORK: what glibc's posix_spawn does, so no page table is copied).  Before the
 * exec it asks for SIGKILL when its parent dies (PR_SET_PDEATHSIG survives execve), then
 * checks that the parent is still the one that cloned it: a parent killed before the prctl
 * would never send the signal.  Between the clone and the exec the child makes only
 * async-signal-safe system calls and writes nothing of this process's memory but its own
 * stack, the error it reports and the calling thread's errno (which the caller does not
 * read across the clone).
 *
 * The kernel sends the parent-death signal when the *thread* that cloned the child ends,
 * not the process.  Every caller (launcher.c, procpool.c) starts, waits for and stops its
 * children on one pool worker thread, which ends only after they are reaped, so a normal
 * end of a batch never triggers it: worker processes still end at the end of their input,
 * with atexit handlers run and files flushed. */
#include "spawner.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* The child's stack until it execs (mapped lazily: only the pages it touches are used). */
#define CHILD_STACK (256 * 1024)

/* The child's instrumented frames would leave AddressSanitizer's poison on a stack that is
 * unmapped without the frames ever returning (the child execs). */
#if defined(__has_attribute)
#if __has_attribute(no_sanitize)
#define XT_NO_SANITIZE __attribute__((no_sanitize("address", "undefined")))
#endif
#endif
#ifndef XT_NO_SANITIZE
#define XT_NO_SANITIZE
#endif

typedef struct {
    const xt_spawn_args *args;
    pid_t parent;       /* this process, as the child's getppid() must see it */
    volatile int error; /* set by a child that could not exec, before it exits */
} child_context;

/* The child, from the clone to the exec.  Every signal is blocked (the caller blocked them
 * before the clone) until the handlers of this process are reset to the default: none of
 * them may run here, on shared memory. */
XT_NO_SANITIZE static int
child_main(void *arg)
{
    child_context *ctx = arg;
    const xt_spawn_args *a = ctx->args;
    struct sigaction dfl, old;
    sigset_t empty;

    if (!a->no_death_signal && prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) {
        goto fail;
    }
    if (!a->no_death_signal && getppid() != ctx->parent) {
        _exit(127); /* the parent died before the prctl: nobody waits for this task */
    }
    if (setpgid(0, 0) != 0) {
        goto fail;
    }
    for (int i = 0; i < a->nfds; i++) {
        const xt_spawn_fd *f = &a->fds[i];
        int fd = f->source;
        if (f->path != NULL && (fd = open(f->path, f->flags, 0644)) < 0) {
            goto fail;
        }
        if (fd == f->fd) {
            if (fcntl(fd, F_SETFD, 0) != 0) { /* dup2 onto itself would keep FD_CLOEXEC */
                goto fail;
            }
        }
        else {
            if (dup2(fd, f->fd) < 0) {
                goto fail;
            }
            if (f->path != NULL) {
                (void)close(fd);
            }
        }
    }
    if (a->cwd != NULL && chdir(a->cwd) != 0) {
        goto fail;
    }
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) {
            continue;
        }
        int reset = sig == SIGINT || sig == SIGTERM || sig == SIGPIPE || sig == SIGXFSZ
                    || sig == SIGHUP || sig == SIGQUIT;
        if (a->reset_signals && reset) {
            (void)sigaction(sig, &dfl, NULL);
        }
        else if (sigaction(sig, NULL, &old) == 0 && old.sa_handler != SIG_DFL
                 && old.sa_handler != SIG_IGN) {
            (void)sigaction(sig, &dfl, NULL);
        }
    }
    sigemptyset(&empty);
    if (sigprocmask(SIG_SETMASK, &empty, NULL) != 0) {
        goto fail;
    }
    execve(a->argv[0], a->argv, a->envp);
fail:
    ctx->error = errno != 0 ? errno : EIO;
    _exit(127);
}

int
xt_spawn(const xt_spawn_args *args, pid_t *pid)
{
    child_context ctx = {args, getpid(), 0};
    sigset_t all, old;
    pid_t child;
    int rc = 0;

    char *stack = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        return errno;
    }
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    /* Returns once the child has exec'ed or exited (CLONE_VFORK); the stack grows down. */
    child = clone(child_main, stack + CHILD_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, &ctx);
    if (child < 0) {
        rc = errno;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    (void)munmap(stack, CHILD_STACK);
    if (rc == 0 && ctx.error != 0) {
        rc = ctx.error;
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    if (rc == 0) {
        *pid = child;
    }
    return rc;
}
