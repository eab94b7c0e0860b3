/* Building and freeing a run_tasks pool (pool.h): copying each task tuple and the optional
 * arguments (groups, worker-process command, fork-server command) from Python objects into
 * C memory (with the GIL held), so that workers read them without it; the pool's clock,
 * read from any thread; and its lifetime: the calling thread drops the tasks' Python
 * references, and the C memory goes with the last of it and the threads whose calls were
 * abandoned. */
#include "pool.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double
xt_monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

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

void
xt_pool_clear(xt_pool *pool)
{
    for (Py_ssize_t i = 0; pool->tasks != NULL && i < pool->n; i++) {
        xt_task *task = &pool->tasks[i];
        Py_CLEAR(task->callable);
        Py_CLEAR(task->arg);
        Py_CLEAR(task->value);
        Py_CLEAR(task->payload);
        task->payload_data = NULL;
    }
}

void
xt_pool_release(xt_pool *pool)
{
    if (atomic_fetch_sub(&pool->refs, 1) != 1) {
        return;
    }
    for (Py_ssize_t i = 0; pool->tasks != NULL && i < pool->n; i++) {
        xt_task *task = &pool->tasks[i];
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
    if (pool->procs.server_argv != NULL) {
        free_string_list(pool->procs.server_argv);
        free(pool->procs.server_init);
    }
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

void
xt_pool_free(xt_pool *pool)
{
    if (pool == NULL) {
        return;
    }
    xt_pool_clear(pool);
    xt_pool_release(pool);
}

xt_pool *
xt_pool_new(PyObject *tasks, double grace)
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
    atomic_init(&pool->refs, 1);
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
    xt_pool_free(pool);
    pool = NULL;
done:
    Py_DECREF(seq);
    return pool;
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

/* A malloc'd copy of a bytes object's data (one byte more, so that empty is not NULL). */
static char *
copy_bytes(PyObject *bytes, size_t *len)
{
    char *copy;
    *len = (size_t)PyBytes_GET_SIZE(bytes);
    copy = malloc(*len + 1);
    if (copy == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(copy, PyBytes_AS_STRING(bytes), *len);
    return copy;
}

/* Copy (argv, env, init_frame[, server_argv, server_init]) for the pool's worker
 * processes; with the last two (server_argv not None), workers are forks of a warm
 * server started from them. */
static int
set_procs(xt_pool *pool, PyObject *procs)
{
    Py_ssize_t size = PyTuple_Check(procs) ? PyTuple_GET_SIZE(procs) : 0;
    PyObject *server_argv = size == 5 ? PyTuple_GET_ITEM(procs, 3) : Py_None;
    if ((size != 3 && size != 5) || !PyBytes_Check(PyTuple_GET_ITEM(procs, 2))
        || (server_argv != Py_None && !PyBytes_Check(PyTuple_GET_ITEM(procs, 4)))) {
        PyErr_SetString(PyExc_TypeError,
                        "run_tasks: procs must be (argv, env, init_frame_bytes[, server_argv, "
                        "server_init_bytes]) or None");
        return -1;
    }
    if ((pool->procs.argv = copy_string_list(PyTuple_GET_ITEM(procs, 0), "argv item")) == NULL
        || (pool->procs.envp = copy_string_list(PyTuple_GET_ITEM(procs, 1), "env item"))
               == NULL) {
        return -1;
    }
    if (pool->procs.argv[0] == NULL) {
        PyErr_SetString(PyExc_ValueError, "run_tasks: the worker command (procs argv) is empty");
        return -1;
    }
    pool->procs.init = copy_bytes(PyTuple_GET_ITEM(procs, 2), &pool->procs.init_len);
    if (pool->procs.init == NULL) {
        return -1;
    }
    pool->procs.grace = pool->grace;
    pool->procs.cancel_fd = pool->wake_fds[0];
    pool->have_procs = 1;
    if (server_argv == Py_None) {
        return 0;
    }
    char **argv = copy_string_list(server_argv, "server_argv item");
    if (argv == NULL) {
        return -1;
    }
    if (argv[0] == NULL) {
        free_string_list(argv);
        PyErr_SetString(PyExc_ValueError, "run_tasks: the server command (procs server_argv) "
                                          "is empty");
        return -1;
    }
    pool->procs.server_init = copy_bytes(PyTuple_GET_ITEM(procs, 4),
                                         &pool->procs.server_init_len);
    if (pool->procs.server_init == NULL) {
        free_string_list(argv);
        return -1;
    }
    pool->procs.server_argv = argv;
    return 0;
}

/* The optional arguments rate, groups and procs of run_tasks. */
int
xt_configure_pool(xt_pool *pool, PyObject *const *extra, Py_ssize_t nextra)
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
