/* Persistent Python worker processes for run_multiple's process backend (procpool.h):
 * the pool's side of the warm server that forks them, the workers' pipes and their ends.
 *
 * Every function here runs without the GIL and uses only C and POSIX calls: on an executor
 * worker thread, or on the batch's calling thread for the server's start and stop.
 * Waiting is poll() on the worker's pipe (or the server's socket), its pidfd (death) and
 * the batch's cancel pipe, bounded by the task's deadline: no loop sleeps.
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
#include <sys/mman.h>
#include <sys/socket.h>
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
    int forked;     /* a fork of the warm server, which reaps it; else this process's child */
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

/* Wait until `fd` is ready for `events`, `pidfd` (-1: none) says its process died, the
 * deadline (0: none) passes or cancel_fd (-1: none) becomes readable.  A ready fd wins
 * over the others, so a reply that arrived is read even when the worker exited or the
 * batch was stopped at the same moment. */
static int
wait_ready(int fd, short events, int pidfd, double deadline, int cancel_fd)
{
    for (;;) {
        struct pollfd fds[3];
        nfds_t count = 0;
        int ms = -1;
        fds[count++] = (struct pollfd){fd, events, 0};
        fds[count++] = (struct pollfd){cancel_fd, POLLIN, 0}; /* poll skips fd -1 */
        if (pidfd >= 0) {
            fds[count++] = (struct pollfd){pidfd, POLLIN, 0};
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

static int
wait_fd(const xt_proc *proc, int fd, short events, double deadline, int cancel_fd)
{
    return wait_ready(fd, events, proc->pidfd, deadline, cancel_fd);
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

/* ------------------------------------------------------------------ the warm server */
/* The warm server, one per process, kept from the first batch that needs it to the end
 * of the interpreter (xt_proc_server_shutdown) and shared by every batch, one request at
 * a time.  `gen` counts the servers started: a batch uses the one it started with.  A
 * server that refused to fork or died is retired: the batches using it go on asking it
 * (to reap their workers; their new workers start cold), no new batch uses it, and it is
 * ended when the last batch using it ends, so that the next batch starts a new one.  `owner` is the
 * process that started it: a fork of that process has copies of these fields and must
 * neither use nor stop its parent's server (xt_proc_server_forget, and the check in
 * xt_proc_server_start). */
static struct {
    pthread_mutex_t mu; /* one request and its answer at a time; guards every field */
    pid_t owner;        /* getpid() of the process that started it */
    pid_t pid;          /* 0: none; else this process's child (reaped here) */
    int fd;             /* control socket; -1: none */
    int32_t seq;        /* sequence number of the last request */
    unsigned long gen;  /* servers started so far */
    int users;          /* batches running with it */
    int retired;        /* it refused to fork or died: ended once no batch uses it */
} server = {PTHREAD_MUTEX_INITIALIZER, 0, 0, -1, 0, 0, 0, 0};

/* End the server (its socket closed, then SIGKILL to its group, which holds no worker:
 * each has a group of its own) and reap it. */
static void
server_end_locked(void)
{
    close_fd(&server.fd);
    server.retired = 0;
    if (server.pid > 0) {
        (void)kill(-server.pid, SIGKILL);
        while (waitpid(server.pid, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    server.pid = 0;
}

/* Send one request (fds: its descriptors, nfds of them, or NULL) with the next sequence
 * number; 0, or -1 after retiring the server. */
static int
server_send_locked(int32_t command, int32_t argument, const int *fds, int nfds)
{
    int32_t message[3] = {command, argument, ++server.seq};
    struct iovec iov = {message, sizeof(message)};
    union {
        char buf[CMSG_SPACE(3 * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr header;
    ssize_t n;

    if (nfds > 3) {
        return -1;
    }
    memset(&header, 0, sizeof(header));
    header.msg_iov = &iov;
    header.msg_iovlen = 1;
    if (fds != NULL && nfds > 0) {
        memset(&control, 0, sizeof(control));
        header.msg_control = control.buf;
        header.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&header);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(cmsg), fds, (size_t)nfds * sizeof(int));
    }
    do {
        n = sendmsg(server.fd, &header, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof(message)) {
        server.retired = 1;
        return -1;
    }
    return 0;
}

/* Send one request to the server the batch uses and wait for its answer, one at a time.
 * IO_READY with *answer set.  IO_TIMEOUT or IO_CANCELLED when the deadline passed or the
 * batch stopped first: the server is kept (its workers run on) and its late answer, which
 * carries an older sequence number, is skipped by the next request (a late worker finds
 * its pipes closed and exits).  IO_DIED when the batch has no server, or it is gone or
 * answered nonsense: it is then retired.  fds: the two pipe ends of XT_SERVER_FORK, or NULL. */
static int
server_request(const xt_proc_setup *setup, int32_t command, int32_t argument, const int *fds,
               double deadline, int cancel_fd, int32_t *answer)
{
    int32_t reply[2];
    ssize_t n;
    int io = IO_DIED;

    pthread_mutex_lock(&server.mu);
    if (server.fd < 0 || setup->server_gen == 0 || server.gen != setup->server_gen
        || server.owner != getpid()) {
        goto done;
    }
    if (server_send_locked(command, argument, fds, fds != NULL ? 2 : 0) != 0) {
        goto done;
    }
    for (;;) {
        /* Its socket end closes when it dies (no worker keeps a copy): that reads as the
         * end. */
        io = wait_ready(server.fd, POLLIN, -1, deadline, cancel_fd);
        if (io != IO_READY) {
            goto done;
        }
        do {
            n = recv(server.fd, reply, sizeof(reply), 0);
        } while (n < 0 && errno == EINTR);
        if (n != (ssize_t)sizeof(reply)) {
            io = IO_DIED;
            server.retired = 1;
            goto done;
        }
        if (reply[0] == server.seq) {
            *answer = reply[1];
            goto done;
        }
        /* The late answer to a request that stopped waiting (or to a load): skipped. */
    }
done:
    pthread_mutex_unlock(&server.mu);
    return io;
}

/* A fork of the server on the two pipe ends: 0 with *pid set, ETIMEDOUT or ECANCELED when
 * the deadline passed or the batch stopped while the server was busy, or EAGAIN when
 * there is no server, it is retired or it refused: the worker then starts cold. */
static int
server_fork(xt_proc_setup *setup, int child_in, int child_out, double deadline, pid_t *pid)
{
    const int ends[2] = {child_in, child_out};
    int32_t answer = 0;
    int io;

    if (setup->server_gen == 0) {
        return EAGAIN;
    }
    pthread_mutex_lock(&server.mu);
    io = server.retired && server.gen == setup->server_gen;
    pthread_mutex_unlock(&server.mu);
    if (io) {
        return EAGAIN;
    }
    io = server_request(setup, XT_SERVER_FORK, 0, ends, deadline, setup->cancel_fd, &answer);
    if (io == IO_TIMEOUT || io == IO_CANCELLED) {
        return io == IO_TIMEOUT ? ETIMEDOUT : ECANCELED;
    }
    if (io != IO_READY) {
        return EAGAIN;
    }
    if (answer <= 0) {
        /* It cannot fork (EDEADLK: loading a batch's functions started threads in it;
         * ESTALE: a module it imported changed on disk since). */
        pthread_mutex_lock(&server.mu);
        if (server.gen == setup->server_gen) {
            server.retired = 1;
        }
        pthread_mutex_unlock(&server.mu);
        return EAGAIN;
    }
    *pid = (pid_t)answer;
    return 0;
}

/* The raw wait status of a forked worker that has ended or been SIGKILLed, reaped by the
 * server; a server that is gone killed it with its parent-death signal, SIGKILL. */
static int
server_reap(xt_proc_setup *setup, pid_t pid)
{
    int32_t status = 0;
    if (server_request(setup, XT_SERVER_REAP, (int32_t)pid, NULL, 0.0, -1, &status) == IO_READY
        && status >= 0) {
        return (int)status;
    }
    return SIGKILL; /* the raw status of a process killed by SIGKILL */
}

/* Start a server (none runs): a new interpreter from setup->server_argv, stdin from
 * /dev/null, its control socket on fd 3.  Started on the main thread, it gets SIGKILL when
 * this process dies; started on another thread, which may end before the interpreter does,
 * it has no parent-death signal and exits at the end of its control socket instead (which
 * comes when this process dies: no other process keeps a copy).  Under server.mu. */
static void
server_spawn_locked(const xt_proc_setup *setup)
{
    int sv[2] = {-1, -1}, child_sv = -1;
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        return;
    }
    /* The child's end above fd 3, so that dup2 onto 3 never meets itself. */
    child_sv = fcntl(sv[1], F_DUPFD_CLOEXEC, 4);
    close_fd(&sv[1]);
    if (child_sv >= 0) {
        const xt_spawn_fd fds[] = {{0, -1, "/dev/null", O_RDONLY}, {3, child_sv, NULL, 0}};
        const int main_thread = (pid_t)syscall(SYS_gettid) == getpid();
        const xt_spawn_args args = {setup->server_argv, setup->envp, fds, 2, NULL, 1,
                                    !main_thread};
        if (xt_spawn(&args, &pid) == 0) {
            server.pid = pid;
            server.owner = getpid();
            server.fd = sv[0];
            server.gen++;
            sv[0] = -1;
        }
    }
    close_fd(&child_sv);
    close_fd(&sv[0]);
}

/* Hand the server the batch's frame (setup->server_init) in a memory file (memfd), and
 * this process's stdout and stderr as they are now (a worker prints where a new
 * interpreter started now would), without waiting: its answer is skipped by the next request, which the server answers
 * only once it has loaded the frame.  A frame that cannot be handed over is left out:
 * the workers then load the batch's functions themselves.  Under server.mu. */
static void
server_load_locked(const xt_proc_setup *setup)
{
    int fd = (int)syscall(SYS_memfd_create, "xetrack-server-frame", MFD_CLOEXEC);
    const char *data = setup->server_init;
    size_t left = setup->server_init_len;

    if (fd < 0) {
        return;
    }
    while (left > 0) {
        ssize_t n = write(fd, data, left);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            close_fd(&fd);
            return;
        }
        data += n;
        left -= (size_t)n;
    }
    if (lseek(fd, 0, SEEK_SET) == 0) {
        const int fds[3] = {fd, STDOUT_FILENO, STDERR_FILENO};
        (void)server_send_locked(XT_SERVER_LOAD, 0, fds, 3);
    }
    close_fd(&fd);
}

/* Drop what a fork of the server's owner inherited: the copy of its socket (so that the
 * owner's death still ends it), and the server itself, which is the owner's child. */
static void
server_forget_locked(void)
{
    close_fd(&server.fd);
    server.pid = 0;
    server.owner = 0;
    server.users = 0;
    server.retired = 0;
}

void
xt_proc_server_start(xt_proc_setup *setup)
{
    setup->server_gen = 0;
    if (setup->server_argv == NULL) {
        return;
    }
    pthread_mutex_lock(&server.mu);
    if (server.owner != getpid()) {
        server_forget_locked();
    }
    if (server.pid > 0 && server.users == 0) {
        /* Replace a server that was retired, or died between batches. */
        int status;
        pid_t got;
        do {
            got = waitpid(server.pid, &status, WNOHANG);
        } while (got < 0 && errno == EINTR);
        if (got == server.pid) {
            server.pid = 0;
            close_fd(&server.fd);
            server.retired = 0;
        }
        else if (server.retired) {
            server_end_locked();
        }
    }
    if (server.pid == 0) {
        server_spawn_locked(setup);
    }
    if (server.fd >= 0 && !server.retired) {
        server_load_locked(setup);
    }
    if (server.fd >= 0 && !server.retired) {
        setup->server_gen = server.gen;
        server.users++;
    }
    pthread_mutex_unlock(&server.mu);
}

void
xt_proc_server_release(xt_proc_setup *setup)
{
    if (setup->server_gen == 0) {
        return;
    }
    pthread_mutex_lock(&server.mu);
    if (server.gen == setup->server_gen && server.owner == getpid()) {
        server.users--;
        if (server.retired && server.users == 0) {
            server_end_locked();
        }
    }
    pthread_mutex_unlock(&server.mu);
    setup->server_gen = 0;
}

void
xt_proc_server_forget(void)
{
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    server.mu = fresh; /* another thread of the parent may have held it at the fork */
    server_forget_locked();
}

void
xt_proc_server_shutdown(void)
{
    pthread_mutex_lock(&server.mu);
    if (server.owner == getpid()) {
        server_end_locked();
    }
    pthread_mutex_unlock(&server.mu);
}

/* ------------------------------------------------------------------ workers */
/* Start a worker: a fork of the warm server, or a new interpreter where there is none.
 * 0, or an errno (ETIMEDOUT, ECANCELED: the deadline passed or the batch stopped while
 * it waited for the server). */
static int
proc_spawn(xt_proc_setup *setup, xt_proc **out, double deadline)
{
    int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1};
    int child_in = -1, child_out = -1, rc, forked = 0;
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
    rc = server_fork(setup, child_in, child_out, deadline, &pid);
    if (rc == 0) {
        forked = 1;
    }
    else if (rc == EAGAIN) {
        const xt_spawn_fd fds[] = {
            {0, -1, "/dev/null", O_RDONLY},
            {CHILD_IN_FD, child_in, NULL, 0},
            {CHILD_OUT_FD, child_out, NULL, 0},
        };
        const xt_spawn_args args = {setup->argv, setup->envp, fds, 3, NULL, 1, 0};
        rc = xt_spawn(&args, &pid);
    }
    close_fd(&child_in);
    close_fd(&child_out);
    if (rc != 0) {
        goto fail;
    }
    proc = calloc(1, sizeof(xt_proc));
    if (proc == NULL) {
        rc = ENOMEM;
        (void)kill(-pid, SIGKILL);
        if (forked) {
            (void)server_reap(setup, pid);
        }
        else {
            while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
            }
        }
        goto fail;
    }
    proc->pid = pid;
    proc->forked = forked;
    proc->pidfd = (int)syscall(SYS_pidfd_open, pid, 0); /* a forked worker is no child of ours */
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

/* Stop (SIGTERM, setup->grace, then SIGKILL) or just clean up after a worker, reap it
 * and free it; its exit code, or -signal. */
static long
proc_end(xt_proc *proc, xt_proc_setup *setup, int stop)
{
    int wstatus = 0;
    long code = 0;
    if (stop) {
        (void)kill(-proc->pid, SIGTERM);
        wait_end(proc, setup->grace);
    }
    /* Always, before reaping: the leader is at worst a zombie, so the group id cannot have
     * been reused, and anything the task started in the group goes too.  (A forked worker
     * whose server died has been reaped by init, which makes this a rare, harmless miss:
     * the worker is already gone, and a new group with its number is unlikely this soon.) */
    (void)kill(-proc->pid, SIGKILL);
    if (proc->forked) {
        wstatus = server_reap(setup, proc->pid);
    }
    else {
        while (waitpid(proc->pid, &wstatus, 0) < 0 && errno == EINTR) {
        }
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
xt_proc_send(xt_proc **slot, xt_proc_setup *setup, const char *payload,
             size_t payload_len, double deadline, xt_proc_result *out)
{
    int io = IO_READY;

    memset(out, 0, sizeof(*out));
    for (int attempt = 0;; attempt++) {
        int fresh = 0;
        if (*slot == NULL) {
            int rc = proc_spawn(setup, slot, deadline);
            if (rc == ETIMEDOUT || rc == ECANCELED) {
                out->outcome = rc == ETIMEDOUT ? XT_PROC_TIMEOUT : XT_PROC_CANCELLED;
                return -1;
            }
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
            (void)proc_end(*slot, setup, 0);
            *slot = NULL;
            continue;
        }
        break;
    }
    out->outcome = outcome_of(io);
    if ((*slot)->pending > 0) {
        return -1; /* the replies to the frames before this one say what happened */
    }
    out->exit_code = proc_end(*slot, setup, io != IO_DIED);
    *slot = NULL;
    return -1;
}

int
xt_proc_receive(xt_proc **slot, xt_proc_setup *setup, double deadline,
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
        (void)proc_end(*slot, setup, 0);
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
    out->exit_code = proc_end(*slot, setup, io != IO_DIED);
    *slot = NULL;
    out->outcome = outcome_of(io);
    return out->outcome;
}

int
xt_proc_run(xt_proc **slot, xt_proc_setup *setup, const char *payload,
            size_t payload_len, double timeout, xt_proc_result *out)
{
    double deadline = timeout > 0 ? now_seconds() + timeout : 0.0;
    if (xt_proc_send(slot, setup, payload, payload_len, deadline, out) != 0) {
        return out->outcome;
    }
    return xt_proc_receive(slot, setup, deadline, out);
}

void
xt_proc_close(xt_proc *proc, xt_proc_setup *setup)
{
    if (proc == NULL) {
        return;
    }
    close_fd(&proc->to_child);
    wait_end(proc, setup->grace);
    (void)proc_end(proc, setup, 0);
}
