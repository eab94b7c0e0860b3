/* Names: key sanitising as xetrack does it, identifier quoting, track ids. */
#include "names.h"

#include <unistd.h>
#if defined(__linux__)
#include <sys/random.h>
#endif

#include "names_words.inc"

#define N_ADJECTIVES (sizeof(adjectives) / sizeof(adjectives[0]))
#define N_NOUNS (sizeof(nouns) / sizeof(nouns[0]))

static inline int
is_key_char(Py_UCS4 c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

PyObject *
xt_sanitize_key(PyObject *key)
{
    PyObject *text = NULL, *res = NULL;

    if (PyUnicode_CheckExact(key)) {
        text = Py_NewRef(key);
    }
    else {
        text = PyObject_Str(key);
        if (text == NULL) {
            goto done;
        }
    }
    Py_ssize_t len = PyUnicode_GET_LENGTH(text);
    if (len == 0) {
        PyErr_Format(PyExc_ValueError,
                     "invalid key %R: a key must name a column; use a non-empty string", key);
        goto done;
    }
    Py_ssize_t keep = len < XT_MAX_KEY_LENGTH ? len : XT_MAX_KEY_LENGTH;
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    int clean = (keep == len);
    for (Py_ssize_t i = 0; clean && i < keep; i++) {
        clean = is_key_char(PyUnicode_READ(kind, data, i));
    }
    if (clean) {
        res = Py_NewRef(text);
        goto done;
    }
    char buf[XT_MAX_KEY_LENGTH];
    for (Py_ssize_t i = 0; i < keep; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        buf[i] = is_key_char(c) ? (char)c : '_';
    }
    res = PyUnicode_FromStringAndSize(buf, keep);
done:
    Py_XDECREF(text);
    return res;
}

static uint64_t
random_u64(void)
{
    uint64_t value = 0;
    /* getentropy never blocks after boot and needs no descriptor; fall back to a mix of
     * the clock and the pid if the kernel refuses (seccomp sandboxes). */
    if (getentropy(&value, sizeof(value)) != 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        value = ((uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ULL) ^ ((uint64_t)getpid() << 32)
                ^ (uint64_t)ts.tv_sec;
    }
    return value;
}

PyObject *
xt_new_track_id(void)
{
    uint64_t r = random_u64();
    const char *adjective = adjectives[r % N_ADJECTIVES];
    r /= N_ADJECTIVES;
    const char *noun = nouns[r % N_NOUNS];
    r /= N_NOUNS;
    return PyUnicode_FromFormat("%s-%s-%04d", adjective, noun, (int)(r % 10000));
}

PyDoc_STRVAR(generate_track_id__doc__,
    "generate_track_id()\n--\n\n"
    "Return a fresh human-readable track id, adjective-noun-NNNN (e.g. 'brave-otter-0421').");

static PyObject *
generate_track_id(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    return xt_new_track_id();
}

PyDoc_STRVAR(sanitize_key__doc__,
    "sanitize_key(key, /)\n--\n\n"
    "Return the column name xetrack uses for `key`: str(key) with characters outside\n"
    "[A-Za-z0-9_] replaced by '_', at most 64 characters.");

static PyObject *
sanitize_key(PyObject *module, PyObject *key)
{
    (void)module;
    return xt_sanitize_key(key);
}

PyDoc_STRVAR(quote_identifier__doc__,
    "quote_identifier(name, /)\n--\n\n"
    "Return `name` as a quoted SQLite identifier (embedded quotes doubled).");

PyObject *
xt_quote_identifier(PyObject *name)
{
    PyObject *quote = NULL, *doubled = NULL, *escaped = NULL, *res = NULL;

    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "identifier must be str, not %.100s", Py_TYPE(name)->tp_name);
        goto done;
    }
    if (PyUnicode_FindChar(name, 0, 0, PyUnicode_GET_LENGTH(name), 1) != -1) {
        PyErr_Format(PyExc_ValueError, "identifier %R contains a NUL character; remove it", name);
        goto done;
    }
    quote = PyUnicode_FromString("\"");
    doubled = PyUnicode_FromString("\"\"");
    if (quote == NULL || doubled == NULL) {
        goto done;
    }
    escaped = PyUnicode_Replace(name, quote, doubled, -1);
    if (escaped == NULL) {
        goto done;
    }
    res = PyUnicode_FromFormat("\"%U\"", escaped);
done:
    Py_XDECREF(quote);
    Py_XDECREF(doubled);
    Py_XDECREF(escaped);
    return res;
}

static PyObject *
quote_identifier(PyObject *module, PyObject *name)
{
    (void)module;
    return xt_quote_identifier(name);
}

static PyMethodDef names_methods[] = {
    {"generate_track_id", generate_track_id, METH_NOARGS, generate_track_id__doc__},
    {"sanitize_key", sanitize_key, METH_O, sanitize_key__doc__},
    {"quote_identifier", quote_identifier, METH_O, quote_identifier__doc__},
    {NULL, NULL, 0, NULL},
};

int
xt_names_exec(PyObject *module, xt_state *st)
{
    (void)st;
    return PyModule_AddFunctions(module, names_methods);
}
