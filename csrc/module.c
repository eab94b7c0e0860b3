/* xetrack_c._core: module definition, state, multi-phase initialisation. */
#include "module.h"

#include <sqlite3.h>

PyDoc_STRVAR(module_doc,
    "Native core of xetrack_c: SQLite write path, columnar reads, hashing, seeding,\n"
    "the result cache, the worker pool.\n\n"
    "Use the public API in the xetrack_c package; names here may change.");

static int
add_exception(PyObject *module, PyObject **slot, const char *name, PyObject *base,
              const char *doc)
{
    *slot = PyErr_NewExceptionWithDoc(name, doc, base, NULL);
    if (*slot == NULL) {
        return -1;
    }
    return PyModule_AddObjectRef(module, strrchr(name, '.') + 1, *slot);
}

static int
intern_string(PyObject **slot, const char *text)
{
    *slot = PyUnicode_InternFromString(text);
    return *slot == NULL ? -1 : 0;
}

static int
module_exec(PyObject *module)
{
    xt_state *st = xt_get_state(module);

    if (add_exception(module, &st->Error, "xetrack_c.Error", PyExc_Exception,
                      "Base class of xetrack_c's own errors.") < 0
        || add_exception(module, &st->StorageError, "xetrack_c.StorageError", st->Error,
                         "SQLite could not read or write the database file.") < 0
        || add_exception(module, &st->CorruptDatabaseError, "xetrack_c.CorruptDatabaseError",
                         st->StorageError,
                         "The file is not a SQLite database, or it is damaged.") < 0) {
        return -1;
    }
    if (intern_string(&st->str_item, "item") < 0
        || intern_string(&st->str_timestamp, "timestamp") < 0
        || intern_string(&st->str_track_id, "track_id") < 0
        || intern_string(&st->str_module, "__module__") < 0
        || intern_string(&st->str_qualname, "__qualname__") < 0) {
        return -1;
    }
    if (PyModule_AddStringConstant(module, "sqlite_version", sqlite3_libversion()) < 0) {
        return -1;
    }
    if (xt_sqlitelib_exec(module, st) < 0
        || xt_names_exec(module, st) < 0 || xt_tracker_exec(module, st) < 0
        || xt_reader_exec(module, st) < 0 || xt_hash_exec(module, st) < 0
        || xt_seed_exec(module, st) < 0 || xt_cache_exec(module, st) < 0
        || xt_executor_exec(module, st) < 0 || xt_procserver_exec(module, st) < 0
        || xt_fork_exec(module, st) < 0) {
        return -1;
    }
    return 0;
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    xt_state *st = xt_get_state(module);
    Py_VISIT(st->Error);
    Py_VISIT(st->StorageError);
    Py_VISIT(st->CorruptDatabaseError);
    Py_VISIT(st->TaskTimeout);
    Py_VISIT(st->TaskCancelled);
    Py_VISIT(st->drain);
    Py_VISIT(st->TrackerCoreType);
    Py_VISIT(st->ResultCacheType);
    Py_VISIT(st->cache_helpers);
    Py_VISIT(st->cache_warned);
    return 0;
}

static int
module_clear(PyObject *module)
{
    xt_state *st = xt_get_state(module);
    Py_CLEAR(st->Error);
    Py_CLEAR(st->StorageError);
    Py_CLEAR(st->CorruptDatabaseError);
    Py_CLEAR(st->TaskTimeout);
    Py_CLEAR(st->TaskCancelled);
    Py_CLEAR(st->drain);
    Py_CLEAR(st->TrackerCoreType);
    Py_CLEAR(st->str_item);
    Py_CLEAR(st->str_timestamp);
    Py_CLEAR(st->str_track_id);
    Py_CLEAR(st->ResultCacheType);
    Py_CLEAR(st->str_module);
    Py_CLEAR(st->str_qualname);
    Py_CLEAR(st->cache_helpers);
    Py_CLEAR(st->cache_warned);
    return 0;
}

static void
module_free(void *module)
{
    (void)module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

PyModuleDef xt_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "xetrack_c._core",
    .m_doc = module_doc,
    .m_size = sizeof(xt_state),
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&xt_module_def);
}
