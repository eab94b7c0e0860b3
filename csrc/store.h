/* Store: the SQLite layer.  Pure C below the Python boundary (connections, statement
 * cache, transactions, busy waiting, the async writer thread), plus the one helper that
 * turns SQLite failures into Python exceptions.
 *
 * Implemented in store.c (connections, transactions, statement cache, schema changes,
 * opening, closing, fork), store_async.c (the async writer: xt_store_enqueue,
 * xt_store_flush), store_ckpt.c (the checkpointer) and store_batch.c (xt_batch); what they
 * share is in store_internal.h. */
#ifndef XT_STORE_H
#define XT_STORE_H

#include "fork.h"
#include "module.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>

/* Storage classes of encoded values; also the declared type of a new column. */
enum { XT_NULL = 0, XT_INT = 1, XT_REAL = 2, XT_TEXT = 3, XT_BLOB = 4 };

/* A declared type only, never a value's storage class: a column first logged as a bool is
 * BOOLEAN (numeric affinity in SQLite, like INTEGER), so readers can give back bools. */
enum { XT_DECL_BOOLEAN = 5 };

/* Durability modes (DESIGN.md section 3). */
enum { XT_DURABLE_COMMIT = 0, XT_DURABLE_FSYNC = 1, XT_DURABLE_ASYNC = 2 };

/* SQLite's default SQLITE_MAX_COLUMN: no table (or row) can have more columns. */
#define XT_MAX_COLUMNS 2000

/* Distinct column names one tracker can know.  Larger than XT_MAX_COLUMNS so names of
 * rows that failed never stop later rows; past it, log() raises ValueError. */
#define XT_REGISTRY_SIZE 8192

/* Column ids 0 and 1 are always track_id and timestamp. */
#define XT_COL_TRACK_ID 0
#define XT_COL_TIMESTAMP 1

/* Longest timestamp text: "YYYY-MM-DD HH:MM:SS.ffffff" plus NUL, with room for 5-digit years. */
#define XT_TS_SIZE 32

typedef struct {
    char *name;    /* sanitised ([A-Za-z0-9_]), NUL-terminated */
    int decl_type; /* XT_INT, XT_REAL, XT_TEXT, XT_BLOB or XT_DECL_BOOLEAN: for ALTER TABLE */
    int in_db;     /* the table is known to have this column; guarded by the store lock */
} xt_column;

/* A registry column named by the `len` bytes at `name`; NULL when out of memory.  The
 * store owns the columns it is given and frees them with xt_column_free.  Like all the
 * store owns, they come from malloc: the store is pure C, used without the GIL. */
xt_column *xt_column_new(const char *name, size_t len, int decl_type);
void xt_column_free(xt_column *c);

/* Append-only column registry.  Slots never move once published, so the writer thread
 * reads a column it was handed without any lock; `count` is published with release
 * ordering after the slot is filled. */
typedef struct {
    xt_column *slots[XT_REGISTRY_SIZE];
    atomic_int count;
} xt_columns;

typedef struct {
    int col;  /* column id */
    int type; /* XT_NULL .. XT_BLOB */
    union {
        int64_t i;
        double d;
        struct {
            const char *p;
            int64_t n;
        } s;
    } v;
} xt_value;

/* Bytes of a row's allocation. */
typedef struct {
    const char *p;
    int64_t n;
} xt_bytes;

/* An object a row refers to by its hash, stored as xetrack stores assets: a blob in the
 * "assets" table (written once per hash), the column's latest hash in "keys" and a
 * reference count in "counts" (store_assets.c).  Keys and values are encoded by the
 * caller, except the count, which the store reads and writes. */
typedef struct {
    xt_bytes hash;       /* the hash text: the row's value and the key of "counts" */
    xt_bytes key;        /* key of "assets" */
    xt_bytes blob;       /* value of "assets": the pickled (maybe compressed) object */
    xt_bytes name_key;   /* key of "keys": the column */
    xt_bytes name_value; /* value of "keys": the hash */
} xt_asset;

/* One encoded row: header, `n` values, `n_assets` assets, then the bytes of its text and
 * blob values and of its assets, in one allocation owned by whoever holds the row. */
typedef struct xt_row {
    struct xt_row *next;
    int64_t ts_us;          /* timestamp, microseconds since the epoch */
    int n;
    int n_assets;
    xt_asset *assets; /* inside the row's allocation, after vals; NULL when none */
    size_t size;      /* bytes of the allocation: the async queue is bounded by them too */
    char ts_text[XT_TS_SIZE]; /* the timestamp value points here, so it can be bumped */
    xt_value vals[];
} xt_row;

/* A failure below the Python boundary, turned into an exception by the caller. */
typedef struct {
    int rc;
    char msg[512];
    char sql[256];
} xt_error;

typedef struct xt_store xt_store;

/* Format `us` (microseconds since the epoch) as local time "%Y-%m-%d %H:%M:%S.%f". */
void xt_format_timestamp(int64_t us, char out[XT_TS_SIZE]);
int64_t xt_now_us(void);

/* Everything below runs without the GIL and takes the store's own locks (xt_store_free
 * too: it unlists the store's fork guard, which waits for a fork in progress). */
xt_store *xt_store_new(void);
int xt_store_open(xt_store *s, const char *path, const char *table, int durability, int reset,
                  int busy_timeout_ms, int queue_rows, xt_error *err);
/* Write rows (sync modes) in one BEGIN IMMEDIATE transaction, with their assets (a row
 * of no values writes only its assets); creates missing columns.  Rows stay owned by the caller; a primary-key collision bumps
 * the row's timestamp. */
int xt_store_write(xt_store *s, xt_row **rows, size_t n, xt_error *err);
/* A batch written while it is encoded (store_batch.c): start a thread that opens one
 * transaction and writes rows[0..ready) as xt_batch_feed hands them over; `rows` (all `n`
 * slots) stays the caller's and unchanged below `ready` until xt_batch_free.  Start
 * returns NULL when no thread could be had (write the usual way).  end asks the thread
 * to commit once every row handed over is written, or to roll back; too late once the
 * thread has begun its COMMIT (or is done), when the request is dropped.  wait
 * waits up to `ms` milliseconds for the thread to be done with the store (1) or not (0).
 * free waits for the thread and frees the batch: 0 only when all n rows are committed,
 * else -1 with `err` set when it is not NULL.  The caller must not wait for the store's
 * lock between start and wait's 1. */
typedef struct xt_batch xt_batch;
xt_batch *xt_batch_start(xt_store *s, xt_row **rows, size_t n);
void xt_batch_feed(xt_batch *b, size_t ready);
void xt_batch_end(xt_batch *b, int commit);
int xt_batch_wait(xt_batch *b, int ms);
int xt_batch_free(xt_batch *b, xt_error *err);
/* Batches this process has written on a thread (for the tests). */
long long xt_batch_count(void);
/* Async mode: queue a row.  Returns 0 when queued (ownership passes to the store); -1 if
 * the store is closed or closing (the caller keeps the row); with may_block == 0, 1
 * without queueing if the queue is full, its lock is busy or the writer thread could not
 * be started. */
int xt_store_enqueue(xt_store *s, xt_row *row, int may_block);
/* Wait until every row queued before this call is written (rows other threads queue
 * meanwhile do not hold it up); returns the writer's deferred error, if any. */
int xt_store_flush(xt_store *s, xt_error *err);
/* Make sure the columns exist in the table (typed by decl_type). */
int xt_store_ensure_columns(xt_store *s, const int *cols, int n, xt_error *err);
/* Stop the writer (after draining), finalise statements, close the connection. */
int xt_store_close(xt_store *s, xt_error *err);
void xt_store_free(xt_store *s);

/* Accessors */
xt_columns *xt_store_columns(xt_store *s);
sqlite3 *xt_store_db(xt_store *s);
const char *xt_store_path(xt_store *s);
int xt_store_is_open(xt_store *s);
int xt_store_durability(xt_store *s);
/* Highest timestamp the store has written (after primary-key bumps). */
int64_t xt_store_last_ts(xt_store *s);

/* SQLite's default SQLITE_MAX_LENGTH: the longest string or blob, in bytes. */
#define XT_DEFAULT_LENGTH_LIMIT 1000000000

/* The longest string or blob the connection stores (its SQLITE_LIMIT_LENGTH), in bytes;
 * XT_DEFAULT_LENGTH_LIMIT before it opens.  Any thread, no lock: log() checks values
 * against it while encoding, so a row SQLite would refuse is never queued. */
int xt_store_length_limit(xt_store *s);
/* Set the connection's SQLITE_LIMIT_LENGTH (a negative limit only reads it); returns the
 * previous limit.  Takes the store lock: call without the GIL. */
int xt_store_set_length_limit(xt_store *s, int limit);

/* Lock the store for direct use of its connection.  Call with the GIL released. */
void xt_store_lock(xt_store *s);
int xt_store_trylock(xt_store *s);
void xt_store_unlock(xt_store *s);

/* True if the process forked since the store was opened: its connection belongs to the
 * parent and must not be touched; xt_store_reopen_after_fork gives it a fresh one. */
int xt_store_forked(xt_store *s);
int xt_store_reopen_after_fork(xt_store *s, xt_error *err);

/* Put `db` in WAL mode, waiting up to `busy_timeout_ms` for other connections; returns
 * the SQLite result code (sqlite3_errmsg(db) describes a failure).  Call without the GIL. */
int xt_enable_wal(sqlite3 *db, int busy_timeout_ms);

/* Store error as a Python exception; returns NULL. */
PyObject *xt_raise_store_error(xt_state *st, xt_store *s, const xt_error *err);

/* Raise the exception for a failed SQLite call and return NULL.
 *   rc:       the SQLite result code (extended codes are fine)
 *   errmsg:   sqlite3_errmsg() text, or NULL to use sqlite3_errstr(rc)
 *   filename: the database file (or ":memory:") named in the message
 *   sql:      the statement that failed, or NULL
 * SQLITE_NOTADB and SQLITE_CORRUPT raise CorruptDatabaseError; everything else raises
 * StorageError.  The exception carries .sqlite_code, .filename and .sql attributes. */
PyObject *xt_raise_sqlite(xt_state *st, int rc, const char *errmsg, const char *filename,
                          const char *sql);

#endif
