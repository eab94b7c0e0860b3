/* Assets (store_internal.h): the objects a row refers to by hash, written in the row's
 * own transaction on the store's connection, in xetrack 0.7's layout so either package
 * reads what the other wrote.  Three tables, each (key TEXT PRIMARY KEY, value BLOB) as
 * sqlitedict makes them:
 *
 *   assets  key: base64 of the pickled hash       value: the pickled object (maybe zlib'd)
 *   keys    key: base64 of the pickled column     value: the pickled hash of its last asset
 *   counts  key: the hash                         value: the pickled number of references
 *
 * The caller encodes everything but the count (row.c, with the GIL); the count is read
 * and written here, where the transaction makes the increment safe against other writers.
 * Pickles of ints are read and written by hand: only the opcodes Python's pickle uses for
 * an int (protocols 2 to 5), never anything that would run code. */
#include "store_internal.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

enum { ASSET_PUT = 0, KEY_PUT = 1, COUNT_GET = 2, COUNT_PUT = 3 };

static const char *const asset_sql[XT_ASSET_STMTS] = {
    "INSERT OR IGNORE INTO \"assets\" (key, value) VALUES (?, ?)",
    "REPLACE INTO \"keys\" (key, value) VALUES (?, ?)",
    "SELECT value FROM \"counts\" WHERE key = ?",
    "REPLACE INTO \"counts\" (key, value) VALUES (?, ?)",
};

static const char create_sql[] =
    "CREATE TABLE IF NOT EXISTS \"assets\" (key TEXT PRIMARY KEY, value BLOB);"
    "CREATE TABLE IF NOT EXISTS \"keys\" (key TEXT PRIMARY KEY, value BLOB);"
    "CREATE TABLE IF NOT EXISTS \"counts\" (key TEXT PRIMARY KEY, value BLOB);";

/* Blobs at least this long are written in place (write_one). */
#define XT_BLOB_IN_PLACE (64 * 1024)

/* Longest pickle of a count: PROTO, FRAME and its length, LONG1 with 8 bytes, STOP. */
#define XT_COUNT_PICKLE 22

static int
fail(xt_store *s, xt_error *err, int rc, const char *sql)
{
    xt_store_set_error(err, rc, sqlite3_errmsg(s->db), sql);
    return -1;
}

void
xt_store_forget_assets(xt_store *s)
{
    for (int i = 0; i < XT_ASSET_STMTS; i++) {
        sqlite3_finalize(s->asset_stmts[i]);
        s->asset_stmts[i] = NULL;
    }
    s->assets_ready = 0;
}

static int
prepare(xt_store *s, xt_error *err)
{
    int rc = sqlite3_exec(s->db, create_sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        return fail(s, err, rc, create_sql);
    }
    for (int i = 0; i < XT_ASSET_STMTS; i++) {
        if (s->asset_stmts[i] == NULL) {
            rc = sqlite3_prepare_v3(s->db, asset_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                    &s->asset_stmts[i], NULL);
            if (rc != SQLITE_OK) {
                return fail(s, err, rc, asset_sql[i]);
            }
        }
    }
    s->assets_ready = 1;
    return 0;
}

/* The int in a pickle as Python writes one (PROTO 2-5, an optional FRAME, then BININT1,
 * BININT2, BININT or LONG1, then STOP); -1 for anything else. */
static int
decode_count(const unsigned char *p, int n, int64_t *out)
{
    int i = 0;
    if (n >= 2 && p[0] == 0x80) {
        i = 2;
    }
    if (i + 9 <= n && p[i] == 0x95) {
        i += 9;
    }
    if (i >= n) {
        return -1;
    }
    unsigned char op = p[i++];
    int len;
    switch (op) {
    case 'K':
        len = 1;
        break;
    case 'M':
        len = 2;
        break;
    case 'J':
        len = 4;
        break;
    case 0x8a:
        if (i >= n || p[i] > 8) {
            return -1;
        }
        len = p[i++];
        break;
    default:
        return -1;
    }
    if (i + len + 1 != n || p[i + len] != '.') {
        return -1;
    }
    uint64_t v = 0;
    for (int k = 0; k < len; k++) {
        v |= (uint64_t)p[i + k] << (8 * k);
    }
    if ((op == 'J' || op == 0x8a) && len > 0 && len < 8 && (p[i + len - 1] & 0x80)) {
        v |= ~(uint64_t)0 << (8 * len); /* sign-extend */
    }
    *out = (int64_t)v;
    return 0;
}

/* `v` (>= 0) pickled as Python's pickle.dumps(v, protocol=5) writes it. */
static int
encode_count(int64_t v, unsigned char out[XT_COUNT_PICKLE])
{
    unsigned char body[11];
    int n = 0;
    if (v < 256) {
        body[n++] = 'K';
        body[n++] = (unsigned char)v;
    }
    else if (v < 65536) {
        body[n++] = 'M';
        body[n++] = (unsigned char)(v & 0xff);
        body[n++] = (unsigned char)(v >> 8);
    }
    else if (v < 2147483648LL) {
        body[n++] = 'J';
        for (int k = 0; k < 4; k++) {
            body[n++] = (unsigned char)((uint64_t)v >> (8 * k));
        }
    }
    else {
        /* LONG1: the fewest little-endian bytes whose top bit is clear. */
        int len = 1;
        while (len < 8 && ((uint64_t)v >> (8 * len - 1)) != 0) {
            len++;
        }
        body[n++] = 0x8a;
        body[n++] = (unsigned char)len;
        for (int k = 0; k < len; k++) {
            body[n++] = (unsigned char)((uint64_t)v >> (8 * k));
        }
    }
    body[n++] = '.';
    int i = 0;
    out[i++] = 0x80;
    out[i++] = 5;
    if (n >= 4) { /* pickle frames anything of 4 bytes or more */
        out[i++] = 0x95;
        for (int k = 0; k < 8; k++) {
            out[i++] = (unsigned char)((uint64_t)n >> (8 * k));
        }
    }
    memcpy(out + i, body, (size_t)n);
    return i + n;
}

static int
bind_bytes(sqlite3_stmt *stmt, int index, xt_bytes b, int as_text)
{
    return as_text ? sqlite3_bind_text64(stmt, index, b.p, (sqlite3_uint64)b.n, SQLITE_STATIC,
                                         SQLITE_UTF8)
                   : sqlite3_bind_blob64(stmt, index, b.p, (sqlite3_uint64)b.n, SQLITE_STATIC);
}

/* Step a statement that returns no row; -1 with `err` set on failure. */
static int
run(xt_store *s, sqlite3_stmt *stmt, xt_error *err)
{
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc == SQLITE_DONE ? 0 : fail(s, err, rc, sqlite3_sql(stmt));
}

static int
write_one(xt_store *s, const xt_asset *a, xt_error *err)
{
    sqlite3_stmt **st = s->asset_stmts;
    int rc;

    /* A large blob is written in place: a zeroblob of its length, then its bytes straight
     * into the pages (sqlite3_blob_write), so SQLite never builds a record of it in a heap
     * buffer of that size.  Only when the row is new: an existing hash is left as it is. */
    int in_place = a->blob.n >= XT_BLOB_IN_PLACE && a->blob.n <= INT_MAX;
    if ((rc = bind_bytes(st[ASSET_PUT], 1, a->key, 1)) != SQLITE_OK
        || (rc = in_place ? sqlite3_bind_zeroblob64(st[ASSET_PUT], 2, (sqlite3_uint64)a->blob.n)
                          : bind_bytes(st[ASSET_PUT], 2, a->blob, 0))
               != SQLITE_OK) {
        sqlite3_clear_bindings(st[ASSET_PUT]);
        return fail(s, err, rc, asset_sql[ASSET_PUT]);
    }
    if (run(s, st[ASSET_PUT], err) < 0) {
        return -1;
    }
    if (in_place && sqlite3_changes(s->db) == 1) {
        sqlite3_blob *blob = NULL;
        rc = sqlite3_blob_open(s->db, "main", "assets", "value", sqlite3_last_insert_rowid(s->db),
                               1, &blob);
        if (rc == SQLITE_OK) {
            rc = sqlite3_blob_write(blob, a->blob.p, (int)a->blob.n, 0);
        }
        int closed = sqlite3_blob_close(blob);
        if (rc == SQLITE_OK) {
            rc = closed;
        }
        if (rc != SQLITE_OK) {
            return fail(s, err, rc, "sqlite3_blob_write of an asset");
        }
    }
    if ((rc = bind_bytes(st[KEY_PUT], 1, a->name_key, 1)) != SQLITE_OK
        || (rc = bind_bytes(st[KEY_PUT], 2, a->name_value, 0)) != SQLITE_OK) {
        sqlite3_clear_bindings(st[KEY_PUT]);
        return fail(s, err, rc, asset_sql[KEY_PUT]);
    }
    if (run(s, st[KEY_PUT], err) < 0) {
        return -1;
    }

    int64_t count = 0;
    sqlite3_stmt *get = st[COUNT_GET];
    if ((rc = bind_bytes(get, 1, a->hash, 1)) != SQLITE_OK) {
        return fail(s, err, rc, asset_sql[COUNT_GET]);
    }
    rc = sqlite3_step(get);
    if (rc == SQLITE_ROW) {
        const unsigned char *p = sqlite3_column_blob(get, 0);
        int n = sqlite3_column_bytes(get, 0);
        if (p == NULL || decode_count(p, n, &count) < 0 || count < 0) {
            sqlite3_reset(get);
            sqlite3_clear_bindings(get);
            err->rc = SQLITE_MISMATCH;
            snprintf(err->msg, sizeof(err->msg),
                     "the \"counts\" entry of asset %.*s is not a pickled count; the row was "
                     "not written: repair or delete that entry",
                     (int)(a->hash.n < 64 ? a->hash.n : 64), a->hash.p);
            snprintf(err->sql, sizeof(err->sql), "%s", asset_sql[COUNT_GET]);
            return -1;
        }
        rc = SQLITE_DONE;
    }
    sqlite3_reset(get);
    sqlite3_clear_bindings(get);
    if (rc != SQLITE_DONE) {
        return fail(s, err, rc, asset_sql[COUNT_GET]);
    }
    unsigned char pickled[XT_COUNT_PICKLE];
    int pn = encode_count(count + 1, pickled);
    sqlite3_stmt *put = st[COUNT_PUT];
    if ((rc = bind_bytes(put, 1, a->hash, 1)) != SQLITE_OK
        || (rc = sqlite3_bind_blob(put, 2, pickled, pn, SQLITE_TRANSIENT)) != SQLITE_OK) {
        sqlite3_clear_bindings(put);
        return fail(s, err, rc, asset_sql[COUNT_PUT]);
    }
    return run(s, put, err);
}

int
xt_store_write_assets(xt_store *s, const xt_row *row, xt_error *err)
{
    if (row->n_assets == 0) {
        return 0;
    }
    if (!s->assets_ready && prepare(s, err) < 0) {
        return -1;
    }
    for (int i = 0; i < row->n_assets; i++) {
        if (write_one(s, &row->assets[i], err) < 0) {
            return -1;
        }
    }
    return 0;
}
