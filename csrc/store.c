/* Store: the write path's SQLite layer.  Connections (WAL, our busy handler, turns
 * between writers), the statement cache, transactions and schema changes, opening,
 * closing and reopening after fork, and the helpers that turn SQLite failures into
 * Python exceptions.  The async writer (bounded queue, writer thread, flush, transaction
 * sizing) is in store_async.c; the store's struct is in store_internal.h. */
#include "store_internal.h"

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

/* ------------------------------------------------------------------------------------ */
/* Store internals                                                                      */
/* ------------------------------------------------------------------------------------ */

#include <errno.h>
#include <stdio.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>

/* Waiting for another connection's write lock: tries after 0.1, 0.2, 0.4 and 0.8 ms, then
 * every XT_BUSY_MAX_SLEEP_US (busy_wait). */
#define XT_BUSY_FIRST_SLEEP_US 100
#define XT_BUSY_MAX_SLEEP_US 1000

/* Turns between processes (take_turn): a store that held the write lock for at least half
 * of the last XT_TURN_SLICE_US leaves it free for XT_TURN_GAP_US before its next write.
 * The gap is twice the waiters' longest sleep, so a waiting writer tries within it. */
#define XT_TURN_SLICE_US 100000
#define XT_TURN_GAP_US 2000

static int64_t
monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
sleep_us(int64_t us)
{
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int64_t
xt_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void
xt_format_timestamp(int64_t us, char out[XT_TS_SIZE])
{
    time_t sec = (time_t)(us / 1000000);
    int frac = (int)(us % 1000000);
    struct tm tm;
    if (frac < 0) {
        frac += 1000000;
        sec -= 1;
    }
    localtime_r(&sec, &tm);
    /* Each field reduced to its width, so the compiler can see the text fits (26 bytes). */
    snprintf(out, XT_TS_SIZE, "%04u-%02u-%02u %02u:%02u:%02u.%06u",
             (unsigned)(tm.tm_year + 1900) % 10000u, (unsigned)(tm.tm_mon + 1) % 100u,
             (unsigned)tm.tm_mday % 100u, (unsigned)tm.tm_hour % 100u, (unsigned)tm.tm_min % 100u,
             (unsigned)tm.tm_sec % 100u, (unsigned)frac % 1000000u);
}

void
xt_store_set_error(xt_error *err, int rc, const char *msg, const char *sql)
{
    err->rc = rc;
    snprintf(err->msg, sizeof(err->msg), "%s", msg ? msg : sqlite3_errstr(rc));
    snprintf(err->sql, sizeof(err->sql), "%s", sql ? sql : "");
}

/* The operating system's reason behind an I/O failure, for the ones a user can act on. */
static const char *
os_error_text(int sys_errno)
{
    switch (sys_errno) {
    case ENOSPC:
        return "no space left on the device";
    case EFBIG:
        return "file too large: the process's file size limit (ulimit -f) was reached";
    case EDQUOT:
        return "disk quota exceeded";
    case EROFS:
        return "read-only file system";
    case EACCES:
    case EPERM:
        return "permission denied by the operating system";
    case EIO:
        return "the device reported a low-level I/O error";
    default:
        return NULL;
    }
}

/* `sys_errno` is sqlite3_system_errno() taken right after the failing call: resetting a
 * statement re-reads errno, which by then may say something else. */
static void
set_step_error(xt_store *s, xt_error *err, int rc, const char *sql, int sys_errno)
{
    const char *os_text = NULL;
    int primary = rc & 0xff;

    xt_store_set_error(err, rc, s->db ? sqlite3_errmsg(s->db) : NULL, sql);
    if (primary == SQLITE_IOERR || primary == SQLITE_FULL || primary == SQLITE_CANTOPEN) {
        os_text = os_error_text(sys_errno);
    }
    /* SQLite often reports a write cut short by the file size limit without an errno
     * (the short write() itself succeeds); name the limit when one is set. */
    if (os_text == NULL && (primary == SQLITE_IOERR || primary == SQLITE_FULL)) {
        struct rlimit limit;
        if (getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
            os_text = "the process has a file size limit (ulimit -f), which may have been reached";
        }
    }
    if (os_text != NULL) {
        size_t used = strlen(err->msg);
        snprintf(err->msg + used, sizeof(err->msg) - used, " (%s)", os_text);
    }
}

static void
set_db_error(xt_store *s, xt_error *err, int rc, const char *sql)
{
    set_step_error(s, err, rc, sql, s->db ? sqlite3_system_errno(s->db) : 0);
}

static char *
dup_string(const char *text)
{
    size_t n = strlen(text) + 1;
    char *copy = malloc(n);
    if (copy) {
        memcpy(copy, text, n);
    }
    return copy;
}

/* `"name"` with embedded quotes doubled. */
static char *
quote_ident(const char *name)
{
    size_t n = strlen(name), extra = 0;
    for (size_t i = 0; i < n; i++) {
        extra += name[i] == '"';
    }
    char *out = malloc(n + extra + 3);
    if (out == NULL) {
        return NULL;
    }
    char *p = out;
    *p++ = '"';
    for (size_t i = 0; i < n; i++) {
        if (name[i] == '"') {
            *p++ = '"';
        }
        *p++ = name[i];
    }
    *p++ = '"';
    *p = '\0';
    return out;
}

static int
exec_sql(xt_store *s, const char *sql, xt_error *err)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        set_db_error(s, err, rc, sql);
        return -1;
    }
    return 0;
}

static int
step_done(xt_store *s, sqlite3_stmt *stmt, xt_error *err)
{
    int rc = sqlite3_step(stmt);
    int sys_errno = sqlite3_system_errno(s->db);
    sqlite3_reset(stmt);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        set_step_error(s, err, rc, sqlite3_sql(stmt), sys_errno);
        return -1;
    }
    return 0;
}

static int
begin(xt_store *s, xt_error *err)
{
    return step_done(s, s->begin_stmt, err);
}

static int
commit(xt_store *s, xt_error *err)
{
    return step_done(s, s->commit_stmt, err);
}

static void
rollback(xt_store *s)
{
    if (s->db && !sqlite3_get_autocommit(s->db)) {
        sqlite3_step(s->rollback_stmt);
        sqlite3_reset(s->rollback_stmt);
    }
}

static const char *
decl_name(int decl_type)
{
    switch (decl_type) {
    case XT_INT:
        return "INTEGER";
    case XT_REAL:
        return "REAL";
    case XT_BLOB:
        return "BLOB";
    case XT_DECL_BOOLEAN:
        return "BOOLEAN";
    default:
        return "TEXT";
    }
}

/* Mark the registry's columns that the table has; called inside a write transaction, so
 * the schema read here is the one our writes will see. */
static int
refresh_schema(xt_store *s, xt_error *err)
{
    char *sql = sqlite3_mprintf("SELECT name FROM pragma_table_info(%Q)", s->table);
    sqlite3_stmt *stmt = NULL;
    int rc, res = -1;
    if (sql == NULL) {
        xt_store_set_error(err, SQLITE_NOMEM, NULL, NULL);
        return -1;
    }
    rc = sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        set_db_error(s, err, rc, sql);
        goto done;
    }
    int count = atomic_load_explicit(&s->columns.count, memory_order_acquire);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(stmt, 0);
        if (name == NULL) {
            continue;
        }
        /* Registry lookups are linear; a refresh happens only when a column is new. */
        for (int i = 0; i < count; i++) {
            if (!s->columns.slots[i]->in_db && sqlite3_stricmp(s->columns.slots[i]->name, name) == 0) {
                s->columns.slots[i]->in_db = 1;
            }
        }
    }
    if (rc != SQLITE_DONE) {
        set_db_error(s, err, rc, sql);
        goto done;
    }
    res = 0;
done:
    sqlite3_finalize(stmt);
    sqlite3_free(sql);
    return res;
}

/* Marks a failure to add a column past SQLite's column limit: a row too wide for its
 * table, which xt_raise_store_error() raises as ValueError, not a storage failure. */
#define XT_COLUMN_LIMIT_TEXT "SQLite's limit (SQLITE_MAX_COLUMN)"

/* Inside a write transaction: create the table's missing columns among `cols`. */
static int
add_missing_columns(xt_store *s, const int *cols, int n, xt_error *err)
{
    int missing = 0;
    for (int i = 0; i < n; i++) {
        missing |= !s->columns.slots[cols[i]]->in_db;
    }
    if (!missing) {
        return 0;
    }
    if (refresh_schema(s, err) < 0) {
        return -1;
    }
    for (int i = 0; i < n; i++) {
        xt_column *c = s->columns.slots[cols[i]];
        if (c->in_db) {
            continue;
        }
        char *sql = sqlite3_mprintf("ALTER TABLE %s ADD COLUMN \"%w\" %s", s->qtable, c->name,
                                    decl_name(c->decl_type));
        if (sql == NULL) {
            xt_store_set_error(err, SQLITE_NOMEM, NULL, NULL);
            return -1;
        }
        int rc = exec_sql(s, sql, err);
        sqlite3_free(sql);
        if (rc < 0) {
            if ((err->rc & 0xff) == SQLITE_ERROR
                && strncmp(err->msg, "too many columns", 16) == 0) {
                snprintf(err->msg, sizeof(err->msg),
                         "cannot add column \"%.64s\": table '%.64s' would have more than %d "
                         "columns, " XT_COLUMN_LIMIT_TEXT,
                         c->name, s->table, sqlite3_limit(s->db, SQLITE_LIMIT_COLUMN, -1));
            }
            return -1;
        }
        c->in_db = 1;
    }
    return 0;
}

static uint64_t
hash_cols(const xt_value *vals, int n)
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < n; i++) {
        h = (h ^ (uint64_t)(unsigned)vals[i].col) * 1099511628211ULL;
    }
    return h ^ (uint64_t)n;
}

static int
entry_matches(const xt_stmt_entry *e, uint64_t h, const xt_value *vals, int n)
{
    if (e->stmt == NULL || e->hash != h || e->n != n) {
        return 0;
    }
    for (int i = 0; i < n; i++) {
        if (e->cols[i] != vals[i].col) {
            return 0;
        }
    }
    return 1;
}

static void
clear_entry(xt_stmt_entry *e)
{
    sqlite3_finalize(e->stmt);
    free(e->cols);
    memset(e, 0, sizeof(*e));
}

/* The cached INSERT for this row's ordered columns, preparing it on a miss. */
static sqlite3_stmt *
insert_stmt(xt_store *s, const xt_row *row, xt_error *err)
{
    uint64_t h = hash_cols(row->vals, row->n);
    xt_stmt_entry *e = &s->stmts[s->last_stmt];
    if (entry_matches(e, h, row->vals, row->n)) {
        e->used = ++s->stmt_clock;
        return e->stmt;
    }
    int victim = 0;
    for (int i = 0; i < XT_STMT_CACHE; i++) {
        if (entry_matches(&s->stmts[i], h, row->vals, row->n)) {
            s->last_stmt = i;
            s->stmts[i].used = ++s->stmt_clock;
            return s->stmts[i].stmt;
        }
        if (s->stmts[i].used < s->stmts[victim].used) {
            victim = i;
        }
    }
    /* Build INSERT INTO "t" ("a","b",...) VALUES (?,?,...) */
    size_t cap = strlen(s->qtable) + 64;
    for (int i = 0; i < row->n; i++) {
        cap += strlen(s->columns.slots[row->vals[i].col]->name) + 6;
    }
    char *sql = malloc(cap);
    int *cols = malloc(sizeof(int) * (size_t)(row->n ? row->n : 1));
    sqlite3_stmt *stmt = NULL;
    if (sql == NULL || cols == NULL) {
        xt_store_set_error(err, SQLITE_NOMEM, NULL, NULL);
        goto fail;
    }
    char *p = sql;
    p += sprintf(p, "INSERT INTO %s (", s->qtable);
    for (int i = 0; i < row->n; i++) {
        p += sprintf(p, "%s\"%s\"", i ? "," : "", s->columns.slots[row->vals[i].col]->name);
        cols[i] = row->vals[i].col;
    }
    p += sprintf(p, ") VALUES (");
    for (int i = 0; i < row->n; i++) {
        p += sprintf(p, i ? ",?" : "?");
    }
    sprintf(p, ")");
    int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL);
    if (rc != SQLITE_OK) {
        set_db_error(s, err, rc, sql);
        goto fail;
    }
    free(sql);
    clear_entry(&s->stmts[victim]);
    s->stmts[victim] = (xt_stmt_entry){h, row->n, cols, stmt, ++s->stmt_clock};
    s->last_stmt = victim;
    return stmt;
fail:
    free(sql);
    free(cols);
    sqlite3_finalize(stmt);
    return NULL;
}

static void
drop_statements(xt_store *s)
{
    for (int i = 0; i < XT_STMT_CACHE; i++) {
        clear_entry(&s->stmts[i]);
    }
    s->last_stmt = 0;
    xt_store_forget_assets(s);
}

/* Bind the row's values.  SQLite leaves a parameter it refuses NULL: a value longer than
 * SQLITE_LIMIT_LENGTH would be stored as NULL.  log() refuses such rows before they get
 * here; this is the backstop (the limit may have been lowered since), and fails the row. */
static int
bind_row(xt_store *s, sqlite3_stmt *stmt, const xt_row *row, xt_error *err)
{
    for (int i = 0; i < row->n; i++) {
        const xt_value *v = &row->vals[i];
        int rc;
        switch (v->type) {
        case XT_INT:
            rc = sqlite3_bind_int64(stmt, i + 1, v->v.i);
            break;
        case XT_REAL:
            rc = sqlite3_bind_double(stmt, i + 1, v->v.d);
            break;
        case XT_TEXT:
            rc = sqlite3_bind_text64(stmt, i + 1, v->v.s.p, (sqlite3_uint64)v->v.s.n,
                                     SQLITE_STATIC, SQLITE_UTF8);
            break;
        case XT_BLOB:
            rc = sqlite3_bind_blob64(stmt, i + 1, v->v.s.p, (sqlite3_uint64)v->v.s.n,
                                     SQLITE_STATIC);
            break;
        default:
            rc = sqlite3_bind_null(stmt, i + 1);
        }
        if (rc == SQLITE_TOOBIG) {
            err->rc = rc;
            snprintf(err->msg, sizeof(err->msg),
                     "the value of column \"%.64s\" is %lld bytes, more than the %d bytes SQLite "
                     "stores in one value (SQLITE_LIMIT_LENGTH); the row was not written",
                     s->columns.slots[v->col]->name, (long long)v->v.s.n,
                     sqlite3_limit(s->db, SQLITE_LIMIT_LENGTH, -1));
            snprintf(err->sql, sizeof(err->sql), "%s", sqlite3_sql(stmt));
            return -1;
        }
        if (rc != SQLITE_OK) {
            set_db_error(s, err, rc, sqlite3_sql(stmt));
            return -1;
        }
    }
    return 0;
}

static void
note_last_ts(xt_store *s, int64_t ts)
{
    long long seen = atomic_load(&s->last_ts);
    while (ts > seen && !atomic_compare_exchange_weak(&s->last_ts, &seen, ts)) {
    }
}

/* Insert one row inside an open transaction.  Two writers that share a track id can pick
 * the same microsecond; the row then moves to the next free microsecond instead of
 * being lost. */
static int
insert_row(xt_store *s, xt_row *row, xt_error *err)
{
    int cols[XT_MAX_COLUMNS];
    for (int i = 0; i < row->n; i++) {
        cols[i] = row->vals[i].col;
    }
    if (add_missing_columns(s, cols, row->n, err) < 0) {
        return -1;
    }
    sqlite3_stmt *stmt = insert_stmt(s, row, err);
    if (stmt == NULL) {
        return -1;
    }
    if (bind_row(s, stmt, row, err) < 0) {
        return -1;
    }
    for (int attempt = 0;; attempt++) {
        int rc = sqlite3_step(stmt);
        int sys_errno = sqlite3_system_errno(s->db);
        sqlite3_reset(stmt);
        if (rc == SQLITE_DONE) {
            note_last_ts(s, row->ts_us);
            return 0;
        }
        if (rc == SQLITE_CONSTRAINT_PRIMARYKEY && attempt < 100000) {
            row->ts_us += 1;
            xt_format_timestamp(row->ts_us, row->ts_text);
            for (int i = 0; i < row->n; i++) {
                if (row->vals[i].col == XT_COL_TIMESTAMP) {
                    row->vals[i].v.s.n = (int64_t)strlen(row->ts_text);
                    rc = sqlite3_bind_text(stmt, i + 1, row->ts_text, (int)row->vals[i].v.s.n,
                                           SQLITE_STATIC);
                    if (rc != SQLITE_OK) {
                        set_db_error(s, err, rc, sqlite3_sql(stmt));
                        return -1;
                    }
                }
            }
            continue;
        }
        set_step_error(s, err, rc, sqlite3_sql(stmt), sys_errno);
        return -1;
    }
}

int
xt_store_stream_rows(xt_store *s, xt_row **rows, size_t n, xt_error *err)
{
    for (size_t i = 0; i < n; i++) {
        /* Assets first: a row that fails then takes its assets' writes with it. */
        if (xt_store_write_assets(s, rows[i], err) < 0
            || (rows[i]->n > 0 && insert_row(s, rows[i], err) < 0)) {
            return -1;
        }
    }
    return 0;
}

static int
write_rows_locked(xt_store *s, xt_row **rows, size_t n, xt_error *err)
{
    if (begin(s, err) < 0) {
        return -1;
    }
    if (xt_store_stream_rows(s, rows, n, err) < 0 || commit(s, err) < 0) {
        rollback(s);
        return -1;
    }
    return 0;
}

/* A write failed because the table changed under us (another tracker reset it or a
 * column vanished): forget what we knew of the schema so the retry re-reads it. */
static int
schema_changed(const xt_error *err)
{
    return (err->rc & 0xff) == SQLITE_ERROR
           && (strstr(err->msg, "no such table") || strstr(err->msg, "has no column named")
               || strstr(err->msg, "no column named"));
}

static void
forget_schema(xt_store *s)
{
    int count = atomic_load_explicit(&s->columns.count, memory_order_acquire);
    for (int i = 0; i < count; i++) {
        s->columns.slots[i]->in_db = 0;
    }
    drop_statements(s);
}

static int
create_table(xt_store *s, int reset, xt_error *err)
{
    char *sql = NULL;
    int res = -1;
    if (begin(s, err) < 0) {
        return -1;
    }
    if (reset) {
        sql = sqlite3_mprintf("DROP TABLE IF EXISTS %s", s->qtable);
        if (sql == NULL || exec_sql(s, sql, err) < 0) {
            goto done;
        }
        sqlite3_free(sql);
    }
    sql = sqlite3_mprintf("CREATE TABLE IF NOT EXISTS %s (track_id TEXT, timestamp TEXT, "
                          "PRIMARY KEY (track_id, timestamp))",
                          s->qtable);
    if (sql == NULL) {
        xt_store_set_error(err, SQLITE_NOMEM, NULL, NULL);
        goto done;
    }
    if (exec_sql(s, sql, err) < 0 || refresh_schema(s, err) < 0 || commit(s, err) < 0) {
        goto done;
    }
    res = 0;
done:
    if (res < 0) {
        rollback(s);
    }
    sqlite3_free(sql);
    return res;
}

static int
retry_after_schema_change(xt_store *s, xt_row **rows, size_t n, xt_error *err)
{
    forget_schema(s);
    if (create_table(s, 0, err) < 0) {
        return -1;
    }
    return write_rows_locked(s, rows, n, err);
}

static int
columns_known(xt_store *s, const xt_row *row)
{
    for (int i = 0; i < row->n; i++) {
        if (!s->columns.slots[row->vals[i].col]->in_db) {
            return 0;
        }
    }
    return 1;
}

/* Turns between processes.  The threads of one store follow each other on s->lock, each
 * taking SQLite's write lock as the previous one commits, so a writer of another process
 * (a forked child, say) waiting in busy_wait finds the lock free only in gaps of
 * microseconds, and may wait as long as they keep writing.  So a store that has held the
 * write lock for at least half of the last XT_TURN_SLICE_US pauses for XT_TURN_GAP_US
 * before its next transaction: it keeps s->lock (its own threads wait) but not the write
 * lock, and a waiting writer, which tries at least every XT_BUSY_MAX_SLEEP_US, takes it.
 * A store that writes less leaves gaps enough on its own and never pauses; one that
 * writes flat out gives up XT_TURN_GAP_US per XT_TURN_SLICE_US (2%).  A waiting writer
 * gets its turn within one slice and one transaction of each store ahead of it. */
static void
take_turn(xt_store *s)
{
    int64_t now = monotonic_us();
    if (now - s->turn_start_us < XT_TURN_SLICE_US) {
        return;
    }
    if (2 * s->turn_held_us >= now - s->turn_start_us) {
        sleep_us(XT_TURN_GAP_US);
        now = monotonic_us();
    }
    s->turn_start_us = now;
    s->turn_held_us = 0;
}

/* A write that held the write lock since `started` (monotonic), turn_waited_us being
 * `waited` then: its time, less what it spent waiting for other processes, counts in
 * take_turn's window. */
static void
note_write_time(xt_store *s, int64_t started, int64_t waited)
{
    s->last_write_us = monotonic_us() - started - (s->turn_waited_us - waited);
    s->turn_held_us += s->last_write_us;
}

int
xt_store_write_locked(xt_store *s, xt_row **rows, size_t n, xt_error *err)
{
    take_turn(s);
    int64_t started = monotonic_us(), waited = s->turn_waited_us;
    /* One row into known columns, without assets: a lone INSERT is its own transaction,
     * taking the same write lock (with the same busy waiting) as BEGIN IMMEDIATE, in
     * fewer steps. */
    int rc = (n == 1 && rows[0]->n_assets == 0 && columns_known(s, rows[0]))
                 ? insert_row(s, rows[0], err)
                                                   : write_rows_locked(s, rows, n, err);
    if (rc != 0 && schema_changed(err)) {
        rc = retry_after_schema_change(s, rows, n, err);
    }
    note_write_time(s, started, waited);
    return rc == 0 ? 0 : -1;
}

/* A transaction written while its rows are still being made (store_batch.c): begin takes
 * s->lock and opens the transaction, rows are added as they come, end commits or rolls
 * back and lets go of the lock.  The clock of take_turn runs from begin to end. */
int
xt_store_stream_begin(xt_store *s, xt_error *err)
{
    pthread_mutex_lock(&s->lock);
    if (xt_store_check_open(s, err) < 0) {
        pthread_mutex_unlock(&s->lock);
        return -1;
    }
    take_turn(s);
    s->stream_started_us = monotonic_us();
    s->stream_waited_us = s->turn_waited_us;
    if (begin(s, err) < 0) {
        pthread_mutex_unlock(&s->lock);
        return -1;
    }
    return 0;
}

int
xt_store_stream_end(xt_store *s, int outcome, xt_row **rows, size_t n, xt_error *err)
{
    int rc = -1;
    if (outcome == XT_STREAM_COMMIT) {
        rc = commit(s, err);
    }
    if (rc < 0) {
        rollback(s);
    }
    if (outcome == XT_STREAM_FAILED && schema_changed(err)) {
        rc = retry_after_schema_change(s, rows, n, err);
    }
    note_write_time(s, s->stream_started_us, s->stream_waited_us);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Opening and closing                                                                  */
/* ------------------------------------------------------------------------------------ */

xt_column *
xt_column_new(const char *name, size_t len, int decl_type)
{
    xt_column *c = calloc(1, sizeof(*c));
    if (c == NULL || (c->name = malloc(len + 1)) == NULL) {
        free(c);
        return NULL;
    }
    memcpy(c->name, name, len);
    c->name[len] = '\0';
    c->decl_type = decl_type;
    return c;
}

void
xt_column_free(xt_column *c)
{
    if (c != NULL) {
        free(c->name);
        free(c);
    }
}

static int
add_builtin_column(xt_store *s, const char *name)
{
    int i = atomic_load(&s->columns.count);
    xt_column *c = xt_column_new(name, strlen(name), XT_TEXT);
    if (c == NULL) {
        return -1;
    }
    s->columns.slots[i] = c;
    atomic_store_explicit(&s->columns.count, i + 1, memory_order_release);
    return 0;
}

xt_store *
xt_store_new(void)
{
    xt_store *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->qlock, NULL);
    pthread_cond_init(&s->q_nonempty, NULL);
    pthread_cond_init(&s->q_space, NULL);
    pthread_cond_init(&s->q_idle, NULL);
    pthread_mutex_init(&s->glock, NULL);
    xt_ckpt_init(s);
    atomic_init(&s->length_limit, XT_DEFAULT_LENGTH_LIMIT);
    s->async_batch = XT_ASYNC_BATCH;
    if (add_builtin_column(s, "track_id") < 0 || add_builtin_column(s, "timestamp") < 0) {
        xt_store_free(s);
        return NULL;
    }
    return s;
}

/* Connections that open a new file at once all try to convert it to WAL; SQLite then
 * answers SQLITE_BUSY at once, without calling the busy handler, to every one but the
 * first (each holds a shared lock the others wait for).  Reading the schema waits, in the
 * busy handler, until the first one has converted the file; asking for WAL again is then
 * a no-op.  Each round blocks in SQLite, so this does not spin; the deadline only bounds
 * a pathological run of such rounds. */
int
xt_enable_wal(sqlite3 *db, int busy_timeout_ms)
{
    int64_t deadline = xt_now_us() + (int64_t)busy_timeout_ms * 1000;
    int rc;

    for (;;) {
        rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
        if ((rc & 0xff) != SQLITE_BUSY || xt_now_us() >= deadline) {
            return rc;
        }
        rc = sqlite3_exec(db, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
        if (rc != SQLITE_OK && ((rc & 0xff) != SQLITE_BUSY || xt_now_us() >= deadline)) {
            return rc;
        }
    }
}

/* SQLite's busy handler for our connections.  SQLite waits for another connection's lock
 * only by trying again (this build has no blocking lock waits: SQLITE_ENABLE_SETLK_TIMEOUT
 * is off), so the question is how often.  The handler behind sqlite3_busy_timeout() sleeps
 * up to 100 ms between tries: behind writers that commit back to back it tries so rarely
 * that it can miss every moment the lock is free, for seconds.  This one tries again after
 * 0.1, 0.2, 0.4, 0.8 ms and then every 1 ms, until busy_timeout has passed (measured on the
 * monotonic clock, not summed from the sleeps); take_turn makes sure such a try finds the
 * lock free within one slice. */
static int
busy_wait(void *arg, int count)
{
    xt_store *s = arg;
    int64_t now = monotonic_us();
    if (count == 0) {
        s->busy_since_us = now;
    }
    int64_t left = s->busy_since_us + (int64_t)s->busy_timeout_ms * 1000 - now;
    if (left <= 0) {
        return 0;
    }
    int64_t pause = count < 4 ? (int64_t)XT_BUSY_FIRST_SLEEP_US << count : XT_BUSY_MAX_SLEEP_US;
    sleep_us(pause < left ? pause : left);
    s->turn_waited_us += monotonic_us() - now;
    return 1;
}

static int
store_connect(xt_store *s, int reset, xt_error *err)
{
    int rc = sqlite3_open_v2(s->path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        set_db_error(s, err, rc, NULL);
        sqlite3_close_v2(s->db);
        s->db = NULL;
        return -1;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_handler(s->db, busy_wait, s);
    xt_ckpt_attach(s);
    atomic_store(&s->length_limit, sqlite3_limit(s->db, SQLITE_LIMIT_LENGTH, -1));
    /* WAL lets readers work while writers commit; NORMAL sync in WAL still makes each
     * commit survive a crash of the process (not of the machine, which FULL adds). */
    const char *sync = s->durability == XT_DURABLE_FSYNC ? "PRAGMA synchronous=FULL"
                                                         : "PRAGMA synchronous=NORMAL";
    rc = xt_enable_wal(s->db, s->busy_timeout_ms);
    if (rc != SQLITE_OK) {
        set_db_error(s, err, rc, "PRAGMA journal_mode=WAL");
        return -1;
    }
    if (exec_sql(s, sync, err) < 0) {
        return -1;
    }
    rc = sqlite3_prepare_v3(s->db, "BEGIN IMMEDIATE", -1, SQLITE_PREPARE_PERSISTENT, &s->begin_stmt, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_prepare_v3(s->db, "COMMIT", -1, SQLITE_PREPARE_PERSISTENT, &s->commit_stmt, NULL);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_prepare_v3(s->db, "ROLLBACK", -1, SQLITE_PREPARE_PERSISTENT, &s->rollback_stmt, NULL);
    }
    if (rc != SQLITE_OK) {
        set_db_error(s, err, rc, NULL);
        return -1;
    }
    forget_schema(s);
    if (create_table(s, reset, err) < 0) {
        return -1;
    }
    s->fork_generation = xt_fork_generation();
    s->open = 1;
    return 0;
}

static void
close_connection(xt_store *s)
{
    drop_statements(s);
    sqlite3_finalize(s->begin_stmt);
    sqlite3_finalize(s->commit_stmt);
    sqlite3_finalize(s->rollback_stmt);
    s->begin_stmt = s->commit_stmt = s->rollback_stmt = NULL;
    sqlite3_close_v2(s->db);
    s->db = NULL;
}

static void
store_disconnect(xt_store *s)
{
    close_connection(s);
    s->open = 0;
}

/* fork.c calls this in the child of a fork from Python, with s->lock held since before
 * the fork: the copied connection was idle (no statement running, no transaction open).
 * Closing it writes nothing the parent shares (no checkpoint on close, nothing to roll
 * back) and gives up the child's share of SQLite's per-file lock records, which only the
 * parent's locks back; the reopen on first use then takes real locks (docs/design.md,
 * "Fork").  `open` is left as it is: the tracker reopens on first use. */
static void
store_drop_in_child(void *owner)
{
    xt_store *s = owner;
    if (s->db != NULL) {
        sqlite3_db_config(s->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)NULL);
        close_connection(s);
    }
}

int
xt_store_open(xt_store *s, const char *path, const char *table, int durability, int reset,
              int busy_timeout_ms, int queue_rows, xt_error *err)
{
    s->path = dup_string(path);
    s->table = dup_string(table);
    s->qtable = quote_ident(table);
    if (s->path == NULL || s->table == NULL || s->qtable == NULL) {
        xt_store_set_error(err, SQLITE_NOMEM, NULL, NULL);
        return -1;
    }
    s->durability = durability;
    s->busy_timeout_ms = busy_timeout_ms;
    s->qcap = queue_rows > 0 ? (size_t)queue_rows : 16384;
    xt_fork_guard_add(&s->fork_guard, &s->lock, s, store_drop_in_child);
    xt_fork_guard_add(&s->ckpt_guard, &s->ckpt_lock, s, xt_ckpt_drop_in_child);
    if (store_connect(s, reset, err) < 0) {
        store_disconnect(s);
        return -1;
    }
    return 0;
}

int
xt_store_forked(xt_store *s)
{
    return s->fork_generation != xt_fork_generation();
}

int
xt_store_reopen_after_fork(xt_store *s, xt_error *err)
{
    /* The parent's connection, statements, threads and lock states are not ours: leave
     * the connection and statements untouched (closing them could disturb the parent's
     * WAL), drop queued rows (the parent writes them), start over. */
    xt_row *row = s->qhead;
    while (row) {
        xt_row *next = row->next;
        free(row);
        row = next;
    }
    s->qhead = s->qtail = NULL;
    s->qlen = 0;
    s->qbytes = 0;
    s->writer_busy = s->stopping = s->thread_started = s->closing = 0;
    s->queued = s->written = 0;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->qlock, NULL);
    pthread_cond_init(&s->q_nonempty, NULL);
    pthread_cond_init(&s->q_space, NULL);
    pthread_cond_init(&s->q_idle, NULL);
    pthread_mutex_init(&s->glock, NULL);
    s->gwait_head = s->gwait_tail = NULL;
    s->group_leading = 0;
    xt_ckpt_reset_in_child(s);
    memset(s->stmts, 0, sizeof(s->stmts));
    s->begin_stmt = s->commit_stmt = s->rollback_stmt = NULL;
    s->db = NULL;
    s->open = 0;
    s->deferred.rc = 0;
    if (store_connect(s, 0, err) < 0) {
        store_disconnect(s);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Writing                                                                              */
/* ------------------------------------------------------------------------------------ */

void
xt_store_lock(xt_store *s)
{
    pthread_mutex_lock(&s->lock);
}

int
xt_store_trylock(xt_store *s)
{
    return pthread_mutex_trylock(&s->lock) == 0;
}

void
xt_store_unlock(xt_store *s)
{
    pthread_mutex_unlock(&s->lock);
}

int
xt_store_check_open(xt_store *s, xt_error *err)
{
    if (!s->open) {
        xt_store_set_error(err, SQLITE_MISUSE, "the tracker is closed", NULL);
        return -1;
    }
    return 0;
}

/* Group commit.  A caller of xt_store_write queues itself (its rows, its error slot, its
 * own condition) under s->glock.  If no caller leads, it leads: it takes every queued
 * caller, itself included, writes all their rows in one transaction under s->lock, and
 * hands each its result; callers that queue meanwhile wait for the next leader, whom the
 * finishing leader wakes.  N threads thus pay about one commit per round instead of N,
 * and each returns only once its own rows are committed (or failed).  A transaction of
 * several callers that fails is rolled back, and each caller's rows are then written on
 * their own, so a bad row fails only its caller, and a failure that is not the rows'
 * (a full disk) reaches every caller in the group. */
typedef struct xt_group_waiter {
    xt_row **rows;
    size_t n;
    xt_error *err;
    int rc, done;
    pthread_cond_t cond;
    struct xt_group_waiter *next;
} xt_group_waiter;

/* The leader's part: write the group's rows, set each member's rc (and err). */
static void
write_group(xt_store *s, xt_group_waiter *group)
{
    size_t total = 0;
    for (xt_group_waiter *w = group; w; w = w->next) {
        total += w->n;
    }
    int joined = group->next != NULL;
    if (joined && total > s->group_cap) {
        size_t cap = total > 2 * s->group_cap ? total : 2 * s->group_cap;
        xt_row **grown = realloc(s->group_rows, cap * sizeof(xt_row *));
        if (grown != NULL) {
            s->group_rows = grown;
            s->group_cap = cap;
        }
        joined = grown != NULL; /* out of memory: each member writes on its own */
    }
    pthread_mutex_lock(&s->lock);
    xt_error group_err = {0};
    if (xt_store_check_open(s, &group_err) < 0) {
        for (xt_group_waiter *w = group; w; w = w->next) {
            *w->err = group_err;
            w->rc = -1;
        }
    }
    else if (group->next == NULL) {
        group->rc = xt_store_write_locked(s, group->rows, group->n, group->err);
    }
    else {
        int rc = -1;
        if (joined) {
            size_t k = 0;
            for (xt_group_waiter *w = group; w; w = w->next) {
                for (size_t i = 0; i < w->n; i++) {
                    s->group_rows[k++] = w->rows[i];
                }
            }
            rc = xt_store_write_locked(s, s->group_rows, total, &group_err);
        }
        for (xt_group_waiter *w = group; w; w = w->next) {
            w->rc = rc == 0 ? 0 : xt_store_write_locked(s, w->rows, w->n, w->err);
        }
    }
    pthread_mutex_unlock(&s->lock);
}

/* Spin, yielding the CPU, until this caller's round is done, the round under way ends (it
 * then leads the next), or `budget_us` passes.  A commit without fsync takes tens of µs,
 * about what falling asleep on a condition and being woken cost, so a caller that slept
 * at once paid two wake-ups per row and the rounds stayed small (8 threads logged no
 * faster than one).  `done` and `group_leading` change under glock; this only peeks, and
 * the caller looks again under glock, so a member never leaves while the leader still
 * touches its condition. */
static void
spin_for_round(xt_store *s, xt_group_waiter *me, int64_t budget_us)
{
    int64_t until = monotonic_us() + budget_us;
    while (!__atomic_load_n(&me->done, __ATOMIC_ACQUIRE)
           && __atomic_load_n(&s->group_leading, __ATOMIC_ACQUIRE)
           && monotonic_us() < until) {
        sched_yield();
    }
}

int
xt_store_write(xt_store *s, xt_row **rows, size_t n, xt_error *err)
{
    xt_group_waiter me = {rows, n, err, 0, 0, .next = NULL};
    pthread_cond_init(&me.cond, NULL);
    pthread_mutex_lock(&s->glock);
    if (s->gwait_tail) {
        s->gwait_tail->next = &me;
    }
    else {
        s->gwait_head = &me;
    }
    s->gwait_tail = &me;
    if (s->group_leading && s->group_round_us <= XT_GROUP_SPIN_MAX_US) {
        /* Rows queued during a round commit in the next one: allow a few rounds. */
        int64_t budget = 4 * s->group_round_us;
        pthread_mutex_unlock(&s->glock);
        spin_for_round(s, &me, budget < XT_GROUP_SPIN_MAX_US ? budget : XT_GROUP_SPIN_MAX_US);
        pthread_mutex_lock(&s->glock);
    }
    while (!me.done && s->group_leading) {
        pthread_cond_wait(&me.cond, &s->glock);
    }
    if (!me.done) {
        xt_group_waiter *group = s->gwait_head;
        s->gwait_head = s->gwait_tail = NULL;
        __atomic_store_n(&s->group_leading, 1, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&s->glock);
        int64_t started = monotonic_us();
        write_group(s, group);
        int64_t took = monotonic_us() - started;
        pthread_mutex_lock(&s->glock);
        s->group_round_us = took;
        __atomic_store_n(&s->group_leading, 0, __ATOMIC_RELEASE);
        while (group) {
            xt_group_waiter *next = group->next; /* a member's frame is gone once it wakes */
            __atomic_store_n(&group->done, 1, __ATOMIC_RELEASE);
            if (group != &me) {
                pthread_cond_signal(&group->cond);
            }
            group = next;
        }
        if (s->gwait_head) {
            pthread_cond_signal(&s->gwait_head->cond); /* the next leader */
        }
    }
    pthread_mutex_unlock(&s->glock);
    pthread_cond_destroy(&me.cond);
    return me.rc;
}

int
xt_store_ensure_columns(xt_store *s, const int *cols, int n, xt_error *err)
{
    int res = -1;
    pthread_mutex_lock(&s->lock);
    if (xt_store_check_open(s, err) < 0 || begin(s, err) < 0) {
        goto done;
    }
    if (add_missing_columns(s, cols, n, err) < 0 || commit(s, err) < 0) {
        rollback(s);
        goto done;
    }
    res = 0;
done:
    pthread_mutex_unlock(&s->lock);
    return res;
}

int
xt_store_close(xt_store *s, xt_error *err)
{
    int res = 0;
    pthread_mutex_lock(&s->qlock);
    int started = s->thread_started;
    s->closing = 1; /* from here on rows are refused; the writer drains what is queued */
    s->stopping = 1;
    pthread_cond_broadcast(&s->q_nonempty);
    pthread_cond_broadcast(&s->q_space);
    pthread_mutex_unlock(&s->qlock);
    if (started) {
        pthread_join(s->thread, NULL);
        s->thread_started = 0;
    }
    res = xt_store_flush(s, err);
    xt_ckpt_stop(s);
    pthread_mutex_lock(&s->lock);
    if (s->open) {
        /* Fold the WAL back into the database: closing the file's last connection then
         * finds nothing to copy and removes the WAL. */
        sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        store_disconnect(s);
    }
    pthread_mutex_unlock(&s->lock);
    return res;
}

void
xt_store_free(xt_store *s)
{
    if (s == NULL) {
        return;
    }
    if (!xt_store_forked(s)) {
        xt_ckpt_stop(s); /* a child that never reopened has no thread and a closed copy */
    }
    xt_fork_guard_remove(&s->fork_guard);
    xt_fork_guard_remove(&s->ckpt_guard);
    xt_store_free_rows(s->qhead);
    free(s->group_rows);
    int count = atomic_load(&s->columns.count);
    for (int i = 0; i < count; i++) {
        xt_column_free(s->columns.slots[i]);
    }
    free(s->path);
    free(s->table);
    free(s->qtable);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->qlock);
    pthread_cond_destroy(&s->q_nonempty);
    pthread_cond_destroy(&s->q_space);
    pthread_cond_destroy(&s->q_idle);
    pthread_mutex_destroy(&s->glock);
    xt_ckpt_destroy(s);
    free(s);
}

xt_columns *
xt_store_columns(xt_store *s)
{
    return &s->columns;
}

sqlite3 *
xt_store_db(xt_store *s)
{
    return s->db;
}

const char *
xt_store_path(xt_store *s)
{
    return s->path ? s->path : "";
}

int
xt_store_is_open(xt_store *s)
{
    return s->open;
}

int
xt_store_durability(xt_store *s)
{
    return s->durability;
}

int64_t
xt_store_last_ts(xt_store *s)
{
    return atomic_load(&s->last_ts);
}

int
xt_store_length_limit(xt_store *s)
{
    return atomic_load_explicit(&s->length_limit, memory_order_relaxed);
}

int
xt_store_set_length_limit(xt_store *s, int limit)
{
    pthread_mutex_lock(&s->lock);
    int previous = atomic_load(&s->length_limit);
    if (s->open && limit >= 0) {
        sqlite3_limit(s->db, SQLITE_LIMIT_LENGTH, limit);
        atomic_store(&s->length_limit, sqlite3_limit(s->db, SQLITE_LIMIT_LENGTH, -1));
    }
    pthread_mutex_unlock(&s->lock);
    return previous;
}

PyObject *
xt_raise_store_error(xt_state *st, xt_store *s, const xt_error *err)
{
    if (err->rc == SQLITE_MISUSE && strcmp(err->msg, "the tracker is closed") == 0) {
        PyErr_SetString(PyExc_ValueError, "I/O operation on a closed Tracker: create a new Tracker");
        return NULL;
    }
    if (strstr(err->msg, XT_COLUMN_LIMIT_TEXT) != NULL) {
        PyErr_Format(PyExc_ValueError,
                     "%s; the write was rolled back, nothing of it is stored: log fewer "
                     "distinct keys, or spread them over several tables (Tracker(table=...))",
                     err->msg);
        return NULL;
    }
    return xt_raise_sqlite(st, err->rc, err->msg, xt_store_path(s), err->sql[0] ? err->sql : NULL);
}
