/* Tracker: the TrackerCore type (tracker.h): its methods, getters/setters, type spec and
 * exec hook, and its use of the store.
 *
 * log() has row.c turn a dict into an encoded row (xt_row) while holding the GIL and
 * build the row dict it returns, then releases the GIL and hands the row to the store:
 * written and committed at once (durability "commit"/"fsync") or queued for the writer
 * thread ("async").  track() lives in track.c. */
#include "tracker.h"

#include "cache.h"
#include "names.h"
#include "reader.h"
#include "row.h"
#include "track.h"
#include <structmember.h>

#include <pthread.h>
#include <sched.h>

static xt_state *
tracker_state(TrackerCore *self)
{
    return self->st != NULL ? self->st : xt_state_from_type(Py_TYPE(self));
}

static PyObject *
tracker_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    TrackerCore *self = (TrackerCore *)PyType_GenericNew(type, args, kwargs);
    if (self != NULL) {
        self->st = xt_state_from_type(type);
        if (self->st == NULL) {
            Py_DECREF(self);
            return NULL;
        }
    }
    return (PyObject *)self;
}

/* ---------------------------------------------------------------------------------- */
/* Talking to the store                                                               */
/* ---------------------------------------------------------------------------------- */

/* The thread encoding a long log_batch() must not wait for the store's lock, which the
 * batch's writer holds until the encoding ends (store_batch.c): a call on this tracker
 * from inside a batch (a value's __str__, an asset's pickling) is refused, in a batch of
 * any length. */
static int
refuse_inside_batch(TrackerCore *self)
{
    if (self->batch_active && pthread_equal(self->batch_caller, pthread_self())) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this Tracker is writing a log_batch() on this thread, and a value's "
                        "conversion (its __str__, say) called the Tracker again; convert "
                        "such values before log_batch()");
        return -1;
    }
    return 0;
}

static int
check_usable(TrackerCore *self, xt_state *st)
{
    if (refuse_inside_batch(self) < 0) {
        return -1;
    }
    if (self->store == NULL || !xt_store_is_open(self->store)) {
        if (self->store != NULL && xt_store_forked(self->store)) {
            goto reopen;
        }
        PyErr_SetString(PyExc_ValueError,
                        "I/O operation on a closed Tracker: create a new Tracker");
        return -1;
    }
    if (!xt_store_forked(self->store)) {
        return 0;
    }
reopen:;
    /* A forked child never reuses the parent's connection. */
    xt_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = xt_store_reopen_after_fork(self->store, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        xt_raise_store_error(st, self->store, &err);
        return -1;
    }
    return 0;
}

/* Lock the store without ever blocking on it while holding the GIL. */
static void
lock_store(TrackerCore *self)
{
    if (!xt_store_trylock(self->store)) {
        Py_BEGIN_ALLOW_THREADS
        xt_store_lock(self->store);
        Py_END_ALLOW_THREADS
    }
}

static int
flush_store(TrackerCore *self, xt_state *st)
{
    if (xt_store_durability(self->store) != XT_DURABLE_ASYNC) {
        return 0;
    }
    xt_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = xt_store_flush(self->store, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        xt_raise_store_error(st, self->store, &err);
        return -1;
    }
    return 0;
}

/* Rows go to the async queue, which then owns them. */
static int
rows_queued(TrackerCore *self)
{
    return xt_store_durability(self->store) == XT_DURABLE_ASYNC && !self->skip_insert;
}

/* Store encoded rows.  Queued rows pass to the store (see rows_queued); otherwise the
 * caller keeps and frees them. */
static int
write_rows(TrackerCore *self, xt_state *st, xt_row **rows, size_t n)
{
    int rc = 0;
    xt_error err = {0};

    if (self->skip_insert) {
        return 0;
    }
    if (rows_queued(self)) {
        for (size_t i = 0; i < n; i++) {
            int queued = xt_store_enqueue(self->store, rows[i], 0);
            if (queued == 1) {
                Py_BEGIN_ALLOW_THREADS
                queued = xt_store_enqueue(self->store, rows[i], 1);
                Py_END_ALLOW_THREADS
            }
            if (queued < 0) {
                /* Closed by another thread meanwhile: refuse the rest, keep nothing. */
                for (size_t j = i; j < n; j++) {
                    free(rows[j]);
                }
                PyErr_Format(PyExc_ValueError,
                             "I/O operation on a closed Tracker: it was closed while logging; "
                             "%zu of %zu row(s) were queued and are written",
                             i, n);
                return -1;
            }
        }
        return 0;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = xt_store_write(self->store, rows, n, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        xt_raise_store_error(st, self->store, &err);
    }
    return rc;
}

/* A primary-key collision may have moved the row's timestamp: show the stored one. */
static int
sync_timestamp(xt_state *st, xt_row *row, int64_t original_ts, PyObject *dict)
{
    if (row->ts_us == original_ts) {
        return 0;
    }
    PyObject *ts = PyUnicode_FromString(row->ts_text);
    int rc = ts == NULL ? -1 : PyDict_SetItem(dict, st->str_timestamp, ts);
    Py_XDECREF(ts);
    return rc;
}

/* ---------------------------------------------------------------------------------- */
/* Methods                                                                            */
/* ---------------------------------------------------------------------------------- */

PyDoc_STRVAR(log__doc__,
    "log($self, data)\n--\n\n"
    "Log one row: the tracker's params, then `data`, then timestamp and track_id.\n\n"
    "Keys are sanitised to column names ([A-Za-z0-9_], at most 64 characters); new keys\n"
    "become columns typed by their first value.  Returns the row as a dict.");

PyObject *
xt_tracker_log(TrackerCore *self, PyObject *data)
{
    xt_state *st = tracker_state(self);
    xt_row *row = NULL;
    PyObject *dict = NULL;

    assert(!PyErr_Occurred());
    if (st == NULL || check_usable(self, st) < 0) {
        return NULL;
    }
    if (PyDict_CheckExact(data) && PyDict_GET_SIZE(data) == 0) {
        /* As xetrack: nothing to track is a warning, not a row of params alone. */
        if (self->warnings && PyErr_WarnEx(PyExc_UserWarning, "log() got no values to track", 1) < 0) {
            return NULL;
        }
        return PyDict_New();
    }
    /* A row written at once borrows its assets' bytes (no copy of a large blob); the
     * objects that hold them live in `keep` until the write is done. */
    int queued = rows_queued(self);
    PyObject *keep = queued ? NULL : PyList_New(0);
    if ((!queued && keep == NULL) || xt_encode_row(self, st, data, keep, &row, &dict) < 0) {
        Py_XDECREF(keep);
        return NULL;
    }
    int64_t ts = row->ts_us;
    int rc = write_rows(self, st, &row, 1);
    Py_XDECREF(keep);
    if (rc == 0 && !queued) {
        rc = sync_timestamp(st, row, ts, dict);
    }
    if (!queued) {
        free(row);
    }
    if (rc < 0) {
        Py_DECREF(dict);
        return NULL;
    }
    Py_XSETREF(self->latest, Py_NewRef(dict));
    return dict;
}

/* log(data) or log(data=...): the positional call, the common one, costs one comparison
 * more than METH_O. */
static PyObject *
tracker_log_method(TrackerCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);

    if (nargs == 1 && nkw == 0) {
        return xt_tracker_log(self, args[0]);
    }
    if (nargs == 0 && nkw == 1 && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "data") == 0) {
        return xt_tracker_log(self, args[0]);
    }
    if (nargs + nkw != 1) {
        PyErr_Format(PyExc_TypeError, "log() takes exactly one argument, data (%zd given)", nargs + nkw);
    }
    else {
        PyErr_Format(PyExc_TypeError, "log() got an unexpected keyword argument %R", PyTuple_GET_ITEM(kwnames, 0));
    }
    return NULL;
}

PyDoc_STRVAR(log_batch__doc__,
    "log_batch($self, data, /)\n--\n\n"
    "Log a list of dicts in one transaction.  Returns the last row (an empty dict, with\n"
    "a warning left to the caller, for an empty list).");

/* A log_batch() of at least this many rows is written while it is encoded (store_batch.c),
 * handed over this many rows at a time: below it a thread costs more than it saves. */
#define XT_BATCH_STREAM_ROWS 2048
#define XT_BATCH_CHUNK 256
/* How often a caller waiting for its streamed batch looks for signals (Ctrl-C). */
#define XT_BATCH_CHECK_MS 50

/* Whether this batch is worth a writer thread: rows are written at once (not queued),
 * there are enough of them, no system sampler adds its columns to each row (Python code
 * with locks of its own, run while the writer holds the store) and a second CPU may run
 * the thread. */
static int
stream_batch(TrackerCore *self, int queued, Py_ssize_t n)
{
    if (queued || self->skip_insert || n < XT_BATCH_STREAM_ROWS || self->system != NULL) {
        return 0;
    }
    cpu_set_t cpus;
    return sched_getaffinity(0, sizeof(cpus), &cpus) == 0 && CPU_COUNT(&cpus) > 1;
}

/* Wait for a streamed batch to be committed, with the GIL released, looking for signals
 * every XT_BATCH_CHECK_MS: a handler that raises (Ctrl-C) before the COMMIT has begun has
 * the batch rolled back; once it has begun, the batch is committed and the exception
 * raised after it.  0 when committed with no exception; -1 with an exception set. */
static int
finish_batch(TrackerCore *self, xt_state *st, xt_batch *batch)
{
    xt_error err = {0};
    int done, raised = 0;

    xt_batch_end(batch, 1);
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        done = xt_batch_wait(batch, XT_BATCH_CHECK_MS);
        Py_END_ALLOW_THREADS
        if (done) {
            break;
        }
        if (!raised && PyErr_CheckSignals() < 0) {
            raised = 1;
            xt_batch_end(batch, 0); /* not taken once the COMMIT has begun */
        }
    }
    int rc = xt_batch_free(batch, &err); /* the thread is done: no wait */
    if (raised) {
        return -1;
    }
    if (rc < 0) {
        xt_raise_store_error(st, self->store, &err);
    }
    return rc;
}

static PyObject *
tracker_log_batch(TrackerCore *self, PyObject *data)
{
    xt_state *st = tracker_state(self);
    PyObject *seq = NULL, *last = NULL, *res = NULL, *keep = NULL;
    xt_row **rows = NULL;
    xt_batch *batch = NULL;
    Py_ssize_t n = 0, done_rows = 0;
    int rc;

    assert(!PyErr_Occurred());
    if (st == NULL || check_usable(self, st) < 0) {
        return NULL;
    }
    seq = PySequence_Fast(data, "log_batch() takes a list of dicts");
    if (seq == NULL) {
        return NULL;
    }
    n = PySequence_Fast_GET_SIZE(seq);
    if (n == 0) {
        res = PyDict_New();
        goto done;
    }
    rows = PyMem_Calloc((size_t)n, sizeof(xt_row *));
    if (rows == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int queued = rows_queued(self);
    if (!queued && (keep = PyList_New(0)) == NULL) { /* see log(): borrowed asset bytes */
        goto done;
    }
    if (stream_batch(self, queued, n)) {
        batch = xt_batch_start(self->store, rows, (size_t)n); /* NULL: the usual way */
    }
    /* Whether or not the batch is streamed, so that it does not depend on its size. */
    self->batch_active = 1;
    self->batch_caller = pthread_self();
    /* Only the last row's dict is returned, so only it is built. */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (xt_encode_row(self, st, PySequence_Fast_GET_ITEM(seq, i), keep, &rows[i],
                          i == n - 1 ? &last : NULL) < 0) {
            goto done;
        }
        done_rows = i + 1;
        if (done_rows % XT_BATCH_CHUNK == 0) {
            if (batch != NULL) {
                xt_batch_feed(batch, (size_t)done_rows);
            }
            if (PyErr_CheckSignals() < 0) { /* Ctrl-C: nothing of the batch is written */
                goto done;
            }
        }
    }
    int64_t last_ts = rows[n - 1]->ts_us;
    /* Encoded: the batch's thread has every row it needs, so a call back from here on (a
     * signal handler run while waiting) only waits for the commit, as any write does. */
    self->batch_active = 0;
    if (batch != NULL) {
        xt_batch_feed(batch, (size_t)n);
        rc = finish_batch(self, st, batch);
        batch = NULL;
    }
    else {
        rc = write_rows(self, st, rows, (size_t)n);
    }
    if (queued) {
        done_rows = 0; /* the queue owns them; the cleanup below frees the rest */
    }
    else if (rc == 0) {
        rc = sync_timestamp(st, rows[n - 1], last_ts, last);
    }
    if (rc < 0) {
        goto done;
    }
    Py_XSETREF(self->latest, Py_NewRef(last));
    res = Py_NewRef(last);
done:
    self->batch_active = 0;
    if (batch != NULL) {
        /* Encoding failed: nothing of the batch is kept. */
        xt_batch_end(batch, 0);
        Py_BEGIN_ALLOW_THREADS
        xt_batch_free(batch, NULL);
        Py_END_ALLOW_THREADS
    }
    for (Py_ssize_t i = 0; i < done_rows; i++) {
        free(rows[i]);
    }
    PyMem_Free(rows);
    Py_XDECREF(keep);
    Py_XDECREF(seq);
    Py_XDECREF(last);
    return res;
}

PyDoc_STRVAR(put_assets__doc__,
    "_put_assets($self, assets, /)\n--\n\n"
    "Private (AssetsManager.insert): write a list of the asset hook's 5-tuples in one\n"
    "transaction on the tracker's connection, after the rows queued before: each blob\n"
    "once per hash, the key's hash, the count plus one.");

static PyObject *
tracker_put_assets(TrackerCore *self, PyObject *parts)
{
    xt_state *st = tracker_state(self);
    xt_row *row = NULL;
    xt_error err = {0};
    int rc;

    assert(!PyErr_Occurred());
    if (st == NULL || check_usable(self, st) < 0 || flush_store(self, st) < 0
        || xt_encode_assets(parts, &row) < 0) {
        return NULL;
    }
    if (!self->skip_insert && row->n_assets > 0) {
        Py_BEGIN_ALLOW_THREADS
        rc = xt_store_write(self->store, &row, 1, &err);
        Py_END_ALLOW_THREADS
        if (rc < 0) {
            free(row);
            return xt_raise_store_error(st, self->store, &err);
        }
    }
    free(row);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(flush__doc__,
    "flush($self, /)\n--\n\n"
    "Wait until every row logged so far is committed (matters in durability='async').");

static PyObject *
tracker_flush(TrackerCore *self, PyObject *Py_UNUSED(ignored))
{
    xt_state *st = tracker_state(self);
    if (st == NULL || check_usable(self, st) < 0 || flush_store(self, st) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
close_store(TrackerCore *self, xt_state *st)
{
    if (refuse_inside_batch(self) < 0) {
        return -1;
    }
    if (self->store == NULL || !xt_store_is_open(self->store) || xt_store_forked(self->store)) {
        return 0;
    }
    xt_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = xt_store_close(self->store, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0 && st != NULL) {
        xt_raise_store_error(st, self->store, &err);
    }
    return rc;
}

PyDoc_STRVAR(close__doc__,
    "close($self, /)\n--\n\n"
    "Flush queued rows and close the database connection.  Closing twice is harmless.");

static PyObject *
tracker_close(TrackerCore *self, PyObject *Py_UNUSED(ignored))
{
    if (close_store(self, tracker_state(self)) < 0) {
        return NULL;
    }
    if (self->cache != NULL && xt_cache_close(self->cache) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(set_length_limit__doc__,
    "_set_length_limit($self, limit, /)\n--\n\n"
    "Private, for tests: set the connection's SQLITE_LIMIT_LENGTH, the longest string or\n"
    "blob SQLite stores, to `limit` bytes (SQLite caps it at its compile-time maximum)\n"
    "and return the previous limit; a negative `limit` only reads it.  log() refuses a\n"
    "longer value with ValueError.  Rows queued before the call are written first.");

static PyObject *
tracker_set_length_limit(TrackerCore *self, PyObject *arg)
{
    xt_state *st = tracker_state(self);
    int previous;

    assert(!PyErr_Occurred());
    long limit = PyLong_AsLong(arg);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (limit > INT_MAX) {
        PyErr_Format(PyExc_OverflowError, "limit %ld is more than %d", limit, INT_MAX);
        return NULL;
    }
    if (st == NULL || check_usable(self, st) < 0 || flush_store(self, st) < 0) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    previous = xt_store_set_length_limit(self->store, limit < 0 ? -1 : (int)limit);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(previous);
}

PyDoc_STRVAR(ensure_columns__doc__,
    "_ensure_columns($self, data, /)\n--\n\n"
    "Create the columns for the keys of `data` now, typed by its values.  Returns the\n"
    "list of column names in order.");

static PyObject *
tracker_ensure_columns(TrackerCore *self, PyObject *data)
{
    xt_state *st = tracker_state(self);
    PyObject *names = NULL, *res = NULL;
    int *cols = NULL;
    Py_ssize_t pos = 0, n = 0;
    PyObject *key, *value;

    if (st == NULL || check_usable(self, st) < 0) {
        return NULL;
    }
    if (!PyDict_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "_ensure_columns() takes a dict");
        return NULL;
    }
    names = PyList_New(0);
    cols = PyMem_Malloc(sizeof(int) * (size_t)(PyDict_GET_SIZE(data) + 1));
    if (names == NULL || cols == NULL) {
        if (cols == NULL) {
            PyErr_NoMemory();
        }
        goto done;
    }
    while (PyDict_Next(data, &pos, &key, &value)) {
        xt_pair pair = {0};
        int decl = xt_classify(st, value, &pair, 0);
        if (decl < 0) {
            goto done;
        }
        Py_DECREF(pair.value);
        int col = xt_column_for_key(self, key, decl);
        if (col < 0 || PyList_Append(names, PyList_GET_ITEM(self->col_names, col)) < 0) {
            goto done;
        }
        cols[n++] = col;
    }
    if (!self->skip_insert) {
        xt_error err = {0};
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = xt_store_ensure_columns(self->store, cols, (int)n, &err);
        Py_END_ALLOW_THREADS
        if (rc < 0) {
            xt_raise_store_error(st, self->store, &err);
            goto done;
        }
    }
    res = Py_NewRef(names);
done:
    PyMem_Free(cols);
    Py_XDECREF(names);
    return res;
}

static int
bind_params(xt_state *st, sqlite3_stmt *stmt, PyObject *params)
{
    PyObject *seq = PySequence_Fast(params, "SQL parameters must be a sequence");
    if (seq == NULL) {
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int expected = sqlite3_bind_parameter_count(stmt);
    int rc = 0;
    if (n != expected) {
        PyErr_Format(PyExc_ValueError, "the statement takes %d parameter(s), %zd given", expected, n);
        rc = -1;
    }
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
        rc = xt_bind_python(st, stmt, (int)i + 1, PySequence_Fast_GET_ITEM(seq, i));
    }
    Py_DECREF(seq);
    return rc;
}

static PyObject *
column_value(sqlite3_stmt *stmt, int i)
{
    switch (sqlite3_column_type(stmt, i)) {
    case SQLITE_INTEGER:
        return PyLong_FromLongLong(sqlite3_column_int64(stmt, i));
    case SQLITE_FLOAT:
        return PyFloat_FromDouble(sqlite3_column_double(stmt, i));
    case SQLITE_TEXT:
        return PyUnicode_FromStringAndSize((const char *)sqlite3_column_text(stmt, i),
                                           sqlite3_column_bytes(stmt, i));
    case SQLITE_BLOB:
        return PyBytes_FromStringAndSize(sqlite3_column_blob(stmt, i), sqlite3_column_bytes(stmt, i));
    default:
        Py_RETURN_NONE;
    }
}

/* Run one statement on the tracker's connection with the store locked.  `write`: inside
 * BEGIN IMMEDIATE ... COMMIT, returning the number of changed rows; otherwise returns
 * (column names, list of row tuples). */
static PyObject *
run_statement(TrackerCore *self, PyObject *args, int write)
{
    xt_state *st = tracker_state(self);
    const char *sql;
    PyObject *params = NULL, *rows = NULL, *names = NULL, *res = NULL;
    sqlite3_stmt *stmt = NULL;
    sqlite3 *db;
    int rc, locked = 0, in_txn = 0;

    if (!PyArg_ParseTuple(args, "s|O", &sql, &params)) {
        return NULL;
    }
    if (st == NULL || check_usable(self, st) < 0 || flush_store(self, st) < 0) {
        return NULL;
    }
    lock_store(self);
    locked = 1;
    if (!xt_store_is_open(self->store)) {
        PyErr_SetString(PyExc_ValueError, "I/O operation on a closed Tracker: create a new Tracker");
        goto done;
    }
    db = xt_store_db(self->store);
    if (write) {
        Py_BEGIN_ALLOW_THREADS
        rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        Py_END_ALLOW_THREADS
        if (rc != SQLITE_OK) {
            xt_raise_sqlite(st, rc, sqlite3_errmsg(db), xt_store_path(self->store), "BEGIN IMMEDIATE");
            goto done;
        }
        in_txn = 1;
    }
    rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        xt_raise_sqlite(st, rc, sqlite3_errmsg(db), xt_store_path(self->store), sql);
        goto done;
    }
    if (stmt == NULL) {
        PyErr_SetString(PyExc_ValueError, "empty SQL statement");
        goto done;
    }
    if (params != NULL && params != Py_None && bind_params(st, stmt, params) < 0) {
        goto done;
    }
    int ncols = sqlite3_column_count(stmt);
    rows = PyList_New(0);
    names = PyTuple_New(ncols);
    if (rows == NULL || names == NULL) {
        goto done;
    }
    for (int i = 0; i < ncols; i++) {
        PyObject *name = PyUnicode_FromString(sqlite3_column_name(stmt, i));
        if (name == NULL) {
            goto done;
        }
        PyTuple_SET_ITEM(names, i, name);
    }
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        rc = sqlite3_step(stmt);
        Py_END_ALLOW_THREADS
        if (rc == SQLITE_DONE) {
            break;
        }
        if (rc != SQLITE_ROW) {
            xt_raise_sqlite(st, rc, sqlite3_errmsg(db), xt_store_path(self->store), sql);
            goto done;
        }
        PyObject *row = PyTuple_New(ncols);
        if (row == NULL) {
            goto done;
        }
        for (int i = 0; i < ncols; i++) {
            PyObject *value = column_value(stmt, i);
            if (value == NULL) {
                Py_DECREF(row);
                goto done;
            }
            PyTuple_SET_ITEM(row, i, value);
        }
        rc = PyList_Append(rows, row);
        Py_DECREF(row);
        if (rc < 0) {
            goto done;
        }
    }
    sqlite3_finalize(stmt);
    stmt = NULL;
    if (write) {
        int changes = sqlite3_changes(db);
        Py_BEGIN_ALLOW_THREADS
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        Py_END_ALLOW_THREADS
        if (rc != SQLITE_OK) {
            xt_raise_sqlite(st, rc, sqlite3_errmsg(db), xt_store_path(self->store), "COMMIT");
            goto done;
        }
        in_txn = 0;
        res = PyLong_FromLong(changes);
    }
    else {
        res = PyTuple_Pack(2, names, rows);
    }
done:
    sqlite3_finalize(stmt);
    if (in_txn) {
        sqlite3_exec(xt_store_db(self->store), "ROLLBACK", NULL, NULL, NULL);
    }
    if (locked) {
        xt_store_unlock(self->store);
    }
    Py_XDECREF(rows);
    Py_XDECREF(names);
    return res;
}

PyDoc_STRVAR(query__doc__,
    "_query($self, sql, params=(), /)\n--\n\n"
    "Run a read statement on the tracker's connection; returns (names, rows).");

static PyObject *
tracker_query(TrackerCore *self, PyObject *args)
{
    return run_statement(self, args, 0);
}

PyDoc_STRVAR(execute__doc__,
    "_execute($self, sql, params=(), /)\n--\n\n"
    "Run a write statement in its own transaction; returns the number of changed rows.");

static PyObject *
tracker_execute(TrackerCore *self, PyObject *args)
{
    return run_statement(self, args, 1);
}

PyDoc_STRVAR(read_columns__doc__,
    "_read_columns($self, sql, params=(), text_buffers=False)\n--\n\n"
    "Run a SELECT on the tracker's connection (after flushing queued rows) and return\n"
    "{column name: numpy array}, built by the columnar reader; text_buffers=True hands\n"
    "TEXT columns over as Arrow string buffers.");

static PyObject *
tracker_read_columns(TrackerCore *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"sql", "params", "text_buffers", NULL};
    xt_state *st = tracker_state(self);
    const char *sql;
    PyObject *params = NULL, *res = NULL;
    int text_buffers = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|Op:_read_columns", kwlist, &sql, &params,
                                     &text_buffers)) {
        return NULL;
    }
    if (st == NULL || check_usable(self, st) < 0 || flush_store(self, st) < 0) {
        return NULL;
    }
    lock_store(self);
    if (!xt_store_is_open(self->store)) {
        PyErr_SetString(PyExc_ValueError, "I/O operation on a closed Tracker: create a new Tracker");
    }
    else {
        res = xt_read_columns_ex(st, xt_store_db(self->store), xt_store_path(self->store), sql,
                                 params == Py_None ? NULL : params,
                                 text_buffers ? XT_READ_TEXT_BUFFERS : 0, NULL);
    }
    xt_store_unlock(self->store);
    return res;
}

/* ---------------------------------------------------------------------------------- */
/* Type                                                                               */
/* ---------------------------------------------------------------------------------- */

static const char *const durability_names[] = {"commit", "fsync", "async"};

static int
parse_durability(PyObject *value)
{
    if (PyUnicode_Check(value)) {
        for (int i = 0; i < 3; i++) {
            if (PyUnicode_CompareWithASCIIString(value, durability_names[i]) == 0) {
                return i;
            }
        }
    }
    PyErr_Format(PyExc_ValueError,
                 "durability=%R is not a mode: use 'commit' (default, survives a crash of the "
                 "process), 'fsync' (also power loss) or 'async' (queued, flushed by flush()/close())",
                 value);
    return -1;
}

static int
tracker_init(TrackerCore *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"db", "table", "track_id", "params", "durability", "reset",
                             "busy_timeout", "queue_size", "skip_insert", "cache", NULL};
    PyObject *db = NULL, *table = NULL, *track_id = Py_None, *params = Py_None, *cache = Py_None;
    PyObject *durability_obj = NULL, *path_bytes = NULL, *table_text = NULL;
    int reset = 0, skip_insert = 0, queue_size = 16384;
    double busy_timeout = 60.0;
    xt_state *st = tracker_state(self);

    if (st == NULL) {
        return -1;
    }
    if (self->store != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Tracker is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OU|OOOpdipO:TrackerCore", kwlist, &db, &table,
                                     &track_id, &params, &durability_obj, &reset, &busy_timeout,
                                     &queue_size, &skip_insert, &cache)) {
        return -1;
    }
    if (cache != Py_None && !xt_cache_check(st, cache)) {
        PyErr_Format(PyExc_TypeError, "cache must be a ResultCache or None, not %.100s",
                     Py_TYPE(cache)->tp_name);
        return -1;
    }
    int durability = durability_obj ? parse_durability(durability_obj) : XT_DURABLE_COMMIT;
    if (durability < 0) {
        return -1;
    }
    if (!PyUnicode_Check(db)) {
        PyErr_Format(PyExc_TypeError, "db must be a path string, not %.100s", Py_TYPE(db)->tp_name);
        return -1;
    }
    if (!PyUnicode_FSConverter(db, &path_bytes)) {
        return -1;
    }
    if (track_id == Py_None) {
        self->track_id = xt_new_track_id();
    }
    else if (PyUnicode_Check(track_id)) {
        self->track_id = Py_NewRef(track_id);
    }
    else {
        self->track_id = PyObject_Str(track_id);
    }
    if (self->track_id == NULL) {
        goto fail;
    }
    const char *tid = PyUnicode_AsUTF8AndSize(self->track_id, &self->track_id_len);
    if (tid == NULL) {
        goto fail;
    }
    if (params == Py_None) {
        self->params = PyDict_New();
    }
    else if (PyDict_Check(params)) {
        self->params = Py_NewRef(params);
    }
    else {
        PyErr_Format(PyExc_TypeError, "params must be a dict, not %.100s", Py_TYPE(params)->tp_name);
        goto fail;
    }
    self->latest = PyDict_New();
    self->key_ids = PyDict_New();
    self->col_names = Py_BuildValue("[OO]", st->str_track_id, st->str_timestamp);
    if (self->params == NULL || self->latest == NULL || self->key_ids == NULL || self->col_names == NULL) {
        goto fail;
    }
    for (int i = 0; i < 2; i++) {
        PyObject *id = PyLong_FromLong(i);
        int rc = id ? PyDict_SetItem(self->key_ids, PyList_GET_ITEM(self->col_names, i), id) : -1;
        Py_XDECREF(id);
        if (rc < 0) {
            goto fail;
        }
    }
    self->path = Py_NewRef(db);
    self->table = Py_NewRef(table);
    self->cache = cache == Py_None ? NULL : Py_NewRef(cache);
    self->skip_insert = skip_insert;
    self->raise_on_error = 1;
    self->warnings = 1;
    self->store = xt_store_new();
    if (self->store == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    const char *table_utf8 = PyUnicode_AsUTF8(table);
    if (table_utf8 == NULL) {
        goto fail;
    }
    const char *path = PyBytes_AS_STRING(path_bytes);
    int timeout_ms = busy_timeout <= 0 ? 0 : busy_timeout > 2e6 ? 2000000000 : (int)(busy_timeout * 1000);
    xt_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = xt_store_open(self->store, path, table_utf8, durability, reset, timeout_ms, queue_size, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        xt_raise_store_error(st, self->store, &err);
        goto fail;
    }
    Py_XDECREF(path_bytes);
    Py_XDECREF(table_text);
    return 0;
fail:
    Py_XDECREF(path_bytes);
    Py_XDECREF(table_text);
    if (self->store != NULL) {
        xt_store *store = self->store;
        self->store = NULL;
        Py_BEGIN_ALLOW_THREADS
        xt_store_free(store);
        Py_END_ALLOW_THREADS
    }
    return -1;
}

static int
tracker_traverse(TrackerCore *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->params);
    Py_VISIT(self->latest);
    Py_VISIT(self->cache);
    Py_VISIT(self->system);
    Py_VISIT(self->asset_hook);
    return 0;
}

static int
tracker_clear(TrackerCore *self)
{
    Py_CLEAR(self->params);
    Py_CLEAR(self->latest);
    Py_CLEAR(self->cache);
    Py_CLEAR(self->system);
    Py_CLEAR(self->asset_hook);
    return 0;
}

static void
tracker_dealloc(TrackerCore *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    if (self->store != NULL) {
        PyObject *exc_type, *exc_value, *exc_tb;
        PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
        if (close_store(self, tracker_state(self)) < 0) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        PyErr_Restore(exc_type, exc_value, exc_tb);
        xt_store *store = self->store;
        self->store = NULL;
        Py_BEGIN_ALLOW_THREADS
        xt_store_free(store); /* waits for a fork in progress: without the GIL */
        Py_END_ALLOW_THREADS
    }
    tracker_clear(self);
    Py_CLEAR(self->path);
    Py_CLEAR(self->table);
    Py_CLEAR(self->track_id);
    Py_CLEAR(self->key_ids);
    Py_CLEAR(self->col_names);
    for (int i = 0; i < XT_KEY_CACHE; i++) {
        Py_CLEAR(self->key_cache[i].key);
    }
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
get_track_id(TrackerCore *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->track_id ? self->track_id : Py_None);
}

static int
set_track_id(TrackerCore *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL || !PyUnicode_Check(value) || PyUnicode_GET_LENGTH(value) == 0) {
        PyErr_SetString(PyExc_TypeError, "track_id must be a non-empty str");
        return -1;
    }
    Py_XSETREF(self->track_id, Py_NewRef(value));
    return 0;
}

static PyObject *
get_params(TrackerCore *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->params ? self->params : Py_None);
}

static int
set_params_attr(TrackerCore *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL || !PyDict_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "params must be a dict");
        return -1;
    }
    Py_XSETREF(self->params, Py_NewRef(value));
    return 0;
}

static PyObject *
get_latest(TrackerCore *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->latest ? self->latest : Py_None);
}

static int
set_latest(TrackerCore *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL || !PyDict_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "latest must be a dict");
        return -1;
    }
    Py_XSETREF(self->latest, Py_NewRef(value));
    return 0;
}

static PyObject *
get_db(TrackerCore *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->path ? self->path : Py_None);
}

static PyObject *
get_table_name(TrackerCore *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->table ? self->table : Py_None);
}

static PyObject *
get_closed(TrackerCore *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->store == NULL || !xt_store_is_open(self->store));
}

static PyObject *
get_durability(TrackerCore *self, void *Py_UNUSED(closure))
{
    return PyUnicode_FromString(self->store ? durability_names[xt_store_durability(self->store)] : "commit");
}

static PyObject *
get_skip_insert(TrackerCore *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->skip_insert);
}

static PyObject *
get_cache(TrackerCore *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->cache ? self->cache : Py_None);
}

static PyObject *
get_system(TrackerCore *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->system ? self->system : Py_None);
}

static int
set_system(TrackerCore *self, PyObject *value, void *Py_UNUSED(closure))
{
    Py_XSETREF(self->system, value == NULL || value == Py_None ? NULL : Py_NewRef(value));
    return 0;
}

static PyGetSetDef tracker_getset[] = {
    {"_system", (getter)get_system, (setter)set_system,
     "Private: the system-metrics sampler whose extend(), begin() and end() add the metric "
     "columns (xetrack_c/system.py), or None.", NULL},
    {"cache", (getter)get_cache, NULL, "The ResultCache of track(), or None when the cache is off.", NULL},
    {"track_id", (getter)get_track_id, (setter)set_track_id, "Id of this run, stored in every row.", NULL},
    {"params", (getter)get_params, (setter)set_params_attr, "Values added to every row.", NULL},
    {"latest", (getter)get_latest, (setter)set_latest, "The last row logged, as a dict.", NULL},
    {"db", (getter)get_db, NULL, "The database path.", NULL},
    {"table_name", (getter)get_table_name, NULL, "The table rows go to.", NULL},
    {"closed", (getter)get_closed, NULL, "True once close() has run.", NULL},
    {"durability", (getter)get_durability, NULL, "'commit', 'fsync' or 'async'.", NULL},
    {"skip_insert", (getter)get_skip_insert, NULL, "True when rows are built but not stored.", NULL},
    {NULL},
};

static PyMethodDef tracker_methods[] = {
    {"log", (PyCFunction)(void (*)(void))tracker_log_method, METH_FASTCALL | METH_KEYWORDS, log__doc__},
    {"log_batch", (PyCFunction)tracker_log_batch, METH_O, log_batch__doc__},
    {"track", (PyCFunction)(void (*)(void))xt_tracker_track, METH_FASTCALL | METH_KEYWORDS,
     xt_track__doc__},
    {"flush", (PyCFunction)tracker_flush, METH_NOARGS, flush__doc__},
    {"_put_assets", (PyCFunction)tracker_put_assets, METH_O, put_assets__doc__},
    {"close", (PyCFunction)tracker_close, METH_NOARGS, close__doc__},
    {"_ensure_columns", (PyCFunction)tracker_ensure_columns, METH_O, ensure_columns__doc__},
    {"_set_length_limit", (PyCFunction)tracker_set_length_limit, METH_O, set_length_limit__doc__},
    {"_query", (PyCFunction)tracker_query, METH_VARARGS, query__doc__},
    {"_execute", (PyCFunction)tracker_execute, METH_VARARGS, execute__doc__},
    {"_read_columns", (PyCFunction)(void (*)(void))tracker_read_columns, METH_VARARGS | METH_KEYWORDS,
     read_columns__doc__},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef tracker_members[] = {
    {"raise_on_error", T_BOOL, offsetof(TrackerCore, raise_on_error), 0,
     "track() re-raises the function's exception after logging it."},
    {"warnings", T_BOOL, offsetof(TrackerCore, warnings), 0, "Emit warnings."},
    {"_asset_hook", T_OBJECT, offsetof(TrackerCore, asset_hook), 0,
     "Private: hook(column, value) -> (hash, assets key, blob, keys key, keys value) for a\n"
     "value stored as an asset; None stores such values as str(value)."},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(TrackerCore, weakreflist), READONLY, NULL},
    {NULL},
};

PyDoc_STRVAR(tracker_doc,
    "TrackerCore(db, table, track_id=None, params=None, durability='commit', reset=False,\n"
    "            busy_timeout=60.0, queue_size=16384, skip_insert=False, cache=None)\n--\n\n"
    "The native write path of xetrack_c.Tracker; use xetrack_c.Tracker.");

static PyType_Slot tracker_slots[] = {
    {Py_tp_doc, (void *)tracker_doc},
    {Py_tp_init, tracker_init},
    {Py_tp_new, tracker_new},
    {Py_tp_dealloc, tracker_dealloc},
    {Py_tp_traverse, tracker_traverse},
    {Py_tp_clear, tracker_clear},
    {Py_tp_methods, tracker_methods},
    {Py_tp_getset, tracker_getset},
    {Py_tp_members, tracker_members},
    {0, NULL},
};

static PyType_Spec tracker_spec = {
    .name = "xetrack_c._core.TrackerCore",
    .basicsize = sizeof(TrackerCore),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = tracker_slots,
};

PyDoc_STRVAR(streamed_batches__doc__,
    "_streamed_batches($module, /)\n--\n\n"
    "Private (tests): how many log_batch() calls of this process were written on a thread\n"
    "of their own while being encoded.");

static PyObject *
streamed_batches(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    return PyLong_FromLongLong(xt_batch_count());
}

static PyMethodDef tracker_functions[] = {
    {"_streamed_batches", streamed_batches, METH_NOARGS, streamed_batches__doc__},
    {NULL, NULL, 0, NULL},
};

int
xt_tracker_exec(PyObject *module, xt_state *st)
{
    st->TrackerCoreType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &tracker_spec, NULL);
    if (st->TrackerCoreType == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, st->TrackerCoreType) < 0) {
        return -1;
    }
    return PyModule_AddFunctions(module, tracker_functions);
}
