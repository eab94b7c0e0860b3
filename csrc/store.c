/* Store: SQLite connections, statements, transactions and the async writer. */
#include "store.h"

static const char *
advice_for(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
        return "the file is not a SQLite database or is damaged; point db= at another path";
    case SQLITE_FULL:
        return "the disk is full; free space, rows already committed are kept";
    case SQLITE_CANTOPEN:
        return "check that the path exists and is readable (and writable for a Tracker)";
    case SQLITE_READONLY:
        return "the file or its directory is read-only; a Tracker needs write access";
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return "another writer held the database past the busy timeout; retry or raise busy_timeout";
    case SQLITE_IOERR:
        return "the operating system reported an I/O error";
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return "permission denied";
    default:
        return NULL;
    }
}

PyObject *
xt_raise_sqlite(xt_state *st, int rc, const char *errmsg, const char *filename, const char *sql)
{
    PyObject *exc_type = ((rc & 0xff) == SQLITE_NOTADB || (rc & 0xff) == SQLITE_CORRUPT)
                             ? st->CorruptDatabaseError
                             : st->StorageError;
    const char *advice = advice_for(rc);
    PyObject *message = NULL, *exc = NULL, *value = NULL;

    if (errmsg == NULL) {
        errmsg = sqlite3_errstr(rc);
    }
    message = PyUnicode_FromFormat("%s (SQLite code %d) in database '%s'%s%.200s%s%s%s", errmsg, rc,
                                   filename ? filename : "?", sql ? " while running: " : "",
                                   sql ? sql : "", (sql && strlen(sql) > 200) ? "..." : "",
                                   advice ? "; " : "", advice ? advice : "");
    if (message == NULL) {
        goto done;
    }
    exc = PyObject_CallOneArg(exc_type, message);
    if (exc == NULL) {
        goto done;
    }
    value = PyLong_FromLong(rc);
    if (value == NULL || PyObject_SetAttrString(exc, "sqlite_code", value) < 0) {
        goto done;
    }
    Py_CLEAR(value);
    value = PyUnicode_FromString(filename ? filename : "");
    if (value == NULL || PyObject_SetAttrString(exc, "filename", value) < 0) {
        goto done;
    }
    Py_CLEAR(value);
    value = sql ? PyUnicode_FromString(sql) : Py_NewRef(Py_None);
    if (value == NULL || PyObject_SetAttrString(exc, "sql", value) < 0) {
        goto done;
    }
    PyErr_SetObject(exc_type, exc);
done:
    Py_XDECREF(message);
    Py_XDECREF(exc);
    Py_XDECREF(value);
    assert(PyErr_Occurred());
    return NULL;
}
