/* Result cache internals, shared by its files and by no other concern (tracker.c uses
 * cache.h): the ResultCache object, and the functions one cache file calls in another.
 *
 *   cache_key.c     canonical key encoding and the key of a call
 *   cache.c         the SQLite store (<directory>/cache.db) and the ResultCache type
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

typedef struct {
    PyObject_HEAD
    xt_state *st;        /* of the module that made the type (which this object keeps alive) */
    PyObject *loads;     /* pickle.loads */
    PyObject *directory; /* str */
    PyObject *path;      /* str: directory/cache.db */
    char *path_fs;       /* the path in the file system encoding */
    PyObject *warned;    /* set of types warned about */
    PyObject *weakreflist;
    int mode;
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

/* cache_flight.c */

/* Drop the flights of threads that do not exist after fork, and every wait. */
void xt_cache_flights_after_fork(ResultCache *c);

#endif
