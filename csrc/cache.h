/* Result cache: canonical cache keys, the ResultCache type (a SQLite file of pickled
 * results inside the cache directory) and single-flight of concurrent identical calls.
 *
 * The key of a call is the first 16 bytes of the SHA-256 of a canonical binary encoding
 * of (qualified function name, args, kwargs, per-call params, tracker params); the
 * encoding is described in docs/cache.md.  Tracker.track (tracker.c) uses the functions
 * below; everything reachable from Python is added by xt_cache_exec.
 *
 * Implemented in cache_key.c (key encoding), cache.c (the SQLite store), cache_type.c (the
 * ResultCache type) and cache_flight.c (single flight); what they share is in
 * cache_internal.h. */
#ifndef XT_CACHE_H
#define XT_CACHE_H

#include "module.h"

#include <stdint.h>

#define XT_CACHE_KEY_SIZE 16

typedef struct {
    uint8_t bytes[XT_CACHE_KEY_SIZE];
    char hex[2 * XT_CACHE_KEY_SIZE + 1];
} xt_cache_key;

/* An entry of the in-process table of calls being computed (opaque). */
typedef struct xt_flight xt_flight;

/* What xt_cache_flight_begin decided. */
enum {
    XT_FLIGHT_OWNER = 0,  /* this call computes; end the flight when done */
    XT_FLIGHT_RETRY = 1,  /* another call computed meanwhile: look the key up again */
    XT_FLIGHT_BYPASS = 2, /* compute without the table (recursion, or a wait cycle) */
};

/* True if `obj` is a ResultCache. */
int xt_cache_check(xt_state *st, PyObject *obj);

/* The key of a call.  params and tracker_params may be NULL or None (no params).
 * Returns 1 with `key` filled; 0 if some value cannot be encoded stably (a warning,
 * once per type on this cache, if `warn`); -1 with an exception set. */
int xt_cache_make_key(PyObject *cache, PyObject *func, PyObject *args, PyObject *kwargs,
                      PyObject *params, PyObject *tracker_params, int warn, xt_cache_key *key);

/* Look a key up.  Returns 1 on a hit (*result: the unpickled value, *lineage: the
 * track_id that computed it, both new references); 0 on a miss, with *stale = 1 if an
 * entry exists but cannot be unpickled (warned if `warn`; store over it); -1 with an
 * exception set. */
int xt_cache_get(PyObject *cache, const xt_cache_key *key, int warn, PyObject **result,
                 PyObject **lineage, int *stale);

/* Store `result`, computed by the run `track_id`.  `replace`: overwrite an existing
 * entry (otherwise the first writer wins).  Returns 1 if stored, 0 if the value cannot
 * be pickled (warned if `warn`), -1 with an exception set. */
int xt_cache_put(PyObject *cache, const xt_cache_key *key, PyObject *func, PyObject *result,
                 PyObject *track_id, int replace, int warn);

/* Single flight: called with the GIL held; waits, if it must, with the GIL released.
 * On XT_FLIGHT_OWNER *flight is set and must be passed to xt_cache_flight_end. */
int xt_cache_flight_begin(PyObject *cache, const xt_cache_key *key, xt_flight **flight);
void xt_cache_flight_end(PyObject *cache, xt_flight *flight);

/* Close the cache's connection (idempotent); -1 with an exception set. */
int xt_cache_close(PyObject *cache);

#endif
