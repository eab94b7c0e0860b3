/* Store internals, shared by the store's files and by no other file (the rest of the core
 * uses store.h): the xt_store struct, its statement cache entries, the async writer's
 * transaction sizes, and the functions one store file calls in the other.
 *
 *   store.c        connections, busy waits and turns, statement cache, transactions,
 *                  schema changes, opening, closing, fork
 *   store_async.c  the async writer: bounded queue, writer thread, flush, transaction sizing
 *   store_ckpt.c   the checkpointer: WAL checkpoints off the write path
 *   store_assets.c the assets rows carry: xetrack's assets, keys and counts tables
 *   store_batch.c  a long log_batch() written on a thread while its caller encodes it */
#ifndef XT_STORE_INTERNAL_H
#define XT_STORE_INTERNAL_H

#include "store.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Cached INSERT statements, one per ordered list of column ids. */
#define XT_STMT_CACHE 32

/* Rows written per transaction by the async writer: at most XT_ASYNC_BATCH, and about as
 * many as take XT_ASYNC_TXN_US to write (next_async_batch). */
#define XT_ASYNC_BATCH 16384
#define XT_ASYNC_MIN_BATCH 256
#define XT_ASYNC_TXN_US 20000

/* Bytes of rows the async queue holds before log() waits (a row larger than this is still
 * queued, alone): rows with large values or assets must not pile up queue_size of them. */
#define XT_ASYNC_MAX_BYTES ((size_t)64 << 20)

/* Statements of store_assets.c: blob, column's hash, count read, count write. */
#define XT_ASSET_STMTS 4

typedef struct {
    uint64_t hash;
    int n;
    int *cols;
    sqlite3_stmt *stmt;
    uint64_t used; /* LRU stamp */
} xt_stmt_entry;

struct xt_store {
    sqlite3 *db;
    char *path;
    char *table;   /* as given */
    char *qtable;  /* quoted identifier */
    int durability;
    int busy_timeout_ms;
    int open;

    /* Guards db, the statements and the columns' in_db flags. */
    pthread_mutex_t lock;
    xt_columns columns;
    xt_stmt_entry stmts[XT_STMT_CACHE];
    int last_stmt;
    uint64_t stmt_clock;
    sqlite3_stmt *begin_stmt, *commit_stmt, *rollback_stmt;
    /* store_assets.c: its statements, prepared on first use, and whether its tables were
     * created on this connection. */
    sqlite3_stmt *asset_stmts[XT_ASSET_STMTS];
    int assets_ready;
    atomic_llong last_ts;
    atomic_int length_limit; /* the connection's SQLITE_LIMIT_LENGTH, read without a lock */

    /* Async writer: a bounded queue drained by one thread in large transactions. */
    pthread_mutex_t qlock;
    pthread_cond_t q_nonempty; /* writer waits here */
    pthread_cond_t q_space;    /* producers wait here when the queue is full */
    pthread_cond_t q_idle;     /* flush waits here */
    xt_row *qhead, *qtail;
    size_t qlen, qcap;
    size_t qbytes; /* the size of the queued rows */
    int writer_busy, stopping, thread_started;
    int closing;              /* set by close(): later rows are refused, not dropped */
    uint64_t queued, written; /* rows ever queued / ever processed by the writer: a flush
                               * waits only for the rows queued before it was called */
    pthread_t thread;
    xt_error deferred; /* first failure of the writer, reported by the next flush */
    size_t rows_lost;

    /* busy_wait's state: when the current wait began (monotonic); under `lock`. */
    int64_t busy_since_us;
    /* take_turn's window (monotonic), the time in it spent writing, and the part of
     * that spent waiting for others (busy_wait); under `lock`. */
    int64_t turn_start_us, turn_held_us, turn_waited_us;
    /* The last write's time holding the write lock, and the async writer's batch size
     * (next_async_batch); under `lock`. */
    int64_t last_write_us;
    size_t async_batch;
    /* When the open stream (xt_store_stream_begin) began, and turn_waited_us then; under
     * `lock`. */
    int64_t stream_started_us, stream_waited_us;

    /* fork.c's count of fork()s when the connection was opened, and the guard through
     * which a fork from Python waits for `lock` (csrc/fork.c). */
    unsigned long fork_generation;
    xt_fork_guard fork_guard;

    /* Group commit (xt_store_write): callers of one process waiting to write, the one
     * among them that leads (writes everyone's rows in one transaction), and the leader's
     * row array; under `glock`, which is never held while waiting for `lock`. */
    pthread_mutex_t glock;
    struct xt_group_waiter *gwait_head, *gwait_tail;
    int group_leading;
    /* How long the last round took (µs), under glock: a caller spins for a round this
     * short instead of sleeping (spin_for_round in store.c). */
    int64_t group_round_us;
    xt_row **group_rows; /* the leader's only */
    size_t group_cap;

    /* Checkpointer (store_ckpt.c): the writer connection's automatic checkpoint is off;
     * a thread with its own connection checkpoints when the WAL passes XT_CKPT_PAGES. */
    pthread_mutex_t ckpt_lock; /* fork guard: held around every use of ckpt_db */
    pthread_mutex_t ckpt_sig;  /* guards the fields below and ckpt_wake */
    pthread_cond_t ckpt_wake;
    sqlite3 *ckpt_db;
    char *ckpt_path; /* the file as the store's connection opened it */
    atomic_int ckpt_pending;   /* a checkpoint was asked for and has not finished */
    atomic_int ckpt_wal_pages; /* frames in the WAL after the last commit */
    int ckpt_asked_at;         /* WAL frames at the last request; under `lock` */
    int ckpt_stopping, ckpt_started;
    unsigned long ckpt_generation; /* fork generation the thread was started in */
    pthread_t ckpt_thread;
    xt_fork_guard ckpt_guard;
};

/* store.c */

/* Fill `err`: `msg`, or SQLite's text for `rc` when NULL, and the statement `sql`. */
void xt_store_set_error(xt_error *err, int rc, const char *msg, const char *sql);
/* 0, or -1 with `err` set when the store is closed.  s->lock held. */
int xt_store_check_open(xt_store *s, xt_error *err);
/* Write `rows` in one transaction, after taking turns with other processes (take_turn),
 * creating missing columns and retrying once after a schema change; the rows stay the
 * caller's.  0, or -1 with `err` set.  s->lock held. */
int xt_store_write_locked(xt_store *s, xt_row **rows, size_t n, xt_error *err);
/* A transaction whose rows are written as they are made (store_batch.c).  begin: take
 * s->lock (taking turns with other processes) and BEGIN IMMEDIATE; on failure, -1 with
 * `err` set and the lock let go.  rows: write rows (assets first, creating missing
 * columns) into it; -1 with `err` set leaves the rest to end.  end: by `outcome`, COMMIT
 * (rolled back if that fails), roll back, or roll back a transaction whose rows failed
 * with `err` and, if they failed because the table changed, write all `n` rows again in
 * one transaction as xt_store_write_locked would; then let go of s->lock.  0 only when
 * the rows are committed. */
enum { XT_STREAM_COMMIT = 0, XT_STREAM_ABORT = 1, XT_STREAM_FAILED = 2 };
int xt_store_stream_begin(xt_store *s, xt_error *err);
int xt_store_stream_rows(xt_store *s, xt_row **rows, size_t n, xt_error *err);
int xt_store_stream_end(xt_store *s, int outcome, xt_row **rows, size_t n, xt_error *err);

/* store_ckpt.c */

/* WAL pages (frames) past which the checkpointer runs: SQLite's default autocheckpoint. */
#define XT_CKPT_PAGES 1000
/* The longest round (µs) a group-commit caller spins for before it sleeps. */
#define XT_GROUP_SPIN_MAX_US 400

/* On a new writer connection: turn off SQLite's automatic checkpoint and hand WAL growth
 * to the checkpointer.  s->lock held. */
void xt_ckpt_attach(xt_store *s);
/* Stop the checkpointer thread (if this process started one) and close its connection.
 * Call without s->lock. */
void xt_ckpt_stop(xt_store *s);
/* In a forked child: forget the parent's checkpointer (its thread is not ours), so the
 * next WAL growth starts a fresh one. */
void xt_ckpt_reset_in_child(xt_store *s);
/* The checkpointer's fork guard's hook: close the copied, idle connection in a child. */
void xt_ckpt_drop_in_child(void *owner);
void xt_ckpt_init(xt_store *s);
void xt_ckpt_destroy(xt_store *s);

/* store_assets.c */

/* Write `row`'s assets inside the open transaction: each blob once per hash, the column's
 * latest hash, the hash's count plus one; creates the tables on first use.  0, or -1 with
 * `err` set.  s->lock held. */
int xt_store_write_assets(xt_store *s, const xt_row *row, xt_error *err);
/* Finalise the asset statements and forget the tables (schema change, closing). */
void xt_store_forget_assets(xt_store *s);

/* store_async.c */

/* Free a chain of rows linked through `next` (the queue, or what is left of it). */
void xt_store_free_rows(xt_row *row);

#endif
