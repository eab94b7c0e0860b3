/* Tracker: the TrackerCore type, whose log() and log_batch() encode rows in C and hand
 * them to the store.  xetrack_c.Tracker (Python) subclasses it for the rest of the API.
 *
 * The object layout lives here because three files share it: tracker.c (the type, its
 * methods and its use of the store), row.c (encoding rows) and track.c (track()). */
#ifndef XT_TRACKER_H
#define XT_TRACKER_H

#include "module.h"
#include "store.h"

/* Direct-mapped cache from key object identity to column id.  Loops log the same key
 * objects again and again (literals are interned), so a pointer compare replaces a dict
 * lookup.  Entries hold a strong reference, so an address is never reused while cached. */
#define XT_KEY_CACHE 128

typedef struct {
    PyObject *key;
    int col;
} xt_key_slot;

typedef struct {
    PyObject_HEAD
    /* The module's state, found once when the object is made: at interpreter shutdown the
     * garbage collector may clear a subclass's MRO before this object is freed, and
     * PyType_GetModuleByDef then has nothing to walk.  The type keeps the module alive as
     * long as this object lives. */
    xt_state *st;
    xt_store *store;
    PyObject *path;      /* str, as given */
    PyObject *table;     /* str */
    PyObject *track_id;  /* str */
    PyObject *params;    /* dict */
    PyObject *latest;    /* dict */
    PyObject *key_ids;   /* dict: key or column name (and its lower case) -> column id */
    PyObject *col_names; /* list: column id -> column name */
    PyObject *cache;     /* ResultCache, or NULL when the result cache is off */
    /* The system-metrics sampler (xetrack_c/system.py), or NULL when log_system_params and
     * log_network_params are off: its extend(data) adds the metric columns to every row,
     * its begin() and end(token, row) those of one track() call. */
    PyObject *system;
    /* Called as hook(column, value) for a value stored as an asset (row.c); returns
     * (hash, assets key, blob, keys key, keys value).  NULL: such values are str()'d. */
    PyObject *asset_hook;
    PyObject *weakreflist;
    char *track_id_utf8;
    Py_ssize_t track_id_len;
    int skip_insert;
    /* The thread `batch_caller` is encoding a log_batch() of this tracker (perhaps
     * written meanwhile on a thread of its own, store_batch.c); under the GIL. */
    int batch_active;
    pthread_t batch_caller;
    char raise_on_error; /* track(): re-raise the function's exception after logging */
    char warnings;
    /* Timestamps: strictly increasing per tracker.  Touched only with the GIL held, with
     * no Python call in between. */
    int64_t last_ts;
    int64_t ts_cache_sec;
    char ts_cache_text[XT_TS_SIZE];
    xt_key_slot key_cache[XT_KEY_CACHE];
} TrackerCore;

/* TrackerCore.log(data): the row as a dict, or NULL with an exception set.  track()
 * (track.c) logs the row of a call through it. */
PyObject *xt_tracker_log(TrackerCore *self, PyObject *data);

#endif
