/* Result cache, store: the SQLite file of pickled results (<directory>/cache.db, WAL)
 * shared by threads and processes; opening and checking the file, reopening after fork,
 * the MAC that authenticates each entry, get and put for Tracker.track, and the queries
 * behind the ResultCache methods.  The ResultCache type is in cache_type.c, key encoding
 * in cache_key.c, single flight in cache_flight.c. */
#include "cache_internal.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ================================================================================== */
/* The store: <directory>/cache.db                                                    */
/* ================================================================================== */

/* PRAGMA application_id of cache files ("XTC1"): tells them from other SQLite files,
 * such as diskcache's, which also names its file cache.db. */
#define CACHE_APPLICATION_ID 0x58544331

/* Failures of our own, carried in xt_error.rc next to SQLite's codes. */
#define ERR_FOREIGN (-1001)
#define ERR_CLOSED (-1002)

/* user_version 1: no `mac` column (files of versions before authentication); 2: `mac`
 * holds the entry's HMAC-SHA256, or NULL when written without a key. */
static const char schema_sql[] =
    "CREATE TABLE cache (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL, "
    "track_id TEXT NOT NULL, created TEXT NOT NULL, function_name TEXT NOT NULL DEFAULT '', "
    "mac BLOB);"
    "CREATE INDEX cache_track_id ON cache (track_id);"
    "PRAGMA application_id = 1481917233;" /* CACHE_APPLICATION_ID */
    "PRAGMA user_version = 2;";
static const char has_mac_sql[] =
    "SELECT count(*) FROM pragma_table_info('cache') WHERE name = 'mac'";
static const char add_mac_sql[] = "ALTER TABLE cache ADD COLUMN mac BLOB; PRAGMA user_version = 2;";

/* Entries are read as (value, track_id, created, function_name, mac[, key]); a file
 * without the `mac` column (read-only, older version) reads NULL in its place. */
#define ENTRY_COLUMNS "value, track_id, created, function_name, "
static const char get_sql[] = "SELECT " ENTRY_COLUMNS "mac FROM cache WHERE key = ?1";
static const char get_sql_no_mac[] = "SELECT " ENTRY_COLUMNS "NULL FROM cache WHERE key = ?1";
const char xt_cache_scan_sql[] =
    "SELECT " ENTRY_COLUMNS "mac, key FROM cache WHERE key > ?1 ORDER BY key LIMIT ?2";
const char xt_cache_scan_sql_no_mac[] =
    "SELECT " ENTRY_COLUMNS "NULL, key FROM cache WHERE key > ?1 ORDER BY key LIMIT ?2";
static const char insert_sql[] =
    "INSERT INTO cache (key, value, track_id, created, function_name, mac) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (key) DO NOTHING";
static const char replace_sql[] =
    "INSERT OR REPLACE INTO cache (key, value, track_id, created, function_name, mac) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

static void
set_err(xt_error *err, int rc, const char *msg, const char *sql)
{
    err->rc = rc;
    snprintf(err->msg, sizeof(err->msg), "%s", msg ? msg : (rc > 0 ? sqlite3_errstr(rc) : ""));
    snprintf(err->sql, sizeof(err->sql), "%s", sql ? sql : "");
}

static void
set_db_err(ResultCache *c, xt_error *err, int rc, const char *sql)
{
    set_err(err, rc, c->db ? sqlite3_errmsg(c->db) : NULL, sql);
}

static int
exec_sql(ResultCache *c, const char *sql, xt_error *err)
{
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        set_db_err(c, err, rc, sql);
        return -1;
    }
    return 0;
}

static int
query_int(ResultCache *c, const char *sql, int64_t *out, xt_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(c->db, sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(stmt, 0);
            rc = SQLITE_OK;
        }
    }
    if (rc != SQLITE_OK) {
        set_db_err(c, err, rc, sql);
    }
    sqlite3_finalize(stmt);
    return rc == SQLITE_OK ? 0 : -1;
}

static int
prepare(ResultCache *c, const char *sql, sqlite3_stmt **stmt, xt_error *err)
{
    int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, NULL);
    if (rc != SQLITE_OK) {
        set_db_err(c, err, rc, sql);
        return -1;
    }
    return 0;
}

/* Forget the connection without touching it (after fork it is the parent's). */
static void
forget_db(ResultCache *c)
{
    c->db = NULL;
    c->get_stmt = c->insert_stmt = c->replace_stmt = NULL;
}

void
xt_cache_close_db(ResultCache *c)
{
    sqlite3_finalize(c->get_stmt);
    sqlite3_finalize(c->insert_stmt);
    sqlite3_finalize(c->replace_stmt);
    sqlite3_close_v2(c->db);
    forget_db(c);
}

/* Files of versions before authentication have no `mac` column: add it, in a write
 * transaction so that racing processes add it once.  A file opened read-only is left as
 * it is and read with NULL MACs.  Pure C, db_lock held. */
static int
ensure_mac_column(ResultCache *c, xt_error *err)
{
    int64_t found = 0;
    if (query_int(c, has_mac_sql, &found, err) < 0) {
        return -1;
    }
    if (found == 0 && c->mode != XT_CACHE_MODE_READ) {
        if (exec_sql(c, "BEGIN IMMEDIATE", err) < 0) {
            return -1;
        }
        if (query_int(c, has_mac_sql, &found, err) < 0
            || (found == 0 && exec_sql(c, add_mac_sql, err) < 0)
            || exec_sql(c, "COMMIT", err) < 0) {
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
        found = 1;
    }
    c->has_mac_column = found > 0;
    return 0;
}

/* fork.c calls this in the child of a fork from Python, with db_lock held since before the
 * fork, so the copied connection is idle: closing it (without a checkpoint) writes nothing
 * the parent shares, and the connection opened on first use takes real locks of its own
 * (store.c's store_drop_in_child says more). */
void
xt_cache_drop_in_child(void *owner)
{
    ResultCache *c = owner;
    if (c->db != NULL) {
        sqlite3_db_config(c->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)NULL);
        xt_cache_close_db(c);
    }
}

/* Open and check the file; create the table if it is new.  Pure C, db_lock held. */
static int
open_db(ResultCache *c, xt_error *err)
{
    int flags = SQLITE_OPEN_NOMUTEX
                | (c->mode == XT_CACHE_MODE_READ    ? SQLITE_OPEN_READONLY
                   : c->mode == XT_CACHE_MODE_WRITE ? SQLITE_OPEN_READWRITE
                                                    : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    int64_t app_id = 0, tables = 0;
    if (c->mode == XT_CACHE_MODE_CREATE) {
        /* A new file is made 0600 before SQLite opens it: SQLite would make it 0644, and
         * gives the -wal and -shm files the mode of the database file.  An existing
         * file keeps its mode (a cache shared on purpose).  A failure here is left for
         * SQLite to report. */
        int fd = open(c->path_fs, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0) {
            close(fd);
        }
    }
    int rc = sqlite3_open_v2(c->path_fs, &c->db, flags, NULL);
    if (rc != SQLITE_OK) {
        set_db_err(c, err, rc, NULL);
        goto fail;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, c->busy_timeout_ms);
    /* Tables first: another process may create the cache between the two reads, and its
     * tables and application id arrive in one commit.  Read in this order, a new cache
     * looks empty (decided again below, in a write transaction) or complete, never like
     * a foreign file with tables but no id. */
    if (query_int(c, "SELECT count(*) FROM sqlite_master", &tables, err) < 0
        || query_int(c, "PRAGMA application_id", &app_id, err) < 0) {
        goto fail;
    }
    if (tables > 0 && app_id != CACHE_APPLICATION_ID) {
        set_err(err, ERR_FOREIGN, "", NULL);
        goto fail;
    }
    c->empty = tables == 0;
    if (c->mode != XT_CACHE_MODE_READ) {
        rc = xt_enable_wal(c->db, c->busy_timeout_ms);
        if (rc != SQLITE_OK) {
            set_db_err(c, err, rc, "PRAGMA journal_mode=WAL");
            goto fail;
        }
        if (exec_sql(c, "PRAGMA synchronous=NORMAL", err) < 0) {
            goto fail;
        }
    }
    if (c->empty && c->mode == XT_CACHE_MODE_CREATE) {
        /* Another process may be creating it too: decide inside one write transaction. */
        if (exec_sql(c, "BEGIN IMMEDIATE", err) < 0) {
            goto fail;
        }
        if (query_int(c, "SELECT count(*) FROM sqlite_master", &tables, err) < 0
            || query_int(c, "PRAGMA application_id", &app_id, err) < 0) {
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
            goto fail;
        }
        if (tables > 0 && app_id != CACHE_APPLICATION_ID) {
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
            set_err(err, ERR_FOREIGN, "", NULL);
            goto fail;
        }
        if ((tables == 0 && exec_sql(c, schema_sql, err) < 0) || exec_sql(c, "COMMIT", err) < 0) {
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
            goto fail;
        }
        c->empty = 0;
    }
    if (!c->empty && ensure_mac_column(c, err) < 0) {
        goto fail;
    }
    if (!c->empty
        && (prepare(c, c->has_mac_column ? get_sql : get_sql_no_mac, &c->get_stmt, err) < 0
            || (c->mode != XT_CACHE_MODE_READ
                && (prepare(c, insert_sql, &c->insert_stmt, err) < 0
                    || prepare(c, replace_sql, &c->replace_stmt, err) < 0)))) {
        goto fail;
    }
    return 0;
fail:
    xt_cache_close_db(c);
    return -1;
}

/* Make the connection usable: called with the GIL released and db_lock held. */
int
xt_cache_ready(ResultCache *c, xt_error *err)
{
    if (c->closed) {
        set_err(err, ERR_CLOSED, "", NULL);
        return -1;
    }
    return c->db != NULL ? 0 : open_db(c, err);
}

PyObject *
xt_cache_raise_error(ResultCache *c, const xt_error *err)
{
    xt_state *st = c->st;
    if (err->rc == ERR_CLOSED) {
        PyErr_Format(PyExc_ValueError, "the result cache %R is closed", c->path);
        return NULL;
    }
    if (err->rc == ERR_FOREIGN) {
        PyErr_Format(PyExc_ValueError,
                     "%R is a SQLite database but not a xetrack_c result cache (diskcache, which "
                     "xetrack uses, also names its file cache.db); point cache= at another "
                     "directory, or delete the file",
                     c->path);
        return NULL;
    }
    const char *path = PyUnicode_AsUTF8(c->path);
    if (path == NULL) {
        return NULL;
    }
    int rc = err->rc & 0xff;
    if (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT) {
        /* Same exception and attributes as xt_raise_sqlite, with the cache's own advice. */
        PyObject *exc = PyObject_CallFunction(
            st->CorruptDatabaseError, "N",
            PyUnicode_FromFormat("the result cache file %R is not a SQLite database or is damaged "
                                 "(%s, SQLite code %d): delete it (with any -wal and -shm files "
                                 "beside it) and the cache starts afresh, or point cache= at "
                                 "another directory",
                                 c->path, err->msg, err->rc));
        PyObject *code = exc ? PyLong_FromLong(err->rc) : NULL;
        if (code != NULL && PyObject_SetAttrString(exc, "sqlite_code", code) == 0
            && PyObject_SetAttrString(exc, "filename", c->path) == 0
            && PyObject_SetAttrString(exc, "sql", Py_None) == 0) {
            PyErr_SetObject(st->CorruptDatabaseError, exc);
        }
        Py_XDECREF(code);
        Py_XDECREF(exc);
        return NULL;
    }
    return xt_raise_sqlite(st, err->rc, err->msg, path, err->sql[0] ? err->sql : NULL);
}

/* After fork: fresh locks, no connection (reopened on use), only this thread's flights. */
void
xt_cache_check_fork(ResultCache *c)
{
    unsigned long now = xt_fork_generation();
    if (c->fork_generation == now) {
        return;
    }
    pthread_mutex_init(&c->db_lock, NULL);
    pthread_mutex_init(&c->flight_lock, NULL);
    pthread_cond_init(&c->flight_done, NULL);
    forget_db(c);
    xt_cache_flights_after_fork(c);
    c->fork_generation = now;
}

int
xt_cache_make_key(PyObject *cache, PyObject *func, PyObject *args, PyObject *kwargs,
                  PyObject *params, PyObject *tracker_params, int warn, xt_cache_key *key)
{
    ResultCache *c = xt_as_cache(cache);
    return xt_cache_call_key(c->st, c->warned, func, args, kwargs, params, tracker_params, warn,
                             key);
}

/* The MAC of an entry: HMAC-SHA256 under the cache's key of the tag
 * "xetrack_c.cache.mac.v1" and its NUL, then key, value, track_id, created and
 * function_name, each as its length (8 bytes, little-endian) and its bytes. */
static const char mac_tag[] = "xetrack_c.cache.mac.v1";

static void
mac_field(xt_sha256_ctx *ctx, const void *data, size_t len)
{
    uint8_t size[8];
    for (int i = 0; i < 8; i++) {
        size[i] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    xt_sha256_update(ctx, size, sizeof(size));
    xt_sha256_update(ctx, data, len);
}

/* Pure C: safe with the GIL released. */
static void
entry_mac(const xt_hmac_key *mac_key, const char *key, const void *value, size_t value_len,
          const char *track_id, const char *created, const char *function_name,
          uint8_t out[XT_SHA256_DIGEST_SIZE])
{
    xt_sha256_ctx ctx;
    xt_hmac_begin(mac_key, &ctx);
    xt_sha256_update(&ctx, mac_tag, sizeof(mac_tag));
    mac_field(&ctx, key, strlen(key));
    mac_field(&ctx, value, value_len);
    mac_field(&ctx, track_id, strlen(track_id));
    mac_field(&ctx, created, strlen(created));
    mac_field(&ctx, function_name, strlen(function_name));
    xt_hmac_end(mac_key, &ctx, out);
}

/* Set e->auth.  `key` is the key the entry was looked up under.  Pure C. */
static void
entry_verify(const ResultCache *c, const char *key, xt_cache_entry *e)
{
    uint8_t expected[XT_SHA256_DIGEST_SIZE];
    if (!c->authenticated) {
        e->auth = XT_CACHE_AUTH_UNCHECKED;
    }
    else if (e->mac_column == SQLITE_NULL) {
        e->auth = XT_CACHE_AUTH_MISSING;
    }
    else if (!e->mac_complete) {
        e->auth = XT_CACHE_AUTH_MISMATCH;
    }
    else {
        entry_mac(&c->mac_key, key, e->value, e->value_len, e->track_id, e->created,
                  e->function_name, expected);
        e->auth = xt_digest_equal(expected, e->mac, sizeof(expected)) ? XT_CACHE_AUTH_OK
                                                                      : XT_CACHE_AUTH_MISMATCH;
    }
}

void
xt_cache_free_entries(xt_cache_entry *e)
{
    while (e != NULL) {
        xt_cache_entry *next = e->next;
        free(e);
        e = next;
    }
}

static char *
column_copy(sqlite3_stmt *stmt, int col, char **cursor)
{
    const void *data = sqlite3_column_blob(stmt, col);
    size_t n = (size_t)sqlite3_column_bytes(stmt, col);
    char *out = *cursor;
    if (n) {
        memcpy(out, data, n);
    }
    out[n] = '\0';
    *cursor += n + 1;
    return out;
}

/* Copy the current row of `stmt` (value, track_id, created, function_name, mac[, key]). */
static xt_cache_entry *
copy_entry(sqlite3_stmt *stmt, int with_key)
{
    size_t total = sizeof(xt_cache_entry);
    for (int i = 0; i < 4; i++) {
        total += (size_t)sqlite3_column_bytes(stmt, i) + 1;
    }
    if (with_key) {
        total += (size_t)sqlite3_column_bytes(stmt, 5) + 1;
    }
    xt_cache_entry *out = malloc(total);
    if (out == NULL) {
        return NULL;
    }
    char *cursor = (char *)(out + 1);
    out->next = NULL;
    out->value_len = (size_t)sqlite3_column_bytes(stmt, 0);
    out->value = column_copy(stmt, 0, &cursor);
    out->track_id = column_copy(stmt, 1, &cursor);
    out->created = column_copy(stmt, 2, &cursor);
    out->function_name = column_copy(stmt, 3, &cursor);
    out->key = with_key ? column_copy(stmt, 5, &cursor) : NULL;
    out->mac_column = sqlite3_column_type(stmt, 4);
    out->mac_complete = 0;
    out->auth = XT_CACHE_AUTH_UNCHECKED;
    if (out->mac_column == SQLITE_BLOB) {
        const void *mac = sqlite3_column_blob(stmt, 4);
        if (mac != NULL && sqlite3_column_bytes(stmt, 4) == XT_SHA256_DIGEST_SIZE) {
            memcpy(out->mac, mac, XT_SHA256_DIGEST_SIZE);
            out->mac_complete = 1;
        }
    }
    return out;
}

/* Pure C, db_lock held.  1 found (*out set), 0 missing, -1 error. */
static int
get_locked(ResultCache *c, const char *key, xt_cache_entry **out, xt_error *err)
{
    *out = NULL;
    if (xt_cache_ready(c, err) < 0) {
        return -1;
    }
    if (c->empty) {
        return 0;
    }
    sqlite3_stmt *stmt = c->get_stmt;
    int rc = sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC), res = 0;
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc == SQLITE_ROW) {
        *out = copy_entry(stmt, 0);
        if (*out == NULL) {
            set_err(err, SQLITE_NOMEM, NULL, NULL);
            res = -1;
        }
        else {
            res = 1;
        }
    }
    else if (rc != SQLITE_DONE) {
        set_db_err(c, err, rc, get_sql);
        res = -1;
    }
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return res;
}

int
xt_cache_fetch(ResultCache *c, const char *key, xt_cache_entry **out)
{
    xt_error err = {0};
    int rc;
    xt_cache_check_fork(c);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&c->db_lock);
    rc = get_locked(c, key, out, &err);
    pthread_mutex_unlock(&c->db_lock);
    if (rc > 0) {
        entry_verify(c, key, *out);
    }
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        xt_cache_raise_error(c, &err);
    }
    return rc;
}

/* Warn that an entry fails authentication (it is not unpickled).  These warnings are
 * given even with warnings=False: they may mean someone tampered with the cache.  0, or
 * -1 with an exception set. */
static int
warn_untrusted(ResultCache *c, const char *key, const xt_cache_entry *e)
{
    if (e->auth == XT_CACHE_AUTH_MISSING) {
        if (c->warned_unsigned) {
            return 0;
        }
        c->warned_unsigned = 1;
        return PyErr_WarnFormat(PyExc_UserWarning, 1,
                                "xetrack_c cache: the entry for key %s in %R (function %.100s) "
                                "has no MAC: it was written by an older xetrack_c, or with "
                                "cache_key=False. It is not unpickled: the call is computed "
                                "again and the entry replaced (said once per cache; other "
                                "entries without a MAC are recomputed silently)",
                                key, c->path, e->function_name);
    }
    return PyErr_WarnFormat(PyExc_UserWarning, 1,
                            "xetrack_c cache: the entry for key %s in %R (function %.100s, run "
                            "%.100s) fails authentication: it was written with another cache "
                            "key, or altered by someone who does not have this one. It is not "
                            "unpickled: the call is computed again and the entry replaced (see "
                            "'Trust' in docs/cache.md)",
                            key, c->path, e->function_name, e->track_id);
}

int
xt_cache_get(PyObject *cache, const xt_cache_key *key, int warn, PyObject **result,
             PyObject **lineage, int *stale)
{
    ResultCache *c = xt_as_cache(cache);
    xt_cache_entry *found = NULL;
    PyObject *blob = NULL, *value = NULL;
    int res = -1;

    *result = *lineage = NULL;
    *stale = 0;
    int rc = xt_cache_fetch(c, key->hex, &found);
    if (rc <= 0) {
        return rc;
    }
    if (found->auth == XT_CACHE_AUTH_MISMATCH || found->auth == XT_CACHE_AUTH_MISSING) {
        /* Never unpickled: unpickling runs code, and this entry is not ours. */
        if (warn_untrusted(c, key->hex, found) < 0) {
            goto done;
        }
        *stale = 1;
        res = 0;
        goto done;
    }
    blob = PyBytes_FromStringAndSize(found->value, (Py_ssize_t)found->value_len);
    if (blob == NULL) {
        goto done;
    }
    value = PyObject_CallOneArg(c->loads, blob);
    if (value == NULL) {
        /* A class that moved, a library that is gone: recompute and store over it. */
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            goto done;
        }
        PyObject *type, *exc, *tb;
        PyErr_Fetch(&type, &exc, &tb);
        PyErr_NormalizeException(&type, &exc, &tb);
        int warned = warn ? PyErr_WarnFormat(PyExc_UserWarning, 1,
                                             "xetrack_c cache: the stored result for key %s (from "
                                             "run %s) cannot be unpickled (%S); computing it again",
                                             key->hex, found->track_id, exc ? exc : Py_None)
                          : 0;
        Py_XDECREF(type);
        Py_XDECREF(exc);
        Py_XDECREF(tb);
        if (warned < 0) {
            goto done;
        }
        *stale = 1;
        res = 0;
        goto done;
    }
    *lineage = PyUnicode_FromString(found->track_id);
    if (*lineage == NULL) {
        goto done;
    }
    *result = value;
    value = NULL;
    res = 1;
done:
    xt_cache_free_entries(found);
    Py_XDECREF(blob);
    Py_XDECREF(value);
    return res;
}

/* pickle.dumps at the highest protocol, cloudpickle when pickle cannot; NULL with
 * *failure holding pickle's exception when neither can (no exception set), or NULL
 * with an exception set on other errors. */
static PyObject *
pickle_value(xt_state *st, PyObject *value, PyObject **failure)
{
    PyObject *dumps = xt_cache_helper(st, "pickle", "dumps");
    PyObject *protocol = dumps ? xt_cache_helper(st, "pickle", "HIGHEST_PROTOCOL") : NULL;
    PyObject *type, *tb, *blob;

    *failure = NULL;
    if (protocol == NULL) {
        return NULL;
    }
    PyObject *call[2] = {value, protocol};
    blob = PyObject_Vectorcall(dumps, call, 2, NULL);
    if (blob != NULL || !PyErr_ExceptionMatches(PyExc_Exception)) {
        return blob;
    }
    PyErr_Fetch(&type, failure, &tb);
    PyErr_NormalizeException(&type, failure, &tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    PyObject *cloud = xt_cache_helper(st, "cloudpickle", "dumps");
    if (cloud == NULL) {
        if (PyErr_ExceptionMatches(PyExc_ImportError)) {
            PyErr_Clear();
        }
        goto failed;
    }
    blob = PyObject_Vectorcall(cloud, call, 2, NULL);
    if (blob != NULL) {
        Py_CLEAR(*failure);
        return blob;
    }
    if (PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
    }
failed:
    if (PyErr_Occurred()) {
        Py_CLEAR(*failure);
        return NULL;
    }
    if (*failure == NULL) {
        *failure = Py_NewRef(Py_None);
    }
    return NULL;
}

static PyObject *
qualified_name(xt_state *st, PyObject *func)
{
    PyObject *module = NULL, *qualname = NULL, *res = NULL;
    if (xt_cache_callable_names(st, func, &module, &qualname) == 0) {
        res = module ? PyUnicode_FromFormat("%U.%U", module, qualname) : Py_NewRef(qualname);
    }
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    return res;
}

int
xt_cache_put(PyObject *cache, const xt_cache_key *key, PyObject *func, PyObject *result,
             PyObject *track_id, int replace, int warn)
{
    ResultCache *c = xt_as_cache(cache);
    xt_state *st = c->st;
    PyObject *blob = NULL, *failure = NULL, *name = NULL;
    xt_error err = {0};
    char created[XT_TS_SIZE];
    uint8_t mac[XT_SHA256_DIGEST_SIZE];
    int res = -1, rc = 0;

    blob = pickle_value(st, result, &failure);
    if (blob == NULL) {
        if (failure != NULL) {
            res = (warn && PyErr_WarnFormat(PyExc_UserWarning, 1,
                                            "xetrack_c cache: the result (%.100s) cannot be "
                                            "pickled (%S), so it is returned but not cached; "
                                            "return picklable values to cache them",
                                            Py_TYPE(result)->tp_name, failure) < 0)
                      ? -1
                      : 0;
        }
        goto done;
    }
    if (!PyBytes_Check(blob)) {
        PyErr_SetString(PyExc_TypeError, "pickle.dumps did not return bytes");
        goto done;
    }
    name = qualified_name(st, func);
    if (name == NULL) {
        PyErr_Clear();
        name = PyUnicode_FromString(Py_TYPE(func)->tp_name);
        if (name == NULL) {
            goto done;
        }
    }
    const char *name_utf8 = PyUnicode_AsUTF8(name);
    const char *track_utf8 = PyUnicode_AsUTF8(track_id);
    if (name_utf8 == NULL || track_utf8 == NULL) {
        goto done;
    }
    xt_format_timestamp(xt_now_us(), created);
    const char *data = PyBytes_AS_STRING(blob);
    int data_len = (int)PyBytes_GET_SIZE(blob);
    if (PyBytes_GET_SIZE(blob) > 1000000000) {
        res = (warn && PyErr_WarnEx(PyExc_UserWarning,
                                    "xetrack_c cache: the pickled result is larger than 1 GB, "
                                    "which SQLite cannot store; it is returned but not cached",
                                    1) < 0)
                  ? -1
                  : 0;
        goto done;
    }
    xt_cache_check_fork(c);
    Py_BEGIN_ALLOW_THREADS
    if (c->authenticated) {
        entry_mac(&c->mac_key, key->hex, data, (size_t)data_len, track_utf8, created, name_utf8,
                  mac);
    }
    pthread_mutex_lock(&c->db_lock);
    rc = xt_cache_ready(c, &err);
    if (rc == 0) {
        sqlite3_stmt *stmt = replace ? c->replace_stmt : c->insert_stmt;
        /* A failed bind would store NULL: it fails the put instead. */
        int step = sqlite3_bind_text(stmt, 1, key->hex, -1, SQLITE_STATIC);
        if (step == SQLITE_OK) {
            step = sqlite3_bind_blob(stmt, 2, data, data_len, SQLITE_STATIC);
        }
        if (step == SQLITE_OK) {
            step = sqlite3_bind_text(stmt, 3, track_utf8, -1, SQLITE_STATIC);
        }
        if (step == SQLITE_OK) {
            step = sqlite3_bind_text(stmt, 4, created, -1, SQLITE_STATIC);
        }
        if (step == SQLITE_OK) {
            step = sqlite3_bind_text(stmt, 5, name_utf8, -1, SQLITE_STATIC);
        }
        if (step == SQLITE_OK) {
            step = c->authenticated
                       ? sqlite3_bind_blob(stmt, 6, mac, (int)sizeof(mac), SQLITE_STATIC)
                       : sqlite3_bind_null(stmt, 6);
        }
        if (step == SQLITE_OK) {
            step = sqlite3_step(stmt);
        }
        if (step != SQLITE_DONE) {
            set_db_err(c, &err, step, replace ? replace_sql : insert_sql);
            rc = -1;
        }
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
    }
    pthread_mutex_unlock(&c->db_lock);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        xt_cache_raise_error(c, &err);
        goto done;
    }
    res = 1;
done:
    Py_XDECREF(blob);
    Py_XDECREF(failure);
    Py_XDECREF(name);
    return res;
}

int
xt_cache_close(PyObject *cache)
{
    ResultCache *c = xt_as_cache(cache);
    xt_cache_check_fork(c);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&c->db_lock);
    if (c->db != NULL) {
        xt_cache_close_db(c);
    }
    c->closed = 1;
    pthread_mutex_unlock(&c->db_lock);
    Py_END_ALLOW_THREADS
    return 0;
}

/* Run `sql` (bound to `text` and `number`; `sql_no_mac` instead, if not NULL, on a file
 * without the mac column) and collect rows or count changes.  Pure C, db_lock held. */
static int
run_locked(ResultCache *c, const char *sql, const char *sql_no_mac, const char *text,
           int64_t number, int collect, xt_cache_entry **rows, int64_t *changes, xt_error *err)
{
    sqlite3_stmt *stmt = NULL;
    xt_cache_entry **tail = rows;
    int res = -1;
    if (xt_cache_ready(c, err) < 0) {
        return -1;
    }
    if (c->empty) {
        *changes = 0;
        return 0;
    }
    if (!c->has_mac_column && sql_no_mac != NULL) {
        sql = sql_no_mac;
    }
    int rc = sqlite3_prepare_v2(c->db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        set_db_err(c, err, rc, sql);
        goto done;
    }
    /* ?1 is the text and ?2 the number, where the statement has them. */
    int nparams = sqlite3_bind_parameter_count(stmt);
    if (text != NULL && nparams >= 1) {
        rc = sqlite3_bind_text(stmt, 1, text, -1, SQLITE_STATIC);
    }
    if (rc == SQLITE_OK && nparams >= 2) {
        rc = sqlite3_bind_int64(stmt, 2, number);
    }
    if (rc != SQLITE_OK) {
        set_db_err(c, err, rc, sql);
        goto done;
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (collect) {
            *tail = copy_entry(stmt, 1);
            if (*tail == NULL) {
                set_err(err, SQLITE_NOMEM, NULL, NULL);
                goto done;
            }
            tail = &(*tail)->next;
        }
        else {
            *changes = sqlite3_column_int64(stmt, 0);
        }
    }
    if (rc != SQLITE_DONE) {
        set_db_err(c, err, rc, sql);
        goto done;
    }
    if (sqlite3_stmt_readonly(stmt) == 0) {
        *changes = sqlite3_changes64(c->db);
    }
    res = 0;
done:
    sqlite3_finalize(stmt);
    return res;
}

int
xt_cache_run(ResultCache *c, const char *sql, const char *sql_no_mac, const char *text,
             int64_t number, int collect, xt_cache_entry **rows, int64_t *changes)
{
    xt_error err = {0};
    int rc;
    *rows = NULL;
    *changes = 0;
    xt_cache_check_fork(c);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&c->db_lock);
    rc = run_locked(c, sql, sql_no_mac, text, number, collect, rows, changes, &err);
    pthread_mutex_unlock(&c->db_lock);
    for (xt_cache_entry *e = rc == 0 ? *rows : NULL; e != NULL; e = e->next) {
        entry_verify(c, e->key, e);
    }
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        xt_cache_free_entries(*rows);
        *rows = NULL;
        xt_cache_raise_error(c, &err);
    }
    return rc;
}
