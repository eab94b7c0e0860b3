/* Result cache, the Python type: ResultCache (__init__, its methods, members and getset,
 * the type spec), the module function cache_key(), and xt_cache_exec, which adds both to
 * the module.  The store they use (the file, its entries, get and put) is in cache.c. */
#include "cache_internal.h"

#include <stdlib.h>
#include <string.h>

#include <structmember.h>

static int
cache_init(ResultCache *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"directory", "mode", "busy_timeout", "auth_key", NULL};
    PyObject *directory = NULL, *dir_str = NULL, *path_bytes = NULL, *auth_key = NULL;
    const char *mode = "create";
    double busy_timeout = 60.0;
    xt_error err = {0};
    int rc;

    if (self->path != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ResultCache is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|sd$O:ResultCache", kwlist, &directory, &mode,
                                     &busy_timeout, &auth_key)) {
        return -1;
    }
    /* No default: a cache that forgets its key must not silently trust every entry. */
    if (auth_key == NULL || (auth_key != Py_None && !PyBytes_Check(auth_key))
        || (auth_key != Py_None && PyBytes_GET_SIZE(auth_key) == 0)) {
        PyErr_SetString(PyExc_TypeError,
                        "ResultCache() needs auth_key=: the key of the entries' MACs (non-empty "
                        "bytes), or None for an unauthenticated cache; xetrack_c.Tracker and "
                        "xetrack_c.cache find it for you (see 'Trust' in docs/cache.md)");
        return -1;
    }
    self->st = xt_state_from_type(Py_TYPE(self));
    if (self->st == NULL) {
        return -1;
    }
    PyObject *loads = xt_cache_helper(self->st, "pickle", "loads");
    if (loads == NULL) {
        return -1;
    }
    self->loads = Py_NewRef(loads);
    if (auth_key != Py_None) {
        xt_hmac_key_init(&self->mac_key, PyBytes_AS_STRING(auth_key),
                         (size_t)PyBytes_GET_SIZE(auth_key));
        self->authenticated = 1;
    }
    self->mode = strcmp(mode, "create") == 0 ? XT_CACHE_MODE_CREATE
                 : strcmp(mode, "read") == 0 ? XT_CACHE_MODE_READ
                 : strcmp(mode, "write") == 0 ? XT_CACHE_MODE_WRITE
                                              : -1;
    if (self->mode < 0) {
        PyErr_Format(PyExc_ValueError, "ResultCache mode must be 'create', 'read' or 'write', not '%s'",
                     mode);
        return -1;
    }
    dir_str = PyOS_FSPath(directory);
    if (dir_str == NULL) {
        return -1;
    }
    if (!PyUnicode_Check(dir_str)) {
        PyErr_Format(PyExc_TypeError, "cache directory must be a str path, not %.100s",
                     Py_TYPE(dir_str)->tp_name);
        Py_DECREF(dir_str);
        return -1;
    }
    self->directory = dir_str;
    self->path = PyUnicode_FromFormat("%U/cache.db", dir_str);
    self->warned = PySet_New(NULL);
    if (self->path == NULL || self->warned == NULL || !PyUnicode_FSConverter(self->path, &path_bytes)) {
        return -1;
    }
    self->path_fs = strdup(PyBytes_AS_STRING(path_bytes));
    Py_DECREF(path_bytes);
    if (self->path_fs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->busy_timeout_ms = busy_timeout <= 0 ? 0 : busy_timeout > 2e6 ? 2000000000 : (int)(busy_timeout * 1000);
    self->fork_generation = xt_fork_generation();
    Py_BEGIN_ALLOW_THREADS
    xt_fork_guard_add(&self->fork_guard, &self->db_lock, self, xt_cache_drop_in_child);
    pthread_mutex_lock(&self->db_lock);
    rc = xt_cache_ready(self, &err);
    pthread_mutex_unlock(&self->db_lock);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        xt_cache_raise_error(self, &err);
        return -1;
    }
    return 0;
}

static PyObject *
cache_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    (void)args;
    (void)kwargs;
    ResultCache *self = (ResultCache *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    pthread_mutex_init(&self->db_lock, NULL);
    pthread_mutex_init(&self->flight_lock, NULL);
    pthread_cond_init(&self->flight_done, NULL);
    self->fork_generation = xt_fork_generation();
    return (PyObject *)self;
}

static int
cache_traverse(ResultCache *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->warned);
    Py_VISIT(self->loads);
    return 0;
}

static int
cache_clear(ResultCache *self)
{
    Py_CLEAR(self->warned);
    Py_CLEAR(self->loads);
    return 0;
}

static void
cache_dealloc(ResultCache *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    Py_BEGIN_ALLOW_THREADS
    xt_fork_guard_remove(&self->fork_guard); /* waits for a fork in progress */
    Py_END_ALLOW_THREADS
    xt_cache_check_fork(self);
    if (self->db != NULL) {
        xt_cache_close_db(self);
    }
    pthread_mutex_destroy(&self->db_lock);
    pthread_mutex_destroy(&self->flight_lock);
    pthread_cond_destroy(&self->flight_done);
    xt_hmac_key_wipe(&self->mac_key);
    cache_clear(self);
    Py_CLEAR(self->directory);
    Py_CLEAR(self->path);
    free(self->path_fs);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* What get_raw and scan_raw call each XT_CACHE_AUTH_* value (indexed by it). */
static const char *const auth_names[] = {"unchecked", "ok", "mismatch", "missing"};

static PyObject *
entry_tuple(const xt_cache_entry *e, int with_key)
{
    const char *auth = auth_names[e->auth];
    if (with_key) {
        return Py_BuildValue("(sy#ssss)", e->key, (const char *)e->value, (Py_ssize_t)e->value_len,
                             e->track_id, e->created, e->function_name, auth);
    }
    return Py_BuildValue("(y#ssss)", (const char *)e->value, (Py_ssize_t)e->value_len, e->track_id,
                         e->created, e->function_name, auth);
}

PyDoc_STRVAR(cache_get_raw__doc__,
    "get_raw($self, key, /)\n--\n\n"
    "The stored entry of `key` as (pickled value, track_id, created, function_name,\n"
    "auth), or None.  The value is not unpickled.  auth says what its MAC says: 'ok'\n"
    "(verified with this cache's key), 'mismatch' (written with another key, or\n"
    "altered), 'missing' (no MAC: an older version, or an unauthenticated writer) or\n"
    "'unchecked' (this cache has no key).  Only 'ok' and 'unchecked' values may be\n"
    "unpickled.");

static PyObject *
cache_get_raw(ResultCache *self, PyObject *key)
{
    xt_cache_entry *found = NULL;
    if (!PyUnicode_Check(key)) {
        PyErr_Format(PyExc_TypeError, "cache key must be a str (a hex digest), not %.100s",
                     Py_TYPE(key)->tp_name);
        return NULL;
    }
    const char *text = PyUnicode_AsUTF8(key);
    if (text == NULL) {
        return NULL;
    }
    int rc = xt_cache_fetch(self, text, &found);
    if (rc <= 0) {
        return rc < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *res = entry_tuple(found, 0);
    xt_cache_free_entries(found);
    return res;
}

PyDoc_STRVAR(cache_scan_raw__doc__,
    "scan_raw($self, after='', limit=256, /)\n--\n\n"
    "Up to `limit` entries with keys after `after`, in key order, as tuples\n"
    "(key, pickled value, track_id, created, function_name, auth); auth as get_raw's.");

static PyObject *
cache_scan_raw(ResultCache *self, PyObject *args)
{
    const char *after = "";
    long long limit = 256;
    xt_cache_entry *rows = NULL;
    int64_t unused;
    if (!PyArg_ParseTuple(args, "|sL:scan_raw", &after, &limit)) {
        return NULL;
    }
    if (xt_cache_run(self, xt_cache_scan_sql, xt_cache_scan_sql_no_mac, after, limit, 1, &rows,
                     &unused) < 0) {
        return NULL;
    }
    PyObject *list = PyList_New(0);
    for (xt_cache_entry *e = rows; list != NULL && e != NULL; e = e->next) {
        PyObject *item = entry_tuple(e, 1);
        if (item == NULL || PyList_Append(list, item) < 0) {
            Py_CLEAR(list);
        }
        Py_XDECREF(item);
    }
    xt_cache_free_entries(rows);
    return list;
}

PyDoc_STRVAR(cache_delete__doc__,
    "delete($self, key, /)\n--\n\n"
    "Delete the entry of `key`; True if there was one.");

static PyObject *
cache_delete(ResultCache *self, PyObject *key)
{
    xt_cache_entry *rows = NULL;
    int64_t changes = 0;
    const char *text = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
    if (text == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "cache key must be a str");
        }
        return NULL;
    }
    if (xt_cache_run(self, "DELETE FROM cache WHERE key = ?1", NULL, text, 0, 0, &rows,
                     &changes) < 0) {
        return NULL;
    }
    return PyBool_FromLong(changes > 0);
}

PyDoc_STRVAR(cache_delete_by_track_id__doc__,
    "delete_by_track_id($self, track_id, /)\n--\n\n"
    "Delete every entry computed by the run `track_id`; returns how many.");

static PyObject *
cache_delete_by_track_id(ResultCache *self, PyObject *track_id)
{
    xt_cache_entry *rows = NULL;
    int64_t changes = 0;
    const char *text = PyUnicode_Check(track_id) ? PyUnicode_AsUTF8(track_id) : NULL;
    if (text == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "track_id must be a str");
        }
        return NULL;
    }
    if (xt_cache_run(self, "DELETE FROM cache WHERE track_id = ?1", NULL, text, 0, 0, &rows,
                     &changes) < 0) {
        return NULL;
    }
    return PyLong_FromLongLong(changes);
}

static Py_ssize_t
cache_len(ResultCache *self)
{
    xt_cache_entry *rows = NULL;
    int64_t count = 0;
    if (xt_cache_run(self, "SELECT count(*) FROM cache", NULL, NULL, 0, 0, &rows, &count) < 0) {
        return -1;
    }
    return (Py_ssize_t)count;
}

PyDoc_STRVAR(cache_key__doc__,
    "key($self, func, args=None, kwargs=None, params=None, tracker_params=None, /)\n--\n\n"
    "The hex key of a call, or None (with a warning, once per type on this cache) if an\n"
    "argument cannot be encoded stably.");

static PyObject *
key_function(xt_state *st, PyObject *warned, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *given[5] = {NULL, Py_None, Py_None, Py_None, Py_None};
    xt_cache_key key;
    if (nargs < 1 || nargs > 5) {
        PyErr_Format(PyExc_TypeError,
                     "cache_key() takes 1 to 5 arguments (func, args, kwargs, params, "
                     "tracker_params), %zd given",
                     nargs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        given[i] = args[i];
    }
    if (!PyCallable_Check(given[0])) {
        PyErr_Format(PyExc_TypeError, "cache_key() needs a callable, not %.100s", Py_TYPE(given[0])->tp_name);
        return NULL;
    }
    int rc = xt_cache_call_key(st, warned, given[0], given[1], given[2], given[3], given[4], 1,
                               &key);
    if (rc <= 0) {
        return rc < 0 ? NULL : Py_NewRef(Py_None);
    }
    return PyUnicode_FromStringAndSize(key.hex, 2 * XT_CACHE_KEY_SIZE);
}

static PyObject *
cache_key_method(ResultCache *self, PyObject *const *args, Py_ssize_t nargs)
{
    return key_function(self->st, self->warned, args, nargs);
}

PyDoc_STRVAR(cache_put__doc__,
    "put($self, func, args, kwargs, params, tracker_params, result, track_id,\n"
    "    replace=False, /)\n--\n\n"
    "Store `result` under the key of the call (func, args, kwargs, params,\n"
    "tracker_params), computed by the run `track_id`, unless an entry is there already\n"
    "(with `replace`, over it).  True if stored; False if the call has no stable key or\n"
    "the result cannot be pickled (each with a warning).");

static PyObject *
cache_put(ResultCache *self, PyObject *const *args, Py_ssize_t nargs)
{
    xt_cache_key key;
    int replace = 0;
    if (nargs != 7 && nargs != 8) {
        PyErr_Format(PyExc_TypeError,
                     "put() takes 7 or 8 arguments (func, args, kwargs, params, tracker_params, "
                     "result, track_id, replace=False), %zd given",
                     nargs);
        return NULL;
    }
    if (nargs == 8 && (replace = PyObject_IsTrue(args[7])) < 0) {
        return NULL;
    }
    if (!PyCallable_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "put() needs a callable, not %.100s", Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    if (!PyUnicode_Check(args[6])) {
        PyErr_Format(PyExc_TypeError, "track_id must be a str, not %.100s", Py_TYPE(args[6])->tp_name);
        return NULL;
    }
    int rc = xt_cache_make_key((PyObject *)self, args[0], args[1], args[2], args[3], args[4], 1,
                               &key);
    if (rc > 0) {
        rc = xt_cache_put((PyObject *)self, &key, args[0], args[5], args[6], replace, 1);
    }
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

PyDoc_STRVAR(cache_close__doc__,
    "close($self, /)\n--\n\n"
    "Close the connection to the cache file (idempotent).");

static PyObject *
cache_close_method(ResultCache *self, PyObject *Py_UNUSED(ignored))
{
    if (xt_cache_close((PyObject *)self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
cache_enter(ResultCache *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(self);
}

static PyObject *
cache_exit(ResultCache *self, PyObject *args)
{
    (void)args;
    return cache_close_method(self, NULL);
}

static PyObject *
get_closed(ResultCache *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *
get_authenticated(ResultCache *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->authenticated);
}

static PyObject *
cache_repr(ResultCache *self)
{
    return PyUnicode_FromFormat("ResultCache(%R%s%s)", self->directory ? self->directory : Py_None,
                                self->authenticated ? "" : ", unauthenticated",
                                self->closed ? ", closed" : "");
}

/* A cache object is true even when it holds no entries (len() counts them). */
static int
cache_bool(ResultCache *self)
{
    (void)self;
    return 1;
}

static PyMethodDef cache_methods[] = {
    {"get_raw", (PyCFunction)cache_get_raw, METH_O, cache_get_raw__doc__},
    {"scan_raw", (PyCFunction)cache_scan_raw, METH_VARARGS, cache_scan_raw__doc__},
    {"delete", (PyCFunction)cache_delete, METH_O, cache_delete__doc__},
    {"delete_by_track_id", (PyCFunction)cache_delete_by_track_id, METH_O, cache_delete_by_track_id__doc__},
    {"key", (PyCFunction)(void (*)(void))cache_key_method, METH_FASTCALL, cache_key__doc__},
    {"put", (PyCFunction)(void (*)(void))cache_put, METH_FASTCALL, cache_put__doc__},
    {"close", (PyCFunction)cache_close_method, METH_NOARGS, cache_close__doc__},
    {"__enter__", (PyCFunction)cache_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)cache_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef cache_members[] = {
    {"directory", T_OBJECT, offsetof(ResultCache, directory), READONLY, "The cache directory."},
    {"path", T_OBJECT, offsetof(ResultCache, path), READONLY, "The cache file, directory/cache.db."},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(ResultCache, weakreflist), READONLY, NULL},
    {NULL},
};

static PyGetSetDef cache_getset[] = {
    {"closed", (getter)get_closed, NULL, "True once close() has run.", NULL},
    {"authenticated", (getter)get_authenticated, NULL,
     "True if entries carry a MAC under a key and only verified ones are unpickled.", NULL},
    {NULL},
};

PyDoc_STRVAR(cache_doc,
    "ResultCache(directory, mode='create', busy_timeout=60.0, *, auth_key)\n--\n\n"
    "Pickled results of tracked calls in directory/cache.db (SQLite, WAL).\n\n"
    "mode 'create' makes the file (0600; not the directory) if needed; 'read' opens an\n"
    "existing file read-only; 'write' opens an existing file for deletions.  auth_key\n"
    "(bytes) authenticates entries: each one stored gets an HMAC-SHA256 under it, and an\n"
    "entry whose MAC does not verify is never unpickled; None: no MACs (an\n"
    "unauthenticated cache).  Safe to share between threads; many processes may use one\n"
    "file at once.");

static PyType_Slot cache_slots[] = {
    {Py_tp_doc, (void *)cache_doc},
    {Py_tp_new, cache_new},
    {Py_tp_init, cache_init},
    {Py_tp_dealloc, cache_dealloc},
    {Py_tp_traverse, cache_traverse},
    {Py_tp_clear, cache_clear},
    {Py_tp_repr, cache_repr},
    {Py_tp_methods, cache_methods},
    {Py_tp_members, cache_members},
    {Py_tp_getset, cache_getset},
    {Py_mp_length, cache_len},
    {Py_nb_bool, cache_bool},
    {0, NULL},
};

static PyType_Spec cache_spec = {
    .name = "xetrack_c._core.ResultCache",
    .basicsize = sizeof(ResultCache),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = cache_slots,
};

PyDoc_STRVAR(cache_key_function__doc__,
    "cache_key($module, func, args=None, kwargs=None, params=None, tracker_params=None, /)\n"
    "--\n\n"
    "The 32-hex-digit key the result cache gives a call: the first 16 bytes of the\n"
    "SHA-256 of a canonical encoding of the function's qualified name, the arguments and\n"
    "the params.  None (with a warning, once per type) if a value cannot be encoded\n"
    "stably.");

static PyObject *
cache_key_function(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    xt_state *st = xt_get_state(module);
    return key_function(st, st->cache_warned, args, nargs);
}

static PyMethodDef cache_functions[] = {
    {"cache_key", (PyCFunction)(void (*)(void))cache_key_function, METH_FASTCALL, cache_key_function__doc__},
    {NULL, NULL, 0, NULL},
};

int
xt_cache_check(xt_state *st, PyObject *obj)
{
    return st->ResultCacheType != NULL && PyObject_TypeCheck(obj, st->ResultCacheType);
}

int
xt_cache_exec(PyObject *module, xt_state *st)
{
    st->cache_warned = PySet_New(NULL);
    if (st->cache_warned == NULL) {
        return -1;
    }
    st->ResultCacheType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &cache_spec, NULL);
    if (st->ResultCacheType == NULL || PyModule_AddType(module, st->ResultCacheType) < 0) {
        return -1;
    }
    return PyModule_AddFunctions(module, cache_functions);
}
