/* Module state and the per-concern exec hooks of xetrack_c._core.
 *
 * Every concern (tracker, store, reader, seed, ...) owns a .c/.h pair and adds its
 * functions and types to the module from an exec hook called by module.c.  All
 * per-interpreter state lives in xt_state, reached through xt_get_state(). */
#ifndef XT_MODULE_H
#define XT_MODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    /* Exceptions: Error (base), StorageError(Error), CorruptDatabaseError(StorageError). */
    PyObject *Error;
    PyObject *StorageError;
    PyObject *CorruptDatabaseError;
    /* Raised inside function tasks of run_tasks (BaseException subclasses). */
    PyObject *TaskTimeout;
    PyObject *TaskCancelled;
    PyObject *drain; /* executor: a Python no-op function */
    /* Types */
    PyTypeObject *TrackerCoreType;
    PyTypeObject *ResultCacheType;
    /* Interned strings used on hot paths */
    PyObject *str_item;       /* "item" */
    PyObject *str_timestamp;  /* "timestamp" */
    PyObject *str_track_id;   /* "track_id" */
    /* Result cache (cache*.c): names read on every keyed call, helpers imported on first
     * use (NULL until then), and the types the module-level cache_key() warned about. */
    PyObject *str_module;     /* "__module__" */
    PyObject *str_qualname;   /* "__qualname__" */
    PyObject *cache_helpers;  /* dict: helper name -> object, filled lazily */
    PyObject *cache_warned;   /* set of types */
} xt_state;

extern PyModuleDef xt_module_def;

static inline xt_state *
xt_get_state(PyObject *module)
{
    void *state = PyModule_GetState(module);
    assert(state != NULL);
    return (xt_state *)state;
}

/* State of the module that defined `type` (works for Python subclasses too). */
static inline xt_state *
xt_state_from_type(PyTypeObject *type)
{
    PyObject *module = PyType_GetModuleByDef(type, &xt_module_def);
    return module ? xt_get_state(module) : NULL;
}

/* Exec hooks: each adds its concern's functions and types; 0 on success, -1 with an
 * exception set on failure. */
int xt_sqlitelib_exec(PyObject *module, xt_state *st);
int xt_names_exec(PyObject *module, xt_state *st);
int xt_tracker_exec(PyObject *module, xt_state *st);
int xt_reader_exec(PyObject *module, xt_state *st);
int xt_seed_exec(PyObject *module, xt_state *st);
int xt_hash_exec(PyObject *module, xt_state *st);
int xt_cache_exec(PyObject *module, xt_state *st);
int xt_executor_exec(PyObject *module, xt_state *st);
int xt_procserver_exec(PyObject *module, xt_state *st);
int xt_fork_exec(PyObject *module, xt_state *st);

#endif
