/* The module-level functions on a database path: read_columns(), read_rows() and
 * execute(), each of which opens an existing SQLite file for the one call (never creating
 * it), runs one statement and closes the file again; the connection helpers they share
 * (exec_simple, close_db, open_existing); and xt_reader_exec(), which adds these functions
 * to the module.  Needs no NumPy: read_columns() builds its arrays through
 * xt_read_columns_ex() in reader.c, and statements are prepared and bound there too. */
#include "reader.h"

#include "store.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

/* How long a connection opened here waits for another process's lock before failing. */
#define XT_BUSY_TIMEOUT_MS 30000

/* ------------------------------------------------------------------------------------ */
/* Connections opened by the module-level helpers                                       */

/* Run a statement that returns no rows (BEGIN, COMMIT, ...) with the GIL released. */
static int
exec_simple(xt_state *st, sqlite3 *db, const char *filename, const char *sql)
{
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    Py_END_ALLOW_THREADS
    if (rc != SQLITE_OK) {
        xt_raise_sqlite(st, rc, sqlite3_errmsg(db), filename, sql);
        return -1;
    }
    return 0;
}

static void
close_db(sqlite3 *db)
{
    if (db == NULL) {
        return;
    }
    Py_BEGIN_ALLOW_THREADS
    sqlite3_close_v2(db);
    xt_fork_call_close();
    Py_END_ALLOW_THREADS
}

/* Open the existing database `path` (str or os.PathLike); never creates a file.
 * *path_bytes receives the file-system encoded path (a new reference) used in messages. */
static int
open_existing(xt_state *st, PyObject *path, int writable, sqlite3 **db_out,
              PyObject **path_bytes)
{
    sqlite3 *db = NULL;
    PyObject *encoded = NULL;
    int rc, res = -1;
    /* NOMUTEX: the connection lives only for one call on one thread, so SQLite's
     * per-call connection mutex is pure overhead on the per-cell column calls. */
    int flags = (writable ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY) | SQLITE_OPEN_NOMUTEX;

    if (!PyUnicode_FSConverter(path, &encoded)) {
        goto done;
    }
    const char *filename = PyBytes_AS_STRING(encoded);
    /* A fork from Python waits until this connection is closed (close_db): see fork.c. */
    Py_BEGIN_ALLOW_THREADS
    xt_fork_call_open();
    rc = sqlite3_open_v2(filename, &db, flags, NULL);
    if (db == NULL) {
        xt_fork_call_close();
    }
    Py_END_ALLOW_THREADS
    if (rc != SQLITE_OK) {
        struct stat info;
        if (strcmp(filename, ":memory:") != 0 && stat(filename, &info) != 0 && errno == ENOENT) {
            PyObject *exc = PyObject_CallFunction(
                PyExc_FileNotFoundError, "isO", ENOENT,
                "No such database file (reading never creates one; check the path)", path);
            if (exc != NULL) {
                PyErr_SetObject(PyExc_FileNotFoundError, exc);
                Py_DECREF(exc);
            }
        }
        else {
            xt_raise_sqlite(st, rc, db ? sqlite3_errmsg(db) : NULL, filename, NULL);
        }
        goto done;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, XT_BUSY_TIMEOUT_MS);
    *db_out = db;
    db = NULL;
    *path_bytes = encoded;
    encoded = NULL;
    res = 0;
done:
    close_db(db);
    Py_XDECREF(encoded);
    return res;
}

/* ------------------------------------------------------------------------------------ */
/* Python functions                                                                     */

PyDoc_STRVAR(read_columns__doc__,
    "read_columns(path, sql, params=(), *, text_buffers=False, sort_by=None)\n--\n\n"
    "Run one SELECT on the SQLite file `path`, opened read-only, and return\n"
    "{column name: numpy.ndarray} in SELECT order.\n\n"
    "The file is never created or written; a missing file raises FileNotFoundError and a\n"
    "file that is not a SQLite database raises CorruptDatabaseError.  The statement reads\n"
    "one snapshot of the database, so rows committed by other processes meanwhile are either\n"
    "all in or all out.  `params` is a tuple or list of None, int, float, str or bytes\n"
    "values bound to the statement's placeholders.\n\n"
    "dtypes: INTEGER -> int64 (float64 with NaN when NULLs occur); REAL -> float64;\n"
    "TEXT -> object array of str/None; BLOB -> object array of bytes; columns mixing storage\n"
    "classes, all-NULL columns and empty results -> object arrays of the Python values.\n"
    "A repeated column name gets a '.1', '.2', ... suffix.\n\n"
    "With text_buffers=True a column of TEXT (and NULL) only comes back as the buffers of\n"
    "an Arrow large_string array, (offsets int64[n+1], data uint8[], validity bitmap or\n"
    "None), without creating a str per row; frame_from_columns() accepts them.\n\n"
    "sort_by names a result column to sort the rows by after reading, in C, as ORDER BY\n"
    "that column would (NULLs first, numbers, then text and blobs bytewise), keeping the\n"
    "table order of equal keys; rows already in order cost one comparison each.");

static PyObject *
read_columns(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"path", "sql", "params", "text_buffers", "sort_by", NULL};
    xt_state *st = xt_get_state(module);
    PyObject *path, *params = NULL, *path_bytes = NULL, *res = NULL, *columns = NULL;
    const char *sql;
    sqlite3 *db = NULL;
    const char *sort_by = NULL;
    int text_buffers = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Os|O$pz:read_columns", keywords, &path,
                                     &sql, &params, &text_buffers, &sort_by)) {
        goto done;
    }
    if (open_existing(st, path, 0, &db, &path_bytes) < 0) {
        goto done;
    }
    const char *filename = PyBytes_AS_STRING(path_bytes);
    if (exec_simple(st, db, filename, "BEGIN") < 0) {
        goto done;
    }
    columns = xt_read_columns_ex(st, db, filename, sql, params,
                                 text_buffers ? XT_READ_TEXT_BUFFERS : 0, sort_by);
    if (columns == NULL) {
        goto done;
    }
    if (exec_simple(st, db, filename, "COMMIT") < 0) {
        goto done;
    }
    res = Py_NewRef(columns);
done:
    Py_XDECREF(columns);
    Py_XDECREF(path_bytes);
    close_db(db); /* closing ends any transaction still open */
    return res;
}

static PyObject *
cell_object(sqlite3_stmt *stmt, int c)
{
    switch (sqlite3_column_type(stmt, c)) {
    case SQLITE_INTEGER:
        return PyLong_FromLongLong(sqlite3_column_int64(stmt, c));
    case SQLITE_FLOAT:
        return PyFloat_FromDouble(sqlite3_column_double(stmt, c));
    case SQLITE_TEXT: {
        const char *text = (const char *)sqlite3_column_text(stmt, c);
        if (text == NULL) {
            return PyErr_NoMemory();
        }
        return PyUnicode_DecodeUTF8(text, sqlite3_column_bytes(stmt, c), "replace");
    }
    case SQLITE_BLOB: {
        const void *blob = sqlite3_column_blob(stmt, c);
        return PyBytes_FromStringAndSize(blob, blob ? sqlite3_column_bytes(stmt, c) : 0);
    }
    default:
        return Py_NewRef(Py_None);
    }
}

PyDoc_STRVAR(read_rows__doc__,
    "read_rows(path, sql, params=())\n--\n\n"
    "Run one statement on the SQLite file `path`, opened read-only, and return\n"
    "(names, rows): the column names as a tuple and the rows as a list of tuples of\n"
    "None/int/float/str/bytes.  Needs no NumPy; meant for small results (schema, counts).\n"
    "Errors as read_columns().");

static PyObject *
read_rows(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"path", "sql", "params", NULL};
    xt_state *st = xt_get_state(module);
    PyObject *path, *params = NULL, *path_bytes = NULL, *res = NULL;
    PyObject *names = NULL, *rows = NULL, *row = NULL;
    const char *sql;
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Os|O:read_rows", keywords, &path, &sql,
                                     &params)) {
        goto done;
    }
    if (open_existing(st, path, 0, &db, &path_bytes) < 0) {
        goto done;
    }
    const char *filename = PyBytes_AS_STRING(path_bytes);
    if (xt_prepare_one(st, db, filename, sql, &stmt) < 0
        || xt_bind_params(st, db, stmt, params, filename, sql) < 0) {
        goto done;
    }
    rows = PyList_New(0);
    if (rows == NULL) {
        goto done;
    }
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        rc = sqlite3_step(stmt);
        Py_END_ALLOW_THREADS
        if (rc != SQLITE_ROW) {
            break;
        }
        int ncols = sqlite3_column_count(stmt);
        row = PyTuple_New(ncols);
        if (row == NULL) {
            goto done;
        }
        for (int c = 0; c < ncols; c++) {
            PyObject *value = cell_object(stmt, c);
            if (value == NULL) {
                goto done;
            }
            PyTuple_SET_ITEM(row, c, value);
        }
        if (PyList_Append(rows, row) < 0) {
            goto done;
        }
        Py_CLEAR(row);
    }
    if (rc != SQLITE_DONE) {
        xt_raise_sqlite(st, rc, sqlite3_errmsg(db), filename, sql);
        goto done;
    }
    int ncols = sqlite3_column_count(stmt);
    names = PyTuple_New(ncols);
    if (names == NULL) {
        goto done;
    }
    for (int c = 0; c < ncols; c++) {
        const char *name = sqlite3_column_name(stmt, c);
        PyObject *text = name ? PyUnicode_DecodeUTF8(name, (Py_ssize_t)strlen(name), "replace")
                              : PyErr_NoMemory();
        if (text == NULL) {
            goto done;
        }
        PyTuple_SET_ITEM(names, c, text);
    }
    res = PyTuple_Pack(2, names, rows);
done:
    Py_XDECREF(names);
    Py_XDECREF(rows);
    Py_XDECREF(row);
    Py_XDECREF(path_bytes);
    sqlite3_finalize(stmt);
    close_db(db);
    return res;
}

PyDoc_STRVAR(execute__doc__,
    "execute(path, sql, params=())\n--\n\n"
    "Run one writing statement (UPDATE, DELETE, ALTER TABLE, ...) on the existing SQLite\n"
    "file `path` in its own BEGIN IMMEDIATE transaction and return the number of rows it\n"
    "changed.  Waiting for other writers happens with the GIL released (up to 30 s).  The\n"
    "file is never created: a missing file raises FileNotFoundError.");

static PyObject *
execute(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"path", "sql", "params", NULL};
    xt_state *st = xt_get_state(module);
    PyObject *path, *params = NULL, *path_bytes = NULL, *res = NULL;
    const char *sql;
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    int rc, in_transaction = 0;
    sqlite3_int64 changes = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Os|O:execute", keywords, &path, &sql,
                                     &params)) {
        goto done;
    }
    if (open_existing(st, path, 1, &db, &path_bytes) < 0) {
        goto done;
    }
    const char *filename = PyBytes_AS_STRING(path_bytes);
    if (xt_prepare_one(st, db, filename, sql, &stmt) < 0
        || xt_bind_params(st, db, stmt, params, filename, sql) < 0) {
        goto done;
    }
    if (exec_simple(st, db, filename, "BEGIN IMMEDIATE") < 0) {
        goto done;
    }
    in_transaction = 1;
    Py_BEGIN_ALLOW_THREADS
    do {
        rc = sqlite3_step(stmt);
    } while (rc == SQLITE_ROW);
    changes = sqlite3_changes64(db);
    Py_END_ALLOW_THREADS
    if (rc != SQLITE_DONE) {
        xt_raise_sqlite(st, rc, sqlite3_errmsg(db), filename, sql);
        goto done;
    }
    sqlite3_finalize(stmt);
    stmt = NULL;
    if (exec_simple(st, db, filename, "COMMIT") < 0) {
        goto done;
    }
    in_transaction = 0;
    res = PyLong_FromLongLong((long long)changes);
done:
    sqlite3_finalize(stmt);
    if (in_transaction) {
        /* Keep the first error; the rollback's own outcome does not matter. */
        (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    Py_XDECREF(path_bytes);
    close_db(db);
    return res;
}

static PyMethodDef reader_functions[] = {
    {"read_columns", (PyCFunction)(void (*)(void))read_columns, METH_VARARGS | METH_KEYWORDS,
     read_columns__doc__},
    {"read_rows", (PyCFunction)(void (*)(void))read_rows, METH_VARARGS | METH_KEYWORDS,
     read_rows__doc__},
    {"execute", (PyCFunction)(void (*)(void))execute, METH_VARARGS | METH_KEYWORDS,
     execute__doc__},
    {NULL, NULL, 0, NULL},
};

int
xt_reader_exec(PyObject *module, xt_state *st)
{
    (void)st;
    return PyModule_AddFunctions(module, reader_functions);
}
