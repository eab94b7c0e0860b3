/* The script launcher of run_tasks (launcher.h): spawn of a script (spawner.c: a process
 * group of its own, SIGKILL when its worker thread ends) with stdout and stderr sent to
 * files, waits on a pidfd (or a reaper thread) and the batch's cancel pipe with poll(),
 * SIGTERM then SIGKILL to the group on timeout or cancel, the tail of its stderr; and the
 * client side of the per-worker fork server that runs scripts carrying a launch request.
 * No Python objects are touched here: these functions run on worker threads without the
 * GIL. */
#include "launcher.h"
#include "spawner.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define XT_TAIL_BYTES 4096

/* ------------------------------------------------------------------ script tasks */
typedef struct {
    pid_t pid;
    int status;
    int fd; /* write end, closed when the child is reaped */
} xt_reaper;

/* Fallback when pidfd_open is unavailable: a thread blocked in waitpid. */
static void *
reaper_main(void *arg)
{
    xt_reaper *r = arg;
    while (waitpid(r->pid, &r->status, 0) < 0 && errno == EINTR) {
    }
    (void)close(r->fd);
    return NULL;
}

/* Wait up to `seconds` for fd to become readable (-1: forever); 1 if it did. */
static int
wait_readable(int fd, double seconds)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    double deadline = xt_monotonic_now() + seconds;
    for (;;) {
        int ms = -1;
        if (seconds >= 0) {
            double left = deadline - xt_monotonic_now();
            ms = left > 0 ? (int)ceil(left * 1000.0) : 0;
        }
        int n = poll(&pfd, 1, ms);
        if (n > 0) {
            return 1;
        }
        if (n == 0) {
            return 0;
        }
        if (errno != EINTR) {
            return 0;
        }
    }
}

static void
read_tail(xt_task *task)
{
    struct stat sb;
    int fd = open(task->err_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return;
    }
    if (fstat(fd, &sb) == 0 && sb.st_size > 0) {
        off_t offset = sb.st_size > XT_TAIL_BYTES ? sb.st_size - XT_TAIL_BYTES : 0;
        size_t want = (size_t)(sb.st_size - offset);
        char *buf = malloc(want);
        size_t got = 0;
        while (buf != NULL && got < want) {
            ssize_t r = pread(fd, buf + got, want - got, offset + (off_t)got);
            if (r < 0 && errno == EINTR) {
                continue;
            }
            if (r <= 0) {
                break;
            }
            got += (size_t)r;
        }
        task->tail = buf;
        task->tail_len = buf != NULL ? got : 0;
    }
    (void)close(fd);
}

/* Waits until `fd` turns readable (the child ended), the deadline passes (0: none) or the
 * batch is cancelled; 0, or the status the child is to be stopped with. */
static int
wait_child(xt_pool *pool, int fd, double deadline)
{
    for (;;) {
        struct pollfd fds[2] = {{fd, POLLIN, 0}, {pool->wake_fds[0], POLLIN, 0}};
        int ms = -1;
        if (deadline > 0) {
            double left = deadline - xt_monotonic_now();
            if (left <= 0) {
                return XT_TASK_TIMEOUT;
            }
            ms = (int)ceil(left * 1000.0);
        }
        int n = poll(fds, 2, ms);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return XT_TASK_CANCELLED;
        }
        if (fds[0].revents) {
            return 0;
        }
        if (fds[1].revents && atomic_load(&pool->cancel) == CANCEL_ALL) {
            return atomic_load(&pool->cancel_status);
        }
    }
}

/* SIGTERM to the child's process group, up to `grace` seconds for `fd` (-1: none) to say
 * it ended, then SIGKILL -- always, as grandchildren that ignored SIGTERM are in the group. */
static void
stop_group(xt_pool *pool, pid_t pid, int fd)
{
    (void)kill(-pid, SIGTERM);
    if (fd >= 0) {
        (void)wait_readable(fd, pool->grace);
    }
    (void)kill(-pid, SIGKILL);
}

/* Records how a script child ended: its raw wait status, the status it was stopped with
 * (0: not stopped), its duration and the tail of its stderr. */
static void
finish_script(xt_task *task, int wstatus, int stop, double start)
{
    task->duration = xt_monotonic_now() - start;
    if (WIFEXITED(wstatus)) {
        task->exit_code = WEXITSTATUS(wstatus);
    }
    else if (WIFSIGNALED(wstatus)) {
        task->exit_code = -(long)WTERMSIG(wstatus);
    }
    task->status = stop ? stop : task->exit_code == 0 ? XT_TASK_COMPLETED : XT_TASK_FAILED;
    read_tail(task);
}

static int
spawn_script(xt_task *task, pid_t *pid)
{
    const xt_spawn_fd fds[] = {
        {0, -1, "/dev/null", O_RDONLY},
        {1, -1, task->out_path, O_WRONLY | O_CREAT | O_TRUNC},
        {2, -1, task->err_path, O_WRONLY | O_CREAT | O_TRUNC},
    };
    const xt_spawn_args args = {task->argv, task->envp, fds, 3, task->cwd, 1, 0};
    return xt_spawn(&args, pid);
}

void
xt_run_script(xt_pool *pool, xt_task *task)
{
    double start = xt_monotonic_now();
    double deadline = task->timeout > 0 ? start + task->timeout : 0.0;
    pid_t pid = -1;
    int pidfd = -1, watch_fd = -1, wstatus = 0, stop = 0;
    int reaper_pipe[2] = {-1, -1};
    xt_reaper reaper = {0, 0, -1};
    pthread_t reaper_thread;
    int have_reaper = 0;

    int rc = spawn_script(task, &pid);
    if (rc != 0) {
        task->status = XT_TASK_SPAWN_ERROR;
        task->spawn_errno = rc;
        task->duration = xt_monotonic_now() - start;
        return;
    }
    pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd >= 0) {
        watch_fd = pidfd;
    }
    else if (pipe2(reaper_pipe, O_CLOEXEC) == 0) {
        reaper.pid = pid;
        reaper.fd = reaper_pipe[1];
        if (pthread_create(&reaper_thread, NULL, reaper_main, &reaper) == 0) {
            have_reaper = 1;
            watch_fd = reaper_pipe[0];
        }
        else {
            (void)close(reaper_pipe[1]);
        }
    }

    if (watch_fd >= 0) {
        stop = wait_child(pool, watch_fd, deadline);
    }
    if (stop) {
        stop_group(pool, pid, watch_fd);
    }
    if (have_reaper) {
        pthread_join(reaper_thread, NULL);
        wstatus = reaper.status;
    }
    else {
        while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
        }
    }
    if (pidfd >= 0) {
        (void)close(pidfd);
    }
    if (reaper_pipe[0] >= 0) {
        (void)close(reaper_pipe[0]);
    }
    finish_script(task, wstatus, stop, start);
}

/* ------------------------------------------------------------------ fork server */
/* A script task with a launch request runs through its worker's fork server: a warm
 * interpreter (started once with xt_spawn, never a fork of this threaded process, so it
 * dies with this worker thread) that forks a child per request, answers with the child's
 * pid, then with its wait status; each child dies with the server (forkserver.py).  The
 * server leaves an ended child a zombie until its next request, so signalling the child's
 * process group here can never hit a reused pid. */

static int
write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads a 4-byte little-endian int; -1 at end of file or on error. */
static int
read_int32(int fd, int32_t *value)
{
    unsigned char buf[4];
    size_t got = 0;
    while (got < sizeof(buf)) {
        ssize_t n = read(fd, buf + got, sizeof(buf) - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        got += (size_t)n;
    }
    *value = (int32_t)((uint32_t)buf[0] | (uint32_t)buf[1] << 8 | (uint32_t)buf[2] << 16
                       | (uint32_t)buf[3] << 24);
    return 0;
}

void
xt_forkserver_stop(xt_worker *w)
{
    if (w->fs_pid <= 0) {
        return;
    }
    (void)close(w->fs_in); /* end of input: the server reaps its last child and exits */
    (void)close(w->fs_out);
    while (waitpid(w->fs_pid, NULL, 0) < 0 && errno == EINTR) {
    }
    w->fs_pid = 0;
    w->fs_in = w->fs_out = -1;
}

/* Starts the worker's fork server if it has none; 0, or an errno value. */
static int
forkserver_start(xt_pool *pool, xt_worker *w)
{
    int to_server[2], from_server[2], rc;
    pid_t pid;

    if (w->fs_pid > 0) {
        return 0;
    }
    if (pipe2(to_server, O_CLOEXEC) != 0) {
        return errno;
    }
    if (pipe2(from_server, O_CLOEXEC) != 0) {
        rc = errno;
        (void)close(to_server[0]);
        (void)close(to_server[1]);
        return rc;
    }
    /* Its own process group: a Ctrl-C at the terminal is this process's to handle. */
    const xt_spawn_fd fds[] = {{0, to_server[0], NULL, 0}, {1, from_server[1], NULL, 0}};
    const xt_spawn_args args = {pool->fs_argv, pool->fs_envp, fds, 2, NULL, 0, 0};
    rc = xt_spawn(&args, &pid);
    (void)close(to_server[0]);
    (void)close(from_server[1]);
    if (rc != 0) {
        (void)close(to_server[1]);
        (void)close(from_server[0]);
        return rc;
    }
    w->fs_pid = pid;
    w->fs_in = to_server[1];
    w->fs_out = from_server[0];
    return 0;
}

void
xt_run_script_forked(xt_pool *pool, xt_worker *w, xt_task *task)
{
    double start = xt_monotonic_now();
    double deadline = task->timeout > 0 ? start + task->timeout : 0.0;
    unsigned char header[4];
    int32_t pid = 0, wstatus = 0;
    int rc, stop = 0;

    rc = forkserver_start(pool, w);
    if (rc == 0) {
        uint32_t len = (uint32_t)task->request_len;
        header[0] = (unsigned char)(len & 0xFF);
        header[1] = (unsigned char)(len >> 8 & 0xFF);
        header[2] = (unsigned char)(len >> 16 & 0xFF);
        header[3] = (unsigned char)(len >> 24 & 0xFF);
        if (write_all(w->fs_in, (const char *)header, 4) < 0
            || write_all(w->fs_in, task->request, task->request_len) < 0
            || read_int32(w->fs_out, &pid) < 0) {
            rc = EPIPE; /* the server is gone: start a new one for the next task */
        }
        else if (pid <= 0) {
            rc = pid < 0 ? -pid : ECHILD;
        }
    }
    if (rc != 0) {
        xt_forkserver_stop(w);
        task->status = XT_TASK_SPAWN_ERROR;
        task->spawn_errno = rc;
        task->duration = xt_monotonic_now() - start;
        return;
    }
    stop = wait_child(pool, w->fs_out, deadline);
    if (stop) {
        stop_group(pool, (pid_t)pid, w->fs_out);
    }
    if (read_int32(w->fs_out, &wstatus) < 0) {
        /* The server died while the child ran: make sure the child's group is gone too. */
        (void)kill(-(pid_t)pid, SIGKILL);
        xt_forkserver_stop(w);
        wstatus = SIGKILL;
    }
    finish_script(task, wstatus, stop, start);
}
