/* Result cache internals, shared by its files and by no other concern (tracker.c uses
 * cache.h): the ResultCache object, a stored entry, and the functions one cache file calls
 * in another.
 *
 *   cache_key.c     canonical key encoding and the key of a call
 *   cache.c         the SQLite store (<directory>/cache.db): the file, entry MACs, get, put
 *   cache_type.c    the ResultCache type, the module function cache_key(), xt_cache_exec
 *   cache_flight.c  single flight of concurrent identical calls */
#ifndef XT_CACHE_INTERNAL_H
#define XT_CACHE_INTERNAL_H

#include "cache.h"
#include "hash.h"
#include "store.h"

#include <pthread.h>
#include <sqlite3.h>

/* A thread waiting for a flight (cache_flight.c). */
typedef struct xt_wait xt_wait;

/* How the file is opened: ResultCache(mode='create'|'read'|'write'). */
enum { XT_CACHE_MODE_CREATE = 0, XT_CACHE_MODE_READ = 1, XT_CACHE_MODE_WRITE = 2 };

typedef struct {
    PyObject_HEAD
    xt_state *st;        /* of the module that made the type (which this object keeps alive) */
    PyObject *loads;     /* pickle.loads */
    PyObject *directory; /* str */
    PyObject *path;      /* str: directory/cache.db */
    char *path_fs;       /* the path in the file system encoding */
    PyObject *warned;    /* set of types warned about */
    PyObject *weakreflist;
    int mode; /* XT_CACHE_MODE_* */
    int busy_timeout_ms;
    int closed;
    int empty; /* opened without creating, and the file has no cache yet */
    /* Authentication (docs/cache.md, "Trust"): with a key, every stored entry gets an
     * HMAC-SHA256 and only entries whose MAC verifies are unpickled.  The prepared key
     * never leaves C (no attribute, repr or message shows it); both are set once by
     * __init__ and only read afterwards, so they need no lock. */
    int authenticated;
    xt_hmac_key mac_key;
    int has_mac_column;  /* the table has `mac` (an older file opened read-only may not) */
    int warned_unsigned; /* the one warning about entries without a MAC was given (GIL) */
    /* Guards db and the statements; taken with the GIL released. */
    pthread_mutex_t db_lock;
    sqlite3 *db;
    sqlite3_stmt *get_stmt, *insert_stmt, *replace_stmt;
    /* Single flight: calls being computed, and the threads waiting for them. */
    pthread_mutex_t flight_lock;
    pthread_cond_t flight_done;
    xt_flight *flights;
    xt_wait *waits;
    unsigned long fork_generation;
    xt_fork_guard fork_guard; /* a fork from Python waits for db_lock through it (fork.c) */
} ResultCache;

static inline ResultCache *
xt_as_cache(PyObject *obj)
{
    return (ResultCache *)obj;
}

/* What the MAC of an entry says, from entry_verify (cache.c). */
enum {
    XT_CACHE_AUTH_UNCHECKED = 0, /* the cache has no key (unauthenticated, opted in) */
    XT_CACHE_AUTH_OK = 1,        /* the MAC verifies with the cache's key */
    XT_CACHE_AUTH_MISMATCH = 2,  /* it does not: another key, or the entry was altered */
    XT_CACHE_AUTH_MISSING = 3,   /* no MAC: written by an older version, or without a key */
};

/* One stored entry, copied out of SQLite so the lock can be dropped.  One allocation, freed
 * with xt_cache_free_entries (with the entries chained after it). */
typedef struct xt_cache_entry {
    struct xt_cache_entry *next;
    char *key, *track_id, *created, *function_name;
    void *value;
    size_t value_len;
    int mac_column; /* SQLite type of the mac column; its bytes are in `mac` if a 32-byte blob */
    int mac_complete;
    uint8_t mac[XT_SHA256_DIGEST_SIZE];
    int auth; /* XT_CACHE_AUTH_*, set by entry_verify */
} xt_cache_entry;

/* cache_key.c */

/* module.attr, imported on first use and kept in the module state.  Returns a borrowed
 * reference, or NULL with an exception set. */
PyObject *xt_cache_helper(xt_state *st, const char *module_name, const char *attr);

/* Module and qualified name of a callable (new references; *module may be NULL), as the
 * key and the store record them.  0, or -1 with an exception set. */
int xt_cache_callable_names(xt_state *st, PyObject *func, PyObject **module, PyObject **qualname);

/* Key of a call, warning through `warned` (a set of types) when it cannot be built:
 * 1 with `key` filled, 0 if it cannot be encoded stably, -1 with an exception set. */
int xt_cache_call_key(xt_state *st, PyObject *warned, PyObject *func, PyObject *args,
                      PyObject *kwargs, PyObject *params, PyObject *tracker_params, int warn,
                      xt_cache_key *key);

/* cache.c */

/* After fork: fresh locks, no connection (reopened on use), only this thread's flights.
 * Call with the GIL held before taking db_lock or flight_lock. */
void xt_cache_check_fork(ResultCache *c);

/* Make the connection usable, opening the file on first use.  Pure C: GIL released,
 * db_lock held.  0, or -1 with `err` set. */
int xt_cache_ready(ResultCache *c, xt_error *err);
/* Finalise the statements and close the connection.  db_lock held, or the only user. */
void xt_cache_close_db(ResultCache *c);
/* The cache's fork guard callback (`owner` is the ResultCache): fork.c calls it in the
 * child, with db_lock held, to close the copied connection. */
void xt_cache_drop_in_child(void *owner);
/* Raise `err` as the cache's exception; returns NULL.  GIL held. */
PyObject *xt_cache_raise_error(ResultCache *c, const xt_error *err);

/* The entry of `key`, its MAC checked (auth set): 1 found (*out set, free it with
 * xt_cache_free_entries), 0 missing, -1 with an exception set.  GIL held; released inside. */
int xt_cache_fetch(ResultCache *c, const char *key, xt_cache_entry **out);
/* Run `sql` (`sql_no_mac`, if not NULL, on a file without the mac column) with ?1 bound to
 * `text` and ?2 to `number` where it has them; with `collect`, the rows as entries (keys
 * included, MACs checked) in *rows, otherwise the count of changes (or a count(*)) in
 * *changes.  0, or -1 with an exception set.  GIL held; released inside. */
int xt_cache_run(ResultCache *c, const char *sql, const char *sql_no_mac, const char *text,
                 int64_t number, int collect, xt_cache_entry **rows, int64_t *changes);
/* Free `e` and the entries chained after it. */
void xt_cache_free_entries(xt_cache_entry *e);
/* scan_raw's query: up to ?2 entries with keys after ?1, in key order; the second for a
 * file without the mac column. */
extern const char xt_cache_scan_sql[];
extern const char xt_cache_scan_sql_no_mac[];

/* cache_flight.c */

/* Drop the flights of threads that do not exist after fork, and every wait. */
void xt_cache_flights_after_fork(ResultCache *c);

#endif
