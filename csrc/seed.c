/* Seed: canonical JSON encoder, payload digests, seed derivation. */
#include "seed.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- output buffer ------------------------------------------------------------ */

/* Most payloads (seed payloads, cache keys) fit here, so they need no allocation. */
#define INLINE_OUTPUT 512
/* Containers nested deeper than this keep their cycle-detection stack on the heap. */
#define INLINE_PATH 32

typedef struct {
    char *data;
    size_t len;
    size_t cap;
    char inline_data[INLINE_OUTPUT];
} output_buf;

typedef struct {
    output_buf out;
    PyObject *default_fn;  /* borrowed; NULL: unsupported types raise TypeError */
    int str_keys;
    /* Containers (and objects handed to default_fn) being encoded, innermost last:
     * meeting one again means the value contains itself. */
    PyObject **path;
    size_t path_len;
    size_t path_cap;
    PyObject *inline_path[INLINE_PATH];
} encoder;

static void
encoder_init(encoder *enc, PyObject *default_fn, int str_keys)
{
    enc->out.data = enc->out.inline_data;
    enc->out.len = 0;
    enc->out.cap = INLINE_OUTPUT;
    enc->default_fn = default_fn;
    enc->str_keys = str_keys;
    enc->path = enc->inline_path;
    enc->path_len = 0;
    enc->path_cap = INLINE_PATH;
}

static void
encoder_release(encoder *enc)
{
    if (enc->out.data != enc->out.inline_data) {
        PyMem_Free(enc->out.data);
    }
    if (enc->path != enc->inline_path) {
        PyMem_Free(enc->path);
    }
}

static int
out_reserve(output_buf *out, size_t extra)
{
    if (extra <= out->cap - out->len) {
        return 0;
    }
    if (extra > (size_t)PY_SSIZE_T_MAX - out->len) {
        PyErr_NoMemory();
        return -1;
    }
    size_t need = out->len + extra;
    size_t cap = out->cap;
    while (cap < need) {
        cap = cap > (size_t)PY_SSIZE_T_MAX / 2 ? need : cap * 2;
    }
    char *grown;
    if (out->data == out->inline_data) {
        grown = PyMem_Malloc(cap);
        if (grown != NULL) {
            memcpy(grown, out->data, out->len);
        }
    }
    else {
        grown = PyMem_Realloc(out->data, cap);
    }
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    out->data = grown;
    out->cap = cap;
    return 0;
}

static int
out_write(output_buf *out, const char *text, size_t len)
{
    if (out_reserve(out, len) < 0) {
        return -1;
    }
    memcpy(out->data + out->len, text, len);
    out->len += len;
    return 0;
}

static inline int
out_char(output_buf *out, char c)
{
    if (out->len == out->cap && out_reserve(out, 1) < 0) {
        return -1;
    }
    out->data[out->len++] = c;
    return 0;
}

/* ---- cycle detection ---------------------------------------------------------- */

static int
path_push(encoder *enc, PyObject *obj)
{
    for (size_t i = 0; i < enc->path_len; i++) {
        if (enc->path[i] == obj) {
            PyErr_SetString(PyExc_ValueError,
                            "Circular reference detected: the value contains itself and has "
                            "no JSON form");
            return -1;
        }
    }
    if (enc->path_len == enc->path_cap) {
        size_t cap = enc->path_cap * 2;
        PyObject **grown;
        if (enc->path == enc->inline_path) {
            grown = PyMem_Malloc(cap * sizeof(PyObject *));
            if (grown != NULL) {
                memcpy(grown, enc->path, enc->path_len * sizeof(PyObject *));
            }
        }
        else {
            grown = PyMem_Realloc(enc->path, cap * sizeof(PyObject *));
        }
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        enc->path = grown;
        enc->path_cap = cap;
    }
    enc->path[enc->path_len++] = obj;
    return 0;
}

static inline void
path_pop(encoder *enc)
{
    assert(enc->path_len > 0);
    enc->path_len--;
}

/* ---- scalars ------------------------------------------------------------------ */

static const char hex_lower[] = "0123456789abcdef";

/* Output bytes for one code point, as json's ensure_ascii writes it. */
static inline size_t
escaped_size(Py_UCS4 c)
{
    if (c >= 0x20 && c <= 0x7e) {
        return (c == '"' || c == '\\') ? 2 : 1;
    }
    if (c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t') {
        return 2;
    }
    return c >= 0x10000 ? 12 : 6;
}

static inline char *
write_u_escape(char *p, Py_UCS4 unit)
{
    *p++ = '\\';
    *p++ = 'u';
    *p++ = hex_lower[(unit >> 12) & 0xf];
    *p++ = hex_lower[(unit >> 8) & 0xf];
    *p++ = hex_lower[(unit >> 4) & 0xf];
    *p++ = hex_lower[unit & 0xf];
    return p;
}

static inline char *
write_escaped(char *p, Py_UCS4 c)
{
    if (c >= 0x20 && c <= 0x7e && c != '"' && c != '\\') {
        *p++ = (char)c;
        return p;
    }
    switch (c) {
    case '"': *p++ = '\\'; *p++ = '"'; return p;
    case '\\': *p++ = '\\'; *p++ = '\\'; return p;
    case '\b': *p++ = '\\'; *p++ = 'b'; return p;
    case '\f': *p++ = '\\'; *p++ = 'f'; return p;
    case '\n': *p++ = '\\'; *p++ = 'n'; return p;
    case '\r': *p++ = '\\'; *p++ = 'r'; return p;
    case '\t': *p++ = '\\'; *p++ = 't'; return p;
    default: break;
    }
    if (c >= 0x10000) {
        Py_UCS4 v = c - 0x10000;
        p = write_u_escape(p, 0xd800 | ((v >> 10) & 0x3ff));
        return write_u_escape(p, 0xdc00 | (v & 0x3ff));
    }
    return write_u_escape(p, c);
}

/* A quoted JSON string: one pass to size the output exactly, one to write it (a
 * plain copy when nothing needs escaping, the common case for keys and ids). */
static int
encode_str(encoder *enc, PyObject *text)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    size_t size = 2;

    if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *chars = (const Py_UCS1 *)data;
        for (Py_ssize_t i = 0; i < n; i++) {
            size += escaped_size(chars[i]);
        }
    }
    else {
        for (Py_ssize_t i = 0; i < n; i++) {
            size += escaped_size(PyUnicode_READ(kind, data, i));
        }
    }
    if (out_reserve(&enc->out, size) < 0) {
        return -1;
    }
    char *p = enc->out.data + enc->out.len;
    *p++ = '"';
    if (size == (size_t)n + 2) {
        /* Every character is printable ASCII, so the text is its own JSON form. */
        assert(kind == PyUnicode_1BYTE_KIND);
        memcpy(p, data, (size_t)n);
        p += n;
    }
    else if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *chars = (const Py_UCS1 *)data;
        for (Py_ssize_t i = 0; i < n; i++) {
            p = write_escaped(p, chars[i]);
        }
    }
    else {
        for (Py_ssize_t i = 0; i < n; i++) {
            p = write_escaped(p, PyUnicode_READ(kind, data, i));
        }
    }
    *p++ = '"';
    assert((size_t)(p - (enc->out.data + enc->out.len)) == size);
    enc->out.len += size;
    return 0;
}

/* Decimal digits of an int (any size; int subclasses by value, as int.__repr__). */
static int
encode_int_digits(encoder *enc, PyObject *value)
{
    int overflow = 0;
    long long small = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (small == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (!overflow) {
        char digits[24];
        char *end = digits + sizeof(digits), *p = end;
        unsigned long long magnitude =
            small < 0 ? 0ULL - (unsigned long long)small : (unsigned long long)small;
        do {
            *--p = (char)('0' + magnitude % 10);
            magnitude /= 10;
        } while (magnitude != 0);
        if (small < 0) {
            *--p = '-';
        }
        return out_write(&enc->out, p, (size_t)(end - p));
    }
    /* Large: CPython's conversion, including its limit on the number of digits. */
    int rc = -1;
    PyObject *text = PyNumber_ToBase(value, 10);
    if (text == NULL) {
        goto done;
    }
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &len);
    if (utf8 == NULL) {
        goto done;
    }
    rc = out_write(&enc->out, utf8, (size_t)len);
done:
    Py_XDECREF(text);
    return rc;
}

/* A float as json writes it: float.__repr__, or NaN / Infinity / -Infinity. */
static int
encode_float_text(encoder *enc, PyObject *value)
{
    double v = PyFloat_AsDouble(value);
    if (v == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (isnan(v)) {
        return out_write(&enc->out, "NaN", 3);
    }
    if (isinf(v)) {
        return v > 0 ? out_write(&enc->out, "Infinity", 8) : out_write(&enc->out, "-Infinity", 9);
    }
    char *repr = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (repr == NULL) {
        return -1;
    }
    int rc = out_write(&enc->out, repr, strlen(repr));
    PyMem_Free(repr);
    return rc;
}

/* ---- containers ----------------------------------------------------------------- */

static int encode_value(encoder *enc, PyObject *value);

static int
encode_sequence(encoder *enc, PyObject *seq)
{
    int rc = -1, pushed = 0;
    PyObject *fast = PySequence_Fast(seq, "expected a list or tuple");

    if (fast == NULL) {
        goto done;
    }
    if (PySequence_Fast_GET_SIZE(fast) == 0) {
        rc = out_write(&enc->out, "[]", 2);
        goto done;
    }
    if (path_push(enc, seq) < 0) {
        goto done;
    }
    pushed = 1;
    if (out_char(&enc->out, '[') < 0) {
        goto done;
    }
    /* The size is re-read each step: a default_fn may change a list while it is
     * being encoded; the item is held so that cannot free it under us. */
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); i++) {
        if (i > 0 && out_char(&enc->out, ',') < 0) {
            goto done;
        }
        PyObject *item = Py_NewRef(PySequence_Fast_GET_ITEM(fast, i));
        int item_rc = encode_value(enc, item);
        Py_DECREF(item);
        if (item_rc < 0) {
            goto done;
        }
    }
    rc = out_char(&enc->out, ']');
done:
    if (pushed) {
        path_pop(enc);
    }
    Py_XDECREF(fast);
    return rc;
}

/* A dict key as json writes it (json accepts str, float, bool, None and int keys). */
static int
encode_key(encoder *enc, PyObject *key)
{
    if (PyUnicode_Check(key)) {
        return encode_str(enc, key);
    }
    if (Py_IsTrue(key)) {
        return out_write(&enc->out, "\"true\"", 6);
    }
    if (Py_IsFalse(key)) {
        return out_write(&enc->out, "\"false\"", 7);
    }
    if (Py_IsNone(key)) {
        return out_write(&enc->out, "\"null\"", 6);
    }
    if (PyFloat_Check(key) || PyLong_Check(key)) {
        if (out_char(&enc->out, '"') < 0) {
            return -1;
        }
        int rc = PyFloat_Check(key) ? encode_float_text(enc, key) : encode_int_digits(enc, key);
        return rc < 0 ? -1 : out_char(&enc->out, '"');
    }
    PyErr_Format(PyExc_TypeError,
                 "dict key %.200R has type %.100s; JSON keys must be str, int, float, bool or "
                 "None (convert the key, e.g. with str())",
                 key, Py_TYPE(key)->tp_name);
    return -1;
}

/* (key, value) pairs of `dict` in the order they are written: sorted by key as
 * Python sorts them; with str_keys, keyed by str(key) first (later duplicates win). */
static PyObject *
sorted_items(encoder *enc, PyObject *dict)
{
    PyObject *items = NULL, *by_str = NULL, *res = NULL;

    items = PyMapping_Items(dict);
    if (items == NULL) {
        goto done;
    }
    if (enc->str_keys) {
        int all_str = 1;
        for (Py_ssize_t i = 0; all_str && i < PyList_GET_SIZE(items); i++) {
            PyObject *pair = PyList_GET_ITEM(items, i);
            all_str = PyTuple_Check(pair) && PyTuple_GET_SIZE(pair) == 2
                      && PyUnicode_CheckExact(PyTuple_GET_ITEM(pair, 0));
        }
        if (!all_str) {
            by_str = PyDict_New();
            if (by_str == NULL) {
                goto done;
            }
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
                PyObject *pair = PyList_GET_ITEM(items, i);
                if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
                    PyErr_SetString(PyExc_ValueError, "items must return 2-tuples");
                    goto done;
                }
                PyObject *key = PyObject_Str(PyTuple_GET_ITEM(pair, 0));
                if (key == NULL) {
                    goto done;
                }
                int set_rc = PyDict_SetItem(by_str, key, PyTuple_GET_ITEM(pair, 1));
                Py_DECREF(key);
                if (set_rc < 0) {
                    goto done;
                }
            }
            Py_DECREF(items);
            items = PyDict_Items(by_str);
            if (items == NULL) {
                goto done;
            }
        }
    }
    if (PyList_Sort(items) < 0) {
        goto done;
    }
    res = Py_NewRef(items);
done:
    Py_XDECREF(items);
    Py_XDECREF(by_str);
    return res;
}

/* Dicts up to this size sort their entries on the C stack. */
#define INLINE_ENTRIES 16

typedef struct {
    PyObject *key;
    PyObject *value;
} dict_entry;

static int
compare_entries(const void *a, const void *b)
{
    /* Exact str keys only: PyUnicode_Compare cannot fail, and keys are unique. */
    return PyUnicode_Compare(((const dict_entry *)a)->key, ((const dict_entry *)b)->key);
}

/* Fast path for an exact dict whose keys are all exact str (seed payloads, configs):
 * entries are gathered with strong references and sorted by code point in C, without
 * building the items list.  Returns 1 when done, 0 when the dict does not qualify
 * (nothing written), -1 on error. */
static int
encode_str_keyed_dict(encoder *enc, PyObject *dict)
{
    dict_entry inline_entries[INLINE_ENTRIES];
    dict_entry *entries = inline_entries;
    Py_ssize_t n = PyDict_GET_SIZE(dict), held = 0, pos = 0;
    PyObject *key, *value;
    int rc = -1;

    for (Py_ssize_t i = 0; PyDict_Next(dict, &i, &key, &value);) {
        if (!PyUnicode_CheckExact(key)) {
            return 0;
        }
    }
    if (n > INLINE_ENTRIES) {
        entries = PyMem_Malloc((size_t)n * sizeof(dict_entry));
        if (entries == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    /* No Python code runs while gathering, so the dict cannot change under us; the
     * references keep every entry alive while values are encoded. */
    while (held < n && PyDict_Next(dict, &pos, &key, &value)) {
        entries[held].key = Py_NewRef(key);
        entries[held].value = Py_NewRef(value);
        held++;
    }
    if (held <= INLINE_ENTRIES) {
        for (Py_ssize_t i = 1; i < held; i++) {
            dict_entry entry = entries[i];
            Py_ssize_t j = i;
            for (; j > 0 && PyUnicode_Compare(entries[j - 1].key, entry.key) > 0; j--) {
                entries[j] = entries[j - 1];
            }
            entries[j] = entry;
        }
    }
    else {
        qsort(entries, (size_t)held, sizeof(dict_entry), compare_entries);
    }
    if (out_char(&enc->out, '{') < 0) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < held; i++) {
        if ((i > 0 && out_char(&enc->out, ',') < 0) || encode_str(enc, entries[i].key) < 0
            || out_char(&enc->out, ':') < 0 || encode_value(enc, entries[i].value) < 0) {
            goto done;
        }
    }
    rc = out_char(&enc->out, '}') < 0 ? -1 : 1;
done:
    for (Py_ssize_t i = 0; i < held; i++) {
        Py_DECREF(entries[i].key);
        Py_DECREF(entries[i].value);
    }
    if (entries != inline_entries) {
        PyMem_Free(entries);
    }
    return rc;
}

static int
encode_dict(encoder *enc, PyObject *dict)
{
    int rc = -1, pushed = 0;
    PyObject *items = NULL;

    if (PyDict_GET_SIZE(dict) == 0) {
        return out_write(&enc->out, "{}", 2);
    }
    if (path_push(enc, dict) < 0) {
        goto done;
    }
    pushed = 1;
    if (PyDict_CheckExact(dict)) {
        int fast = encode_str_keyed_dict(enc, dict);
        if (fast != 0) {
            rc = fast < 0 ? -1 : 0;
            goto done;
        }
    }
    items = sorted_items(enc, dict);
    if (items == NULL || out_char(&enc->out, '{') < 0) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *pair = PyList_GET_ITEM(items, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_ValueError, "items must return 2-tuples");
            goto done;
        }
        if ((i > 0 && out_char(&enc->out, ',') < 0)
            || encode_key(enc, PyTuple_GET_ITEM(pair, 0)) < 0 || out_char(&enc->out, ':') < 0
            || encode_value(enc, PyTuple_GET_ITEM(pair, 1)) < 0) {
            goto done;
        }
    }
    rc = out_char(&enc->out, '}');
done:
    if (pushed) {
        path_pop(enc);
    }
    Py_XDECREF(items);
    return rc;
}

/* An object JSON has no form for: encode default_fn(obj) instead, or raise. */
static int
encode_other(encoder *enc, PyObject *obj)
{
    int rc = -1, pushed = 0;
    PyObject *replacement = NULL;

    if (enc->default_fn == NULL) {
        PyErr_Format(PyExc_TypeError,
                     "Object of type %.100s is not JSON serializable; use str, int, float, "
                     "bool, None, list, tuple or dict",
                     Py_TYPE(obj)->tp_name);
        goto done;
    }
    if (path_push(enc, obj) < 0) {
        goto done;
    }
    pushed = 1;
    replacement = PyObject_CallOneArg(enc->default_fn, obj);
    if (replacement == NULL) {
        goto done;
    }
    rc = encode_value(enc, replacement);
done:
    if (pushed) {
        path_pop(enc);
    }
    Py_XDECREF(replacement);
    return rc;
}

/* Dispatch in json's order: None, True, False, str, int, float, list/tuple, dict. */
static int
encode_value(encoder *enc, PyObject *value)
{
    int rc;

    if (Py_IsNone(value)) {
        return out_write(&enc->out, "null", 4);
    }
    if (Py_IsTrue(value)) {
        return out_write(&enc->out, "true", 4);
    }
    if (Py_IsFalse(value)) {
        return out_write(&enc->out, "false", 5);
    }
    if (PyUnicode_Check(value)) {
        return encode_str(enc, value);
    }
    if (PyLong_Check(value)) {
        return encode_int_digits(enc, value);
    }
    if (PyFloat_Check(value)) {
        return encode_float_text(enc, value);
    }
    if (Py_EnterRecursiveCall(" while encoding canonical JSON")) {
        return -1;
    }
    if (PyList_Check(value) || PyTuple_Check(value)) {
        rc = encode_sequence(enc, value);
    }
    else if (PyDict_Check(value)) {
        rc = encode_dict(enc, value);
    }
    else {
        rc = encode_other(enc, value);
    }
    Py_LeaveRecursiveCall();
    return rc;
}

/* ---- C API ---------------------------------------------------------------------- */

PyObject *
xt_canonical_json(PyObject *obj, PyObject *default_fn, int str_keys)
{
    encoder enc;
    PyObject *res = NULL;

    assert(!PyErr_Occurred());
    encoder_init(&enc, default_fn, str_keys);
    if (encode_value(&enc, obj) < 0) {
        goto done;
    }
    res = PyUnicode_DecodeASCII(enc.out.data, (Py_ssize_t)enc.out.len, "strict");
done:
    encoder_release(&enc);
    return res;
}

int
xt_canonical_sha256(PyObject *obj, PyObject *default_fn, int str_keys,
                    uint8_t digest[XT_SHA256_DIGEST_SIZE])
{
    encoder enc;
    int rc = -1;

    assert(!PyErr_Occurred());
    encoder_init(&enc, default_fn, str_keys);
    if (encode_value(&enc, obj) < 0) {
        goto done;
    }
    xt_sha256(enc.out.data, enc.out.len, digest);
    rc = 0;
done:
    encoder_release(&enc);
    return rc;
}

uint32_t
xt_seed_from_digest(const uint8_t digest[XT_SHA256_DIGEST_SIZE])
{
    uint64_t prefix = 0;
    for (int i = 0; i < 8; i++) {
        prefix = (prefix << 8) | digest[i];
    }
    return (uint32_t)(prefix % XT_SEED_MODULUS);
}

int
xt_seed_from_payload(PyObject *payload, PyObject *default_fn, int str_keys, uint32_t *seed)
{
    uint8_t digest[XT_SHA256_DIGEST_SIZE];
    if (xt_canonical_sha256(payload, default_fn, str_keys, digest) < 0) {
        return -1;
    }
    *seed = xt_seed_from_digest(digest);
    return 0;
}

/* Field names of a design-research-experiments seed payload, in sorted order, and
 * where each value comes from in xt_policy_seed's argument list. */
static const struct {
    const char *json_key; /* `"name":` ready to copy */
    int arg_index;        /* 0 base_seed, 1 strategy, 2 per_run_offset, 3 study_id,
                             4 condition_id, 5 replicate, 6 salt */
} policy_fields[7] = {
    {"\"base_seed\":", 0},    {"\"condition_id\":", 4}, {"\"per_run_offset\":", 2},
    {"\"replicate\":", 5},    {"\"salt\":", 6},         {"\"strategy\":", 1},
    {"\"study_id\":", 3},
};

int
xt_policy_seed(PyObject *const values[7], PyObject *default_fn, uint32_t *seed)
{
    encoder enc;
    uint8_t digest[XT_SHA256_DIGEST_SIZE];
    int rc = -1;

    assert(!PyErr_Occurred());
    encoder_init(&enc, default_fn, 1);
    for (int i = 0; i < 7; i++) {
        const char *key = policy_fields[i].json_key;
        if (out_char(&enc.out, i == 0 ? '{' : ',') < 0
            || out_write(&enc.out, key, strlen(key)) < 0
            || encode_value(&enc, values[policy_fields[i].arg_index]) < 0) {
            goto done;
        }
    }
    if (out_char(&enc.out, '}') < 0) {
        goto done;
    }
    xt_sha256(enc.out.data, enc.out.len, digest);
    *seed = xt_seed_from_digest(digest);
    rc = 0;
done:
    encoder_release(&enc);
    return rc;
}

/* ---- Python bindings -------------------------------------------------------------- */

/* Reads the shared optional arguments (default=None, str_keys=False, both positional). */
static int
parse_encoding_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                    PyObject **default_fn, int *str_keys)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes from 1 to 3 positional arguments (obj, default=None, "
                     "str_keys=False) but %zd were given",
                     fname, nargs);
        return -1;
    }
    *default_fn = NULL;
    *str_keys = 0;
    if (nargs >= 2 && !Py_IsNone(args[1])) {
        if (!PyCallable_Check(args[1])) {
            PyErr_Format(PyExc_TypeError, "%s(): default must be callable or None, not %.100s",
                         fname, Py_TYPE(args[1])->tp_name);
            return -1;
        }
        *default_fn = args[1];
    }
    if (nargs == 3) {
        *str_keys = PyObject_IsTrue(args[2]);
        if (*str_keys < 0) {
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(canonical_json__doc__,
    "canonical_json(obj, default=None, str_keys=False, /)\n--\n\n"
    "Return the canonical JSON text of `obj`.\n\n"
    "Identical to json.dumps(obj, sort_keys=True, separators=(',', ':'),\n"
    "ensure_ascii=True) for str, int, float, bool, None, list, tuple and dict.\n"
    "Other objects are replaced by default(obj) when `default` is given, else raise\n"
    "TypeError. With `str_keys`, dict keys become str(key) before sorting.");

static PyObject *
canonical_json_py(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *default_fn;
    int str_keys;

    (void)module;
    if (parse_encoding_args("canonical_json", args, nargs, &default_fn, &str_keys) < 0) {
        return NULL;
    }
    return xt_canonical_json(args[0], default_fn, str_keys);
}

PyDoc_STRVAR(canonical_sha256__doc__,
    "canonical_sha256(obj, default=None, str_keys=False, /)\n--\n\n"
    "Return the 32-byte SHA-256 digest of canonical_json(obj, default, str_keys).");

static PyObject *
canonical_sha256_py(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *default_fn;
    int str_keys;
    uint8_t digest[XT_SHA256_DIGEST_SIZE];

    (void)module;
    if (parse_encoding_args("canonical_sha256", args, nargs, &default_fn, &str_keys) < 0
        || xt_canonical_sha256(args[0], default_fn, str_keys, digest) < 0) {
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)digest, XT_SHA256_DIGEST_SIZE);
}

PyDoc_STRVAR(seed_from_payload__doc__,
    "seed_from_payload(obj, default=None, str_keys=False, /)\n--\n\n"
    "Return int(sha256(canonical_json(obj)).hexdigest()[:16], 16) % (2**31 - 1).");

static PyObject *
seed_from_payload_py(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *default_fn;
    int str_keys;
    uint32_t seed;

    (void)module;
    if (parse_encoding_args("seed_from_payload", args, nargs, &default_fn, &str_keys) < 0
        || xt_seed_from_payload(args[0], default_fn, str_keys, &seed) < 0) {
        return NULL;
    }
    return PyLong_FromUnsignedLong(seed);
}

PyDoc_STRVAR(policy_seed__doc__,
    "policy_seed(base_seed, strategy, per_run_offset, study_id, condition_id, replicate,\n"
    "            salt, default=None, /)\n--\n\n"
    "Return seed_from_payload of the dict of these seven fields (str_keys on), without\n"
    "building the dict: the seed design-research-experiments' SeedPolicy derives.");

static PyObject *
policy_seed_py(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *default_fn = NULL;
    uint32_t seed;

    (void)module;
    if (nargs != 7 && nargs != 8) {
        PyErr_Format(PyExc_TypeError,
                     "policy_seed() takes 7 or 8 positional arguments but %zd were given", nargs);
        return NULL;
    }
    if (nargs == 8 && !Py_IsNone(args[7])) {
        if (!PyCallable_Check(args[7])) {
            PyErr_Format(PyExc_TypeError,
                         "policy_seed(): default must be callable or None, not %.100s",
                         Py_TYPE(args[7])->tp_name);
            return NULL;
        }
        default_fn = args[7];
    }
    if (xt_policy_seed(args, default_fn, &seed) < 0) {
        return NULL;
    }
    return PyLong_FromUnsignedLong(seed);
}

static PyMethodDef seed_methods[] = {
    {"canonical_json", (PyCFunction)(void (*)(void))canonical_json_py, METH_FASTCALL,
     canonical_json__doc__},
    {"canonical_sha256", (PyCFunction)(void (*)(void))canonical_sha256_py, METH_FASTCALL,
     canonical_sha256__doc__},
    {"seed_from_payload", (PyCFunction)(void (*)(void))seed_from_payload_py, METH_FASTCALL,
     seed_from_payload__doc__},
    {"policy_seed", (PyCFunction)(void (*)(void))policy_seed_py, METH_FASTCALL,
     policy_seed__doc__},
    {NULL, NULL, 0, NULL},
};

int
xt_seed_exec(PyObject *module, xt_state *st)
{
    (void)st;
    return PyModule_AddFunctions(module, seed_methods);
}
