/* Store, batch writer: a long log_batch() written while its caller is still encoding it.
 * Encoding a row needs the GIL (it reads Python objects) and writing it does not, so on
 * one thread a batch costs the sum of both.  Here a thread of the batch's own opens the
 * transaction and inserts the rows the caller has handed over so far while the caller
 * encodes the next ones: the batch costs about the larger of the two.  The batch stays
 * one transaction (all or nothing), with the rows in the caller's order; the caller keeps
 * every row until the end, so a failed stream can be written again whole.
 *
 * The thread holds s->lock from the first row to the last, and waits meanwhile for a
 * caller that holds the GIL.  So the caller must not wait for s->lock before it has
 * finished the batch (tracker.c refuses a call on the same tracker from inside the batch,
 * which a value's __str__ could make); other threads wait for s->lock as for any write,
 * without the GIL. */
#include "store_internal.h"

#include "interrupt.h"

#include <stdlib.h>

/* Rows the thread writes between two looks at what the caller asks for. */
#define XT_BATCH_PIECE 1024

/* What the caller asked for (xt_batch.finish). */
enum { BATCH_OPEN = 0, BATCH_COMMIT, BATCH_ABORT };

/* Batches started on a thread in this process (for the tests). */
static _Atomic long long batches_started;

long long
xt_batch_count(void)
{
    return atomic_load(&batches_started);
}

struct xt_batch {
    xt_store *s;
    xt_row **rows;
    size_t n; /* rows in the whole batch */
    pthread_t thread;
    pthread_mutex_t lock; /* guards the four fields below */
    pthread_cond_t more;
    size_t ready;         /* rows handed over so far */
    int finish;           /* BATCH_OPEN while rows may still come */
    int committing;       /* the thread has begun the COMMIT: too late to roll back */
    int done;             /* the thread is done with the store */
    pthread_cond_t finished;
    int rc;               /* the thread's result, read after join */
    xt_error err;
};

static void
batch_done(xt_batch *b)
{
    pthread_mutex_lock(&b->lock);
    b->done = 1;
    pthread_cond_broadcast(&b->finished);
    pthread_mutex_unlock(&b->lock);
}

static void *
batch_main(void *arg)
{
    xt_batch *b = arg;
    size_t written = 0;
    int failed = 0, finish = BATCH_OPEN;

    if (xt_store_stream_begin(b->s, &b->err) < 0) {
        b->rc = -1; /* no transaction, no lock */
        batch_done(b);
        return NULL;
    }
    pthread_mutex_lock(&b->lock);
    for (;;) {
        while (b->ready == written && b->finish == BATCH_OPEN) {
            pthread_cond_wait(&b->more, &b->lock);
        }
        if (b->finish == BATCH_ABORT || (b->finish == BATCH_COMMIT && b->ready == written)) {
            finish = b->finish;
            b->committing = finish == BATCH_COMMIT;
            break;
        }
        /* At most XT_BATCH_PIECE rows between looks at `finish`, so that a roll back
         * asked for (Ctrl-C) is not kept waiting behind a long backlog. */
        size_t ready = b->ready - written > XT_BATCH_PIECE ? written + XT_BATCH_PIECE : b->ready;
        pthread_mutex_unlock(&b->lock);
        if (!failed && xt_store_stream_rows(b->s, b->rows + written, ready - written, &b->err) < 0) {
            failed = 1; /* later rows are taken, unwritten, until the caller finishes */
        }
        written = ready;
        pthread_mutex_lock(&b->lock);
    }
    pthread_mutex_unlock(&b->lock);
    int outcome = finish == BATCH_ABORT ? XT_STREAM_ABORT
                  : failed                  ? XT_STREAM_FAILED
                                            : XT_STREAM_COMMIT;
    b->rc = xt_store_stream_end(b->s, outcome, b->rows, b->n, &b->err);
    batch_done(b);
    return NULL;
}

xt_batch *
xt_batch_start(xt_store *s, xt_row **rows, size_t n)
{
    xt_batch *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        return NULL;
    }
    b->s = s;
    b->rows = rows;
    b->n = n;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->more, NULL);
    pthread_cond_init(&b->finished, NULL);
    if (xt_thread_start(&b->thread, batch_main, b) != 0) {
        pthread_cond_destroy(&b->finished);
        pthread_cond_destroy(&b->more);
        pthread_mutex_destroy(&b->lock);
        free(b);
        return NULL;
    }
    atomic_fetch_add(&batches_started, 1);
    return b;
}

void
xt_batch_feed(xt_batch *b, size_t ready)
{
    pthread_mutex_lock(&b->lock);
    b->ready = ready;
    pthread_cond_signal(&b->more);
    pthread_mutex_unlock(&b->lock);
}

void
xt_batch_end(xt_batch *b, int commit)
{
    pthread_mutex_lock(&b->lock);
    if (!b->committing && !b->done) {
        b->finish = commit ? BATCH_COMMIT : BATCH_ABORT;
        pthread_cond_signal(&b->more);
    }
    pthread_mutex_unlock(&b->lock);
}

int
xt_batch_wait(xt_batch *b, int ms)
{
    struct timespec until = xt_realtime_after_ms(ms);
    pthread_mutex_lock(&b->lock);
    while (!b->done && pthread_cond_timedwait(&b->finished, &b->lock, &until) == 0) {
    }
    int done = b->done;
    pthread_mutex_unlock(&b->lock);
    return done;
}

int
xt_batch_free(xt_batch *b, xt_error *err)
{
    pthread_join(b->thread, NULL);
    int rc = b->rc;
    if (rc < 0 && err != NULL) {
        *err = b->err;
    }
    pthread_cond_destroy(&b->finished);
    pthread_cond_destroy(&b->more);
    pthread_mutex_destroy(&b->lock);
    free(b);
    return rc;
}
