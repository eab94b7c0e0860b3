/* Scheduling of a run_tasks pool (pool.h), under the pool mutex: which task a worker
 * takes next (its group's retry, its group's next task, a due retry, then the queue), the
 * start rate, batches of process tasks for one worker process, queueing a retry, and
 * handing a finished task to the calling thread and waiting for its verdict.  The
 * threads themselves are executor.c's. */
#include "pool.h"

#include <errno.h>
#include <time.h>

/* Payload bytes of the process tasks sent to a worker process at once (see
 * xt_take_chunk_locked; their count is bounded by XT_CHUNK_MAX in pool.h). */
#define XT_CHUNK_BYTES 32768

/* The next task for worker w, under pool->mu: its index (now running), TAKE_NOTHING when
 * nothing is left for it, or TAKE_WAIT with *wait_until set (a retry's time or the start
 * rate).  Order: its own group's task waiting for a retry, the next task of its group,
 * the earliest retry that is due, then the first queued task that starts a group or has
 * none. */
Py_ssize_t
xt_take_task_locked(xt_pool *pool, xt_worker *w, double *wait_until)
{
    Py_ssize_t pick = -1, slot = -1;
    double earliest = 0.0, now;
    int from = 0;

    if (atomic_load(&pool->cancel) != CANCEL_NONE) {
        return TAKE_NOTHING;
    }
    now = xt_monotonic_now();
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
void
xt_wait_for_work_locked(xt_pool *pool, unsigned long generation, double until)
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
int
xt_take_chunk_locked(xt_pool *pool, xt_worker *w, Py_ssize_t first)
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

/* Under pool->mu: one more queued process task for w's worker process, which has
 * `inflight` tasks (`bytes` of payload) sent and not answered yet, or -1.  As
 * xt_take_chunk_locked: the window is at most a quarter of each worker's share of what
 * is left, XT_CHUNK_MAX tasks and XT_CHUNK_BYTES; none while the batch stops or tasks
 * wait to run again (other workers take those first). */
Py_ssize_t
xt_take_more_locked(xt_pool *pool, xt_worker *w, int inflight, size_t bytes)
{
    Py_ssize_t limit, index;
    xt_task *next;

    if (!pool->chunking || atomic_load(&pool->cancel) != CANCEL_NONE || pool->nretry > 0
        || pool->next >= pool->n) {
        return -1;
    }
    limit = (pool->n - pool->next) / ((Py_ssize_t)pool->planned * 4);
    if (limit > XT_CHUNK_MAX) {
        limit = XT_CHUNK_MAX;
    }
    next = &pool->tasks[pool->next];
    if (inflight >= limit || next->kind != TASK_PROCESS || next->timeout > 0
        || next->group_next >= 0 || next->follower || bytes + next->payload_len > XT_CHUNK_BYTES) {
        return -1;
    }
    index = pool->next++;
    next->state = STATE_RUNNING;
    next->ran_on = w->index;
    return index;
}

/* Queue a task that was taken but never reached a worker process (its worker died or the
 * batch stopped first): any worker runs it, as if it had never been taken. */
void
xt_requeue_unstarted(xt_pool *pool, Py_ssize_t index)
{
    pthread_mutex_lock(&pool->mu);
    pool->tasks[index].state = STATE_RETRY;
    pool->tasks[index].not_before = 0.0;
    pool->retry_list[pool->nretry++] = index;
    pool->work_gen++;
    pthread_cond_broadcast(&pool->work_cond);
    pthread_mutex_unlock(&pool->mu);
}

/* Under pool->mu: hand a finished task to the calling thread; its position in done_order. */
Py_ssize_t
xt_publish_done_locked(xt_pool *pool, Py_ssize_t index)
{
    Py_ssize_t position = pool->ndone++;
    pool->tasks[index].state = STATE_DONE;
    pool->done_order[position % pool->done_cap] = index;
    pthread_cond_signal(&pool->cond);
    return position;
}

/* Under pool->mu: when gated, wait for the verdict on the task published at `position`;
 * then w goes on with the task's group, unless the task was queued for a retry. */
void
xt_await_verdict_locked(xt_pool *pool, xt_worker *w, Py_ssize_t index, Py_ssize_t position)
{
    while (pool->gated && pool->judged <= position
           && atomic_load(&pool->cancel) == CANCEL_NONE) {
        pthread_cond_wait(&pool->judged_cond, &pool->mu);
    }
    if (pool->tasks[index].state == STATE_DONE) {
        w->follow = pool->tasks[index].group_next; /* a task queued for a retry keeps its group */
    }
}

/* Hand a finished task to the calling thread; when gated, wait for its verdict. */
void
xt_post_done(xt_pool *pool, xt_worker *w, Py_ssize_t index)
{
    pthread_mutex_lock(&pool->mu);
    xt_await_verdict_locked(pool, w, index, xt_publish_done_locked(pool, index));
    pthread_mutex_unlock(&pool->mu);
}

/* Queue task `index` to run again after `delay` seconds (on_done's verdict).  A task of a
 * group waits for the worker that ran it, so the group stays on one worker in order. */
void
xt_pool_retry(xt_pool *pool, Py_ssize_t index, double delay)
{
    xt_task *task = &pool->tasks[index];
    double at = xt_monotonic_now() + (delay > 0 ? delay : 0.0);
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
