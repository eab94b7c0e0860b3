/* The worker pool behind run_multiple (see executor.h and docs/design.md).
 *
 * run_tasks() copies every task into C memory, starts pthread workers and waits on a
 * condition variable with the GIL released.  A worker takes a slot of the process-wide
 * limit, takes the next task and:
 *   - for a function task, takes the GIL (its own thread state, made once with
 *     PyGILState_Ensure) for the call only;
 *   - for a script task, posix_spawn()s it in a process group of its own with stdout and
 *     stderr sent to files, and waits on a pidfd (or a reaper thread) and the batch's
 *     cancel pipe with poll(); on timeout or cancel it sends SIGTERM to the group, waits
 *     a grace period, then SIGKILL.
 * The calling thread wakes on every completion, and at least every 100 ms to run signal
 * handlers (Ctrl-C), enforce function and batch deadlines and follow a cancelled parent
 * batch; it hands each finished task to the Python callback on_done in completion order.
 */
#include "executor.h"
#include "procpool.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define XT_TAIL_BYTES 4096
#define XT_TICK_SECONDS 0.1
/* Process tasks sent to a worker process at once (see take_chunk_locked). */
#define XT_CHUNK_MAX 16
#define XT_CHUNK_BYTES 32768

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
    char *request; /* launch request for the worker's fork server, or NULL: posix_spawn */
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

/* Process-wide limit on running workers.  It is shared by every batch of the process so
 * that batches started inside tasks (nested run_multiple) cannot multiply the number of
 * running tasks; a worker waiting on its inner batch lends its slot.  The limit is
 * max(CPUs, largest worker count of the top-level batches running). */
static pthread_mutex_t limit_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t limit_cv = PTHREAD_COND_INITIALIZER;
static int limit_running;     /* slots in use */
static int limit_max = 1;     /* current limit */
static int limit_batches;     /* top-level batches running */
static int limit_batches_max; /* largest worker count among them since the count was 0 */

/* The pool worker running on this thread, if any: a batch started from inside a task
 * lends that worker's slot and follows its pool's cancellation. */
static _Thread_local xt_worker *current_worker;

static double
monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------ worker limit */
static int
cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void
limit_update_locked(void)
{
    int cpus = cpu_count();
    limit_max = limit_batches_max > cpus ? limit_batches_max : cpus;
    pthread_cond_broadcast(&limit_cv);
}

static void
limit_batch_begin(int workers)
{
    pthread_mutex_lock(&limit_mu);
    if (limit_batches++ == 0) {
        limit_batches_max = 0;
    }
    if (workers > limit_batches_max) {
        limit_batches_max = workers;
    }
    limit_update_locked();
    pthread_mutex_unlock(&limit_mu);
}

static void
limit_batch_end(void)
{
    pthread_mutex_lock(&limit_mu);
    if (--limit_batches == 0) {
        limit_batches_max = 0;
    }
    limit_update_locked();
    pthread_mutex_unlock(&limit_mu);
}

/* Take a slot; 0 when the pool was cancelled while waiting (pool NULL: wait regardless). */
static int
slot_acquire(xt_pool *pool)
{
    int ok = 1;
    pthread_mutex_lock(&limit_mu);
    for (;;) {
        if (pool != NULL && atomic_load(&pool->cancel) != CANCEL_NONE) {
            ok = 0;
            break;
        }
        if (limit_running < limit_max) {
            limit_running++;
            break;
        }
        pthread_cond_wait(&limit_cv, &limit_mu);
    }
    pthread_mutex_unlock(&limit_mu);
    return ok;
}

static void
slot_release(void)
{
    pthread_mutex_lock(&limit_mu);
    limit_running--;
    pthread_cond_broadcast(&limit_cv);
    pthread_mutex_unlock(&limit_mu);
}

static void
wake_slot_waiters(void)
{
    pthread_mutex_lock(&limit_mu);
    pthread_cond_broadcast(&limit_cv);
    pthread_mutex_unlock(&limit_mu);
}

/* ------------------------------------------------------------------ function tasks */
/* The raised exception with its traceback attached (new reference); clears the error. */
static PyObject *
take_exception(void)
{
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value == NULL) {
        value = Py_NewRef(Py_None);
    }
    else if (tb != NULL) {
        (void)PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    PyErr_Clear();
    return value;
}

static void
run_function(xt_worker *w, Py_ssize_t index)
{
    xt_task *task = &w->pool->tasks[index];
    PyObject *res;

    if (w->tstate == NULL) {
        w->gil = PyGILState_Ensure();
        w->ident = PyThread_get_thread_ident();
        w->tstate = PyEval_SaveThread();
    }
    PyEval_RestoreThread(w->tstate);
    task->started = monotonic_now();
    w->running = index;
    res = PyObject_CallOneArg(task->callable, task->arg);
    if (res == NULL) {
        task->value = take_exception();
        task->status = XT_TASK_FAILED;
    }
    else {
        task->value = res;
        task->status = XT_TASK_COMPLETED;
    }
    task->duration = monotonic_now() - task->started;
    w->running = -1;
    if (task->interrupted) {
        /* An interruption sent after the task's last bytecode must not land in the next
         * task: a Python no-op lets it land now.  (PyThreadState_SetAsyncExc(id, NULL)
         * would leave the interpreter's eval breaker set on 3.11.) */
        PyObject *ignored = PyObject_CallNoArgs(w->pool->drain);
        Py_XDECREF(ignored);
        PyErr_Clear();
    }
    w->tstate = PyEval_SaveThread();
}

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
    double deadline = monotonic_now() + seconds;
    for (;;) {
        int ms = -1;
        if (seconds >= 0) {
            double left = deadline - monotonic_now();
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
            double left = deadline - monotonic_now();
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
    task->duration = monotonic_now() - start;
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
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    sigset_t empty, defaults;
    int rc;
    static const int default_signals[] = {SIGINT, SIGTERM, SIGPIPE, SIGXFSZ, SIGHUP, SIGQUIT};

    rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) {
        return rc;
    }
    rc = posix_spawnattr_init(&attr);
    if (rc != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return rc;
    }
    sigemptyset(&empty);
    sigemptyset(&defaults);
    for (size_t i = 0; i < sizeof(default_signals) / sizeof(default_signals[0]); i++) {
        sigaddset(&defaults, default_signals[i]);
    }
    if ((rc = posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)) == 0
        && (rc = posix_spawn_file_actions_addopen(&actions, 1, task->out_path,
                                                  O_WRONLY | O_CREAT | O_TRUNC, 0644)) == 0
        && (rc = posix_spawn_file_actions_addopen(&actions, 2, task->err_path,
                                                  O_WRONLY | O_CREAT | O_TRUNC, 0644)) == 0
        && (task->cwd == NULL
            || (rc = posix_spawn_file_actions_addchdir_np(&actions, task->cwd)) == 0)
        && (rc = posix_spawnattr_setpgroup(&attr, 0)) == 0
        && (rc = posix_spawnattr_setsigmask(&attr, &empty)) == 0
        && (rc = posix_spawnattr_setsigdefault(&attr, &defaults)) == 0
        && (rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK
                                                     | POSIX_SPAWN_SETSIGDEF)) == 0) {
        rc = posix_spawn(pid, task->argv[0], &actions, &attr, task->argv, task->envp);
    }
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    return rc;
}

static void
run_script(xt_pool *pool, xt_task *task)
{
    double start = monotonic_now();
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
        task->duration = monotonic_now() - start;
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

/* ------------------------------------------------------------------ process tasks */
/* A process task's outputs from how its worker process answered. */
static void
finish_process_task(xt_pool *pool, xt_task *task, const xt_proc_result *out, double duration)
{
    task->duration = duration;
    task->exit_code = out->exit_code;
    switch (out->outcome) {
    case XT_PROC_REPLIED:
        task->status = XT_TASK_COMPLETED; /* the reply says whether the call raised */
        task->reply = out->reply;
        task->reply_len = out->reply_len;
        break;
    case XT_PROC_DIED:
        task->status = XT_TASK_FAILED;
        break;
    case XT_PROC_TIMEOUT:
        task->status = XT_TASK_TIMEOUT;
        break;
    case XT_PROC_CANCELLED:
        task->status = atomic_load(&pool->cancel_status);
        break;
    default:
        task->status = XT_TASK_SPAWN_ERROR;
        task->spawn_errno = out->error;
        break;
    }
}

/* Run a process task on this worker's worker process (started or replaced as needed). */
static void
run_process(xt_pool *pool, xt_worker *w, xt_task *task)
{
    xt_proc_result out;
    double start = monotonic_now();

    (void)xt_proc_run(&w->proc, &pool->procs, task->payload_data, task->payload_len,
                      task->timeout, &out);
    finish_process_task(pool, task, &out, monotonic_now() - start);
}

/* ------------------------------------------------------------------ scheduling */
enum { TAKE_NOTHING = -1, TAKE_WAIT = -2 };

/* The next task for worker w, under pool->mu: its index (now running), TAKE_NOTHING when
 * nothing is left for it, or TAKE_WAIT with *wait_until set (a retry's time or the start
 * rate).  Order: its own group's task waiting for a retry, the next task of its group,
 * the earliest retry that is due, then the first queued task that starts a group or has
 * none. */
static Py_ssize_t
take_task_locked(xt_pool *pool, xt_worker *w, double *wait_until)
{
    Py_ssize_t pick = -1, slot = -1;
    double earliest = 0.0, now;
    int from = 0;

    if (atomic_load(&pool->cancel) != CANCEL_NONE) {
        return TAKE_NOTHING;
    }
    now = monotonic_now();
    if (w->held >= 0) {
        if (pool->tasks[w->held].not_before > now) {
            *wait_until = pool->tasks[w->held].not_before;
            return TAKE_WAIT;
        }
        pick = w->held;
        from = 1;
    }
    else if (w->follow >= 0) {
        pick = w->follow;
        from = 2;
    }
    else {
        for (Py_ssize_t i = 0; i < pool->nretry; i++) {
            double at = pool->tasks[pool->retry_list[i]].not_before;
            if (at <= now) {
                if (pick < 0 || at < pool->tasks[pick].not_before) {
                    pick = pool->retry_list[i];
                    slot = i;
                }
            }
            else if (earliest == 0.0 || at < earliest) {
                earliest = at;
            }
        }
        if (pick >= 0) {
            from = 3;
        }
        else {
            while (pool->next < pool->n && pool->tasks[pool->next].follower) {
                pool->next++;
            }
            if (pool->next >= pool->n) {
                if (earliest > 0.0) {
                    *wait_until = earliest;
                    return TAKE_WAIT;
                }
                return TAKE_NOTHING;
            }
            pick = pool->next;
            from = 4;
        }
    }
    if (pool->rate_interval > 0) {
        if (now < pool->next_start) {
            *wait_until = pool->next_start;
            return TAKE_WAIT;
        }
        pool->next_start = now + pool->rate_interval;
    }
    w->from_queue = from == 4;
    if (from == 1) {
        w->held = -1;
    }
    else if (from == 2) {
        w->follow = -1;
    }
    else if (from == 3) {
        pool->retry_list[slot] = pool->retry_list[--pool->nretry];
    }
    else {
        pool->next++;
    }
    pool->tasks[pick].state = STATE_RUNNING;
    pool->tasks[pick].ran_on = w->index;
    return pick;
}

/* Under pool->mu: wait until `until` (monotonic), new work or a stop of the batch. */
static void
wait_for_work_locked(xt_pool *pool, unsigned long generation, double until)
{
    struct timespec ts;
    ts.tv_sec = (time_t)until;
    ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
    while (pool->work_gen == generation && atomic_load(&pool->cancel) == CANCEL_NONE) {
        if (pthread_cond_timedwait(&pool->work_cond, &pool->mu, &ts) == ETIMEDOUT) {
            break;
        }
    }
}

/* Under pool->mu: the process tasks to send to w's worker process together with `first`
 * (in w->chunk; their count), so that the worker process never waits for a round trip
 * between two of them.  Only queued tasks without a timeout or a group, in a batch with
 * neither gating nor a start rate, at most a quarter of each worker's share of what is
 * left (the last tasks stay spread over the workers) and XT_CHUNK_BYTES of payload (the
 * frames fit in the pipe, so sending never waits for the worker). */
static int
take_chunk_locked(xt_pool *pool, xt_worker *w, Py_ssize_t first)
{
    xt_task *task = &pool->tasks[first];
    size_t bytes = task->payload_len;
    Py_ssize_t limit;
    int count = 1;

    w->chunk[0] = first;
    if (!pool->chunking || !w->from_queue || task->kind != TASK_PROCESS || task->timeout > 0
        || task->group_next >= 0 || task->follower) {
        return 1;
    }
    limit = (pool->n - pool->next) / ((Py_ssize_t)pool->planned * 4);
    if (limit > XT_CHUNK_MAX) {
        limit = XT_CHUNK_MAX;
    }
    while (count < limit && pool->next < pool->n) {
        xt_task *next = &pool->tasks[pool->next];
        if (next->kind != TASK_PROCESS || next->timeout > 0 || next->group_next >= 0
            || next->follower || bytes + next->payload_len > XT_CHUNK_BYTES) {
            break;
        }
        bytes += next->payload_len;
        next->state = STATE_RUNNING;
        next->ran_on = w->index;
        w->chunk[count++] = pool->next++;
    }
    return count;
}

/* Queue a task that was taken but never reached a worker process (its worker died or the
 * batch stopped first): any worker runs it, as if it had never been taken. */
static void
requeue_unstarted(xt_pool *pool, Py_ssize_t index)
{
    pthread_mutex_lock(&pool->mu);
    pool->tasks[index].state = STATE_RETRY;
    pool->tasks[index].not_before = 0.0;
    pool->retry_list[pool->nretry++] = index;
    pool->work_gen++;
    pthread_cond_broadcast(&pool->work_cond);
    pthread_mutex_unlock(&pool->mu);
}

/* Hand a finished task to the calling thread; when gated, wait for its verdict. */
static void
post_done(xt_pool *pool, xt_worker *w, Py_ssize_t index)
{
    xt_task *task = &pool->tasks[index];
    pthread_mutex_lock(&pool->mu);
    task->state = STATE_DONE;
    Py_ssize_t position = pool->ndone++;
    pool->done_order[position % pool->done_cap] = index;
    pthread_cond_signal(&pool->cond);
    while (pool->gated && pool->judged <= position
           && atomic_load(&pool->cancel) == CANCEL_NONE) {
        pthread_cond_wait(&pool->judged_cond, &pool->mu);
    }
    if (task->state == STATE_DONE) {
        w->follow = task->group_next; /* a task queued for a retry keeps its group */
    }
    pthread_mutex_unlock(&pool->mu);
}

/* Outputs of an earlier attempt of a task that runs again. */
static void
reset_outputs(xt_task *task)
{
    free(task->tail);
    task->tail = NULL;
    task->tail_len = 0;
    free(task->reply);
    task->reply = NULL;
    task->reply_len = 0;
    task->interrupted = 0;
    task->exit_code = 0;
}

/* Send the process tasks of w->chunk to w's worker process, then take their replies in
 * order, reporting each as it arrives.  When the worker ends early (a task crashed it, or
 * the batch stopped), the tasks behind the one it was running go back to the queue. */
static void
run_process_chunk(xt_pool *pool, xt_worker *w, int count)
{
    xt_proc_result out;
    int sent = 0, k = 0;
    double mark;

    for (int i = 0; i < count; i++) {
        reset_outputs(&pool->tasks[w->chunk[i]]);
    }
    for (; sent < count; sent++) {
        xt_task *task = &pool->tasks[w->chunk[sent]];
        if (xt_proc_send(&w->proc, &pool->procs, task->payload_data, task->payload_len, 0.0,
                         &out) != 0) {
            break;
        }
    }
    mark = monotonic_now();
    if (sent == 0) {
        finish_process_task(pool, &pool->tasks[w->chunk[0]], &out, 0.0);
        post_done(pool, w, w->chunk[0]);
        k = 1;
    }
    for (; k < sent; k++) {
        xt_task *task = &pool->tasks[w->chunk[k]];
        double now;
        (void)xt_proc_receive(&w->proc, &pool->procs, 0.0, &out);
        now = monotonic_now();
        finish_process_task(pool, task, &out, now - mark);
        mark = now;
        post_done(pool, w, w->chunk[k]);
        if (out.outcome != XT_PROC_REPLIED) {
            k++;
            break;
        }
    }
    for (; k < count; k++) {
        requeue_unstarted(pool, w->chunk[k]);
    }
}

/* ------------------------------------------------------------------ fork server */
/* A script task with a launch request runs through its worker's fork server: a warm
 * interpreter (started once with posix_spawn, never a fork of this threaded process) that
 * forks a child per request, answers with the child's pid, then with its wait status.  The
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

static void
forkserver_stop(xt_worker *w)
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
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    sigset_t empty;
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
    rc = posix_spawn_file_actions_init(&actions);
    if (rc == 0 && (rc = posix_spawnattr_init(&attr)) != 0) {
        posix_spawn_file_actions_destroy(&actions);
    }
    if (rc == 0) {
        sigemptyset(&empty);
        /* Its own process group: a Ctrl-C at the terminal is this process's to handle. */
        if ((rc = posix_spawn_file_actions_adddup2(&actions, to_server[0], 0)) == 0
            && (rc = posix_spawn_file_actions_adddup2(&actions, from_server[1], 1)) == 0
            && (rc = posix_spawnattr_setpgroup(&attr, 0)) == 0
            && (rc = posix_spawnattr_setsigmask(&attr, &empty)) == 0
            && (rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP
                                                         | POSIX_SPAWN_SETSIGMASK)) == 0) {
            rc = posix_spawn(&pid, pool->fs_argv[0], &actions, &attr, pool->fs_argv,
                             pool->fs_envp);
        }
        posix_spawnattr_destroy(&attr);
        posix_spawn_file_actions_destroy(&actions);
    }
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

static void
run_script_forked(xt_pool *pool, xt_worker *w, xt_task *task)
{
    double start = monotonic_now();
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
        forkserver_stop(w);
        task->status = XT_TASK_SPAWN_ERROR;
        task->spawn_errno = rc;
        task->duration = monotonic_now() - start;
        return;
    }
    stop = wait_child(pool, w->fs_out, deadline);
    if (stop) {
        stop_group(pool, (pid_t)pid, w->fs_out);
    }
    if (read_int32(w->fs_out, &wstatus) < 0) {
        /* The server died while the child ran: make sure the child's group is gone too. */
        (void)kill(-(pid_t)pid, SIGKILL);
        forkserver_stop(w);
        wstatus = SIGKILL;
    }
    finish_script(task, wstatus, stop, start);
}

/* ------------------------------------------------------------------ workers */
static void *
worker_main(void *arg)
{
    xt_worker *w = arg;
    xt_pool *pool = w->pool;

    current_worker = w;
    for (;;) {
        Py_ssize_t index;
        double wait_until = 0.0;
        int count;
        if (!slot_acquire(pool)) {
            break;
        }
        w->holds_slot = 1;
        pthread_mutex_lock(&pool->mu);
        index = take_task_locked(pool, w, &wait_until);
        if (index == TAKE_WAIT) {
            /* Wait without holding a slot of the process-wide limit. */
            unsigned long generation = pool->work_gen;
            pthread_mutex_unlock(&pool->mu);
            w->holds_slot = 0;
            slot_release();
            pthread_mutex_lock(&pool->mu);
            wait_for_work_locked(pool, generation, wait_until);
            pthread_mutex_unlock(&pool->mu);
            continue;
        }
        count = index >= 0 ? take_chunk_locked(pool, w, index) : 0;
        pthread_mutex_unlock(&pool->mu);
        if (index < 0) {
            w->holds_slot = 0;
            slot_release();
            break;
        }
        if (count > 1) {
            run_process_chunk(pool, w, count);
            w->holds_slot = 0;
            slot_release();
            continue;
        }

        xt_task *task = &pool->tasks[index];
        reset_outputs(task);
        if (task->kind == TASK_FUNCTION) {
            run_function(w, index);
        }
        else if (task->kind == TASK_PROCESS) {
            run_process(pool, w, task);
        }
        else if (task->request != NULL) {
            run_script_forked(pool, w, task);
        }
        else {
            run_script(pool, task);
        }
        w->holds_slot = 0;
        slot_release();
        post_done(pool, w, index);
    }
    if (w->proc != NULL) {
        xt_proc_close(w->proc, pool->grace);
        w->proc = NULL;
    }
    forkserver_stop(w);
    if (w->tstate != NULL) {
        PyEval_RestoreThread(w->tstate);
        w->tstate = NULL;
        PyGILState_Release(w->gil);
    }
    current_worker = NULL;
    pthread_mutex_lock(&pool->mu);
    pool->live--;
    pthread_cond_signal(&pool->cond);
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

/* ------------------------------------------------------------------ building the pool */
static void
free_string_list(char **list)
{
    if (list == NULL) {
        return;
    }
    for (char **p = list; *p != NULL; p++) {
        free(*p);
    }
    free(list);
}

/* A malloc'd copy of a str/bytes/path in the filesystem encoding; NULL with an error. */
static char *
copy_fs_string(PyObject *obj, const char *what)
{
    PyObject *bytes = NULL;
    char *copy = NULL;
    if (!PyUnicode_FSConverter(obj, &bytes)) {
        PyErr_Format(PyExc_TypeError, "run_tasks: %s must be a str path without NUL "
                     "characters, not %.100s", what, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    copy = strdup(PyBytes_AS_STRING(bytes));
    Py_DECREF(bytes);
    if (copy == NULL) {
        PyErr_NoMemory();
    }
    return copy;
}

static char **
copy_string_list(PyObject *obj, const char *what)
{
    PyObject *seq = PySequence_Fast(obj, "run_tasks: argv and env must be lists of str");
    char **list = NULL;
    Py_ssize_t n;
    if (seq == NULL) {
        return NULL;
    }
    n = PySequence_Fast_GET_SIZE(seq);
    list = calloc((size_t)n + 1, sizeof(char *));
    if (list == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        list[i] = copy_fs_string(PySequence_Fast_GET_ITEM(seq, i), what);
        if (list[i] == NULL) {
            free_string_list(list);
            list = NULL;
            goto done;
        }
    }
done:
    Py_DECREF(seq);
    return list;
}

static int
parse_task(PyObject *item, Py_ssize_t index, xt_task *task)
{
    Py_ssize_t size;
    if (!PyTuple_Check(item)) {
        PyErr_Format(PyExc_TypeError, "run_tasks: task %zd must be a tuple", index);
        return -1;
    }
    size = PyTuple_GET_SIZE(item);
    if (size == 3) {
        task->kind = TASK_FUNCTION;
        task->callable = Py_NewRef(PyTuple_GET_ITEM(item, 0));
        task->arg = Py_NewRef(PyTuple_GET_ITEM(item, 1));
        task->timeout = PyFloat_AsDouble(PyTuple_GET_ITEM(item, 2));
    }
    else if (size == 6 || size == 7) {
        PyObject *cwd = PyTuple_GET_ITEM(item, 2);
        task->kind = TASK_SCRIPT;
        if ((task->argv = copy_string_list(PyTuple_GET_ITEM(item, 0), "argv item")) == NULL
            || (task->envp = copy_string_list(PyTuple_GET_ITEM(item, 1), "env item")) == NULL
            || (cwd != Py_None && (task->cwd = copy_fs_string(cwd, "cwd")) == NULL)
            || (task->out_path = copy_fs_string(PyTuple_GET_ITEM(item, 3), "stdout path")) == NULL
            || (task->err_path = copy_fs_string(PyTuple_GET_ITEM(item, 4), "stderr path")) == NULL) {
            return -1;
        }
        if (task->argv[0] == NULL) {
            PyErr_Format(PyExc_ValueError, "run_tasks: task %zd has an empty argv", index);
            return -1;
        }
        task->timeout = PyFloat_AsDouble(PyTuple_GET_ITEM(item, 5));
        if (size == 7 && PyTuple_GET_ITEM(item, 6) != Py_None) {
            char *data;
            Py_ssize_t len;
            if (PyBytes_AsStringAndSize(PyTuple_GET_ITEM(item, 6), &data, &len) < 0) {
                return -1;
            }
            if ((task->request = malloc((size_t)len + 1)) == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            memcpy(task->request, data, (size_t)len);
            task->request_len = (size_t)len;
        }
    }
    else if (size == 2) {
        PyObject *payload = PyTuple_GET_ITEM(item, 0);
        if (!PyBytes_Check(payload)) {
            PyErr_Format(PyExc_TypeError, "run_tasks: task %zd: the payload of a process "
                         "task must be bytes, not %.100s", index, Py_TYPE(payload)->tp_name);
            return -1;
        }
        task->kind = TASK_PROCESS;
        task->payload = Py_NewRef(payload);
        task->payload_data = PyBytes_AS_STRING(payload);
        task->payload_len = (size_t)PyBytes_GET_SIZE(payload);
        task->timeout = PyFloat_AsDouble(PyTuple_GET_ITEM(item, 1));
    }
    else {
        PyErr_Format(PyExc_TypeError,
                     "run_tasks: task %zd must be (callable, arg, timeout), "
                     "(argv, env, cwd, stdout_path, stderr_path, timeout[, launch_request]) or "
                     "(payload, timeout)", index);
        return -1;
    }
    if (task->timeout == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    return 0;
}

static void
pool_free(xt_pool *pool)
{
    if (pool == NULL) {
        return;
    }
    for (Py_ssize_t i = 0; pool->tasks != NULL && i < pool->n; i++) {
        xt_task *task = &pool->tasks[i];
        Py_XDECREF(task->callable);
        Py_XDECREF(task->arg);
        Py_XDECREF(task->value);
        Py_XDECREF(task->payload);
        free(task->reply);
        free_string_list(task->argv);
        free_string_list(task->envp);
        free(task->cwd);
        free(task->out_path);
        free(task->err_path);
        free(task->request);
        free(task->tail);
    }
    free_string_list(pool->fs_argv);
    free_string_list(pool->fs_envp);
    free(pool->tasks);
    free(pool->done_order);
    free(pool->retry_list);
    free(pool->workers);
    free_string_list(pool->procs.argv);
    free_string_list(pool->procs.envp);
    free(pool->procs.init);
    if (pool->wake_fds[0] >= 0) {
        (void)close(pool->wake_fds[0]);
        (void)close(pool->wake_fds[1]);
    }
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->cond);
    pthread_cond_destroy(&pool->judged_cond);
    pthread_cond_destroy(&pool->work_cond);
    free(pool);
}

static xt_pool *
pool_new(PyObject *tasks, double grace)
{
    xt_pool *pool = NULL;
    pthread_condattr_t cattr;
    PyObject *seq = PySequence_Fast(tasks, "run_tasks: tasks must be a list");
    if (seq == NULL) {
        return NULL;
    }
    pool = calloc(1, sizeof(xt_pool));
    if (pool == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    pool->wake_fds[0] = pool->wake_fds[1] = -1;
    pool->grace = grace;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&pool->cond, &cattr);
    pthread_cond_init(&pool->work_cond, &cattr);
    pthread_condattr_destroy(&cattr);
    pthread_cond_init(&pool->judged_cond, NULL);
    pool->n = PySequence_Fast_GET_SIZE(seq);
    pool->tasks = calloc((size_t)pool->n + 1, sizeof(xt_task));
    pool->done_cap = pool->n + 1;
    pool->done_order = calloc((size_t)pool->done_cap, sizeof(Py_ssize_t));
    pool->retry_list = calloc((size_t)pool->n + 1, sizeof(Py_ssize_t));
    if (pool->tasks == NULL || pool->done_order == NULL || pool->retry_list == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    if (pipe2(pool->wake_fds, O_CLOEXEC) != 0) {
        pool->wake_fds[0] = pool->wake_fds[1] = -1;
        PyErr_SetFromErrno(PyExc_OSError);
        goto fail;
    }
    for (Py_ssize_t i = 0; i < pool->n; i++) {
        pool->tasks[i].group_next = -1;
        pool->tasks[i].ran_on = -1;
        if (parse_task(PySequence_Fast_GET_ITEM(seq, i), i, &pool->tasks[i]) < 0) {
            goto fail;
        }
    }
    goto done;
fail:
    pool_free(pool);
    pool = NULL;
done:
    Py_DECREF(seq);
    return pool;
}

/* ------------------------------------------------------------------ the calling thread */
/* Raise the cancel level (never lowers it).  Called with the GIL held. */
static void
pool_cancel(xt_pool *pool, int level, int status)
{
    if (atomic_load(&pool->cancel) >= level) {
        return;
    }
    if (level == CANCEL_ALL) {
        atomic_store(&pool->cancel_status, status);
    }
    atomic_store(&pool->cancel, level);
    if (level == CANCEL_ALL) {
        (void)!write(pool->wake_fds[1], "x", 1);
    }
    Py_BEGIN_ALLOW_THREADS
    wake_slot_waiters();
    pthread_mutex_lock(&pool->mu);
    pthread_cond_broadcast(&pool->judged_cond);
    pthread_cond_broadcast(&pool->work_cond);
    pthread_mutex_unlock(&pool->mu);
    Py_END_ALLOW_THREADS
}

/* Queue task `index` to run again after `delay` seconds (on_done's verdict).  A task of a
 * group waits for the worker that ran it, so the group stays on one worker in order. */
static void
pool_retry(xt_pool *pool, Py_ssize_t index, double delay)
{
    xt_task *task = &pool->tasks[index];
    double at = monotonic_now() + (delay > 0 ? delay : 0.0);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&pool->mu);
    task->state = STATE_RETRY;
    task->not_before = at;
    if ((task->follower || task->group_next >= 0) && task->ran_on >= 0) {
        pool->workers[task->ran_on].held = index;
    }
    else {
        pool->retry_list[pool->nretry++] = index;
    }
    pool->work_gen++;
    pthread_cond_broadcast(&pool->work_cond);
    pthread_mutex_unlock(&pool->mu);
    Py_END_ALLOW_THREADS
}

/* Send the timeout or cancel exception to function tasks that must stop. */
static void
supervise_functions(xt_state *st, xt_pool *pool)
{
    double now = monotonic_now();
    int cancel_all = atomic_load(&pool->cancel) == CANCEL_ALL;
    for (int k = 0; k < pool->nworkers; k++) {
        xt_worker *w = &pool->workers[k];
        Py_ssize_t index = w->running;
        xt_task *task;
        int why = 0;
        if (index < 0) {
            continue;
        }
        task = &pool->tasks[index];
        if (task->interrupted) {
            /* Sent again every second: on 3.11 one thread's exception landing can hide
             * another thread's pending one. */
            if (now - task->interrupt_sent >= 1.0) {
                task->interrupt_sent = now;
                (void)PyThreadState_SetAsyncExc(w->ident, task->interrupted == XT_TASK_TIMEOUT
                                                              ? st->TaskTimeout
                                                              : st->TaskCancelled);
            }
            continue;
        }
        if (cancel_all) {
            why = atomic_load(&pool->cancel_status);
        }
        else if (task->timeout > 0 && now - task->started >= task->timeout) {
            why = XT_TASK_TIMEOUT;
        }
        if (why) {
            task->interrupted = why;
            task->interrupt_sent = now;
            (void)PyThreadState_SetAsyncExc(
                w->ident, why == XT_TASK_TIMEOUT ? st->TaskTimeout : st->TaskCancelled);
        }
    }
}

/* Call on_done(index, status, value, duration, stderr_tail) for one task; the callback's
 * result (new reference) or NULL with an exception. */
static PyObject *
report(xt_pool *pool, Py_ssize_t index, PyObject *on_done, int started)
{
    xt_task *task = &pool->tasks[index];
    PyObject *args[5] = {NULL, NULL, NULL, NULL, NULL};
    PyObject *res = NULL;
    int status = started ? task->status : XT_TASK_CANCELLED;

    if (!started) {
        args[2] = Py_NewRef(Py_None);
    }
    else if (task->kind == TASK_FUNCTION) {
        /* Past its deadline is a timeout even if it returned; a task that finished
         * normally before a cancel landed keeps its result. */
        if (task->interrupted == XT_TASK_TIMEOUT
            || (task->interrupted == XT_TASK_CANCELLED && status != XT_TASK_COMPLETED)) {
            status = task->interrupted;
        }
        args[2] = task->value != NULL ? task->value : Py_NewRef(Py_None);
        task->value = NULL;
    }
    else if (task->kind == TASK_PROCESS) {
        if (task->status == XT_TASK_SPAWN_ERROR) {
            args[2] = PyUnicode_FromFormat("could not start a worker process: %s",
                                           strerror(task->spawn_errno));
        }
        else if (task->reply != NULL) {
            args[2] = PyBytes_FromStringAndSize(task->reply, (Py_ssize_t)task->reply_len);
            free(task->reply);
            task->reply = NULL;
        }
        else {
            args[2] = PyLong_FromLong(task->exit_code);
        }
    }
    else if (task->status == XT_TASK_SPAWN_ERROR) {
        args[2] = PyUnicode_FromFormat("could not start %s: %s", task->argv[0],
                                       strerror(task->spawn_errno));
    }
    else {
        args[2] = PyLong_FromLong(task->exit_code);
    }
    args[0] = PyLong_FromSsize_t(index);
    args[1] = PyLong_FromLong(status);
    args[3] = PyFloat_FromDouble(started ? task->duration : 0.0);
    args[4] = task->tail != NULL ? PyBytes_FromStringAndSize(task->tail, (Py_ssize_t)task->tail_len)
                                 : Py_NewRef(Py_None);
    if (args[0] == NULL || args[1] == NULL || args[2] == NULL || args[3] == NULL
        || args[4] == NULL) {
        goto done;
    }
    res = PyObject_Vectorcall(on_done, args, 5, NULL);
done:
    for (int i = 0; i < 5; i++) {
        Py_XDECREF(args[i]);
    }
    return res;
}

/* Report one task; the first error is kept in *saved and cancels the batch, later ones
 * are written as unraisable. */
static void
report_one(xt_pool *pool, Py_ssize_t index, PyObject *on_done, int started, PyObject **saved)
{
    PyObject *res = report(pool, index, on_done, started);
    if (res == NULL) {
        if (*saved == NULL) {
            *saved = take_exception();
            pool_cancel(pool, CANCEL_ALL, XT_TASK_CANCELLED);
        }
        else {
            PyErr_WriteUnraisable(on_done);
        }
        return;
    }
    if (started && PyFloat_CheckExact(res)) {
        double delay = PyFloat_AS_DOUBLE(res);
        Py_DECREF(res);
        pool_retry(pool, index, delay);
        return;
    }
    int stop = PyObject_IsTrue(res);
    Py_DECREF(res);
    if (stop < 0) {
        PyErr_WriteUnraisable(on_done);
    }
    else if (stop) {
        pool_cancel(pool, CANCEL_PENDING, XT_TASK_CANCELLED);
    }
}

static int
start_workers(xt_pool *pool, int nworkers)
{
    sigset_t all, old;
    int err = 0;
    pool->workers = calloc((size_t)nworkers, sizeof(xt_worker));
    if (pool->workers == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    pool->planned = nworkers;
    /* Workers block every signal: handlers run on the calling thread, and children get
     * an empty mask from posix_spawn. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (int k = 0; k < nworkers; k++) {
        xt_worker *w = &pool->workers[k];
        w->pool = pool;
        w->running = -1;
        w->fs_in = w->fs_out = -1;
        w->index = k;
        w->follow = -1;
        w->held = -1;
        pthread_mutex_lock(&pool->mu);
        pool->live++;
        pthread_mutex_unlock(&pool->mu);
        err = pthread_create(&w->thread, NULL, worker_main, w);
        if (err != 0) {
            pthread_mutex_lock(&pool->mu);
            pool->live--;
            pthread_mutex_unlock(&pool->mu);
            break;
        }
        pool->nworkers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pool->nworkers == 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

/* Chain the tasks of each group (groups[i]: a small int >= 0, or None/-1 for none). */
static int
link_groups(xt_pool *pool, PyObject *groups)
{
    int rc = -1;
    Py_ssize_t *last = NULL;
    PyObject *seq = PySequence_Fast(groups, "run_tasks: groups must be a list or None");
    if (seq == NULL) {
        return -1;
    }
    if (PySequence_Fast_GET_SIZE(seq) != pool->n) {
        PyErr_Format(PyExc_ValueError, "run_tasks: groups has %zd entries for %zd tasks",
                     PySequence_Fast_GET_SIZE(seq), pool->n);
        goto done;
    }
    last = malloc(((size_t)pool->n + 1) * sizeof(Py_ssize_t));
    if (last == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t g = 0; g < pool->n; g++) {
        last[g] = -1;
    }
    for (Py_ssize_t i = 0; i < pool->n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        Py_ssize_t g;
        if (item == Py_None) {
            continue;
        }
        g = PyLong_AsSsize_t(item);
        if (g == -1 && PyErr_Occurred()) {
            goto done;
        }
        if (g < -1 || g >= pool->n) {
            PyErr_Format(PyExc_ValueError, "run_tasks: group %zd of task %zd is not in "
                         "[-1, %zd)", g, i, pool->n);
            goto done;
        }
        if (g < 0) {
            continue;
        }
        if (last[g] >= 0) {
            pool->tasks[last[g]].group_next = i;
            pool->tasks[i].follower = 1;
        }
        last[g] = i;
    }
    rc = 0;
done:
    free(last);
    Py_DECREF(seq);
    return rc;
}

/* Copy (argv, env, init_frame) for the pool's worker processes. */
static int
set_procs(xt_pool *pool, PyObject *procs)
{
    PyObject *init;
    if (!PyTuple_Check(procs) || PyTuple_GET_SIZE(procs) != 3
        || !PyBytes_Check(PyTuple_GET_ITEM(procs, 2))) {
        PyErr_SetString(PyExc_TypeError,
                        "run_tasks: procs must be (argv, env, init_frame_bytes) or None");
        return -1;
    }
    init = PyTuple_GET_ITEM(procs, 2);
    if ((pool->procs.argv = copy_string_list(PyTuple_GET_ITEM(procs, 0), "argv item")) == NULL
        || (pool->procs.envp = copy_string_list(PyTuple_GET_ITEM(procs, 1), "env item"))
               == NULL) {
        return -1;
    }
    if (pool->procs.argv[0] == NULL) {
        PyErr_SetString(PyExc_ValueError, "run_tasks: the worker command (procs argv) is empty");
        return -1;
    }
    pool->procs.init_len = (size_t)PyBytes_GET_SIZE(init);
    pool->procs.init = malloc(pool->procs.init_len + 1);
    if (pool->procs.init == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(pool->procs.init, PyBytes_AS_STRING(init), pool->procs.init_len);
    pool->procs.grace = pool->grace;
    pool->procs.cancel_fd = pool->wake_fds[0];
    pool->have_procs = 1;
    return 0;
}

/* The optional arguments rate, groups and procs of run_tasks. */
static int
configure_pool(xt_pool *pool, PyObject *const *extra, Py_ssize_t nextra)
{
    if (nextra > 0) {
        double rate = PyFloat_AsDouble(extra[0]);
        if (rate == -1.0 && PyErr_Occurred()) {
            return -1;
        }
        pool->rate_interval = rate > 0 ? rate : 0.0;
    }
    if (nextra > 1 && extra[1] != Py_None && link_groups(pool, extra[1]) < 0) {
        return -1;
    }
    if (nextra > 2 && extra[2] != Py_None && set_procs(pool, extra[2]) < 0) {
        return -1;
    }
    if (nextra > 3 && extra[3] != Py_None) {
        PyObject *fs = extra[3];
        if (!PyTuple_Check(fs) || PyTuple_GET_SIZE(fs) != 2
            || (pool->fs_argv = copy_string_list(PyTuple_GET_ITEM(fs, 0), "forkserver argv"))
                   == NULL
            || (pool->fs_envp = copy_string_list(PyTuple_GET_ITEM(fs, 1), "forkserver env"))
                   == NULL
            || pool->fs_argv[0] == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError,
                                "run_tasks: forkserver must be (argv, env), argv not empty");
            }
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < pool->n; i++) {
        if (pool->tasks[i].kind == TASK_PROCESS && !pool->have_procs) {
            PyErr_Format(PyExc_ValueError, "run_tasks: task %zd is a process task but no "
                         "worker command (procs) was given", i);
            return -1;
        }
        if (pool->tasks[i].request != NULL && pool->fs_argv == NULL) {
            PyErr_Format(PyExc_ValueError,
                         "run_tasks: task %zd has a launch request but no forkserver was given", i);
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(run_tasks__doc__,
"run_tasks($module, tasks, workers, on_done, timeout=0.0, grace=2.0, gated=False,\n"
"          rate=0.0, groups=None, procs=None, forkserver=None, /)\n--\n\n"
"Run tasks on a pool of `workers` native threads and report each as it finishes.\n\n"
"A task is (callable, arg, timeout) -- called as callable(arg) with the GIL --,\n"
"(argv, env, cwd, stdout_path, stderr_path, timeout) -- a process started with\n"
"posix_spawn in a process group of its own, env a list of 'NAME=value', stdout and\n"
"stderr written to the two files -- or (payload, timeout): the bytes sent to the\n"
"worker's own worker process (started from procs = (argv, env, init_frame)), whose\n"
"reply bytes are the value.  A worker process that dies, times out or is cancelled is\n"
"killed with its process group and replaced for the next task; the value is then its\n"
"exit code (negative: killed by that signal).  timeout <= 0 means none.  A script\n"
"task may end with a launch request (bytes): it then runs through its worker's fork\n"
"server, started from `forkserver` = (argv, env) on the worker's first such task.\n\n"
"`rate` > 0 is the least number of seconds between two task starts.  `groups` (one\n"
"small int or None per task) runs the tasks of a group one after another, in order,\n"
"on one worker.  on_done may return a float: run the task again after that many\n"
"seconds (give `gated` with retries, so the worker waits for the verdict).\n\n"
"on_done(index, status, value, duration, stderr_tail) is called on this thread in\n"
"completion order; status is 0 completed, 1 failed, 2 timeout, 3 cancelled, 4 could\n"
"not start; value is the callable's result or exception, the exit code (negative:\n"
"killed by that signal) or the start error.  A true return value starts no new task;\n"
"with `gated`, a worker waits for that verdict on its task before taking another.\n"
"Tasks never started are reported last as cancelled.  `timeout` > 0 bounds the whole\n"
"batch.  Timed-out or cancelled scripts get SIGTERM, then SIGKILL after `grace`\n"
"seconds; running functions get TaskTimeout or TaskCancelled raised inside them.\n"
"Ctrl-C stops the batch, reports every task, then raises KeyboardInterrupt.");

static PyObject *
run_tasks_py(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    xt_state *st = xt_get_state(module);
    xt_pool *pool = NULL;
    PyObject *saved = NULL, *on_done;
    xt_worker *me = current_worker;
    double timeout = 0.0, grace = 2.0, deadline = 0.0;
    int workers, lent = 0, top_level = me == NULL, finished = 0, gated = 0;
    Py_ssize_t reported = 0, ndone = 0;

    assert(!PyErr_Occurred());
    if (nargs < 3 || nargs > 10) {
        PyErr_SetString(PyExc_TypeError,
                        "run_tasks(tasks, workers, on_done, timeout=0.0, grace=2.0, gated=False, "
                        "rate=0.0, groups=None, procs=None, forkserver=None)");
        return NULL;
    }
    long requested = PyLong_AsLong(args[1]);
    if (requested == -1 && PyErr_Occurred()) {
        return NULL;
    }
    workers = requested > 4096 ? 4096 : (int)requested;
    on_done = args[2];
    if (!PyCallable_Check(on_done)) {
        PyErr_SetString(PyExc_TypeError, "run_tasks: on_done must be callable");
        return NULL;
    }
    if (nargs > 3 && (timeout = PyFloat_AsDouble(args[3])) == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (nargs > 4 && (grace = PyFloat_AsDouble(args[4])) == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (nargs > 5 && (gated = PyObject_IsTrue(args[5])) < 0) {
        return NULL;
    }
    if (requested < 1) {
        PyErr_SetString(PyExc_ValueError, "run_tasks: workers must be at least 1");
        return NULL;
    }
    pool = pool_new(args[0], grace < 0 ? 0 : grace);
    if (pool == NULL) {
        return NULL;
    }
    if (pool->n == 0) {
        pool_free(pool);
        Py_RETURN_NONE;
    }
    if (nargs > 6 && configure_pool(pool, args + 6, nargs - 6) < 0) {
        pool_free(pool);
        return NULL;
    }
    if (workers > pool->n) {
        workers = (int)pool->n;
    }
    pool->parent = me != NULL ? me->pool : NULL;
    pool->drain = st->drain;
    pool->gated = gated;
    pool->chunking = !gated && pool->rate_interval <= 0 && pool->have_procs;

    /* A task that runs a batch lends its slot while it waits for it. */
    Py_BEGIN_ALLOW_THREADS
    if (me != NULL && me->holds_slot) {
        me->holds_slot = 0;
        lent = 1;
        slot_release();
    }
    if (top_level) {
        limit_batch_begin(workers);
    }
    Py_END_ALLOW_THREADS

    if (timeout > 0) {
        deadline = monotonic_now() + timeout;
    }
    if (start_workers(pool, workers) < 0) {
        saved = take_exception();
        pool_cancel(pool, CANCEL_ALL, XT_TASK_CANCELLED);
    }

    while (!finished) {
        double tick = monotonic_now() + XT_TICK_SECONDS;
        Py_BEGIN_ALLOW_THREADS
        struct timespec until;
        until.tv_sec = (time_t)tick;
        until.tv_nsec = (long)((tick - (double)until.tv_sec) * 1e9);
        pthread_mutex_lock(&pool->mu);
        if (pool->judged != reported) {
            pool->judged = reported;
            pthread_cond_broadcast(&pool->judged_cond);
        }
        while (pool->ndone == reported && pool->live > 0
               && pthread_cond_timedwait(&pool->cond, &pool->mu, &until) != ETIMEDOUT) {
        }
        ndone = pool->ndone;
        finished = pool->live == 0;
        pthread_mutex_unlock(&pool->mu);
        Py_END_ALLOW_THREADS

        for (; reported < ndone; reported++) {
            report_one(pool, pool->done_order[reported % pool->done_cap], on_done, 1, &saved);
        }
        if (finished) {
            break;
        }
        if (saved == NULL && PyErr_CheckSignals() < 0) {
            saved = take_exception();
            pool_cancel(pool, CANCEL_ALL, XT_TASK_CANCELLED);
        }
        if (deadline > 0 && monotonic_now() >= deadline) {
            pool_cancel(pool, CANCEL_ALL, XT_TASK_TIMEOUT);
        }
        if (pool->parent != NULL && atomic_load(&pool->parent->cancel) == CANCEL_ALL) {
            pool_cancel(pool, CANCEL_ALL, atomic_load(&pool->parent->cancel_status));
        }
        supervise_functions(st, pool);
    }

    /* Every worker has exited: what is left never started (or waits for a retry). */
    for (Py_ssize_t i = 0; i < pool->n; i++) {
        if (pool->tasks[i].state == STATE_QUEUED || pool->tasks[i].state == STATE_RETRY) {
            report_one(pool, i, on_done, 0, &saved);
        }
    }

    Py_BEGIN_ALLOW_THREADS
    for (int k = 0; k < pool->nworkers; k++) {
        pthread_join(pool->workers[k].thread, NULL);
    }
    if (top_level) {
        limit_batch_end();
    }
    if (lent) {
        (void)slot_acquire(NULL);
        me->holds_slot = 1;
    }
    Py_END_ALLOW_THREADS

    pool_free(pool);
    if (saved != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(saved), saved);
        Py_DECREF(saved);
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(worker_slots__doc__,
"worker_slots($module, /)\n--\n\n"
"(running, limit): workers running a task now, and the process-wide limit shared by\n"
"every batch, nested ones included.");

static PyObject *
worker_slots_py(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    int running, limit;
    (void)module;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&limit_mu);
    running = limit_running;
    limit = limit_batches > 0 ? limit_max : cpu_count();
    pthread_mutex_unlock(&limit_mu);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(ii)", running, limit);
}

static PyMethodDef executor_methods[] = {
    {"run_tasks", (PyCFunction)(void (*)(void))run_tasks_py, METH_FASTCALL, run_tasks__doc__},
    {"worker_slots", worker_slots_py, METH_NOARGS, worker_slots__doc__},
    {NULL, NULL, 0, NULL},
};

/* A Python function that does nothing: running its first bytecode delivers a pending
 * asynchronous exception. */
static int
make_drain(xt_state *st)
{
    int rc = -1;
    PyObject *globals = PyDict_New();
    PyObject *res = NULL;
    if (globals == NULL || PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) < 0) {
        goto done;
    }
    res = PyRun_String("def drain():\n    pass\n", Py_file_input, globals, globals);
    if (res == NULL) {
        goto done;
    }
    st->drain = Py_XNewRef(PyDict_GetItemString(globals, "drain"));
    rc = st->drain != NULL ? 0 : -1;
    if (rc < 0) {
        PyErr_SetString(PyExc_SystemError, "executor: could not make the drain function");
    }
done:
    Py_XDECREF(res);
    Py_XDECREF(globals);
    return rc;
}

int
xt_executor_exec(PyObject *module, xt_state *st)
{
    st->TaskTimeout = PyErr_NewExceptionWithDoc(
        "xetrack_c._core.TaskTimeout",
        "Raised inside a function task whose timeout has passed (a BaseException, so "
        "`except Exception` does not swallow it).",
        PyExc_BaseException, NULL);
    if (st->TaskTimeout == NULL || PyModule_AddObjectRef(module, "TaskTimeout", st->TaskTimeout) < 0) {
        return -1;
    }
    st->TaskCancelled = PyErr_NewExceptionWithDoc(
        "xetrack_c._core.TaskCancelled",
        "Raised inside a running function task when its batch is stopped (Ctrl-C, the "
        "batch timeout, or a stopped parent batch).",
        PyExc_BaseException, NULL);
    if (st->TaskCancelled == NULL
        || PyModule_AddObjectRef(module, "TaskCancelled", st->TaskCancelled) < 0) {
        return -1;
    }
    if (make_drain(st) < 0) {
        return -1;
    }
    return PyModule_AddFunctions(module, executor_methods);
}
