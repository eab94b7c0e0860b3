/* Persistent Python worker processes for run_multiple's process backend (procpool.h).
 *
 * Every function here runs on an executor worker thread without the GIL and uses only C
 * and POSIX calls.  Waiting is poll() on the worker's pipe, its pidfd (death) and the
 * batch's cancel pipe, bounded by the task's deadline: no loop sleeps.
 */
#include "procpool.h"
#include "spawner.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FRAME_HEADER 8
#define CHILD_IN_FD 3  /* the worker reads frames here */
#define CHILD_OUT_FD 4 /* and writes its replies here */
/* A reply longer than this is a broken worker, not a result (1 TiB). */
#define MAX_REPLY ((uint64_t)1 << 40)
/* Replies are read through a buffer of this size: a small reply takes one read(). */
#define READ_BUFFER 65536

struct xt_proc {
    pid_t pid;
    int pidfd;      /* -1 where pidfd_open is missing: death then shows as end of output */
    int to_child;   /* non-blocking */
    int from_child; /* non-blocking */
    int pending;    /* task frames written and not answered yet */
    size_t rstart;  /* unread bytes of rbuf: [rstart, rend) */
    size_t rend;
    char rbuf[READ_BUFFER];
};

/* What a wait on the worker's pipe ended with. */
enum { IO_READY = 0, IO_DIED, IO_TIMEOUT, IO_CANCELLED };

static double
now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Wait until `fd` is ready for `events`, the worker dies, the deadline (0: none) passes or
 * cancel_fd becomes readable.  A ready fd wins over the others, so a reply that arrived
 * is read even when the worker exited or the batch was stopped at the same moment. */
static int
wait_fd(const xt_proc *proc, int fd, short events, double deadline, int cancel_fd)
{
    for (;;) {
        struct pollfd fds[3];
        nfds_t count = 0;
        int ms = -1;
        fds[count++] = (struct pollfd){fd, events, 0};
        fds[count++] = (struct pollfd){cancel_fd, POLLIN, 0};
        if (proc->pidfd >= 0) {
            fds[count++] = (struct pollfd){proc->pidfd, POLLIN, 0};
        }
        if (deadline > 0) {
            double left = deadline - now_seconds();
            if (left <= 0) {
                return IO_TIMEOUT;
            }
            ms = (int)ceil(left * 1000.0);
        }
        int n = poll(fds, count, ms);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return IO_DIED;
        }
        if (fds[0].revents) {
            return IO_READY; /* also POLLHUP/POLLERR: the read or write says what */
        }
        if (fds[1].revents) {
            return IO_CANCELLED;
        }
        if (count > 2 && fds[2].revents) {
            return IO_DIED;
        }
    }
}

/* Write one frame (header and payload with writev, resumed after partial writes). */
static int
write_frame(const xt_proc *proc, const char *data, size_t len, double deadline, int cancel_fd)
{
    unsigned char header[FRAME_HEADER];
    uint64_t size = (uint64_t)len;
    struct iovec iov[2];
    int first = 0;

    for (int i = 0; i < FRAME_HEADER; i++) {
        header[i] = (unsigned char)(size >> (8 * i));
    }
    iov[0].iov_base = header;
    iov[0].iov_len = FRAME_HEADER;
    iov[1].iov_base = (void *)data;
    iov[1].iov_len = len;
    while (first < 2) {
        ssize_t n = writev(proc->to_child, iov + first, 2 - first);
        if (n >= 0) {
            size_t done = (size_t)n;
            while (first < 2 && done >= iov[first].iov_len) {
                done -= iov[first].iov_len;
                first++;
            }
            if (first < 2) {
                iov[first].iov_base = (char *)iov[first].iov_base + done;
                iov[first].iov_len -= done;
            }
            continue;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int io = wait_fd(proc, proc->to_child, POLLOUT, deadline, cancel_fd);
            if (io != IO_READY) {
                return io;
            }
            continue;
        }
        return IO_DIED; /* EPIPE: the worker is gone */
    }
    return IO_READY;
}

/* Read exactly len bytes of the worker's output.  The worker writes a reply only after
 * it got a task, so the wait comes first: poll, then one read of what is there. */
static int
read_exact(xt_proc *proc, char *buf, size_t len, double deadline, int cancel_fd)
{
    size_t buffered = proc->rend - proc->rstart;
    if (buffered > 0) {
        size_t take = buffered < len ? buffered : len;
        memcpy(buf, proc->rbuf + proc->rstart, take);
        proc->rstart += take;
        buf += take;
        len -= take;
    }
    while (len > 0) {
        int io = wait_fd(proc, proc->from_child, POLLIN, deadline, cancel_fd);
        if (io != IO_READY) {
            return io;
        }
        ssize_t n;
        if (len >= READ_BUFFER) {
            n = read(proc->from_child, buf, len);
            if (n > 0) {
                buf += n;
                len -= (size_t)n;
                continue;
            }
        }
        else {
            n = read(proc->from_child, proc->rbuf, READ_BUFFER);
            if (n > 0) {
                size_t take = (size_t)n < len ? (size_t)n : len;
                memcpy(buf, proc->rbuf, take);
                proc->rstart = take;
                proc->rend = (size_t)n;
                buf += take;
                len -= take;
                continue;
            }
        }
        if (n == 0) {
            return IO_DIED; /* end of output: the worker closed it or ended */
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            continue;
        }
        return IO_DIED;
    }
    return IO_READY;
}

static void
close_fd(int *fd)
{
    if (*fd >= 0) {
        (void)close(*fd);
        *fd = -1;
    }
}

static int
set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/* Start a worker; 0 or an errno. */
static int
proc_spawn(const xt_proc_setup *setup, xt_proc **out)
{
    int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1};
    int child_in = -1, child_out = -1, rc;
    pid_t pid = -1;
    xt_proc *proc = NULL;

    if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0) {
        rc = errno;
        goto fail;
    }
    /* The child's ends above fd 4, so that dup2 onto 3 and 4 never meets itself. */
    child_in = fcntl(in_pipe[0], F_DUPFD_CLOEXEC, CHILD_OUT_FD + 1);
    child_out = fcntl(out_pipe[1], F_DUPFD_CLOEXEC, CHILD_OUT_FD + 1);
    close_fd(&in_pipe[0]);
    close_fd(&out_pipe[1]);
    if (child_in < 0 || child_out < 0 || set_nonblocking(in_pipe[1]) < 0
        || set_nonblocking(out_pipe[0]) < 0) {
        rc = errno;
        goto fail;
    }
    const xt_spawn_fd fds[] = {
        {0, -1, "/dev/null", O_RDONLY},
        {CHILD_IN_FD, child_in, NULL, 0},
        {CHILD_OUT_FD, child_out, NULL, 0},
    };
    const xt_spawn_args args = {setup->argv, setup->envp, fds, 3, NULL, 1};
    rc = xt_spawn(&args, &pid);
    close_fd(&child_in);
    close_fd(&child_out);
    if (rc != 0) {
        goto fail;
    }
    proc = calloc(1, sizeof(xt_proc));
    if (proc == NULL) {
        rc = ENOMEM;
        (void)kill(-pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        goto fail;
    }
    proc->pid = pid;
    proc->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    proc->to_child = in_pipe[1];
    proc->from_child = out_pipe[0];
    *out = proc;
    return 0;
fail:
    close_fd(&child_in);
    close_fd(&child_out);
    for (int i = 0; i < 2; i++) {
        close_fd(&in_pipe[i]);
        close_fd(&out_pipe[i]);
    }
    return rc != 0 ? rc : EIO;
}

/* Wait up to `seconds` for the worker to end (it is not reaped). */
static void
wait_end(const xt_proc *proc, double seconds)
{
    int fd = proc->pidfd >= 0 ? proc->pidfd : proc->from_child;
    double deadline = now_seconds() + seconds;
    for (;;) {
        double left = deadline - now_seconds();
        struct pollfd pfd = {fd, POLLIN, 0};
        if (left <= 0) {
            return;
        }
        int n = poll(&pfd, 1, (int)ceil(left * 1000.0));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0 || fd == proc->pidfd) {
            return;
        }
        /* No pidfd: drain output until its end, which comes when the worker ends. */
        char sink[4096];
        ssize_t got = read(fd, sink, sizeof(sink));
        if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN)) {
            return;
        }
    }
}

/* Stop (SIGTERM, `grace`, then SIGKILL) or just clean up after a worker, reap it and free
 * it; its exit code, or -signal. */
static long
proc_end(xt_proc *proc, int stop, double grace)
{
    int wstatus = 0;
    long code = 0;
    if (stop) {
        (void)kill(-proc->pid, SIGTERM);
        wait_end(proc, grace);
    }
    /* Always, before reaping: the leader is at worst a zombie, so the group id cannot have
     * been reused, and anything the task started in the group goes too. */
    (void)kill(-proc->pid, SIGKILL);
    while (waitpid(proc->pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(wstatus)) {
        code = WEXITSTATUS(wstatus);
    }
    else if (WIFSIGNALED(wstatus)) {
        code = -(long)WTERMSIG(wstatus);
    }
    close_fd(&proc->pidfd);
    close_fd(&proc->to_child);
    close_fd(&proc->from_child);
    free(proc);
    return code;
}

double
xt_proc_now(void)
{
    return now_seconds();
}

static int
outcome_of(int io)
{
    return io == IO_DIED ? XT_PROC_DIED : io == IO_TIMEOUT ? XT_PROC_TIMEOUT : XT_PROC_CANCELLED;
}

int
xt_proc_send(xt_proc **slot, const xt_proc_setup *setup, const char *payload,
             size_t payload_len, double deadline, xt_proc_result *out)
{
    int io = IO_READY;

    memset(out, 0, sizeof(*out));
    for (int attempt = 0;; attempt++) {
        int fresh = 0;
        if (*slot == NULL) {
            int rc = proc_spawn(setup, slot);
            if (rc != 0) {
                out->outcome = XT_PROC_SPAWN_ERROR;
                out->error = rc;
                return -1;
            }
            fresh = 1;
            io = write_frame(*slot, setup->init, setup->init_len, deadline, setup->cancel_fd);
            if (io != IO_READY) {
                break;
            }
        }
        io = write_frame(*slot, payload, payload_len, deadline, setup->cancel_fd);
        if (io == IO_READY) {
            (*slot)->pending++;
            return 0;
        }
        if (io == IO_DIED && !fresh && attempt == 0 && (*slot)->pending == 0) {
            /* It died while idle (e.g. the OOM killer): the task never reached it. */
            (void)proc_end(*slot, 0, setup->grace);
            *slot = NULL;
            continue;
        }
        break;
    }
    out->outcome = outcome_of(io);
    if ((*slot)->pending > 0) {
        return -1; /* the replies to the frames before this one say what happened */
    }
    out->exit_code = proc_end(*slot, io != IO_DIED, setup->grace);
    *slot = NULL;
    return -1;
}

int
xt_proc_receive(xt_proc **slot, const xt_proc_setup *setup, double deadline,
                xt_proc_result *out)
{
    unsigned char header[FRAME_HEADER];
    uint64_t size = 0;
    int io;

    memset(out, 0, sizeof(*out));
    io = read_exact(*slot, (char *)header, FRAME_HEADER, deadline, setup->cancel_fd);
    if (io != IO_READY) {
        goto ended;
    }
    for (int i = 0; i < FRAME_HEADER; i++) {
        size |= (uint64_t)header[i] << (8 * i);
    }
    if (size > MAX_REPLY) {
        io = IO_DIED;
        goto ended;
    }
    out->reply = malloc(size > 0 ? (size_t)size : 1);
    if (out->reply == NULL) {
        (void)proc_end(*slot, 1, 0.0);
        *slot = NULL;
        out->outcome = XT_PROC_SPAWN_ERROR;
        out->error = ENOMEM;
        return out->outcome;
    }
    out->reply_len = (size_t)size;
    io = read_exact(*slot, out->reply, out->reply_len, deadline, setup->cancel_fd);
    if (io == IO_READY) {
        (*slot)->pending--;
        out->outcome = XT_PROC_REPLIED;
        return out->outcome;
    }
ended:
    free(out->reply);
    out->reply = NULL;
    out->reply_len = 0;
    out->exit_code = proc_end(*slot, io != IO_DIED, setup->grace);
    *slot = NULL;
    out->outcome = outcome_of(io);
    return out->outcome;
}

int
xt_proc_run(xt_proc **slot, const xt_proc_setup *setup, const char *payload,
            size_t payload_len, double timeout, xt_proc_result *out)
{
    double deadline = timeout > 0 ? now_seconds() + timeout : 0.0;
    if (xt_proc_send(slot, setup, payload, payload_len, deadline, out) != 0) {
        return out->outcome;
    }
    return xt_proc_receive(slot, setup, deadline, out);
}

void
xt_proc_close(xt_proc *proc, double grace)
{
    if (proc == NULL) {
        return;
    }
    close_fd(&proc->to_child);
    wait_end(proc, grace);
    (void)proc_end(proc, 0, 0.0);
}
