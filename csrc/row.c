/* Row encoding (row.h): classifying Python values into SQLite storage classes, the
 * key -> column id mapping (with the tracker's key cache), the per-tracker timestamps,
 * and building the encoded xt_row of log() in one allocation while holding the GIL;
 * plus xt_bind_python for statements run on the tracker's connection. */
#include "row.h"

#include <string.h>

#include "names.h"

/* Values encoded on the stack before spilling to the heap. */
#define XT_STACK_PAIRS 64

typedef struct {
    xt_pair *pairs;
    int n, cap;
    xt_pair stack[XT_STACK_PAIRS];
    uint64_t seen[(XT_REGISTRY_SIZE + 63) / 64];
    size_t bytes; /* text and blob bytes to copy */
    /* Values stored as assets: the column and the hook's 5-tuple (new reference). */
    struct {
        int col;
        PyObject *parts;
    } *assets;
    int n_assets, cap_assets;
    size_t asset_bytes;
    /* Every key is its own column name and every value is shown as given: the row dict
     * is then params | data, built by copying instead of inserting key by key. */
    int copyable;
} xt_encoder;

/* ---------------------------------------------------------------------------------- */
/* Value classification                                                               */
/* ---------------------------------------------------------------------------------- */

/* How a value is stored: fills pair->type/i/d/p/n and pair->value (new reference, the
 * value the returned row shows).  Returns the declared type for a new column.  Rules
 * (DESIGN.md section 2): None -> NULL; bool -> INTEGER 0/1 (a new column is BOOLEAN);
 * int -> INTEGER (beyond 64 bits: OverflowError); float -> REAL; str -> TEXT; bytes and
 * memoryview -> BLOB in a TEXT column (as xetrack declares them); bytearray -> BLOB; numpy
 * scalars -> their Python value; anything else -> str(value) (encoder_add stores objects
 * as assets first when the tracker has an asset hook). */
int
xt_classify(xt_state *st, PyObject *value, xt_pair *pair, int depth)
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
        return XT_DECL_BOOLEAN;
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
    if (PyByteArray_Check(value) || PyMemoryView_Check(value)) {
        /* Snapshot: the caller may change the buffer after log() returns.  A memoryview
         * of any format, shape or strides is stored as its tobytes() (C order); a released
         * one raises ValueError. */
        int is_bytearray = PyByteArray_Check(value);
        PyObject *copy = is_bytearray ? PyBytes_FromStringAndSize(PyByteArray_AS_STRING(value),
                                                                  PyByteArray_GET_SIZE(value))
                                      : PyBytes_FromObject(value);
        if (copy == NULL) {
            return -1;
        }
        pair->type = XT_BLOB;
        pair->p = PyBytes_AS_STRING(copy);
        pair->n = PyBytes_GET_SIZE(copy);
        pair->value = copy;
        return is_bytearray ? XT_BLOB : XT_TEXT;
    }
    if (depth == 0 && strncmp(type->tp_name, "numpy.", 6) == 0
        && strcmp(type->tp_name, "numpy.ndarray") != 0) {
        /* A numpy scalar: store its Python value (item()), without importing numpy. */
        PyObject *item = PyObject_CallMethodNoArgs(value, st->str_item);
        if (item == NULL) {
            PyErr_Clear();
        }
        else {
            int res = xt_classify(st, item, pair, depth + 1);
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

/* ---------------------------------------------------------------------------------- */
/* Assets                                                                             */
/* ---------------------------------------------------------------------------------- */

/* Values xetrack 0.7 stores as assets: everything but None, its primitives (bool, int,
 * float, str, bytes, bytearray) and the containers it logs as text (dict, list, tuple).
 * Values this package stores as plain values are kept as they are: memoryviews (a blob),
 * numpy scalars (their Python value) and dates and times (their text). */
static int
is_asset(PyObject *value)
{
    if (value == Py_None || PyBool_Check(value) || PyLong_Check(value) || PyFloat_Check(value)
        || PyUnicode_Check(value) || PyBytes_Check(value) || PyByteArray_Check(value)
        || PyMemoryView_Check(value) || PyDict_Check(value) || PyList_Check(value)
        || PyTuple_Check(value)) {
        return 0;
    }
    const char *name = Py_TYPE(value)->tp_name;
    if (strncmp(name, "numpy.", 6) == 0 && strcmp(name, "numpy.ndarray") != 0) {
        return 0;
    }
    for (PyTypeObject *t = Py_TYPE(value); t != NULL; t = t->tp_base) {
        if (strncmp(t->tp_name, "datetime.", 9) == 0) {
            return 0;
        }
    }
    return 1;
}

/* Item `i` of the hook's answer: str or bytes as `want_text` says; its bytes in *out. */
static int
asset_part(PyObject *parts, Py_ssize_t i, int want_text, xt_bytes *out)
{
    PyObject *item = PyTuple_GET_ITEM(parts, i);
    Py_ssize_t n;
    if (want_text && PyUnicode_Check(item)) {
        out->p = PyUnicode_AsUTF8AndSize(item, &n);
        if (out->p == NULL) {
            return -1;
        }
    }
    else if (!want_text && PyBytes_Check(item)) {
        out->p = PyBytes_AS_STRING(item);
        n = PyBytes_GET_SIZE(item);
    }
    else {
        PyErr_Format(PyExc_TypeError, "the asset hook's item %zd must be %s, not %.100s", i,
                     want_text ? "str" : "bytes", Py_TYPE(item)->tp_name);
        return -1;
    }
    out->n = n;
    return 0;
}

/* The 5 parts of an asset, in xt_asset's order: hash, key, blob, name_key, name_value. */
static const int asset_part_text[5] = {1, 1, 0, 1, 0};

static int
asset_parts(PyObject *parts, xt_bytes out[5])
{
    for (Py_ssize_t i = 0; i < 5; i++) {
        if (asset_part(parts, i, asset_part_text[i], &out[i]) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Store `value` of column `col` as an asset: the hook pickles and hashes it; the pair
 * holds the hash text, the encoder the hook's answer.  0 or -1 with an exception set. */
static int
encode_asset(TrackerCore *self, xt_encoder *enc, int col, PyObject *value, xt_pair *pair)
{
    PyObject *parts = PyObject_CallFunctionObjArgs(
        self->asset_hook, PyList_GET_ITEM(self->col_names, col), value, NULL);
    if (parts == NULL) {
        return -1;
    }
    xt_bytes b[5];
    if (!PyTuple_CheckExact(parts) || PyTuple_GET_SIZE(parts) != 5) {
        PyErr_Format(PyExc_TypeError, "the asset hook must return a 5-tuple, not %.100s",
                     Py_TYPE(parts)->tp_name);
        goto fail;
    }
    if (asset_parts(parts, b) < 0) {
        goto fail;
    }
    if (enc->n_assets == enc->cap_assets) {
        int cap = enc->cap_assets ? enc->cap_assets * 2 : 4;
        void *grown = PyMem_Realloc(enc->assets, sizeof(*enc->assets) * (size_t)cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        enc->assets = grown;
        enc->cap_assets = cap;
    }
    pair->type = XT_TEXT;
    pair->p = b[0].p;
    pair->n = (Py_ssize_t)b[0].n;
    pair->value = Py_NewRef(PyTuple_GET_ITEM(parts, 0));
    for (int i = 1; i < 5; i++) {
        enc->asset_bytes += (size_t)b[i].n;
    }
    enc->asset_bytes += (size_t)b[0].n;
    enc->assets[enc->n_assets].col = col;
    enc->assets[enc->n_assets].parts = parts;
    enc->n_assets++;
    return 0;
fail:
    Py_DECREF(parts);
    return -1;
}

/* A later value for `col` replaces an asset logged for it earlier in the same row. */
static void
drop_asset(xt_encoder *enc, int col)
{
    for (int i = 0; i < enc->n_assets; i++) {
        if (enc->assets[i].col == col) {
            xt_bytes b[5];
            if (asset_parts(enc->assets[i].parts, b) == 0) {
                for (int k = 0; k < 5; k++) {
                    enc->asset_bytes -= (size_t)b[k].n;
                }
            }
            PyErr_Clear(); /* read before without error: cannot fail */
            Py_DECREF(enc->assets[i].parts);
            enc->assets[i] = enc->assets[--enc->n_assets];
            return;
        }
    }
}

int
xt_encode_assets(PyObject *parts, xt_row **row_out)
{
    if (!PyList_CheckExact(parts)) {
        PyErr_SetString(PyExc_TypeError, "assets must be a list of the asset hook's 5-tuples");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(parts);
    size_t size = sizeof(xt_row) + sizeof(xt_asset) * (size_t)(n ? n : 1);
    xt_row *row = calloc(1, size);
    if (row == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    row->size = size;
    row->n_assets = (int)n;
    row->assets = (xt_asset *)&row->vals[0];
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(parts, i);
        xt_bytes b[5];
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 5) {
            PyErr_Format(PyExc_TypeError, "asset %zd must be a 5-tuple, not %.100s", i,
                         Py_TYPE(item)->tp_name);
            free(row);
            return -1;
        }
        if (asset_parts(item, b) < 0) {
            free(row);
            return -1;
        }
        row->assets[i] = (xt_asset){b[0], b[1], b[2], b[3], b[4]};
    }
    *row_out = row;
    return 0;
}

/* The exception for a failed bind of `n` bytes to parameter `index`; returns -1.  SQLite
 * would leave the parameter NULL: a value longer than SQLITE_LIMIT_LENGTH is refused. */
static int
bind_failed(xt_state *st, sqlite3_stmt *stmt, int rc, int index, Py_ssize_t n)
{
    sqlite3 *db = sqlite3_db_handle(stmt);
    if (rc == SQLITE_TOOBIG) {
        PyErr_Format(PyExc_ValueError,
                     "SQL parameter %d is %zd bytes, more than the %d bytes SQLite stores in "
                     "one value (SQLITE_LIMIT_LENGTH); the statement was not run",
                     index, n, sqlite3_limit(db, SQLITE_LIMIT_LENGTH, -1));
        return -1;
    }
    const char *filename = sqlite3_db_filename(db, "main");
    xt_raise_sqlite(st, rc, sqlite3_errmsg(db), filename && filename[0] ? filename : ":memory:",
                    sqlite3_sql(stmt));
    return -1;
}

int
xt_bind_python(xt_state *st, sqlite3_stmt *stmt, int index, PyObject *value)
{
    PyObject *owned = NULL;
    const char *p = NULL;
    Py_ssize_t n = 0;
    int rc;

    if (value == Py_None) {
        rc = sqlite3_bind_null(stmt, index);
        goto done;
    }
    if (PyLong_Check(value)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (!overflow) {
            rc = sqlite3_bind_int64(stmt, index, v);
            goto done;
        }
    }
    else if (PyFloat_Check(value)) {
        rc = sqlite3_bind_double(stmt, index, PyFloat_AS_DOUBLE(value));
        goto done;
    }
    else if (PyBytes_Check(value) || PyByteArray_Check(value) || PyMemoryView_Check(value)) {
        /* As log() stores them: a memoryview as its tobytes(). */
        owned = PyBytes_Check(value) ? Py_NewRef(value) : PyBytes_FromObject(value);
        if (owned == NULL) {
            return -1;
        }
        n = PyBytes_GET_SIZE(owned);
        rc = sqlite3_bind_blob64(stmt, index, PyBytes_AS_STRING(owned), (sqlite3_uint64)n,
                                 SQLITE_TRANSIENT);
        goto done;
    }
    owned = PyUnicode_Check(value) ? Py_NewRef(value) : PyObject_Str(value);
    if (owned == NULL || (p = PyUnicode_AsUTF8AndSize(owned, &n)) == NULL) {
        Py_XDECREF(owned);
        return -1;
    }
    rc = sqlite3_bind_text64(stmt, index, p, (sqlite3_uint64)n, SQLITE_TRANSIENT, SQLITE_UTF8);
done:
    Py_XDECREF(owned);
    return rc == SQLITE_OK ? 0 : bind_failed(st, stmt, rc, index, n);
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
    if (lower == NULL || id_obj == NULL) {
        goto done;
    }
    /* The store owns the column from here on and frees it with its own allocator. */
    c = xt_column_new(utf8, (size_t)len, decl_type);
    if (c == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (PyList_Append(self->col_names, name) < 0 || PyDict_SetItem(self->key_ids, name, id_obj) < 0
        || PyDict_SetItem(self->key_ids, lower, id_obj) < 0) {
        goto done;
    }
    cols->slots[id] = c;
    c = NULL;
    atomic_store_explicit(&cols->count, id + 1, memory_order_release);
    res = id;
done:
    xt_column_free(c);
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

int
xt_column_for_key(TrackerCore *self, PyObject *key, int decl_type)
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
    enc->assets = NULL;
    enc->n_assets = enc->cap_assets = 0;
    enc->asset_bytes = 0;
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
    for (int i = 0; i < enc->n_assets; i++) {
        Py_DECREF(enc->assets[i].parts);
    }
    PyMem_Free(enc->assets);
}

/* Add one key/value; a later value for the same column replaces the earlier one in
 * place, as dict.update would. */
static int
encoder_add(TrackerCore *self, xt_state *st, xt_encoder *enc, PyObject *key, PyObject *value)
{
    xt_pair pair = {0};
    int col, asset = self->asset_hook != NULL && self->asset_hook != Py_None && is_asset(value);
    if (asset) {
        col = xt_column_for_key(self, key, XT_TEXT);
        if (col < 0) {
            return -1;
        }
        if (enc->seen[col >> 6] & ((uint64_t)1 << (col & 63))) {
            drop_asset(enc, col);
        }
        if (encode_asset(self, enc, col, value, &pair) < 0) {
            return -1;
        }
    }
    else {
        int decl = xt_classify(st, value, &pair, 0);
        if (decl < 0) {
            return -1;
        }
        col = xt_column_for_key(self, key, decl);
        if (col < 0) {
            Py_XDECREF(pair.value);
            return -1;
        }
        if (enc->seen[col >> 6] & ((uint64_t)1 << (col & 63))) {
            drop_asset(enc, col);
        }
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

/* Refuse a row SQLite cannot hold, before anything of it is written or queued: SQLite
 * would store a value longer than SQLITE_LIMIT_LENGTH as NULL, and refuses a row whose
 * record is longer.  The values' bytes are a lower bound of the record's length, so no
 * row that fits is refused; the few bytes of record header are left to the write. */
static int
check_lengths(TrackerCore *self, const xt_encoder *enc)
{
    size_t limit = (size_t)xt_store_length_limit(self->store);
    for (int i = 0; i < enc->n; i++) {
        const xt_pair *p = &enc->pairs[i];
        if ((p->type == XT_TEXT || p->type == XT_BLOB) && (size_t)p->n > limit) {
            PyErr_Format(PyExc_ValueError,
                         "the value of %R is %zd bytes, more than the %zu bytes SQLite stores "
                         "in one value (SQLITE_LIMIT_LENGTH); nothing was logged: write large "
                         "data to a file and log its path",
                         PyList_GET_ITEM(self->col_names, p->col), p->n, limit);
            return -1;
        }
    }
    for (int i = 0; i < enc->n_assets; i++) {
        xt_bytes b[5];
        if (asset_parts(enc->assets[i].parts, b) < 0) {
            return -1;
        }
        if ((size_t)b[2].n > limit) {
            PyErr_Format(PyExc_ValueError,
                         "the pickled value of %R is %lld bytes, more than the %zu bytes "
                         "SQLite stores in one value (SQLITE_LIMIT_LENGTH); nothing was "
                         "logged: save the object to a file and log its path",
                         PyList_GET_ITEM(self->col_names, enc->assets[i].col),
                         (long long)b[2].n, limit);
            return -1;
        }
    }
    if (enc->bytes > limit) {
        PyErr_Format(PyExc_ValueError,
                     "the row's text and blob values add up to %zu bytes, more than the %zu "
                     "bytes SQLite stores in one row (SQLITE_LIMIT_LENGTH); nothing was "
                     "logged: log the large values in separate rows",
                     enc->bytes, limit);
        return -1;
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
int
xt_encode_row(TrackerCore *self, xt_state *st, PyObject *data, PyObject *keep,
              xt_row **row_out, PyObject **dict_out)
{
    xt_encoder enc;
    xt_row *row = NULL;
    PyObject *dict = NULL, *ts_obj = NULL, *extended = NULL;
    int res = -1;

    encoder_init(&enc);
    if (!PyDict_Check(data)) {
        PyErr_Format(PyExc_TypeError,
                     "log() takes a dict of column name -> value, not %.100s; wrap the value, "
                     "e.g. tracker.log({'value': x})",
                     Py_TYPE(data)->tp_name);
        goto done;
    }
    if (self->system != NULL) {
        /* log_system_params / log_network_params: the sampler adds the metric columns. */
        extended = PyObject_CallMethod(self->system, "extend", "O", data);
        if (extended == NULL) {
            goto done;
        }
        if (!PyDict_Check(extended)) {
            PyErr_SetString(PyExc_TypeError, "the system sampler's extend() must return a dict");
            goto done;
        }
        data = extended;
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
        || encoder_add(self, st, &enc, st->str_track_id, self->track_id) < 0
        || check_lengths(self, &enc) < 0) {
        goto done;
    }

    size_t size = sizeof(xt_row) + sizeof(xt_value) * (size_t)enc.n
                  + sizeof(xt_asset) * (size_t)enc.n_assets + enc.bytes
                  + (keep == NULL ? enc.asset_bytes : 0);
    row = malloc(size);
    if (dict_out != NULL && enc.copyable) {
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
    else if (dict_out != NULL) {
        dict = PyDict_New();
    }
    if (row == NULL || (dict_out != NULL && dict == NULL)) {
        if (row == NULL) {
            PyErr_NoMemory();
        }
        goto done;
    }
    row->next = NULL;
    row->ts_us = ts;
    row->size = size;
    row->n = enc.n;
    row->n_assets = enc.n_assets;
    row->assets = enc.n_assets ? (xt_asset *)&row->vals[enc.n] : NULL;
    memcpy(row->ts_text, ts_text, sizeof(ts_text));
    char *arena = (char *)&row->vals[enc.n] + sizeof(xt_asset) * (size_t)enc.n_assets;
    for (int i = 0; i < enc.n_assets; i++) {
        xt_bytes b[5];
        if (asset_parts(enc.assets[i].parts, b) < 0) {
            goto done;
        }
        if (keep != NULL) {
            if (PyList_Append(keep, enc.assets[i].parts) < 0) {
                goto done;
            }
        }
        else {
            for (int k = 0; k < 5; k++) {
                memcpy(arena, b[k].p, (size_t)b[k].n);
                b[k].p = arena;
                arena += b[k].n;
            }
        }
        row->assets[i] = (xt_asset){b[0], b[1], b[2], b[3], b[4]};
    }
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
        if (dict != NULL && !enc.copyable
            && PyDict_SetItem(dict, PyList_GET_ITEM(self->col_names, p->col), p->value) < 0) {
            goto done;
        }
    }
    *row_out = row;
    if (dict_out != NULL) {
        *dict_out = dict;
    }
    row = NULL;
    dict = NULL;
    res = 0;
done:
    encoder_clear(&enc);
    free(row);
    Py_XDECREF(dict);
    Py_XDECREF(ts_obj);
    Py_XDECREF(extended);
    return res;
}
