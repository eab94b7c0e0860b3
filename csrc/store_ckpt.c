/* Store, checkpointer: WAL checkpoints off the write path.  SQLite's automatic checkpoint
 * runs inside the commit that takes the WAL past 1000 pages, so one log() in a few hundred
 * paid for copying the WAL into the database and two fdatasyncs.  Writer connections turn
 * it off; their WAL hook wakes one thread per store instead, which checkpoints (PASSIVE)
 * through a connection of its own while the writers go on, and now and then copies the
 * last frames with the writers held, so that the WAL can start over (checkpoint_round
 * says why).  The thread starts with the first WAL to pass XT_CKPT_PAGES, stops on close,
 * keeps no interpreter alive (it never touches Python), and is not inherited by a forked
 * child, which starts its own when its WAL grows. */
#include "store_internal.h"

#include "interrupt.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* WAL pages past which a request also copies the tail with the writers held
 * (checkpoint_round). */
#define XT_CKPT_TAIL_PAGES (4 * XT_CKPT_PAGES)
/* After a failed checkpoint (another process's checkpoint running), wait this long before
 * the next request is taken. */
#define XT_CKPT_RETRY_US 1000

void
xt_ckpt_init(xt_store *s)
{
    pthread_mutex_init(&s->ckpt_lock, NULL);
    pthread_mutex_init(&s->ckpt_sig, NULL);
    pthread_cond_init(&s->ckpt_wake, NULL);
    atomic_init(&s->ckpt_pending, 0);
    atomic_init(&s->ckpt_wal_pages, 0);
}

void
xt_ckpt_destroy(xt_store *s)
{
    pthread_mutex_destroy(&s->ckpt_lock);
    pthread_mutex_destroy(&s->ckpt_sig);
    pthread_cond_destroy(&s->ckpt_wake);
    free(s->ckpt_path);
    s->ckpt_path = NULL;
}

static void
pause_us(long us)
{
    struct timespec ts = {0, us * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A PASSIVE checkpoint through the checkpointer's own connection, opened on first use.
 * SQLITE_OK or SQLite's failure. */
static int
checkpoint_beside(xt_store *s)
{
    int rc = SQLITE_OK;
    pthread_mutex_lock(&s->ckpt_lock);
    if (s->ckpt_db == NULL) {
        rc = s->ckpt_path == NULL ? SQLITE_NOMEM
                                  : sqlite3_open_v2(s->ckpt_path, &s->ckpt_db,
                                                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
        /* Checkpoints sync the WAL and the database as the writers' setting says.  A
         * connection finds the WAL on its first read; until then it checkpoints nothing. */
        if (rc == SQLITE_OK) {
            rc = sqlite3_exec(s->ckpt_db,
                              s->durability == XT_DURABLE_FSYNC ? "PRAGMA synchronous=FULL"
                                                                : "PRAGMA synchronous=NORMAL",
                              NULL, NULL, NULL);
        }
        if (rc == SQLITE_OK) {
            rc = sqlite3_exec(s->ckpt_db, "SELECT 1 FROM sqlite_master LIMIT 1", NULL, NULL, NULL);
        }
        if (rc != SQLITE_OK) {
            sqlite3_close_v2(s->ckpt_db);
            s->ckpt_db = NULL;
        }
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_wal_checkpoint_v2(s->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    }
    pthread_mutex_unlock(&s->ckpt_lock);
    return rc;
}

/* One request: checkpoint beside the writers; and once the WAL has grown past
 * XT_CKPT_TAIL_PAGES, the rest with every writer held.  A writer starts the WAL over from
 * its beginning only when every frame in it has been copied, which a checkpoint beside a
 * steady writer never sees (the writer adds frames while it runs).  So the second step
 * takes the write lock through the store's connection (this store's threads wait on
 * s->lock, other processes' writers in their busy handlers) and checkpoints through the
 * checkpointer's connection, which then copies everything, and the next commit rewinds
 * the WAL.  It is short (the frames of one checkpoint's duration, and the syncs), and
 * rare: one request in XT_CKPT_TAIL_PAGES / XT_CKPT_PAGES under a steady writer, none
 * under one that pauses long enough for the first step to catch up.  The fork hook holds
 * s->lock too, so ckpt_db is not in use at a fork. */
static void
checkpoint_round(xt_store *s)
{
    if (checkpoint_beside(s) != SQLITE_OK) {
        if (s->ckpt_db == NULL) {
            /* No connection of its own (the file cannot be opened again): checkpoint
             * through the store's, holding its writers, as SQLite itself would. */
            pthread_mutex_lock(&s->lock);
            if (s->open && s->db != NULL && !xt_store_forked(s)) {
                sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
            }
            pthread_mutex_unlock(&s->lock);
        }
        pause_us(XT_CKPT_RETRY_US);
        return;
    }
    if (atomic_load(&s->ckpt_wal_pages) < XT_CKPT_TAIL_PAGES) {
        return;
    }
    pthread_mutex_lock(&s->lock);
    if (s->open && s->db != NULL && !xt_store_forked(s) && s->ckpt_db != NULL) {
        sqlite3_step(s->begin_stmt);
        int rc = sqlite3_reset(s->begin_stmt);
        if (rc == SQLITE_OK) {
            sqlite3_wal_checkpoint_v2(s->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
            sqlite3_step(s->rollback_stmt);
            sqlite3_reset(s->rollback_stmt);
        }
    }
    pthread_mutex_unlock(&s->lock);
}

static void *
ckpt_main(void *arg)
{
    xt_store *s = arg;
    pthread_mutex_lock(&s->ckpt_sig);
    for (;;) {
        while (!s->ckpt_stopping && !atomic_load(&s->ckpt_pending)) {
            pthread_cond_wait(&s->ckpt_wake, &s->ckpt_sig);
        }
        if (s->ckpt_stopping) {
            break;
        }
        pthread_mutex_unlock(&s->ckpt_sig);
        checkpoint_round(s);
        atomic_store(&s->ckpt_pending, 0);
        pthread_mutex_lock(&s->ckpt_sig);
    }
    pthread_mutex_unlock(&s->ckpt_sig);
    return NULL;
}

/* Start the thread with every signal blocked (signals are the main thread's business).
 * s->ckpt_sig held. */
static int
start_thread(xt_store *s)
{
    if (xt_thread_start(&s->ckpt_thread, ckpt_main, s) != 0) {
        return -1;
    }
    s->ckpt_started = 1;
    s->ckpt_generation = xt_fork_generation();
    return 0;
}

/* The writer connection's WAL hook, after each commit, with s->lock held: `pages` frames
 * are in the WAL.  Past XT_CKPT_PAGES, and then every XT_CKPT_PAGES more (or again past
 * XT_CKPT_PAGES once the WAL started over), wake the checkpointer: one checkpoint per
 * XT_CKPT_PAGES written, as SQLite's own would run, not one after another. */
static int
wal_grew(void *arg, sqlite3 *db, const char *name, int pages)
{
    xt_store *s = arg;
    atomic_store_explicit(&s->ckpt_wal_pages, pages, memory_order_relaxed);
    if (pages < XT_CKPT_PAGES
        || (pages >= s->ckpt_asked_at && pages - s->ckpt_asked_at < XT_CKPT_PAGES)
        || atomic_load_explicit(&s->ckpt_pending, memory_order_relaxed)) {
        return SQLITE_OK;
    }
    s->ckpt_asked_at = pages;
    atomic_store(&s->ckpt_pending, 1);
    pthread_mutex_lock(&s->ckpt_sig);
    int inline_ckpt = 0;
    if (s->ckpt_stopping) {
        inline_ckpt = 1;
    }
    else if (!s->ckpt_started && start_thread(s) < 0) {
        inline_ckpt = 1; /* no thread: checkpoint here, as SQLite itself would */
    }
    pthread_cond_signal(&s->ckpt_wake);
    pthread_mutex_unlock(&s->ckpt_sig);
    if (inline_ckpt) {
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        atomic_store(&s->ckpt_pending, 0);
    }
    return SQLITE_OK;
}

void
xt_ckpt_attach(xt_store *s)
{
    /* The file the store's connection opened, absolute: the process may change directory. */
    const char *name = sqlite3_db_filename(s->db, "main");
    free(s->ckpt_path);
    s->ckpt_path = strdup(name != NULL && name[0] != '\0' ? name : s->path);
    sqlite3_wal_autocheckpoint(s->db, 0);
    sqlite3_wal_hook(s->db, wal_grew, s);
}

void
xt_ckpt_stop(xt_store *s)
{
    pthread_mutex_lock(&s->ckpt_sig);
    int join = s->ckpt_started && s->ckpt_generation == xt_fork_generation();
    s->ckpt_stopping = 1;
    pthread_cond_broadcast(&s->ckpt_wake);
    pthread_mutex_unlock(&s->ckpt_sig);
    if (join) {
        pthread_join(s->ckpt_thread, NULL);
    }
    s->ckpt_started = 0;
    pthread_mutex_lock(&s->ckpt_lock);
    if (s->ckpt_db != NULL) {
        sqlite3_close_v2(s->ckpt_db);
        s->ckpt_db = NULL;
    }
    pthread_mutex_unlock(&s->ckpt_lock);
}

void
xt_ckpt_reset_in_child(xt_store *s)
{
    /* The copied connection was closed by the fork hook (xt_ckpt_drop_in_child) or, after
     * a fork from C, belongs to the parent: either way it is not touched here. */
    xt_ckpt_init(s);
    s->ckpt_db = NULL;
    s->ckpt_asked_at = 0;
    s->ckpt_started = 0;
    s->ckpt_stopping = 0;
}

void
xt_ckpt_drop_in_child(void *owner)
{
    xt_store *s = owner;
    if (s->ckpt_db != NULL) {
        sqlite3_db_config(s->ckpt_db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)NULL);
        sqlite3_close_v2(s->ckpt_db);
        s->ckpt_db = NULL;
    }
}
