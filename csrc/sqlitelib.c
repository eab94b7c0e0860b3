/* The SQLite library of the process: checked once, when the module is imported.
 *
 * xetrack_c links to the shared libsqlite3 (a binary wheel leaves it out, so the one the
 * system has is used), the same library CPython's _sqlite3, pandas and xetrack use.  Two
 * copies of SQLite in one process can corrupt a database: POSIX advisory locks belong to
 * the process, so when one copy closes a file it drops the locks the other copy holds on
 * it (SQLite's "How To Corrupt An SQLite Database File", section 2.2).  Within one copy,
 * SQLite keeps the file open until every connection's locks are gone.
 *
 * At import this file refuses, with an ImportError that says what to do:
 *   - a second SQLite library mapped in the process beside the one this module is bound
 *     to (checked over every loaded object with dl_iterate_phdr);
 *   - a SQLite older than the oldest we use (3.37.0: sqlite3_changes64), built without
 *     threads (sqlite3_threadsafe() == 0) or without WAL (SQLITE_OMIT_WAL).
 * sqlite_library() reports what was found, for `xt --version` and the tests. */
#include "module.h"

#include <dlfcn.h>
#include <limits.h>
#include <link.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define XT_SQLITE_MIN_VERSION 3037000
#define XT_SQLITE_MIN_TEXT "3.37.0"
#define XT_MAX_LIBRARIES 8

typedef struct {
    char paths[XT_MAX_LIBRARIES][PATH_MAX];
    int count;
} xt_sqlite_libs;

/* True if `path` names a SQLite shared library (libsqlite3.so, libsqlite3.so.0, ...). */
static int
is_sqlite_library(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    return strncmp(base, "libsqlite3.", 11) == 0 || strncmp(base, "libsqlite3-", 11) == 0;
}

/* True if `a` and `b` are the same file (a link and its target count as one). */
static int
same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) {
        return strcmp(a, b) == 0;
    }
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int
collect_library(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    xt_sqlite_libs *libs = (xt_sqlite_libs *)data;
    const char *name = info->dlpi_name;
    if (name == NULL || name[0] == '\0' || !is_sqlite_library(name)) {
        return 0;
    }
    for (int i = 0; i < libs->count; i++) {
        if (same_file(libs->paths[i], name)) {
            return 0;
        }
    }
    if (libs->count < XT_MAX_LIBRARIES) {
        snprintf(libs->paths[libs->count], PATH_MAX, "%s", name);
        libs->count++;
    }
    return 0;
}

/* Path of the object that provides the sqlite3_libversion this module calls. */
static const char *
bound_library(void)
{
    Dl_info info;
    if (dladdr((void *)&sqlite3_libversion, &info) == 0 || info.dli_fname == NULL) {
        return "";
    }
    return info.dli_fname;
}

static PyObject *
library_info(xt_sqlite_libs *libs)
{
    PyObject *mapped = PyList_New(0);
    if (mapped == NULL) {
        return NULL;
    }
    for (int i = 0; i < libs->count; i++) {
        PyObject *path = PyUnicode_DecodeFSDefault(libs->paths[i]);
        if (path == NULL || PyList_Append(mapped, path) < 0) {
            Py_XDECREF(path);
            Py_DECREF(mapped);
            return NULL;
        }
        Py_DECREF(path);
    }
    PyObject *bound = PyUnicode_DecodeFSDefault(bound_library());
    if (bound == NULL) {
        Py_DECREF(mapped);
        return NULL;
    }
    PyObject *res = Py_BuildValue("{s:s,s:i,s:N,s:N,s:i,s:O}", "version", sqlite3_libversion(),
                                  "version_number", sqlite3_libversion_number(), "library",
                                  bound, "mapped", mapped, "threadsafe", sqlite3_threadsafe(),
                                  "wal", sqlite3_compileoption_used("OMIT_WAL") ? Py_False
                                                                                : Py_True);
    return res;
}

PyDoc_STRVAR(sqlite_library__doc__,
    "sqlite_library($module, /)\n--\n\n"
    "The SQLite library of this process: version, the file this module is bound to, every\n"
    "SQLite library mapped in the process, its thread-safety mode and whether it has WAL.");

static PyObject *
sqlite_library(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    xt_sqlite_libs libs = {.count = 0};
    dl_iterate_phdr(collect_library, &libs);
    return library_info(&libs);
}

/* 0 if the process's SQLite is one library we can use; -1 with ImportError set. */
static int
check_library(void)
{
    if (sqlite3_libversion_number() < XT_SQLITE_MIN_VERSION) {
        PyErr_Format(PyExc_ImportError,
                     "xetrack_c needs SQLite " XT_SQLITE_MIN_TEXT " or newer, and this process "
                     "has %s (%s): upgrade the system's libsqlite3", sqlite3_libversion(),
                     bound_library());
        return -1;
    }
    if (sqlite3_threadsafe() == 0) {
        PyErr_Format(PyExc_ImportError,
                     "the SQLite library %s was built without threads (SQLITE_THREADSAFE=0); "
                     "xetrack_c writes from several threads: use a libsqlite3 built with threads",
                     bound_library());
        return -1;
    }
    if (sqlite3_compileoption_used("OMIT_WAL")) {
        PyErr_Format(PyExc_ImportError,
                     "the SQLite library %s was built without WAL (SQLITE_OMIT_WAL); xetrack_c "
                     "needs WAL mode: use a libsqlite3 built with it", bound_library());
        return -1;
    }
    xt_sqlite_libs libs = {.count = 0};
    dl_iterate_phdr(collect_library, &libs);
    const char *ours = bound_library();
    for (int i = 0; i < libs.count; i++) {
        if (ours[0] != '\0' && !same_file(libs.paths[i], ours)) {
            PyErr_Format(PyExc_ImportError,
                         "two SQLite libraries are loaded in this process (%s, which xetrack_c "
                         "uses, and %s); two copies of SQLite can corrupt a database (closing a "
                         "file in one drops the other's locks). Make both resolve to one "
                         "libsqlite3 (check LD_LIBRARY_PATH and LD_PRELOAD), or install "
                         "xetrack_c from source against the SQLite that Python's sqlite3 uses",
                         ours, libs.paths[i]);
            return -1;
        }
    }
    return 0;
}

static PyMethodDef sqlitelib_methods[] = {
    {"sqlite_library", sqlite_library, METH_NOARGS, sqlite_library__doc__},
    {NULL, NULL, 0, NULL},
};

int
xt_sqlitelib_exec(PyObject *module, xt_state *st)
{
    (void)st;
    if (check_library() < 0) {
        return -1;
    }
    return PyModule_AddFunctions(module, sqlitelib_methods);
}
