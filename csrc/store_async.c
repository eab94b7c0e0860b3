/* Store, async writer (durability="async"): log() appends rows to a bounded queue that one
 * writer thread per store drains in transactions sized to about XT_ASYNC_TXN_US of writing
 * (at most XT_ASYNC_BATCH rows); a full queue (queue_size rows, or XT_ASYNC_MAX_BYTES of
 * them) holds producers back; flush waits only for the rows queued before it and reports
 * the writer's first failure with the count of rows lost.  The thread starts with the first queued row; xt_store_close (store.c) stops it
 * once it has written what is queued. */
#include "store_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

void
xt_store_free_rows(xt_row *row)
{
    while (row) {
        xt_row *next = row->next;
        free(row);
        row = next;
    }
}

/* The async writer's transactions last about XT_ASYNC_TXN_US: commits then cost nothing
 * measurable (one per thousands of rows), and a writer of another process waits for at
 * most one such transaction before take_turn lets it in (16,384 rows can take a tenth of
 * a second).  After a full batch, or one that took too long, the size moves halfway to
 * the number of rows the last one wrote per XT_ASYNC_TXN_US.  Called with s->lock held. */
static size_t
next_async_batch(xt_store *s, size_t n)
{
    if (n >= s->async_batch || s->last_write_us > XT_ASYNC_TXN_US) {
        int64_t took = s->last_write_us > 0 ? s->last_write_us : 1;
        int64_t fit = (int64_t)n * XT_ASYNC_TXN_US / took;
        int64_t next = ((int64_t)s->async_batch + fit) / 2;
        s->async_batch = next < XT_ASYNC_MIN_BATCH ? XT_ASYNC_MIN_BATCH
                         : next > XT_ASYNC_BATCH   ? XT_ASYNC_BATCH
                                                   : (size_t)next;
    }
    return s->async_batch;
}

/* Write a chain of rows from the queue, in transactions of at most XT_ASYNC_BATCH rows
 * (next_async_batch), and free them.  A failed batch is counted and reported by the next
 * flush. */
static void
drain_chain(xt_store *s, xt_row *chain)
{
    xt_row **batch = malloc(sizeof(xt_row *) * XT_ASYNC_BATCH);
    xt_error err = {0};
    size_t lost = 0;
    pthread_mutex_lock(&s->lock);
    size_t cap = s->async_batch;
    pthread_mutex_unlock(&s->lock);

    if (batch == NULL) {
        for (xt_row *r = chain; r; r = r->next) {
            lost++;
        }
        xt_store_free_rows(chain);
        xt_store_set_error(&err, SQLITE_NOMEM, "out of memory in the async writer", NULL);
        chain = NULL;
    }
    while (chain) {
        size_t n = 0;
        while (chain && n < cap) {
            batch[n++] = chain;
            chain = chain->next;
        }
        pthread_mutex_lock(&s->lock);
        int rc = -1;
        if (xt_store_check_open(s, &err) == 0) {
            rc = xt_store_write_locked(s, batch, n, &err);
            cap = next_async_batch(s, n);
        }
        pthread_mutex_unlock(&s->lock);
        if (rc < 0) {
            lost += n;
        }
        for (size_t i = 0; i < n; i++) {
            free(batch[i]);
        }
    }
    free(batch);
    if (lost) {
        pthread_mutex_lock(&s->qlock);
        if (s->deferred.rc == 0) {
            s->deferred = err;
        }
        s->rows_lost += lost;
        pthread_mutex_unlock(&s->qlock);
    }
}

static void *
writer_main(void *arg)
{
    xt_store *s = arg;
    pthread_mutex_lock(&s->qlock);
    for (;;) {
        while (s->qhead == NULL && !s->stopping) {
            s->writer_busy = 0;
            pthread_cond_broadcast(&s->q_idle);
            pthread_cond_wait(&s->q_nonempty, &s->qlock);
        }
        if (s->qhead == NULL) {
            break;
        }
        xt_row *chain = s->qhead;
        size_t taken = s->qlen;
        s->qhead = s->qtail = NULL;
        s->qlen = 0;
        s->qbytes = 0;
        s->writer_busy = 1;
        pthread_cond_broadcast(&s->q_space);
        pthread_mutex_unlock(&s->qlock);
        drain_chain(s, chain);
        pthread_mutex_lock(&s->qlock);
        s->written += taken;
        pthread_cond_broadcast(&s->q_idle);
    }
    s->writer_busy = 0;
    pthread_cond_broadcast(&s->q_idle);
    pthread_mutex_unlock(&s->qlock);
    return NULL;
}

/* The queue has no room for `row`: queue_size rows, or XT_ASYNC_MAX_BYTES of them (a
 * larger row still goes into an empty queue).  s->qlock held. */
static int
queue_full(const xt_store *s, const xt_row *row)
{
    return s->qlen >= s->qcap || (s->qlen > 0 && s->qbytes + row->size > XT_ASYNC_MAX_BYTES);
}

int
xt_store_enqueue(xt_store *s, xt_row *row, int may_block)
{
    if (may_block) {
        pthread_mutex_lock(&s->qlock);
        while (queue_full(s, row) && s->thread_started && !s->closing) {
            pthread_cond_wait(&s->q_space, &s->qlock);
        }
    }
    else {
        if (pthread_mutex_trylock(&s->qlock) != 0) {
            return 1;
        }
        if (queue_full(s, row) && s->thread_started && !s->closing) {
            pthread_mutex_unlock(&s->qlock);
            return 1;
        }
    }
    if (s->closing || !s->open) {
        pthread_mutex_unlock(&s->qlock);
        return -1;
    }
    if (!s->thread_started) {
        if (pthread_create(&s->thread, NULL, writer_main, s) != 0) {
            /* No thread: write synchronously rather than lose the row, waiting for the
             * store's lock, so only where the caller may block (it holds no GIL). */
            if (!may_block) {
                pthread_mutex_unlock(&s->qlock);
                return 1;
            }
            s->queued++;
            pthread_mutex_unlock(&s->qlock);
            row->next = NULL;
            drain_chain(s, row);
            pthread_mutex_lock(&s->qlock);
            s->written++;
            pthread_cond_broadcast(&s->q_idle);
            pthread_mutex_unlock(&s->qlock);
            return 0;
        }
        s->thread_started = 1;
    }
    row->next = NULL;
    if (s->qtail) {
        s->qtail->next = row;
    }
    else {
        s->qhead = row;
    }
    s->qtail = row;
    s->qlen++;
    s->qbytes += row->size;
    s->queued++;
    if (s->qlen == 1) {
        pthread_cond_signal(&s->q_nonempty);
    }
    pthread_mutex_unlock(&s->qlock);
    return 0;
}

int
xt_store_flush(xt_store *s, xt_error *err)
{
    int res = 0;
    pthread_mutex_lock(&s->qlock);
    uint64_t target = s->queued;
    while (s->written < target) {
        pthread_cond_wait(&s->q_idle, &s->qlock);
    }
    if (s->deferred.rc != 0) {
        *err = s->deferred;
        snprintf(err->msg, sizeof(err->msg), "the async writer lost %zu row(s): %.400s",
                 s->rows_lost, s->deferred.msg);
        s->deferred.rc = 0;
        s->rows_lost = 0;
        res = -1;
    }
    pthread_mutex_unlock(&s->qlock);
    return res;
}
