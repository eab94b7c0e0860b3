/* Tracker: the TrackerCore type.
 *
 * log() turns a dict into an encoded row (xt_row) while holding the GIL, builds the row
 * dict it returns, then releases the GIL and hands the row to the store: written and
 * committed at once (durability "commit"/"fsync") or queued for the writer thread
 * ("async").  Column names are sanitised once per distinct key and cached. */
#include "tracker.h"

#include <string.h>

#include "cache.h"
#include "names.h"
#include "reader.h"
#include <structmember.h>

/* Values encoded on the stack before spilling to the heap. */
#define XT_STACK_PAIRS 64

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
    xt_store *store;
    PyObject *path;      /* str, as given */
    PyObject *table;     /* str */
    PyObject *track_id;  /* str */
    PyObject *params;    /* dict */
    PyObject *latest;    /* dict */
    PyObject *key_ids;   /* dict: key or column name (and its lower case) -> column id */
    PyObject *col_names; /* list: column id -> column name */
    PyObject *cache;     /* ResultCache, or NULL when the result cache is off */
    PyObject *weakreflist;
    char *track_id_utf8;
    Py_ssize_t track_id_len;
    int skip_insert;
    char raise_on_error; /* track(): re-raise the function's exception after logging */
    char warnings;
    /* Timestamps: strictly increasing per tracker.  Touched only with the GIL held, with
     * no Python call in between. */
    int64_t last_ts;
    int64_t ts_cache_sec;
    char ts_cache_text[XT_TS_SIZE];
    xt_key_slot key_cache[XT_KEY_CACHE];
} TrackerCore;

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

typedef struct {
    xt_pair *pairs;
    int n, cap;
    xt_pair stack[XT_STACK_PAIRS];
    uint64_t seen[(XT_REGISTRY_SIZE + 63) / 64];
    size_t bytes; /* text and blob bytes to copy */
    /* Every key is its own column name and every value is shown as given: the row dict
     * is then params | data, built by copying instead of inserting key by key. */
    int copyable;
} xt_encoder;

static xt_state *
tracker_state(TrackerCore *self)
{
    return xt_state_from_type(Py_TYPE(self));
}

/* ---------------------------------------------------------------------------------- */
/* Value classification                                                               */
/* ---------------------------------------------------------------------------------- */

/* How a value is stored: fills pair->type/i/d/p/n and pair->value (new reference, the
 * value the returned row shows).  Returns the declared type for a new column.  Rules
 * (DESIGN.md section 2): None -> NULL; bool -> INTEGER 0/1; int -> INTEGER (beyond 64
 * bits: TEXT of its digits); float -> REAL; str -> TEXT; bytes -> BLOB in a TEXT column;
 * bytearray -> BLOB; numpy scalars -> their Python value; anything else -> str(value). */
static int
classify(xt_state *st, PyObject *value, xt_pair *pair, int depth)
{
    PyTypeObject *type = Py_TYPE(value);

    if (value == Py_None) {
        pair->type = XT_NULL;
        pair->value = Py_NewRef(value);
        return XT_TEXT;
    }
    if (PyBool_Check(value)) {
        pair->type = XT_INT;
        pair->i = value == Py_True;
        pair->value = Py_NewRef(value);
        return XT_INT;
    }
    if (PyLong_Check(value)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (overflow) {
            /* SQLite has no wider integer, and its column affinity would turn the digits
             * into a lossy REAL: refuse rather than store a different number. */
            PyErr_Format(PyExc_OverflowError,
                         "%R does not fit SQLite's 64-bit INTEGER; log str(value) to keep "
                         "its digits or float(value) to keep its magnitude",
                         value);
            return -1;
        }
        pair->type = XT_INT;
        pair->i = v;
        pair->value = PyLong_CheckExact(value) ? Py_NewRef(value) : PyLong_FromLongLong(v);
        return pair->value ? XT_INT : -1;
    }
    if (PyFloat_Check(value)) {
        pair->type = XT_REAL;
        pair->d = PyFloat_AS_DOUBLE(value);
        pair->value = PyFloat_CheckExact(value) ? Py_NewRef(value) : PyFloat_FromDouble(pair->d);
        return pair->value ? XT_REAL : -1;
    }
    if (PyUnicode_Check(value)) {
        pair->p = PyUnicode_AsUTF8AndSize(value, &pair->n);
        if (pair->p == NULL) {
            return -1;
        }
        pair->type = XT_TEXT;
        pair->value = Py_NewRef(value);
        return XT_TEXT;
    }
    if (PyBytes_Check(value)) {
        pair->type = XT_BLOB;
        pair->p = PyBytes_AS_STRING(value);
        pair->n = PyBytes_GET_SIZE(value);
        pair->value = Py_NewRef(value);
        return XT_TEXT;
    }
    if (PyByteArray_Check(value)) {
        /* Snapshot: the caller may mutate the bytearray after log() returns. */
        PyObject *copy = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(value),
                                                   PyByteArray_GET_SIZE(value));
        if (copy == NULL) {
            return -1;
        }
        pair->type = XT_BLOB;
        pair->p = PyBytes_AS_STRING(copy);
        pair->n = PyBytes_GET_SIZE(copy);
        pair->value = copy;
        return XT_BLOB;
    }
    if (depth == 0 && strncmp(type->tp_name, "numpy.", 6) == 0
        && strcmp(type->tp_name, "numpy.ndarray") != 0) {
        /* A numpy scalar: store its Python value (item()), without importing numpy. */
        PyObject *item = PyObject_CallMethodNoArgs(value, st->str_item);
        if (item == NULL) {
            PyErr_Clear();
        }
        else {
            int res = classify(st, item, pair, depth + 1);
            Py_DECREF(item);
            return res;
        }
    }
    PyObject *text = PyObject_Str(value);
    if (text == NULL) {
        return -1;
    }
    pair->p = PyUnicode_AsUTF8AndSize(text, &pair->n);
    if (pair->p == NULL) {
        Py_DECREF(text);
        return -1;
    }
    pair->type = XT_TEXT;
    pair->value = text;
    return XT_TEXT;
}

int
xt_bind_python(sqlite3_stmt *stmt, int index, PyObject *value)
{
    if (value == Py_None) {
        return sqlite3_bind_null(stmt, index) == SQLITE_OK ? 0 : -1;
    }
    if (PyLong_Check(value)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (!overflow) {
            sqlite3_bind_int64(stmt, index, v);
            return 0;
        }
    }
    else if (PyFloat_Check(value)) {
        sqlite3_bind_double(stmt, index, PyFloat_AS_DOUBLE(value));
        return 0;
    }
    else if (PyBytes_Check(value)) {
        sqlite3_bind_blob64(stmt, index, PyBytes_AS_STRING(value),
                            (sqlite3_uint64)PyBytes_GET_SIZE(value), SQLITE_TRANSIENT);
        return 0;
    }
    else if (PyByteArray_Check(value)) {
        sqlite3_bind_blob64(stmt, index, PyByteArray_AS_STRING(value),
                            (sqlite3_uint64)PyByteArray_GET_SIZE(value), SQLITE_TRANSIENT);
        return 0;
    }
    PyObject *text = PyUnicode_Check(value) ? Py_NewRef(value) : PyObject_Str(value);
    if (text == NULL) {
        return -1;
    }
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(text, &n);
    if (p != NULL) {
        sqlite3_bind_text64(stmt, index, p, (sqlite3_uint64)n, SQLITE_TRANSIENT, SQLITE_UTF8);
    }
    Py_DECREF(text);
    return p == NULL ? -1 : 0;
}

/* ---------------------------------------------------------------------------------- */
/* Columns                                                                            */
/* ---------------------------------------------------------------------------------- */

/* Register a new column `name` (sanitised) with `decl_type`; returns its id or -1. */
static int
new_column(TrackerCore *self, PyObject *name, int decl_type)
{
    xt_columns *cols = xt_store_columns(self->store);
    int id = atomic_load_explicit(&cols->count, memory_order_relaxed);
    PyObject *id_obj = NULL, *lower = NULL;
    xt_column *c = NULL;
    int res = -1;

    if (id >= XT_REGISTRY_SIZE) {
        PyErr_Format(PyExc_ValueError,
                     "cannot add column %R: this tracker has seen %d distinct keys; a table "
                     "holds at most %d columns, so log fewer distinct keys or split them "
                     "across tables (table=...)",
                     name, XT_REGISTRY_SIZE, XT_MAX_COLUMNS);
        goto done;
    }
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(name, &len);
    if (utf8 == NULL) {
        goto done;
    }
    lower = PyObject_CallMethod(name, "lower", NULL);
    id_obj = PyLong_FromLong(id);
    c = PyMem_RawCalloc(1, sizeof(*c));
    if (lower == NULL || id_obj == NULL || c == NULL) {
        if (c == NULL) {
            PyErr_NoMemory();
        }
        goto done;
    }
    c->name = PyMem_RawMalloc((size_t)len + 1);
    if (c->name == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(c->name, utf8, (size_t)len + 1);
    c->decl_type = decl_type;
    if (PyList_Append(self->col_names, name) < 0 || PyDict_SetItem(self->key_ids, name, id_obj) < 0
        || PyDict_SetItem(self->key_ids, lower, id_obj) < 0) {
        goto done;
    }
    cols->slots[id] = c;
    c = NULL;
    atomic_store_explicit(&cols->count, id + 1, memory_order_release);
    res = id;
done:
    if (c != NULL) {
        PyMem_RawFree(c->name);
        PyMem_RawFree(c);
    }
    Py_XDECREF(lower);
    Py_XDECREF(id_obj);
    return res;
}

/* Column id for `key`, creating the column entry (typed by decl_type) if it is new. */
static inline xt_key_slot *
key_slot(TrackerCore *self, PyObject *key)
{
    return &self->key_cache[((uintptr_t)key >> 4) % XT_KEY_CACHE];
}

static void
remember_key(TrackerCore *self, PyObject *key, int col)
{
    xt_key_slot *slot = key_slot(self, key);
    Py_XSETREF(slot->key, Py_NewRef(key));
    slot->col = col;
}

static int
column_for_key(TrackerCore *self, PyObject *key, int decl_type)
{
    PyObject *found, *name = NULL, *lower = NULL;
    int id = -1;

    xt_key_slot *slot = key_slot(self, key);
    if (slot->key == key) {
        return slot->col;
    }
    if (PyUnicode_CheckExact(key)) {
        found = PyDict_GetItemWithError(self->key_ids, key);
        if (found != NULL) {
            id = (int)PyLong_AsLong(found);
            remember_key(self, key, id);
            return id;
        }
        if (PyErr_Occurred()) {
            return -1;
        }
    }
    name = xt_sanitize_key(key);
    if (name == NULL) {
        goto done;
    }
    /* SQLite column names ignore case: "Acc" and "acc" share one column. */
    lower = PyObject_CallMethod(name, "lower", NULL);
    if (lower == NULL) {
        goto done;
    }
    found = PyDict_GetItemWithError(self->key_ids, lower);
    if (found != NULL) {
        id = (int)PyLong_AsLong(found);
    }
    else if (PyErr_Occurred()) {
        goto done;
    }
    else {
        id = new_column(self, name, decl_type);
    }
    if (id >= 0 && PyUnicode_CheckExact(key)) {
        PyObject *id_obj = PyLong_FromLong(id);
        if (id_obj == NULL || PyDict_SetItem(self->key_ids, key, id_obj) < 0) {
            id = -1;
        }
        Py_XDECREF(id_obj);
        if (id >= 0) {
            remember_key(self, key, id);
        }
    }
done:
    Py_XDECREF(name);
    Py_XDECREF(lower);
    return id;
}

/* ---------------------------------------------------------------------------------- */
/* Encoding rows                                                                      */
/* ---------------------------------------------------------------------------------- */

static void
encoder_init(xt_encoder *enc)
{
    enc->pairs = enc->stack;
    enc->n = 0;
    enc->cap = XT_STACK_PAIRS;
    memset(enc->seen, 0, sizeof(enc->seen));
    enc->bytes = 0;
    enc->copyable = 1;
}

static void
encoder_clear(xt_encoder *enc)
{
    for (int i = 0; i < enc->n; i++) {
        Py_CLEAR(enc->pairs[i].value);
    }
    if (enc->pairs != enc->stack) {
        PyMem_Free(enc->pairs);
    }
}

/* Add one key/value; a later value for the same column replaces the earlier one in
 * place, as dict.update would. */
static int
encoder_add(TrackerCore *self, xt_state *st, xt_encoder *enc, PyObject *key, PyObject *value)
{
    xt_pair pair = {0};
    int decl = classify(st, value, &pair, 0);
    if (decl < 0) {
        return -1;
    }
    int col = column_for_key(self, key, decl);
    if (col < 0) {
        Py_XDECREF(pair.value);
        return -1;
    }
    pair.col = col;
    if (enc->copyable
        && (pair.value != value || !PyUnicode_CheckExact(key)
            || PyList_GET_ITEM(self->col_names, col) != key)) {
        /* Fall back to key-by-key unless the key is the column's own name object. */
        enc->copyable = pair.value == value && PyUnicode_CheckExact(key)
                        && PyUnicode_Compare(PyList_GET_ITEM(self->col_names, col), key) == 0;
        if (PyErr_Occurred()) {
            Py_DECREF(pair.value);
            return -1;
        }
    }
    uint64_t bit = (uint64_t)1 << (col & 63);
    if (enc->seen[col >> 6] & bit) {
        for (int i = 0; i < enc->n; i++) {
            if (enc->pairs[i].col == col) {
                if (enc->pairs[i].type == XT_TEXT || enc->pairs[i].type == XT_BLOB) {
                    enc->bytes -= (size_t)enc->pairs[i].n;
                }
                Py_DECREF(enc->pairs[i].value);
                enc->pairs[i] = pair;
                break;
            }
        }
    }
    else {
        if (enc->n == enc->cap) {
            int cap = enc->cap * 2;
            xt_pair *grown = PyMem_Malloc(sizeof(xt_pair) * (size_t)cap);
            if (grown == NULL) {
                Py_DECREF(pair.value);
                PyErr_NoMemory();
                return -1;
            }
            memcpy(grown, enc->pairs, sizeof(xt_pair) * (size_t)enc->n);
            if (enc->pairs != enc->stack) {
                PyMem_Free(enc->pairs);
            }
            enc->pairs = grown;
            enc->cap = cap;
        }
        enc->seen[col >> 6] |= bit;
        enc->pairs[enc->n++] = pair;
    }
    if (pair.type == XT_TEXT || pair.type == XT_BLOB) {
        enc->bytes += (size_t)pair.n;
    }
    return 0;
}

static int
encoder_add_dict(TrackerCore *self, xt_state *st, xt_encoder *enc, PyObject *dict)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        Py_INCREF(key);
        Py_INCREF(value);
        int rc = encoder_add(self, st, enc, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (rc < 0) {
            return -1;
        }
    }
    return 0;
}

/* Next timestamp: strictly after every timestamp this tracker or its store handed out,
 * so the (track_id, timestamp) primary key never collides within a tracker. */
static int64_t
next_timestamp(TrackerCore *self, char out[XT_TS_SIZE])
{
    int64_t now = xt_now_us();
    int64_t floor = self->last_ts;
    int64_t written = xt_store_last_ts(self->store);
    if (written > floor) {
        floor = written;
    }
    if (now <= floor) {
        now = floor + 1;
    }
    self->last_ts = now;
    int64_t sec = now / 1000000;
    int frac = (int)(now % 1000000);
    if (sec != self->ts_cache_sec) {
        xt_format_timestamp(sec * 1000000, self->ts_cache_text);
        self->ts_cache_sec = sec;
    }
    /* The cached text is "YYYY-MM-DD HH:MM:SS.000000": rewrite the six digits. */
    size_t len = strlen(self->ts_cache_text);
    memcpy(out, self->ts_cache_text, len + 1);
    for (int i = 1; i <= 6; i++) {
        out[len - (size_t)i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    return now;
}

/* Encode params + data (+ timestamp, track_id).  On success *row_out is a malloc'd row
 * owned by the caller and *dict_out the row dict to return. */
static int
encode_row(TrackerCore *self, xt_state *st, PyObject *data, xt_row **row_out, PyObject **dict_out)
{
    xt_encoder enc;
    xt_row *row = NULL;
    PyObject *dict = NULL, *ts_obj = NULL;
    int res = -1;

    encoder_init(&enc);
    if (!PyDict_Check(data)) {
        PyErr_Format(PyExc_TypeError,
                     "log() takes a dict of column name -> value, not %.100s; wrap the value, "
                     "e.g. tracker.log({'value': x})",
                     Py_TYPE(data)->tp_name);
        goto done;
    }
    Py_ssize_t width = PyDict_GET_SIZE(self->params) + PyDict_GET_SIZE(data) + 2;
    if (width > XT_MAX_COLUMNS) {
        PyErr_Format(PyExc_ValueError,
                     "a row of %zd keys (with params, timestamp and track_id) is wider than "
                     "the %d columns a SQLite table holds; split it across rows or tables",
                     width, XT_MAX_COLUMNS);
        goto done;
    }
    if (encoder_add_dict(self, st, &enc, self->params) < 0
        || encoder_add_dict(self, st, &enc, data) < 0) {
        goto done;
    }
    char ts_text[XT_TS_SIZE];
    int64_t ts = next_timestamp(self, ts_text);
    ts_obj = PyUnicode_FromString(ts_text);
    if (ts_obj == NULL || encoder_add(self, st, &enc, st->str_timestamp, ts_obj) < 0
        || encoder_add(self, st, &enc, st->str_track_id, self->track_id) < 0) {
        goto done;
    }

    size_t size = sizeof(xt_row) + sizeof(xt_value) * (size_t)enc.n + enc.bytes;
    row = malloc(size);
    if (enc.copyable) {
        dict = PyDict_Copy(self->params);
        if (dict != NULL && PyDict_Update(dict, data) < 0) {
            Py_CLEAR(dict);
        }
        if (dict != NULL
            && (PyDict_SetItem(dict, st->str_timestamp, ts_obj) < 0
                || PyDict_SetItem(dict, st->str_track_id, self->track_id) < 0)) {
            Py_CLEAR(dict);
        }
    }
    else {
        dict = PyDict_New();
    }
    if (row == NULL || dict == NULL) {
        if (row == NULL) {
            PyErr_NoMemory();
        }
        goto done;
    }
    row->next = NULL;
    row->ts_us = ts;
    row->n = enc.n;
    memcpy(row->ts_text, ts_text, sizeof(ts_text));
    char *arena = (char *)&row->vals[enc.n];
    for (int i = 0; i < enc.n; i++) {
        xt_pair *p = &enc.pairs[i];
        xt_value *v = &row->vals[i];
        v->col = p->col;
        v->type = p->type;
        if (p->col == XT_COL_TIMESTAMP) {
            v->v.s.p = row->ts_text;
            v->v.s.n = (int64_t)strlen(row->ts_text);
        }
        else if (p->type == XT_INT) {
            v->v.i = p->i;
        }
        else if (p->type == XT_REAL) {
            v->v.d = p->d;
        }
        else if (p->type == XT_TEXT || p->type == XT_BLOB) {
            memcpy(arena, p->p, (size_t)p->n);
            v->v.s.p = arena;
            v->v.s.n = p->n;
            arena += p->n;
        }
        if (!enc.copyable
            && PyDict_SetItem(dict, PyList_GET_ITEM(self->col_names, p->col), p->value) < 0) {
            goto done;
        }
    }
    *row_out = row;
    *dict_out = dict;
    row = NULL;
    dict = NULL;
    res = 0;
done:
    encoder_clear(&enc);
    free(row);
    Py_XDECREF(dict);
    Py_XDECREF(ts_obj);
    return res;
}

/* ---------------------------------------------------------------------------------- */
/* Talking to the store                                                               */
/* ---------------------------------------------------------------------------------- */

static int
check_usable(TrackerCore *self, xt_state *st)
{
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
    "log($self, data, /)\n--\n\n"
    "Log one row: the tracker's params, then `data`, then timestamp and track_id.\n\n"
    "Keys are sanitised to column names ([A-Za-z0-9_], at most 64 characters); new keys\n"
    "become columns typed by their first value.  Returns the row as a dict.");

static PyObject *
tracker_log(TrackerCore *self, PyObject *data)
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
    if (encode_row(self, st, data, &row, &dict) < 0) {
        return NULL;
    }
    int64_t ts = row->ts_us;
    int queued = rows_queued(self);
    int rc = write_rows(self, st, &row, 1);
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

PyDoc_STRVAR(log_batch__doc__,
    "log_batch($self, data, /)\n--\n\n"
    "Log a list of dicts in one transaction.  Returns the last row (an empty dict, with\n"
    "a warning left to the caller, for an empty list).");

static PyObject *
tracker_log_batch(TrackerCore *self, PyObject *data)
{
    xt_state *st = tracker_state(self);
    PyObject *seq = NULL, *last = NULL, *res = NULL;
    xt_row **rows = NULL;
    Py_ssize_t n = 0, done_rows = 0;

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
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *dict = NULL;
        if (encode_row(self, st, PySequence_Fast_GET_ITEM(seq, i), &rows[i], &dict) < 0) {
            goto done;
        }
        Py_XSETREF(last, dict);
        done_rows = i + 1;
    }
    int queued = rows_queued(self);
    int64_t last_ts = rows[n - 1]->ts_us;
    int rc = write_rows(self, st, rows, (size_t)n);
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
    for (Py_ssize_t i = 0; i < done_rows; i++) {
        free(rows[i]);
    }
    PyMem_Free(rows);
    Py_XDECREF(seq);
    Py_XDECREF(last);
    return res;
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
        goto done;
    }
    while (PyDict_Next(data, &pos, &key, &value)) {
        xt_pair pair = {0};
        int decl = classify(st, value, &pair, 0);
        if (decl < 0) {
            goto done;
        }
        Py_DECREF(pair.value);
        int col = column_for_key(self, key, decl);
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
bind_params(sqlite3_stmt *stmt, PyObject *params)
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
        rc = xt_bind_python(stmt, (int)i + 1, PySequence_Fast_GET_ITEM(seq, i));
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
    if (params != NULL && params != Py_None && bind_params(stmt, params) < 0) {
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


/* ---------------------------------------------------------------------------------- */
/* track()                                                                            */
/* ---------------------------------------------------------------------------------- */

/* Values that are never dataclasses or pydantic models: no unpacking hook needed. */
static int
is_plain(PyObject *value)
{
    return value == Py_None || PyLong_CheckExact(value) || PyFloat_CheckExact(value)
           || PyUnicode_CheckExact(value) || PyBool_Check(value) || PyBytes_CheckExact(value)
           || PyList_CheckExact(value) || PyTuple_CheckExact(value) || PyDict_CheckExact(value);
}

static int
all_plain(PyObject *args, PyObject *kwargs)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(args); i++) {
        if (!is_plain(PyList_GET_ITEM(args, i))) {
            return 0;
        }
    }
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(kwargs, &pos, &key, &value)) {
        if (!is_plain(value)) {
            return 0;
        }
    }
    return 1;
}

static PyObject *
function_name(PyObject *func)
{
    PyObject *name = PyObject_GetAttrString(func, "__name__");
    if (name != NULL && PyUnicode_Check(name) && PyUnicode_GET_LENGTH(name) > 0) {
        return name;
    }
    Py_XDECREF(name);
    PyErr_Clear();
    return PyUnicode_FromString(Py_TYPE(func)->tp_name);
}

static int
set_item_steal(PyObject *dict, const char *key, PyObject *value)
{
    if (value == NULL) {
        return -1;
    }
    int rc = PyDict_SetItemString(dict, key, value);
    Py_DECREF(value);
    return rc;
}

/* The row of one call: function_name, args, kwargs, error, function_time, the fields of
 * dataclass/pydantic arguments, the result, the per-call params, then (when the result
 * cache is on and the call has a key) `cache`: the run that computed the result, or "". */
static PyObject *
track_row(TrackerCore *self, PyObject *func, PyObject *args, PyObject *kwargs, PyObject *error,
          double elapsed, PyObject *result, PyObject *params, PyObject *lineage)
{
    PyObject *row = PyDict_New();
    if (row == NULL || set_item_steal(row, "function_name", function_name(func)) < 0
        || set_item_steal(row, "args", PyObject_Str(args)) < 0
        || set_item_steal(row, "kwargs", PyObject_Str(kwargs)) < 0
        || PyDict_SetItemString(row, "error", error) < 0
        || set_item_steal(row, "function_time", PyFloat_FromDouble(elapsed)) < 0) {
        goto fail;
    }
    if ((PyList_GET_SIZE(args) || PyDict_GET_SIZE(kwargs)) && !all_plain(args, kwargs)) {
        PyObject *fields = PyObject_CallMethod((PyObject *)self, "_unpack", "OOO", func, args, kwargs);
        if (fields == NULL) {
            goto fail;
        }
        int rc = PyDict_Check(fields) ? PyDict_Update(row, fields) : 0;
        Py_DECREF(fields);
        if (rc < 0) {
            goto fail;
        }
    }
    if (PyDict_Check(result)) {
        PyObject *merged = self->warnings
                               ? PyObject_CallMethod((PyObject *)self, "_merge_result", "OO", row, result)
                               : (PyDict_Update(row, result) < 0 ? NULL : Py_NewRef(Py_None));
        if (merged == NULL) {
            goto fail;
        }
        Py_DECREF(merged);
    }
    else if (result == Py_None || !(PyLong_Check(result) || PyFloat_Check(result)
                                     || PyUnicode_Check(result) || PyBytes_Check(result)
                                     || PyByteArray_Check(result))) {
        if (set_item_steal(row, "function_result", PyObject_Str(result)) < 0) {
            goto fail;
        }
    }
    else if (PyDict_SetItemString(row, "function_result", result) < 0) {
        goto fail;
    }
    if (params != Py_None && PyDict_Check(params) && PyDict_Update(row, params) < 0) {
        goto fail;
    }
    if (lineage != NULL && PyDict_SetItemString(row, "cache", lineage) < 0) {
        goto fail;
    }
    return row;
fail:
    Py_XDECREF(row);
    return NULL;
}

/* Call func, log the row, and return the result (None if it raised and raise_on_error
 * is off).  *succeeded: the function returned normally. */
static PyObject *
call_and_log(TrackerCore *self, PyObject *func, PyObject *args, PyObject *kwargs, PyObject *params,
             PyObject *lineage, int *succeeded)
{
    PyObject *call_args = NULL, *result = NULL, *row = NULL, *logged = NULL, *error = NULL, *res = NULL;
    PyObject *exc_type = NULL, *exc_value = NULL, *exc_tb = NULL;

    *succeeded = 0;
    call_args = PyList_AsTuple(args);
    if (call_args == NULL) {
        goto done;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    result = PyObject_Call(func, call_args, PyDict_GET_SIZE(kwargs) ? kwargs : NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double elapsed = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    if (result == NULL) {
        /* As xetrack: Exceptions are logged; KeyboardInterrupt and SystemExit pass. */
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            goto done;
        }
        PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
        PyErr_NormalizeException(&exc_type, &exc_value, &exc_tb);
        error = PyObject_Str(exc_value);
        if (error == NULL) {
            goto done;
        }
        result = Py_NewRef(Py_None);
    }
    else {
        error = PyUnicode_FromStringAndSize(NULL, 0);
        if (error == NULL) {
            goto done;
        }
    }
    row = track_row(self, func, args, kwargs, error, elapsed, result, params, lineage);
    if (row == NULL) {
        goto done;
    }
    logged = tracker_log(self, row);
    if (logged == NULL) {
        goto done;
    }
    if (exc_type != NULL && self->raise_on_error) {
        PyErr_Restore(exc_type, exc_value, exc_tb);
        exc_type = exc_value = exc_tb = NULL;
        goto done;
    }
    *succeeded = exc_type == NULL;
    res = Py_NewRef(result);
done:
    Py_XDECREF(exc_type);
    Py_XDECREF(exc_value);
    Py_XDECREF(exc_tb);
    Py_XDECREF(call_args);
    Py_XDECREF(result);
    Py_XDECREF(row);
    Py_XDECREF(logged);
    Py_XDECREF(error);
    return res;
}

/* track() with the result cache on: a hit logs a row with function_time 0.0 and `cache`
 * set to the run that computed the result; a miss computes (once per key in this
 * process, however many threads ask), logs `cache` = "" and stores the result unless
 * the function raised. */
static PyObject *
track_cached(TrackerCore *self, PyObject *func, PyObject *args, PyObject *kwargs, PyObject *params,
             int force)
{
    PyObject *result = NULL, *lineage = NULL, *row = NULL, *logged = NULL, *empty = NULL, *res = NULL;
    xt_flight *flight = NULL;
    xt_cache_key key;
    int stale = 0, succeeded = 0;

    int keyed = xt_cache_make_key(self->cache, func, args, kwargs, params, self->params,
                                  self->warnings, &key);
    if (keyed <= 0) {
        return keyed < 0 ? NULL : call_and_log(self, func, args, kwargs, params, NULL, &succeeded);
    }
    while (!force) {
        int hit = xt_cache_get(self->cache, &key, self->warnings, &result, &lineage, &stale);
        if (hit < 0) {
            goto done;
        }
        if (hit) {
            empty = PyUnicode_FromStringAndSize(NULL, 0);
            row = empty ? track_row(self, func, args, kwargs, empty, 0.0, result, params, lineage) : NULL;
            logged = row ? tracker_log(self, row) : NULL;
            if (logged != NULL) {
                res = Py_NewRef(result);
            }
            goto done;
        }
        /* The owner looks once more after registering: a call that finished between
         * our miss and the registration has stored its result by then. */
        if (flight != NULL || stale) {
            break;
        }
        int role = xt_cache_flight_begin(self->cache, &key, &flight);
        if (role == XT_FLIGHT_BYPASS) {
            break;
        }
    }
    empty = PyUnicode_FromStringAndSize(NULL, 0);
    if (empty == NULL) {
        goto done;
    }
    result = call_and_log(self, func, args, kwargs, params, empty, &succeeded);
    if (result != NULL && succeeded
        && xt_cache_put(self->cache, &key, func, result, self->track_id, force || stale, self->warnings) < 0) {
        goto done;
    }
    res = result;
    result = NULL;
done:
    if (flight != NULL) {
        xt_cache_flight_end(self->cache, flight);
    }
    Py_XDECREF(result);
    Py_XDECREF(lineage);
    Py_XDECREF(row);
    Py_XDECREF(logged);
    Py_XDECREF(empty);
    return res;
}

PyDoc_STRVAR(track__doc__,
    "track($self, func, params=None, args=None, kwargs=None, cache_force=False)\n--\n\n"
    "Call func(*args, **kwargs), log a row describing the call and return its result.\n\n"
    "The row holds function_name, args, kwargs, error, function_time, the fields of\n"
    "dataclass/pydantic arguments as <param>_<field>, the result (a dict merges into the\n"
    "row, anything else is function_result) and then params.  An exception is logged and\n"
    "re-raised unless raise_on_error is False.  With the result cache on, a call seen\n"
    "before returns the stored result without running func and logs `cache` = the\n"
    "track_id that computed it; cache_force=True recomputes and overwrites.");

static PyObject *
tracker_track(TrackerCore *self, PyObject *const *fargs, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"func", "params", "args", "kwargs", "cache_force"};
    PyObject *given[5] = {NULL, Py_None, Py_None, Py_None, Py_False};
    PyObject *args = NULL, *kwargs = NULL, *res = NULL;
    int succeeded;

    assert(!PyErr_Occurred());
    if (nargs > 5) {
        PyErr_Format(PyExc_TypeError, "track() takes at most 5 arguments (%zd given)", nargs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        given[i] = fargs[i];
    }
    if (kwnames != NULL) {
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(kwnames); k++) {
            PyObject *kw = PyTuple_GET_ITEM(kwnames, k);
            int slot = -1;
            for (int j = 0; j < 5; j++) {
                if (PyUnicode_CompareWithASCIIString(kw, names[j]) == 0) {
                    slot = j;
                }
            }
            if (slot < 0 || slot < nargs) {
                PyErr_Format(PyExc_TypeError, slot < 0 ? "track() got an unexpected keyword argument %R"
                                                       : "track() got multiple values for argument %R",
                             kw);
                return NULL;
            }
            given[slot] = fargs[nargs + k];
        }
    }
    PyObject *func = given[0], *params = given[1];
    if (func == NULL) {
        PyErr_SetString(PyExc_TypeError, "track() missing required argument 'func'");
        return NULL;
    }
    if (!PyCallable_Check(func)) {
        PyErr_Format(PyExc_TypeError, "track() needs a callable, not %.100s", Py_TYPE(func)->tp_name);
        return NULL;
    }
    args = given[2] == Py_None ? PyList_New(0) : PySequence_List(given[2]);
    if (args == NULL) {
        goto done;
    }
    if (given[3] == Py_None) {
        kwargs = PyDict_New();
    }
    else if (PyDict_Check(given[3])) {
        kwargs = Py_NewRef(given[3]);
    }
    else {
        PyErr_SetString(PyExc_TypeError, "track(kwargs=...) must be a dict");
        goto done;
    }
    if (kwargs == NULL) {
        goto done;
    }
    if (self->cache != NULL) {
        int force = PyObject_IsTrue(given[4]);
        if (force < 0) {
            goto done;
        }
        if (params != Py_None && !PyDict_Check(params)) {
            PyErr_Format(PyExc_TypeError, "track(params=...) must be a dict, not %.100s",
                         Py_TYPE(params)->tp_name);
            goto done;
        }
        res = track_cached(self, func, args, kwargs, params, force);
    }
    else {
        res = call_and_log(self, func, args, kwargs, params, NULL, &succeeded);
    }
done:
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    return res;
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
        xt_store_free(self->store);
        self->store = NULL;
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
    return 0;
}

static int
tracker_clear(TrackerCore *self)
{
    Py_CLEAR(self->params);
    Py_CLEAR(self->latest);
    Py_CLEAR(self->cache);
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
        xt_store_free(self->store);
        self->store = NULL;
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

static PyGetSetDef tracker_getset[] = {
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
    {"log", (PyCFunction)tracker_log, METH_O, log__doc__},
    {"log_batch", (PyCFunction)tracker_log_batch, METH_O, log_batch__doc__},
    {"track", (PyCFunction)(void (*)(void))tracker_track, METH_FASTCALL | METH_KEYWORDS, track__doc__},
    {"flush", (PyCFunction)tracker_flush, METH_NOARGS, flush__doc__},
    {"close", (PyCFunction)tracker_close, METH_NOARGS, close__doc__},
    {"_ensure_columns", (PyCFunction)tracker_ensure_columns, METH_O, ensure_columns__doc__},
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
    {Py_tp_new, PyType_GenericNew},
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

int
xt_tracker_exec(PyObject *module, xt_state *st)
{
    st->TrackerCoreType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &tracker_spec, NULL);
    if (st->TrackerCoreType == NULL) {
        return -1;
    }
    return PyModule_AddType(module, st->TrackerCoreType);
}
