/* The worker pool behind run_multiple (see executor.h and docs/design.md): its pthread
 * workers, their scheduling, the process-wide limit on running workers, the calling
 * thread's supervision, and run_tasks itself.  The pool's types and its building from
 * Python arguments are in pool.h/pool.c; script tasks are run by launcher.c.
 *
 * run_tasks() copies every task into C memory, starts pthread workers and waits on a
 * condition variable with the GIL released.  A worker takes a slot of the process-wide
 * limit, takes the next task and:
 *   - for a function task, takes the GIL (its own thread state, made once with
 *     PyGILState_Ensure) for the call only;
 *   - for a script task, spawns it (spawner.c) in a process group of its own with stdout
 *     and stderr sent to files, and waits on a pidfd (or a reaper thread) and the batch's
 *     cancel pipe with poll(); on timeout or cancel it sends SIGTERM to the group, waits
 *     a grace period, then SIGKILL (launcher.c).
 * The calling thread wakes on every completion, and at least every 100 ms to run signal
 * handlers (Ctrl-C), enforce function and batch deadlines and follow a cancelled parent
 * batch; it hands each finished task to the Python callback on_done in completion order.
 *
 * A thread cannot be killed.  A function task that must stop gets TaskTimeout or
 * TaskCancelled raised inside it, which lands only when it runs Python again; if it has
 * not returned XT_ABANDON_SECONDS later, the calling thread abandons the call: it reports
 * the task at once, detaches the thread and starts a new one in the worker's place.  The
 * abandoned thread keeps its own thread state and a reference to the pool's C memory;
 * when its call returns it drops what came of it, gives its thread state back and ends.
 * It never takes the GIL again once the interpreter finalizes (CPython ends or parks such
 * threads), so it cannot hold up the exit.  Once as many of a batch's threads are stuck
 * as it has workers, no further function task of the batch starts (XT_TASK_REFUSED).
 */
#include "executor.h"
#include "interrupt.h"
#include "launcher.h"
#include "pool.h"
#include "procpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define XT_TICK_SECONDS 0.1
/* Seconds a function task has, after its TaskTimeout or TaskCancelled was sent, to return
 * before the batch abandons its thread. */
#define XT_ABANDON_SECONDS 0.5
#define XT_TEXT(x) #x
#define XT_VALUE_TEXT(x) XT_TEXT(x)

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
/* The function call in progress on this worker thread (see xt_call in pool.h), if any. */
static _Thread_local xt_call *current_call;

/* Threads of any batch whose calls were abandoned and that still run.  Process-wide
 * because they outlive their batch; read by abandoned_threads() for progress displays. */
static atomic_int abandoned_alive;

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

/* Call a function task with the GIL.  0, or -1 when the batch abandoned the call while it
 * ran: the task was reported already and the worker's place is another thread's, so this
 * thread must end without touching w or the task again. */
static int
run_function(xt_worker *w, Py_ssize_t index)
{
    xt_task *task = &w->pool->tasks[index];
    xt_call call = {0, NULL, NULL, PyGILState_UNLOCKED};
    PyObject *callable, *arg, *res;

    if (w->tstate == NULL) {
        w->gil = PyGILState_Ensure();
        w->ident = PyThread_get_thread_ident();
        w->tstate = PyEval_SaveThread();
    }
    call.tstate = w->tstate;
    call.gil = w->gil;
    PyEval_RestoreThread(w->tstate);
    /* References of its own: an abandoned call may outlive the pool's. */
    callable = Py_NewRef(task->callable);
    arg = Py_NewRef(task->arg);
    task->started = xt_monotonic_now();
    w->running = index;
    w->call = &call;
    current_call = &call;
    res = PyObject_CallOneArg(callable, arg);
    current_call = NULL;
    if (call.abandoned) {
        /* Reported as a timeout or a cancel already: what came of the call is dropped. */
        if (res == NULL) {
            PyErr_Clear();
        }
        Py_XDECREF(res);
        Py_DECREF(callable);
        Py_DECREF(arg);
        Py_XDECREF(call.flag);
        PyGILState_Release(call.gil); /* deletes this thread's state and drops the GIL */
        return -1;
    }
    /* Before anything that could let the GIL go: the call is no longer abandonable. */
    w->running = -1;
    w->call = NULL;
    if (res == NULL) {
        task->value = take_exception();
        task->status = XT_TASK_FAILED;
    }
    else {
        task->value = res;
        task->status = XT_TASK_COMPLETED;
    }
    task->duration = xt_monotonic_now() - task->started;
    Py_DECREF(callable);
    Py_DECREF(arg);
    Py_XDECREF(call.flag);
    if (task->interrupted) {
        /* An interruption sent after the task's last bytecode must not land in the next
         * task: a Python no-op lets it land now.  (PyThreadState_SetAsyncExc(id, NULL)
         * would leave the interpreter's eval breaker set on 3.11.) */
        PyObject *ignored = PyObject_CallNoArgs(w->pool->drain);
        Py_XDECREF(ignored);
        PyErr_Clear();
    }
    w->tstate = PyEval_SaveThread();
    return 0;
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
    double start = xt_monotonic_now();

    (void)xt_proc_run(&w->proc, &pool->procs, task->payload_data, task->payload_len,
                      task->timeout, &out);
    finish_process_task(pool, task, &out, xt_monotonic_now() - start);
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
 * order, reporting each as it arrives; before each wait for a reply, more queued tasks
 * are sent (xt_take_more_locked), so that the worker process finds its next task waiting
 * and never idles for a round trip.  w->chunk is the ring of tasks sent and not answered
 * yet.  When the worker ends early (a task crashed it, or the batch stopped), the tasks
 * behind the one it was running go back to the queue, never counted as attempts. */
static void
run_process_chunk(xt_pool *pool, xt_worker *w, int count)
{
    xt_proc_result out;
    int head = 0, sent = 0, more;
    size_t bytes = 0;
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
        bytes += task->payload_len;
    }
    mark = xt_monotonic_now();
    if (sent == 0) {
        /* No worker process took the first task (it could not start): that is its
         * outcome; the others go back to the queue. */
        finish_process_task(pool, &pool->tasks[w->chunk[0]], &out, 0.0);
        xt_post_done(pool, w, w->chunk[0]);
        for (int i = 1; i < count; i++) {
            xt_requeue_unstarted(pool, w->chunk[i]);
        }
        return;
    }
    for (int i = sent; i < count; i++) {
        xt_requeue_unstarted(pool, w->chunk[i]);
    }
    more = sent == count;
    while (sent > 0) {
        Py_ssize_t index;
        xt_task *task;
        double now;
        while (more) {
            pthread_mutex_lock(&pool->mu);
            index = xt_take_more_locked(pool, w, sent, bytes);
            pthread_mutex_unlock(&pool->mu);
            if (index < 0) {
                break;
            }
            task = &pool->tasks[index];
            reset_outputs(task);
            if (xt_proc_send(&w->proc, &pool->procs, task->payload_data, task->payload_len,
                             0.0, &out) != 0) {
                /* Frames are still pending (the ring is not empty), so the worker was not
                 * ended: their replies say what happened; this task never reached it. */
                xt_requeue_unstarted(pool, index);
                more = 0;
                break;
            }
            w->chunk[(head + sent) % XT_CHUNK_MAX] = index;
            sent++;
            bytes += task->payload_len;
        }
        index = w->chunk[head];
        task = &pool->tasks[index];
        (void)xt_proc_receive(&w->proc, &pool->procs, 0.0, &out);
        now = xt_monotonic_now();
        finish_process_task(pool, task, &out, now - mark);
        mark = now;
        head = (head + 1) % XT_CHUNK_MAX;
        sent--;
        bytes -= task->payload_len;
        xt_post_done(pool, w, index);
        if (out.outcome != XT_PROC_REPLIED) {
            for (; sent > 0; sent--, head = (head + 1) % XT_CHUNK_MAX) {
                xt_requeue_unstarted(pool, w->chunk[head]);
            }
        }
    }
}

/* ------------------------------------------------------------------ workers */
/* The end of a thread whose call was abandoned (no GIL held): it lets go of its pool. */
static void
abandoned_thread_exit(xt_pool *pool)
{
    current_worker = NULL;
    atomic_fetch_sub(&pool->stuck, 1);
    atomic_fetch_sub(&abandoned_alive, 1);
    xt_pool_release(pool);
}

static void *
worker_main(void *arg)
{
    xt_worker *w = arg;
    xt_pool *pool = w->pool;

    current_worker = w;
    if (w->await_index >= 0) {
        /* In the place of a thread whose call was abandoned: that task's verdict first,
         * as its thread would have waited for it. */
        pthread_mutex_lock(&pool->mu);
        xt_await_verdict_locked(pool, w, w->await_index, w->await_position);
        w->await_index = -1;
        pthread_mutex_unlock(&pool->mu);
    }
    for (;;) {
        Py_ssize_t index;
        double wait_until = 0.0;
        int count;
        if (!slot_acquire(pool)) {
            break;
        }
        w->holds_slot = 1;
        pthread_mutex_lock(&pool->mu);
        index = xt_take_task_locked(pool, w, &wait_until);
        if (index == TAKE_WAIT) {
            /* Wait without holding a slot of the process-wide limit. */
            unsigned long generation = pool->work_gen;
            pthread_mutex_unlock(&pool->mu);
            w->holds_slot = 0;
            slot_release();
            pthread_mutex_lock(&pool->mu);
            xt_wait_for_work_locked(pool, generation, wait_until);
            pthread_mutex_unlock(&pool->mu);
            continue;
        }
        count = index >= 0 ? xt_take_chunk_locked(pool, w, index) : 0;
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
        if (task->kind == TASK_FUNCTION && atomic_load(&pool->refusing)) {
            task->status = XT_TASK_REFUSED;
            task->duration = 0.0;
        }
        else if (task->kind == TASK_FUNCTION) {
            if (run_function(w, index) < 0) {
                abandoned_thread_exit(pool);
                return NULL;
            }
        }
        else if (task->kind == TASK_PROCESS) {
            run_process(pool, w, task);
        }
        else if (task->request != NULL) {
            xt_run_script_forked(pool, w, task);
        }
        else {
            xt_run_script(pool, task);
        }
        w->holds_slot = 0;
        slot_release();
        xt_post_done(pool, w, index);
    }
    if (w->proc != NULL) {
        xt_proc_close(w->proc, &pool->procs);
        w->proc = NULL;
    }
    xt_forkserver_stop(w);
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

/* Stop waiting for the call of task `index` on w, interrupted XT_ABANDON_SECONDS ago and
 * still running (GIL held): the task ends now as its interruption says, and w is marked
 * for replace_workers.  The thread's call sees `abandoned` when it returns. */
static void
abandon_call(xt_state *st, xt_pool *pool, xt_worker *w, Py_ssize_t index, double now)
{
    xt_task *task = &pool->tasks[index];
    xt_call *call = w->call;
    int why = task->interrupted;
    PyObject *type = why == XT_TASK_TIMEOUT ? st->TaskTimeout : st->TaskCancelled;

    call->abandoned = why;
    if (call->flag != NULL) {
        PyByteArray_AS_STRING(call->flag)[0] = (char)why; /* the task's context writes no more */
    }
    /* Once more: on 3.11 one thread's exception landing can hide another's pending one. */
    (void)PyThreadState_SetAsyncExc(w->ident, type);
    w->running = -1;
    w->call = NULL;
    w->tstate = NULL; /* the thread keeps its own (call->tstate); a new one makes another */
    w->replace = 1;
    w->await_index = index;
    atomic_fetch_add(&pool->refs, 1);
    atomic_fetch_add(&abandoned_alive, 1);
    if (atomic_fetch_add(&pool->stuck, 1) + 1 >= pool->cap) {
        atomic_store(&pool->refusing, 1);
    }
    task->status = why;
    task->duration = now - task->started;
    task->value = PyObject_CallFunction(
        type, "s", "it did not return within " XT_VALUE_TEXT(XT_ABANDON_SECONDS) " s of being "
        "interrupted, so the batch "
        "stopped waiting for it: its thread goes on unseen, its outcome is dropped and "
        "log_metrics refuses to write for it (a thread cannot be killed; "
        "backend=\"process\" kills a task that hangs)");
    if (task->value == NULL) {
        PyErr_Clear(); /* reported without the explanation */
    }
}

/* Give the place of w, whose call was abandoned, to a new thread (no GIL held). */
static void
replace_worker(xt_pool *pool, xt_worker *w)
{
    w->replace = 0;
    (void)pthread_detach(w->thread); /* never joined: it may outlive the batch */
    w->has_thread = 0;
    if (w->holds_slot) {
        w->holds_slot = 0;
        slot_release();
    }
    /* Processes the thread started die when it ends (PR_SET_PDEATHSIG): they are idle
     * while it runs a function, so end them now; the new thread starts its own. */
    if (w->proc != NULL) {
        xt_proc_close(w->proc, &pool->procs);
        w->proc = NULL;
    }
    xt_forkserver_stop(w);
    pthread_mutex_lock(&pool->mu);
    w->await_position = xt_publish_done_locked(pool, w->await_index);
    if (xt_thread_start(&w->thread, worker_main, w) == 0) {
        w->has_thread = 1;
    }
    else {
        pool->live--; /* the batch goes on with one worker fewer */
    }
    pthread_mutex_unlock(&pool->mu);
}

/* Start new threads in the places of the workers abandon_call marked (GIL held on entry). */
static void
replace_workers(xt_pool *pool)
{
    Py_BEGIN_ALLOW_THREADS
    for (int k = 0; k < pool->nworkers; k++) {
        if (pool->workers[k].replace) {
            replace_worker(pool, &pool->workers[k]);
        }
    }
    Py_END_ALLOW_THREADS
}

/* Send the timeout or cancel exception to function tasks that must stop, and abandon the
 * calls still running XT_ABANDON_SECONDS after it was sent; how many were abandoned. */
static int
supervise_functions(xt_state *st, xt_pool *pool)
{
    double now = xt_monotonic_now();
    int cancel_all = atomic_load(&pool->cancel) == CANCEL_ALL, abandoned = 0;
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
            if (now - task->interrupt_sent >= XT_ABANDON_SECONDS) {
                abandon_call(st, pool, w, index, now);
                abandoned++;
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
    return abandoned;
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
    else if (status == XT_TASK_REFUSED) {
        args[2] = PyLong_FromLong(pool->cap);
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
        xt_pool_retry(pool, index, delay);
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
    int err = 0;
    pool->workers = calloc((size_t)nworkers, sizeof(xt_worker));
    if (pool->workers == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    pool->planned = nworkers;
    pool->cap = nworkers;
    for (int k = 0; k < nworkers; k++) {
        xt_worker *w = &pool->workers[k];
        w->pool = pool;
        w->running = -1;
        w->fs_in = w->fs_out = -1;
        w->index = k;
        w->follow = -1;
        w->held = -1;
        w->await_index = -1;
        pthread_mutex_lock(&pool->mu);
        pool->live++;
        pthread_mutex_unlock(&pool->mu);
        err = xt_thread_start(&w->thread, worker_main, w);
        if (err != 0) {
            pthread_mutex_lock(&pool->mu);
            pool->live--;
            pthread_mutex_unlock(&pool->mu);
            break;
        }
        w->has_thread = 1;
        pool->nworkers++;
    }
    if (pool->nworkers == 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(run_tasks__doc__,
"run_tasks($module, tasks, workers, on_done, timeout=0.0, grace=2.0, gated=False,\n"
"          rate=0.0, groups=None, procs=None, forkserver=None, /)\n--\n\n"
"Run tasks on a pool of `workers` native threads and report each as it finishes.\n\n"
"A task is (callable, arg, timeout) -- called as callable(arg) with the GIL --,\n"
"(argv, env, cwd, stdout_path, stderr_path, timeout) -- a process started in a\n"
"process group of its own, env a list of 'NAME=value', stdout and stderr written to\n"
"the two files -- or (payload, timeout): the bytes sent to the\n"
"worker's own worker process (started from procs = (argv, env, init_frame[,\n"
"server_argv, server_init]): with a server, a fork of this process's warm server,\n"
"started from server_argv by the first batch and kept for later ones, which loads each\n"
"batch's server_init), whose reply bytes are the value.  A worker process that dies, times\n"
"out or is cancelled is killed with its process group and replaced for the next task;\n"
"the value is then its\n"
"exit code (negative: killed by that signal).  timeout <= 0 means none.  A script\n"
"task may end with a launch request (bytes): it then runs through its worker's fork\n"
"server, started from `forkserver` = (argv, env) on the worker's first such task.\n"
"Every process started here is killed with SIGKILL if this process dies.\n\n"
"`rate` > 0 is the least number of seconds between two task starts.  `groups` (one\n"
"small int or None per task) runs the tasks of a group one after another, in order,\n"
"on one worker.  on_done may return a float: run the task again after that many\n"
"seconds (give `gated` with retries, so the worker waits for the verdict).\n\n"
"on_done(index, status, value, duration, stderr_tail) is called on this thread in\n"
"completion order; status is 0 completed, 1 failed, 2 timeout, 3 cancelled, 4 could\n"
"not start, 5 a function task not started because the batch's stuck threads reached\n"
"its limit (value: the limit, its worker count); value is the callable's result or\n"
"exception, the exit code (negative: killed by that signal) or the start error.  A true return value starts no new task;\n"
"with `gated`, a worker waits for that verdict on its task before taking another.\n"
"Tasks never started are reported last as cancelled.  `timeout` > 0 bounds the whole\n"
"batch.  Timed-out or cancelled scripts get SIGTERM, then SIGKILL after `grace`\n"
"seconds; running functions get TaskTimeout or TaskCancelled raised inside them, and a\n"
"function that has not returned 0.5 s later is reported at once: its thread is\n"
"abandoned (its outcome dropped) and a new thread takes the worker's place.\n"
"Ctrl-C stops the batch, reports every task, then raises KeyboardInterrupt.");

static PyObject *
run_tasks_py(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    xt_state *st = xt_get_state(module);
    xt_pool *pool = NULL;
    PyObject *saved = NULL, *on_done;
    xt_worker *me = current_worker;
    xt_call *my_call = current_call; /* the function task calling run_tasks, if any */
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
    if (my_call != NULL && my_call->abandoned) {
        PyErr_SetString(my_call->abandoned == XT_TASK_TIMEOUT ? st->TaskTimeout
                                                              : st->TaskCancelled,
                        "run_tasks: the batch running this task stopped waiting for it");
        return NULL;
    }
    pool = xt_pool_new(args[0], grace < 0 ? 0 : grace);
    if (pool == NULL) {
        return NULL;
    }
    if (pool->n == 0) {
        xt_pool_free(pool);
        Py_RETURN_NONE;
    }
    if (nargs > 6 && xt_configure_pool(pool, args + 6, nargs - 6) < 0) {
        xt_pool_free(pool);
        return NULL;
    }
    if (workers > pool->n) {
        workers = (int)pool->n;
    }
    pool->parent = me != NULL ? me->pool : NULL;
    pool->drain = st->drain;
    pool->gated = gated;
    pool->chunking = !gated && pool->rate_interval <= 0 && pool->have_procs;

    /* A task that runs a batch lends its slot while it waits for it.  holds_slot changes
     * under the GIL: the outer batch reads it when it abandons this task. */
    if (me != NULL && me->holds_slot) {
        me->holds_slot = 0;
        lent = 1;
    }
    Py_BEGIN_ALLOW_THREADS
    if (lent) {
        slot_release();
    }
    if (top_level) {
        limit_batch_begin(workers);
    }
    Py_END_ALLOW_THREADS

    if (timeout > 0) {
        deadline = xt_monotonic_now() + timeout;
    }
    /* This process's warm server (started by the first batch, kept for later ones) gets
     * the batch's functions before any worker thread asks it for a worker process. */
    Py_BEGIN_ALLOW_THREADS
    xt_proc_server_start(&pool->procs);
    Py_END_ALLOW_THREADS
    if (start_workers(pool, workers) < 0) {
        saved = take_exception();
        pool_cancel(pool, CANCEL_ALL, XT_TASK_CANCELLED);
    }

    while (!finished) {
        double tick = xt_monotonic_now() + XT_TICK_SECONDS;
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
        if (deadline > 0 && xt_monotonic_now() >= deadline) {
            pool_cancel(pool, CANCEL_ALL, XT_TASK_TIMEOUT);
        }
        if (pool->parent != NULL && atomic_load(&pool->parent->cancel) == CANCEL_ALL) {
            pool_cancel(pool, CANCEL_ALL, atomic_load(&pool->parent->cancel_status));
        }
        if (my_call != NULL && my_call->abandoned) {
            pool_cancel(pool, CANCEL_ALL, XT_TASK_CANCELLED); /* nobody waits for it */
        }
        if (supervise_functions(st, pool) > 0) {
            replace_workers(pool);
        }
    }

    /* Every worker has exited: what is left never started (or waits for a retry). */
    for (Py_ssize_t i = 0; i < pool->n; i++) {
        if (pool->tasks[i].state == STATE_QUEUED || pool->tasks[i].state == STATE_RETRY) {
            report_one(pool, i, on_done, 0, &saved);
        }
    }

    Py_BEGIN_ALLOW_THREADS
    for (int k = 0; k < pool->nworkers; k++) {
        if (pool->workers[k].has_thread) {
            pthread_join(pool->workers[k].thread, NULL);
        }
    }
    xt_proc_server_release(&pool->procs);
    if (top_level) {
        limit_batch_end();
    }
    if (lent) {
        (void)slot_acquire(NULL);
    }
    Py_END_ALLOW_THREADS
    if (lent && my_call != NULL && my_call->abandoned) {
        /* The outer batch gave this worker's place to another thread meanwhile. */
        Py_BEGIN_ALLOW_THREADS
        slot_release();
        Py_END_ALLOW_THREADS
    }
    else if (lent) {
        me->holds_slot = 1;
    }

    /* Abandoned threads keep the pool's C memory until they end. */
    xt_pool_clear(pool);
    xt_pool_release(pool);
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

PyDoc_STRVAR(abandon_flag__doc__,
"abandon_flag($module, /)\n--\n\n"
"A bytearray of one byte for the function task running on this worker thread, or None\n"
"elsewhere.  The byte becomes 2 (timeout) or 3 (cancelled) when the batch stops waiting\n"
"for the task and abandons its thread; the task's context then refuses to write.");

static PyObject *
abandon_flag_py(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    xt_call *call = current_call;
    (void)module;
    if (call == NULL) {
        Py_RETURN_NONE;
    }
    if (call->flag == NULL) {
        char byte = (char)call->abandoned;
        call->flag = PyByteArray_FromStringAndSize(&byte, 1);
        if (call->flag == NULL) {
            return NULL;
        }
    }
    return Py_NewRef(call->flag);
}

PyDoc_STRVAR(abandoned_threads__doc__,
"abandoned_threads($module, /)\n--\n\n"
"Threads whose function task a batch abandoned (past its timeout, or cancelled, and\n"
"still not back) that are still running, in every batch of this process.");

static PyObject *
abandoned_threads_py(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    return PyLong_FromLong(atomic_load(&abandoned_alive));
}

static PyMethodDef executor_methods[] = {
    {"run_tasks", (PyCFunction)(void (*)(void))run_tasks_py, METH_FASTCALL, run_tasks__doc__},
    {"worker_slots", worker_slots_py, METH_NOARGS, worker_slots__doc__},
    {"abandon_flag", abandon_flag_py, METH_NOARGS, abandon_flag__doc__},
    {"abandoned_threads", abandoned_threads_py, METH_NOARGS, abandoned_threads__doc__},
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
