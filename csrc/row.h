/* Row encoding: how log() turns Python values into one encoded xt_row.  Classifies
 * values into SQLite storage classes, maps keys to column ids (sanitised once per distinct
 * key, cached on the tracker), stamps rows with strictly increasing timestamps and builds
 * each row in one allocation; also binds a Python value to a statement parameter. */
#ifndef XT_ROW_H
#define XT_ROW_H

#include "tracker.h"

/* One encoded key/value while a row is being built. */
typedef struct {
    int col;
    int type;
    PyObject *value; /* new reference: the value as the returned row shows it */
    int64_t i;
    double d;
    const char *p; /* text/blob bytes, owned by `value` */
    Py_ssize_t n;
} xt_pair;

/* How `value` is stored: fills pair (pair->value is a new reference) and returns the
 * declared type of a new column, or -1 with an exception set.  Call with depth 0. */
int xt_classify(xt_state *st, PyObject *value, xt_pair *pair, int depth);

/* Column id of `key` (sanitised; case-insensitive), registering a new column typed
 * `decl_type` if it is new.  -1 with an exception set on failure. */
int xt_column_for_key(TrackerCore *self, PyObject *key, int decl_type);

/* Encode the tracker's params + data (+ timestamp, track_id).  0 on success, with
 * *row_out a malloc'd row owned by the caller and *dict_out the row dict to return
 * (dict_out NULL: no dict is built, as for all but the last row of log_batch());
 * -1 with an exception set.  A text or blob value longer than the store's length limit
 * (SQLITE_LIMIT_LENGTH), or a row whose values add up to more, raises ValueError.
 * Assets are copied into the row, unless `keep` is a list: their bytes then stay in the
 * Python objects the list receives, which the caller keeps until the row is written (a
 * row written at once needs no copy of a large blob; a queued row must own its bytes). */
int xt_encode_row(TrackerCore *self, xt_state *st, PyObject *data, PyObject *keep,
                  xt_row **row_out, PyObject **dict_out);

/* A row of no values carrying the assets in `parts` (a list of the asset hook's
 * 5-tuples), their bytes borrowed: `parts` must outlive the row.  0, or -1 with an
 * exception set. */
int xt_encode_assets(PyObject *parts, xt_row **row_out);

/* Bind a Python value to parameter `index` (1-based) of `stmt`: None, bool, int, float,
 * str, bytes, bytearray, memoryview (its tobytes()); anything else as str(value).  0 on
 * success, -1 with an exception set: ValueError for a value longer than the connection's
 * SQLITE_LIMIT_LENGTH, which SQLite would otherwise leave NULL. */
int xt_bind_python(xt_state *st, sqlite3_stmt *stmt, int index, PyObject *value);

#endif
