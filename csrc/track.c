/* track() of TrackerCore (track.h): calling the function with timing, turning its
 * exception into the row's error, building the row of the call, and the result cache
 * path (key, lookup, single-flight miss, store).  The row goes out through
 * xt_tracker_log. */
#include "track.h"

#include <time.h>

#include "cache.h"

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

/* The error_type of a call that raised `exc`: the class's qualified name, prefixed with its
 * module unless that is builtins ("ValueError", "json.decoder.JSONDecodeError"). */
static PyObject *
error_type_name(PyObject *exc)
{
    PyTypeObject *type = Py_TYPE(exc);
    PyObject *qualname = PyType_GetQualName(type), *module = NULL, *res = NULL;
    if (qualname == NULL) {
        goto done;
    }
    module = PyObject_GetAttrString((PyObject *)type, "__module__");
    if (module == NULL) {
        goto done;
    }
    if (!PyUnicode_Check(module) || PyUnicode_CompareWithASCIIString(module, "builtins") == 0) {
        res = Py_NewRef(qualname);
    }
    else {
        res = PyUnicode_FromFormat("%U.%U", module, qualname);
    }
done:
    Py_XDECREF(qualname);
    Py_XDECREF(module);
    return res;
}

/* The row of one call: function_name, args, kwargs, error, error_type (only when the call
 * raised: `error_type` not NULL), function_time, the fields of dataclass/pydantic
 * arguments, the result (NULL in the table when the call raised), the per-call params, then
 * (when the result cache is on and the call has a key) `cache`: the run that computed the
 * result, or "". */
static PyObject *
track_row(TrackerCore *self, PyObject *func, PyObject *args, PyObject *kwargs, PyObject *error,
          PyObject *error_type, double elapsed, PyObject *result, PyObject *params,
          PyObject *lineage)
{
    PyObject *row = PyDict_New();
    if (row == NULL || set_item_steal(row, "function_name", function_name(func)) < 0
        || set_item_steal(row, "args", PyObject_Str(args)) < 0
        || set_item_steal(row, "kwargs", PyObject_Str(kwargs)) < 0
        || PyDict_SetItemString(row, "error", error) < 0
        || (error_type != NULL && PyDict_SetItemString(row, "error_type", error_type) < 0)
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
    if (error_type != NULL) {
        /* The call returned nothing: NULL, not the text 'None' of a function returning None. */
        if (PyDict_SetItemString(row, "function_result", Py_None) < 0) {
            goto fail;
        }
    }
    else if (PyDict_Check(result)) {
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
    PyObject *error_type = NULL;
    PyObject *exc_type = NULL, *exc_value = NULL, *exc_tb = NULL, *metrics = NULL;
    PyObject *sampler = Py_XNewRef(self->system); /* held: the call may run any code */

    *succeeded = 0;
    call_args = PyList_AsTuple(args);
    if (call_args == NULL) {
        goto done;
    }
    /* log_system_params: the sampler's reading at the start of the call. */
    if (sampler != NULL && (metrics = PyObject_CallMethod(sampler, "begin", NULL)) == NULL) {
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
        error_type = error == NULL ? NULL : error_type_name(exc_value);
        if (error_type == NULL) {
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
    row = track_row(self, func, args, kwargs, error, error_type, elapsed, result, params, lineage);
    if (row == NULL) {
        goto done;
    }
    if (metrics != NULL) {
        PyObject *added = PyObject_CallMethod(sampler, "end", "OO", metrics, row);
        if (added == NULL) {
            goto done;
        }
        Py_DECREF(added);
    }
    logged = xt_tracker_log(self, row);
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
    Py_XDECREF(error_type);
    Py_XDECREF(metrics);
    Py_XDECREF(sampler);
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
            row = empty ? track_row(self, func, args, kwargs, empty, NULL, 0.0, result, params, lineage) : NULL;
            logged = row ? xt_tracker_log(self, row) : NULL;
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

const char xt_track__doc__[] = PyDoc_STR(
    "track($self, func, params=None, args=None, kwargs=None, cache_force=False)\n--\n\n"
    "Call func(*args, **kwargs), log a row describing the call and return its result.\n\n"
    "The row holds function_name, args, kwargs, error, function_time, the fields of\n"
    "dataclass/pydantic arguments as <param>_<field>, the result (a dict merges into the\n"
    "row, anything else is function_result) and then params.  An exception is logged\n"
    "(error = str(exc), error_type = its class, function_result NULL) and re-raised\n"
    "unless raise_on_error is False.  With the result cache on, a call seen\n"
    "before returns the stored result without running func and logs `cache` = the\n"
    "track_id that computed it; cache_force=True recomputes and overwrites.");

PyObject *
xt_tracker_track(TrackerCore *self, PyObject *const *fargs, Py_ssize_t nargs, PyObject *kwnames)
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
