/* The module-level functions on a database path: read_columns(), read_rows() and
 * execute(), each of which opens an existing SQLite file for the one call (never creating
 * it), runs one statement and closes the file again; the connection helpers they share
 * (exec_simple, close_db, open_existing); what a connection opened for reading may do (the
 * read-only authorizer, read_policy) and how it opens a file in a place it cannot write
 * (the immutable fallback); and xt_reader_exec(), which adds these functions to the
 * module.  Needs no NumPy: read_columns() builds its arrays through xt_read_columns_ex()
 * in reader.c, and statements are prepared and bound there too.  Every statement run here
 * stops on Ctrl-C (interrupt.h). */
#include "reader.h"

#include "interrupt.h"
#include "store.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

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

/* ------------------------------------------------------------------------------------ */
/* What a connection opened for reading may do                                          */

/* The file is opened read-only, which stops writes to it; the authorizer also refuses what
 * would write elsewhere or change how the file is kept (ATTACH and VACUUM INTO create
 * files, PRAGMA journal_mode=DELETE rewrites the file's header), and it lets the error say
 * which action was refused instead of SQLite's "attempt to write a readonly database" or
 * "disk I/O error".  Allowed: SELECT and reading tables (READ), functions, recursive
 * CTEs, BEGIN/COMMIT/SAVEPOINT (they change nothing on a read-only connection), and the
 * PRAGMAs listed below. */
typedef struct {
    int action;       /* the first refused action code (SQLITE_INSERT, ...), or 0 */
    char what[160];   /* that action and its object, e.g. "INSERT into 'default'" */
} read_policy;

/* PRAGMAs whose argument names what to describe, not a new value: allowed with or
 * without one (also as table-valued functions, pragma_table_info('t')). */
static const char *const describing_pragmas[] = {
    "table_info", "table_xinfo", "table_list", "index_info", "index_xinfo", "index_list",
    "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check",
    "database_list", "collation_list", "function_list", "module_list", "pragma_list",
    "compile_options", NULL,
};

/* PRAGMAs that report a setting when given no argument and change it when given one. */
static const char *const setting_pragmas[] = {
    "analysis_limit", "application_id", "auto_vacuum", "automatic_index", "busy_timeout",
    "cache_size", "cache_spill", "cell_size_check", "data_version", "defer_foreign_keys",
    "encoding", "foreign_keys", "freelist_count", "hard_heap_limit",
    "ignore_check_constraints", "journal_mode", "journal_size_limit", "legacy_alter_table",
    "locking_mode", "max_page_count", "mmap_size", "page_count", "page_size", "query_only",
    "read_uncommitted", "recursive_triggers", "reverse_unordered_selects", "schema_version",
    "secure_delete", "soft_heap_limit", "synchronous", "temp_store", "threads",
    "trusted_schema", "user_version", "wal_autocheckpoint", NULL,
};

static int
listed(const char *const *names, const char *name)
{
    for (; *names != NULL; names++) {
        if (sqlite3_stricmp(*names, name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* What SQLite's authorizer action codes do, as the refusal names them (the object's name
 * follows).  Codes not listed here are allowed or handled on their own. */
static const char *
action_text(int action)
{
    switch (action) {
    case SQLITE_CREATE_INDEX:
    case SQLITE_CREATE_TEMP_INDEX:
        return "CREATE INDEX";
    case SQLITE_CREATE_TABLE:
    case SQLITE_CREATE_TEMP_TABLE:
        return "CREATE TABLE";
    case SQLITE_CREATE_TRIGGER:
    case SQLITE_CREATE_TEMP_TRIGGER:
        return "CREATE TRIGGER";
    case SQLITE_CREATE_VIEW:
    case SQLITE_CREATE_TEMP_VIEW:
        return "CREATE VIEW";
    case SQLITE_CREATE_VTABLE:
        return "CREATE VIRTUAL TABLE";
    case SQLITE_DROP_INDEX:
    case SQLITE_DROP_TEMP_INDEX:
        return "DROP INDEX";
    case SQLITE_DROP_TABLE:
    case SQLITE_DROP_TEMP_TABLE:
        return "DROP TABLE";
    case SQLITE_DROP_TRIGGER:
    case SQLITE_DROP_TEMP_TRIGGER:
        return "DROP TRIGGER";
    case SQLITE_DROP_VIEW:
    case SQLITE_DROP_TEMP_VIEW:
        return "DROP VIEW";
    case SQLITE_DROP_VTABLE:
        return "DROP VIRTUAL TABLE";
    case SQLITE_INSERT:
        return "INSERT into";
    case SQLITE_UPDATE:
        return "UPDATE of";
    case SQLITE_DELETE:
        return "DELETE from";
    case SQLITE_DETACH:
        return "DETACH";
    case SQLITE_REINDEX:
        return "REINDEX";
    case SQLITE_ANALYZE:
        return "ANALYZE";
    default:
        return "a statement that writes";
    }
}

/* Record the first refusal, formatted, and deny. */
static int refuse(read_policy *policy, int action, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static int
refuse(read_policy *policy, int action, const char *format, ...)
{
    if (policy->action == 0) { /* keep the first: later ones follow from it */
        va_list args;
        va_start(args, format);
        vsnprintf(policy->what, sizeof(policy->what), format, args);
        va_end(args);
        policy->action = action;
    }
    return SQLITE_DENY;
}

/* SQLite's authorizer, called while statements are prepared (and, for VACUUM, run). */
static int
authorize_read(void *arg, int action, const char *arg1, const char *arg2, const char *db_name,
               const char *trigger)
{
    read_policy *policy = arg;
    (void)db_name;
    (void)trigger;

    switch (action) {
    case SQLITE_SELECT:
    case SQLITE_READ:
    case SQLITE_FUNCTION:
    case SQLITE_RECURSIVE:
    case SQLITE_TRANSACTION:
    case SQLITE_SAVEPOINT:
        return SQLITE_OK;
    case SQLITE_PRAGMA:
        if (arg1 != NULL && (listed(describing_pragmas, arg1)
                             || (arg2 == NULL && listed(setting_pragmas, arg1)))) {
            return SQLITE_OK;
        }
        if (arg2 != NULL) {
            return refuse(policy, action, "PRAGMA %s = %s (it changes a setting)",
                          arg1 ? arg1 : "?", arg2);
        }
        return refuse(policy, action, "PRAGMA %s (not a read-only pragma)", arg1 ? arg1 : "?");
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_DELETE:
        /* Changes of the schema table come from statements SQLite parses for itself: the
         * UPDATE declaring an eponymous virtual table (pragma_table_info(...) in a
         * SELECT), which never runs, or the rows of a CREATE or DROP, which is refused by
         * its own action code.  User SQL cannot change that table (it needs PRAGMA
         * writable_schema=ON, refused above). */
        if (arg1 != NULL
            && (strcmp(arg1, "sqlite_master") == 0 || strcmp(arg1, "sqlite_temp_master") == 0)) {
            return SQLITE_OK;
        }
        break;
    case SQLITE_CREATE_TABLE:
        /* ANALYZE creates its statistics table first; let the refusal name ANALYZE (user
         * SQL cannot create a table named sqlite_...). */
        if (arg1 != NULL && strncmp(arg1, "sqlite_stat", 11) == 0) {
            return SQLITE_OK;
        }
        break;
    case SQLITE_ATTACH:
        /* ATTACH creates a missing file; VACUUM attaches its target (VACUUM INTO 'file'),
         * or a temporary database for a plain VACUUM, when it runs. */
        if (arg1 != NULL && arg1[0] != '\0') {
            return refuse(policy, action, "ATTACH or VACUUM INTO of the file '%s'", arg1);
        }
        return refuse(policy, action, "VACUUM (it rewrites the file)");
    case SQLITE_ALTER_TABLE:
        return refuse(policy, action, "ALTER TABLE '%s'", arg2 ? arg2 : "?");
    default:
        break;
    }
    if (arg1 != NULL) {
        return refuse(policy, action, "%s '%s'", action_text(action), arg1);
    }
    return refuse(policy, action, "%s", action_text(action));
}

/* Raise the refusal the authorizer recorded: a StorageError whose sqlite_code is
 * SQLITE_AUTH and whose `refused` attribute names the action, e.g.
 * "PRAGMA journal_mode = DELETE (it changes a setting)". */
static void
raise_refused(xt_state *st, const read_policy *policy, const char *filename, const char *sql)
{
    PyObject *message = NULL, *exc = NULL, *value = NULL;

    message = PyUnicode_FromFormat("refused %s: the database '%s' is opened read-only, for "
                                   "statements that only read; while running: %.200s%s",
                                   policy->what, filename, sql, strlen(sql) > 200 ? "..." : "");
    if (message == NULL) {
        goto done;
    }
    exc = PyObject_CallOneArg(st->StorageError, message);
    if (exc == NULL) {
        goto done;
    }
    value = PyLong_FromLong(SQLITE_AUTH);
    if (value == NULL || PyObject_SetAttrString(exc, "sqlite_code", value) < 0) {
        goto done;
    }
    Py_CLEAR(value);
    value = PyUnicode_DecodeFSDefault(filename);
    if (value == NULL || PyObject_SetAttrString(exc, "filename", value) < 0) {
        goto done;
    }
    Py_CLEAR(value);
    value = PyUnicode_DecodeUTF8(sql, (Py_ssize_t)strlen(sql), "replace");
    if (value == NULL || PyObject_SetAttrString(exc, "sql", value) < 0) {
        goto done;
    }
    Py_CLEAR(value);
    value = PyUnicode_DecodeUTF8(policy->what, (Py_ssize_t)strlen(policy->what), "replace");
    if (value == NULL || PyObject_SetAttrString(exc, "refused", value) < 0) {
        goto done;
    }
    PyErr_SetObject(st->StorageError, exc);
done:
    Py_XDECREF(message);
    Py_XDECREF(exc);
    Py_XDECREF(value);
    assert(PyErr_Occurred());
}

/* After a read failed: when the authorizer refused something, replace the StorageError
 * SQLite's "not authorized" became with one naming what was refused.  A KeyboardInterrupt
 * or another exception is left as it is. */
static void
explain_refusal(xt_state *st, const read_policy *policy, const char *filename, const char *sql)
{
    assert(PyErr_Occurred());
    if (policy->action != 0 && PyErr_ExceptionMatches(st->StorageError)) {
        PyErr_Clear();
        raise_refused(st, policy, filename, sql);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Opening a file for reading where it cannot be written                                */

/* True when opening `db` for reading failed only because SQLite cannot create or write
 * the WAL index (-shm) next to a WAL-mode file: a read-only file system, or a directory
 * the process may not write. */
static int
wal_index_unavailable(int rc)
{
    return (rc & 0xff) == SQLITE_CANTOPEN || rc == SQLITE_READONLY_DIRECTORY
           || rc == SQLITE_READONLY_CANTINIT;
}

/* `filename` as an SQLite URI opening it immutable (no locks, no -shm, no WAL: SQLite
 * trusts that nobody changes the file while it is open); NULL when out of memory. */
static char *
immutable_uri(const char *filename)
{
    static const char hex[] = "0123456789ABCDEF";
    static const char suffix[] = "?immutable=1";
    size_t n = strlen(filename);
    char *uri = malloc(3 * n + sizeof("file://") + sizeof(suffix));
    if (uri == NULL) {
        return NULL;
    }
    /* An absolute path gets an empty authority ("file:///tmp/x.db"), so that a path
     * starting with "//" is not read as a host name. */
    char *p = uri + sprintf(uri, "%s", filename[0] == '/' ? "file://" : "file:");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)filename[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
            || c == '/' || c == '.' || c == '_' || c == '-' || c == '~') {
            *p++ = (char)c;
        }
        else {
            *p++ = '%';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        }
    }
    memcpy(p, suffix, sizeof(suffix));
    return uri;
}

/* Bytes in the companion file `filename``suffix` ("-wal", "-journal"): 0 when there is
 * none or it is empty, -1 when it cannot be looked at. */
static long long
companion_size(const char *filename, const char *suffix)
{
    size_t n = strlen(filename), k = strlen(suffix);
    char *companion = malloc(n + k + 1);
    struct stat info;
    long long size = -1;

    if (companion == NULL) {
        return -1;
    }
    memcpy(companion, filename, n);
    memcpy(companion + n, suffix, k + 1);
    if (stat(companion, &info) == 0) {
        size = (long long)info.st_size;
    }
    else if (errno == ENOENT) {
        size = 0;
    }
    free(companion);
    return size;
}

/* Open `filename` for reading; never creates a file.  A WAL-mode file needs its WAL index
 * (-shm), which SQLite creates next to it, even to read: where that cannot be done (a
 * read-only mount, a directory this process may not write) and nothing waits to be merged
 * into the file (no write-ahead log, or an empty one, and no rollback journal: everything
 * is in the file), the file is opened immutable instead.  When a non-empty "-wal" or
 * "-journal" is there, only a connection that can write may merge it: *pending receives
 * that suffix and SQLITE_CANTOPEN is returned.  The GIL must be released; *db_out is set
 * (possibly to a failed connection) or NULL. */
static int
open_for_reading(const char *filename, sqlite3 **db_out, const char **pending)
{
    /* NOMUTEX: the connection lives only for one call on one thread, so SQLite's
     * per-call connection mutex is pure overhead on the per-cell column calls. */
    int flags = SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX;
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(filename, &db, flags, NULL);

    *pending = NULL;
    if (rc == SQLITE_OK) {
        sqlite3_extended_result_codes(db, 1);
        sqlite3_busy_timeout(db, XT_BUSY_TIMEOUT_MS);
        /* Starting a read transaction is what needs the WAL index.  Other failures (a
         * file that is not a database, a lock held too long) are left for the statement
         * itself to report. */
        int probe = sqlite3_exec(db, "PRAGMA schema_version", NULL, NULL, NULL);
        if (wal_index_unavailable(probe) && strcmp(filename, ":memory:") != 0) {
            if (companion_size(filename, "-wal") != 0) {
                *pending = "-wal";
                rc = SQLITE_CANTOPEN;
            }
            else if (companion_size(filename, "-journal") != 0) {
                *pending = "-journal";
                rc = SQLITE_CANTOPEN;
            }
            else {
                char *uri = immutable_uri(filename);
                sqlite3_close_v2(db);
                db = NULL;
                rc = uri ? sqlite3_open_v2(uri, &db, flags | SQLITE_OPEN_URI, NULL) : SQLITE_NOMEM;
                free(uri);
                if (rc == SQLITE_OK) {
                    sqlite3_extended_result_codes(db, 1);
                }
            }
        }
    }
    *db_out = db;
    return rc;
}

/* Open the existing database `path` (str or os.PathLike); never creates a file.
 * *path_bytes receives the file-system encoded path (a new reference) used in messages.
 * Opened for reading (writable=0), the connection gets the read-only authorizer, which
 * records what it refused in *policy. */
static int
open_existing(xt_state *st, PyObject *path, int writable, read_policy *policy,
              sqlite3 **db_out, PyObject **path_bytes)
{
    sqlite3 *db = NULL;
    PyObject *encoded = NULL;
    int rc, res = -1;
    const char *pending = NULL;

    if (!PyUnicode_FSConverter(path, &encoded)) {
        goto done;
    }
    const char *filename = PyBytes_AS_STRING(encoded);
    /* A fork from Python waits until this connection is closed (close_db): see fork.c. */
    Py_BEGIN_ALLOW_THREADS
    xt_fork_call_open();
    if (writable) {
        rc = sqlite3_open_v2(filename, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    }
    else {
        rc = open_for_reading(filename, &db, &pending);
    }
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
        else if (pending != NULL) {
            PyErr_Format(st->StorageError,
                         "cannot read '%s' here: its %s '%s%s' holds changes not yet merged "
                         "into the file (a writer is running, or stopped before it closed "
                         "the file), and merging them needs write access to the file's "
                         "directory, which this process lacks (a read-only file system or "
                         "permissions); open and close the file once where it can be written "
                         "(a Tracker, or: sqlite3 '%s' 'PRAGMA wal_checkpoint'), or copy both "
                         "files to a writable directory and read the copy",
                         filename,
                         strcmp(pending, "-wal") == 0 ? "write-ahead log" : "rollback journal",
                         filename, pending, filename);
        }
        else {
            xt_raise_sqlite(st, rc, db ? sqlite3_errmsg(db) : NULL, filename, NULL);
        }
        goto done;
    }
    if (writable) {
        sqlite3_extended_result_codes(db, 1);
        sqlite3_busy_timeout(db, XT_BUSY_TIMEOUT_MS);
    }
    else {
        policy->action = 0;
        policy->what[0] = '\0';
        sqlite3_set_authorizer(db, authorize_read, policy);
    }
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
/* The parallel read: one snapshot on several connections                              */

/* Rows each thread of a parallel read gets at least; fewer threads are used otherwise. */
#define XT_PARALLEL_MIN_ROWS 65536
/* The most threads a read uses, and how often it tries to find one snapshot for them. */
#define XT_PARALLEL_MAX_THREADS 16
#define XT_PARALLEL_TRIES 3

/* For the tests (_core._parallel_reads, _core._parallel_pause): snapshots taken again
 * because a commit fell between them, and a pause after the first connection's snapshot
 * that lets one fall there. */
static _Atomic long long snapshot_retries;
static _Atomic int snapshot_pause_us;

/* `sql`'s first row as two INTEGERs (0), or -1 (an error, no row, a NULL).  GIL released. */
static int
two_integers(sqlite3 *db, const char *sql, int64_t *a, int64_t *b)
{
    sqlite3_stmt *stmt = NULL;
    int res = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK
        && sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_count(stmt) >= 1
        && sqlite3_column_type(stmt, 0) == SQLITE_INTEGER
        && (b == NULL || sqlite3_column_type(stmt, 1) == SQLITE_INTEGER)) {
        *a = sqlite3_column_int64(stmt, 0);
        if (b != NULL) {
            *b = sqlite3_column_int64(stmt, 1);
        }
        res = 0;
    }
    sqlite3_finalize(stmt);
    return res;
}

/* Put `db` (main, with its deferred BEGIN) and the others of dbs[1..k) in read transactions
 * on one snapshot, and read the table's rowid span there with `span_sql` (min, max).  The
 * snapshot is one when no commit happened between the first and the last connection's
 * first read: `sentinel`, a connection of its own outside any transaction, reads
 * PRAGMA data_version before and after, which changes when any other connection commits.
 * Tried a few times under a steady writer.  0, or -1 (no such snapshot, or the span
 * cannot be read: a view, a table without rowids, an empty table).  GIL released. */
static int
one_snapshot(sqlite3 *sentinel, sqlite3 **dbs, int k, const char *span_sql, int64_t *lo,
             int64_t *hi)
{
    int pause_us = atomic_load(&snapshot_pause_us);
    for (int attempt = 0; attempt < XT_PARALLEL_TRIES; attempt++) {
        int64_t before, after, a, b;
        int same = two_integers(sentinel, "PRAGMA data_version", &before, NULL) == 0;
        for (int p = 0; same && p < k; p++) {
            same = (p == 0 || sqlite3_exec(dbs[p], "BEGIN", NULL, NULL, NULL) == SQLITE_OK)
                   && two_integers(dbs[p], span_sql, &a, &b) == 0
                   && (p == 0 || (a == *lo && b == *hi));
            if (same && p == 0) {
                *lo = a;
                *hi = b;
                if (pause_us > 0) { /* the tests' window for a commit between snapshots */
                    struct timespec pause = {pause_us / 1000000, (pause_us % 1000000) * 1000L};
                    nanosleep(&pause, NULL);
                }
            }
        }
        if (same && two_integers(sentinel, "PRAGMA data_version", &after, NULL) == 0
            && after == before) {
            return 0;
        }
        /* Start over: every read transaction ends, and the main connection's BEGIN is
         * taken again (its snapshot is taken by its next read). */
        atomic_fetch_add(&snapshot_retries, 1);
        for (int p = 0; p < k; p++) {
            sqlite3_exec(dbs[p], "ROLLBACK", NULL, NULL, NULL);
        }
        if (sqlite3_exec(dbs[0], "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
            return -1;
        }
    }
    return -1;
}

/* read_columns' parallel path: `threads` connections (`db`, in its deferred BEGIN, and new
 * ones) each scan a rowid range of one snapshot.  Returns the columns; or NULL with an
 * exception; or NULL without one when the read is not worth splitting or cannot be (too
 * few rows, no common snapshot, no connection to be had), and then `db` is still in its
 * transaction, for the caller's single scan. */
static PyObject *
read_parallel(xt_state *st, sqlite3 *db, const char *filename, int threads,
              const char *span_sql, const char *range_sql, int flags, const char *sort_by)
{
    sqlite3 *dbs[XT_PARALLEL_MAX_THREADS] = {db}, *sentinel = NULL;
    int64_t bounds[XT_PARALLEL_MAX_THREADS + 1], lo = 0, hi = -1;
    int opened = 1, ok = 0, k = threads < XT_PARALLEL_MAX_THREADS ? threads
                                                                    : XT_PARALLEL_MAX_THREADS;
    const char *pending;
    PyObject *res = NULL;

    Py_BEGIN_ALLOW_THREADS
    /* Worth it only for a big table: its span, read outside the snapshot, is a guess. */
    int64_t guess_lo, guess_hi;
    if (two_integers(db, span_sql, &guess_lo, &guess_hi) == 0
        && guess_hi - guess_lo + 1 >= 2 * (int64_t)XT_PARALLEL_MIN_ROWS) {
        int64_t by_rows = (guess_hi - guess_lo + 1) / XT_PARALLEL_MIN_ROWS;
        k = by_rows < k ? (int)by_rows : k;
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL); /* the guess's read ends */
        ok = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK;
        xt_fork_call_open();
        ok = ok && open_for_reading(filename, &sentinel, &pending) == SQLITE_OK;
        while (ok && opened < k) {
            xt_fork_call_open();
            ok = open_for_reading(filename, &dbs[opened], &pending) == SQLITE_OK;
            if (ok) {
                opened++;
            }
            else {
                sqlite3_close_v2(dbs[opened]);
                xt_fork_call_close();
            }
        }
        ok = ok && one_snapshot(sentinel, dbs, k, span_sql, &lo, &hi) == 0
             && hi - lo + 1 >= 2 * (int64_t)XT_PARALLEL_MIN_ROWS;
        if (sentinel != NULL) {
            sqlite3_close_v2(sentinel);
        }
        xt_fork_call_close();
        if (ok) {
            /* Equal rowid ranges; the last ends past the largest rowid. */
            int64_t span = hi - lo + 1;
            for (int p = 0; p < k; p++) {
                bounds[p] = lo + span / k * p;
            }
            bounds[k] = hi + 1;
        }
    }
    Py_END_ALLOW_THREADS
    if (ok) {
        res = xt_read_columns_ranges(st, dbs, k, filename, range_sql, bounds, flags, sort_by);
    }
    Py_BEGIN_ALLOW_THREADS
    for (int p = 1; p < opened; p++) {
        sqlite3_close_v2(dbs[p]);
        xt_fork_call_close();
    }
    Py_END_ALLOW_THREADS
    return res;
}

/* ------------------------------------------------------------------------------------ */
/* Python functions                                                                     */

PyDoc_STRVAR(read_columns__doc__,
    "read_columns(path, sql, params=(), *, text_buffers=False, sort_by=None,\n"
    "             rows_hint_sql=None, threads=1, span_sql=None, range_sql=None)\n--\n\n"
    "Run one SELECT on the SQLite file `path`, opened read-only, and return\n"
    "{column name: numpy.ndarray} in SELECT order.\n\n"
    "The file is never created or written; a missing file raises FileNotFoundError and a\n"
    "file that is not a SQLite database raises CorruptDatabaseError.  The statement reads\n"
    "one snapshot of the database, so rows committed by other processes meanwhile are either\n"
    "all in or all out.  `params` is a tuple or list of None, int, float, str or bytes\n"
    "values bound to the statement's placeholders.\n\n"
    "Only statements that read may run: anything else (INSERT, ATTACH, VACUUM, a PRAGMA\n"
    "that sets a value or is not in the read-only list) raises StorageError with\n"
    "sqlite_code 23 (SQLITE_AUTH) and a `refused` attribute naming what was refused.\n"
    "Ctrl-C stops a long statement within a fraction of a second (KeyboardInterrupt).  A\n"
    "file in a place this process cannot write (a read-only mount) is read as it is when\n"
    "it has no write-ahead log to merge; with one, StorageError says what to do.\n\n"
    "dtypes: INTEGER -> int64 (float64 with NaN when NULLs occur); REAL -> float64;\n"
    "TEXT -> object array of str/None; BLOB -> object array of bytes; columns mixing storage\n"
    "classes, all-NULL columns and empty results -> object arrays of the Python values.\n"
    "A repeated column name gets a '.1', '.2', ... suffix.\n\n"
    "With text_buffers=True a column of TEXT (and NULL) only comes back as the buffers of\n"
    "an Arrow large_string array, (offsets int64[n+1], data uint8[], validity bitmap or\n"
    "None), without creating a str per row; frame_from_columns() accepts them.\n\n"
    "sort_by names a result column to sort the rows by after reading, in C, as ORDER BY\n"
    "that column would (NULLs first, numbers, then text and blobs bytewise), keeping the\n"
    "table order of equal keys; rows already in order cost one comparison each.\n\n"
    "With threads > 1, span_sql (a SELECT of the table's smallest and largest rowid) and\n"
    "range_sql (the same rows as sql, for rowids in [?1, ?2), in rowid order), a big table\n"
    "is read by up to `threads` threads, each on a connection of its own and a range of\n"
    "rowids, all in one snapshot; the result is the one sql gives.  Small tables, views\n"
    "and tables without rowids are read by one thread.\n\n"
    "rows_hint_sql is a SELECT run first, in the same snapshot, whose first value estimates\n"
    "the number of rows (e.g. the span of a table's rowids): the read's buffers are then\n"
    "allocated once.  Only speed depends on it; a failing hint statement is ignored.");

static PyObject *
read_columns(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"path",    "sql",           "params",  "text_buffers",
                               "sort_by", "rows_hint_sql", "threads", "span_sql",
                               "range_sql", NULL};
    xt_state *st = xt_get_state(module);
    PyObject *path, *params = NULL, *path_bytes = NULL, *res = NULL, *columns = NULL;
    const char *sql;
    sqlite3 *db = NULL;
    const char *sort_by = NULL, *rows_hint_sql = NULL, *span_sql = NULL, *range_sql = NULL;
    int text_buffers = 0, threads = 1;
    read_policy policy;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Os|O$pzzizz:read_columns", keywords,
                                     &path, &sql, &params, &text_buffers, &sort_by,
                                     &rows_hint_sql, &threads, &span_sql, &range_sql)) {
        goto done;
    }
    if (threads < 1) {
        PyErr_Format(PyExc_ValueError, "threads must be 1 or more, not %d", threads);
        goto done;
    }
    if (open_existing(st, path, 0, &policy, &db, &path_bytes) < 0) {
        goto done;
    }
    const char *filename = PyBytes_AS_STRING(path_bytes);
    if (exec_simple(st, db, filename, "BEGIN") < 0) {
        goto done;
    }
    int flags = text_buffers ? XT_READ_TEXT_BUFFERS : 0;
    if (threads > 1 && span_sql != NULL && range_sql != NULL) {
        columns = read_parallel(st, db, filename, threads, span_sql, range_sql, flags, sort_by);
    }
    if (columns == NULL && !PyErr_Occurred()) {
        columns = xt_read_columns_hinted(st, db, filename, sql, params, flags, sort_by,
                                         rows_hint_sql);
    }
    if (columns == NULL) {
        explain_refusal(st, &policy, filename, sql);
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
    int rc, watching = 0;
    read_policy policy;
    xt_interrupt_watch watch;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Os|O:read_rows", keywords, &path, &sql,
                                     &params)) {
        goto done;
    }
    if (open_existing(st, path, 0, &policy, &db, &path_bytes) < 0) {
        goto done;
    }
    const char *filename = PyBytes_AS_STRING(path_bytes);
    if (xt_prepare_one(st, db, filename, sql, &stmt) < 0) {
        explain_refusal(st, &policy, filename, sql);
        goto done;
    }
    if (xt_bind_params(st, db, stmt, params, filename, sql) < 0) {
        goto done;
    }
    rows = PyList_New(0);
    if (rows == NULL) {
        goto done;
    }
    xt_watch_interrupts(db, &watch);
    watching = 1;
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
    xt_unwatch_interrupts(db);
    watching = 0;
    if (watch.raised) {
        goto done; /* Ctrl-C: the KeyboardInterrupt is set */
    }
    if (rc != SQLITE_DONE) {
        xt_raise_sqlite(st, rc, sqlite3_errmsg(db), filename, sql);
        explain_refusal(st, &policy, filename, sql); /* VACUUM is refused as it runs */
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
    if (watching) {
        xt_unwatch_interrupts(db);
    }
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
    if (open_existing(st, path, 1, NULL, &db, &path_bytes) < 0) {
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
    xt_interrupt_watch watch;
    xt_watch_interrupts(db, &watch);
    Py_BEGIN_ALLOW_THREADS
    do {
        rc = sqlite3_step(stmt);
    } while (rc == SQLITE_ROW);
    changes = sqlite3_changes64(db);
    Py_END_ALLOW_THREADS
    xt_unwatch_interrupts(db);
    if (watch.raised) {
        goto done; /* Ctrl-C: the KeyboardInterrupt is set; the statement is rolled back */
    }
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

PyDoc_STRVAR(parallel_reads__doc__,
    "_parallel_reads($module, /)\n--\n\n"
    "Private (tests): (reads, parts, retries), the parallel reads read_columns began in\n"
    "this process, the rowid ranges they were split into, and the times their connections'\n"
    "snapshots were taken again because a commit fell between them, in all.");

static PyObject *
parallel_reads(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    long long reads, parts;
    xt_parallel_stats(&reads, &parts);
    return Py_BuildValue("(LLL)", reads, parts, atomic_load(&snapshot_retries));
}

PyDoc_STRVAR(parallel_pause__doc__,
    "_parallel_pause($module, microseconds, /)\n--\n\n"
    "Private (tests): pause this long after a parallel read's first connection took its\n"
    "snapshot and before the others take theirs (0: no pause, the default).");

static PyObject *
parallel_pause(PyObject *module, PyObject *arg)
{
    (void)module;
    long us = PyLong_AsLong(arg);
    if (us == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (us < 0 || us > 10000000) {
        PyErr_SetString(PyExc_ValueError, "the pause must be 0 to 10,000,000 microseconds");
        return NULL;
    }
    atomic_store(&snapshot_pause_us, (int)us);
    Py_RETURN_NONE;
}

static PyMethodDef reader_functions[] = {
    {"_parallel_reads", parallel_reads, METH_NOARGS, parallel_reads__doc__},
    {"_parallel_pause", parallel_pause, METH_O, parallel_pause__doc__},
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
