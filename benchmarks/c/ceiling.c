/*
 * ceiling.c -- the physical limit for the xetrack_c benchmarks: SQLite from C, no Python.
 *
 *   ceiling insert DB NROWS NCOLS [normal|full] [batch|each] [ckpt|nockpt]
 *        create the xetrack layout and insert NROWS rows of NCOLS keys with one prepared
 *        statement: in one transaction ("batch", the default) or one transaction per row
 *        ("each", what a per-row commit costs); synchronous=NORMAL (default) or FULL;
 *        SQLite's automatic WAL checkpoint inside the commits ("ckpt", the default) or none
 *        ("nockpt": the write path alone, for a writer that checkpoints on another thread)
 *   ceiling scan DB [THREADS]                     read every column of every row once; with
 *        THREADS > 1, in that many equal rowid ranges, a thread and a connection each
 *   ceiling blobs DB NROWS BYTES [each|batch] [ckpt|nockpt]
 *        what logging a row that holds an asset writes: a distinct BYTES-long blob into
 *        "assets" (INSERT OR IGNORE of a zeroblob, then sqlite3_blob_write), the key's hash into "keys", the hash's count into
 *        "counts" (read, then written back), and the row (step INTEGER, vec TEXT holding
 *        the 16-digit hash) into "default"; one transaction per row ("each", the default)
 *        or one for all ("batch"); synchronous=NORMAL, WAL; automatic checkpoint as for insert
 *
 * The scan touches every cell once with one API call: each column's storage class is read
 * from the first row, then every cell of it with the one accessor of that class
 * (sqlite3_column_int64, _double, or _text whose bytes are walked to their end, as a copy
 * would); it is what any reader of these rows into typed columns has to do.
 *
 * Prints one JSON object: {"op": ..., "rows": N, "seconds": S, "sqlite": "3.x.y"}; the scan
 * adds "cpu_seconds", the process CPU time of the loop (less disturbed by other programs on
 * a loaded machine than the wall time).
 * Only the inserts with their BEGIN .. COMMIT, or the scan loop, are timed; creating the table
 * and opening the file are not. The floors are kept tight: BEGIN and COMMIT are prepared once
 * and stepped and reset (never parsed per row), every cell is bound with one call and no copy
 * (SQLITE_STATIC buffers that live until the step), and the scan makes one call per cell.
 *
 * Rows match benchmarks/data.py exactly: key "k<c>" holds, for row r,
 *   c % 3 == 0 -> INTEGER r * 31 + c
 *   c % 3 == 1 -> REAL    r * 0.5 + c / 8.0
 *   c % 3 == 2 -> TEXT    "v<c>-<r % 1000>"
 * plus track_id TEXT and timestamp TEXT ("%Y-%m-%d %H:%M:%S.%f", local time, one microsecond
 * apart so that the primary key never collides), PRIMARY KEY (track_id, timestamp), WAL mode.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_COLS 2000
#define MAX_THREADS 64

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(sqlite3 *db, const char *what) {
    fprintf(stderr, "ceiling: %s: %s\n", what, db ? sqlite3_errmsg(db) : "out of memory");
    if (db) sqlite3_close(db);
    return 1;
}

static int exec_sql(sqlite3 *db, const char *sql) {
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "ceiling: %s: %s\n", sql, err ? err : "?");
        sqlite3_free(err);
        return 1;
    }
    return 0;
}

/* Appends to buf, never past cap; returns 1 if it ran out of room. */
static int append(char *buf, size_t cap, size_t *len, const char *text) {
    size_t n = strlen(text);
    if (*len + n + 1 > cap) return 1;
    memcpy(buf + *len, text, n + 1);
    *len += n;
    return 0;
}

static int build_sql(int ncols, char *create, char *insert, size_t cap) {
    size_t clen = 0, ilen = 0;
    char piece[64];
    if (append(create, cap, &clen, "CREATE TABLE \"default\" (track_id TEXT, timestamp TEXT")) return 1;
    if (append(insert, cap, &ilen, "INSERT INTO \"default\" (track_id, timestamp")) return 1;
    for (int c = 0; c < ncols; c++) {
        const char *type = c % 3 == 0 ? "INTEGER" : c % 3 == 1 ? "REAL" : "TEXT";
        snprintf(piece, sizeof piece, ", \"k%d\" %s", c, type);
        if (append(create, cap, &clen, piece)) return 1;
        snprintf(piece, sizeof piece, ", \"k%d\"", c);
        if (append(insert, cap, &ilen, piece)) return 1;
    }
    if (append(create, cap, &clen, ", PRIMARY KEY (track_id, timestamp))")) return 1;
    if (append(insert, cap, &ilen, ") VALUES (?, ?")) return 1;
    for (int c = 0; c < ncols; c++)
        if (append(insert, cap, &ilen, ", ?")) return 1;
    return append(insert, cap, &ilen, ")");
}

/* Writes the decimal digits of v (>= 0) to out, returns how many; no printf on the hot path. */
static int put_digits(char *out, long long v) {
    char tmp[24];
    int n = 0, len = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    while (n > 0) out[len++] = tmp[--n];
    return len;
}

/* "v<c>-<r % 1000>", the text value of key c in row r. */
static int format_text(char *out, int col, long long row) {
    int len = 0;
    out[len++] = 'v';
    len += put_digits(out + len, col);
    out[len++] = '-';
    len += put_digits(out + len, row % 1000);
    out[len] = '\0';
    return len;
}

/* Local time of (base_sec + micro offset), formatted like Python's "%Y-%m-%d %H:%M:%S.%f".
 * The date-and-seconds prefix is cached and reformatted only when the second changes. */
static int format_timestamp(time_t base_sec, long long micros, char *out,
                            time_t *cached_sec, char *prefix, size_t prefix_cap) {
    time_t sec = base_sec + (time_t)(micros / 1000000);
    long usec = (long)(micros % 1000000);
    if (sec != *cached_sec) {
        struct tm tm;
        localtime_r(&sec, &tm);
        strftime(prefix, prefix_cap, "%Y-%m-%d %H:%M:%S", &tm);
        *cached_sec = sec;
    }
    size_t len = strlen(prefix);
    memcpy(out, prefix, len);
    out[len++] = '.';
    for (int digit = 5; digit >= 0; digit--) {
        out[len + (size_t)digit] = (char)('0' + usec % 10);
        usec /= 10;
    }
    len += 6;
    out[len] = '\0';
    return (int)len;
}

static int step_reset(sqlite3 *db, sqlite3_stmt *stmt, int want) {
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    return rc == want || (want == SQLITE_ROW && rc == SQLITE_DONE) ? 0 : fail(db, sqlite3_sql(stmt));
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int run_insert(const char *path, long long nrows, int ncols, int full_sync, int per_row,
                      int checkpoint) {
    static char create[MAX_COLS * 32 + 256], insert[MAX_COLS * 16 + 256];
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL, *begin = NULL, *commit = NULL;
    /* One text buffer per column: bound SQLITE_STATIC, so it must hold until the step. */
    static char text[MAX_COLS][32]; /* "v<c>-<r % 1000>": < 16 chars */
    char ts[64], prefix[48]; /* prefix: 19 chars */
    time_t cached_sec = (time_t)-1;
    struct timespec wall;

    if (ncols < 1 || ncols > MAX_COLS || nrows < 1) {
        fprintf(stderr, "ceiling: need 1 <= NCOLS <= %d and NROWS >= 1\n", MAX_COLS);
        return 2;
    }
    if (build_sql(ncols, create, insert, sizeof create)) {
        fprintf(stderr, "ceiling: SQL too long\n");
        return 2;
    }
    if (sqlite3_open(path, &db) != SQLITE_OK) return fail(db, "open");
    if (exec_sql(db, "PRAGMA journal_mode=WAL")) return fail(db, "journal_mode");
    if (exec_sql(db, full_sync ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL"))
        return fail(db, "synchronous");
    if (!checkpoint && exec_sql(db, "PRAGMA wal_autocheckpoint=0")) return fail(db, "checkpoint");
    if (exec_sql(db, create)) return fail(db, "create table");
    if (sqlite3_prepare_v2(db, insert, -1, &stmt, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(db, "BEGIN IMMEDIATE", -1, &begin, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(db, "COMMIT", -1, &commit, NULL) != SQLITE_OK)
        return fail(db, "prepare");
    clock_gettime(CLOCK_REALTIME, &wall);
    /* Per row commit: each row's time (its INSERT, then the COMMIT and the next BEGIN). */
    double *took = per_row ? malloc((size_t)nrows * sizeof(double)) : NULL;
    if (per_row && took == NULL) {
        fprintf(stderr, "ceiling: out of memory\n");
        return 2;
    }

    double start = now_seconds(), row_start = start;
    if (step_reset(db, begin, SQLITE_DONE)) return 1;
    for (long long r = 0; r < nrows; r++) {
        if (per_row && r > 0) {
            double t = now_seconds();
            took[r - 1] = t - row_start;
            row_start = t;
            if (step_reset(db, commit, SQLITE_DONE) || step_reset(db, begin, SQLITE_DONE)) return 1;
        }
        int n = format_timestamp(wall.tv_sec, wall.tv_nsec / 1000 + r, ts, &cached_sec, prefix,
                                 sizeof prefix);
        sqlite3_bind_text(stmt, 1, "bench-ceiling-0001", -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, ts, n, SQLITE_STATIC);
        for (int c = 0; c < ncols; c++) {
            if (c % 3 == 0) {
                sqlite3_bind_int64(stmt, c + 3, r * 31 + c);
            } else if (c % 3 == 1) {
                sqlite3_bind_double(stmt, c + 3, (double)r * 0.5 + (double)c / 8.0);
            } else {
                int len = format_text(text[c], c, r);
                sqlite3_bind_text(stmt, c + 3, text[c], len, SQLITE_STATIC);
            }
        }
        if (sqlite3_step(stmt) != SQLITE_DONE) {
            sqlite3_finalize(stmt);
            return fail(db, "insert");
        }
        sqlite3_reset(stmt);
    }
    if (step_reset(db, commit, SQLITE_DONE)) return 1;
    double seconds = now_seconds() - start;
    double median = 0.0, p99 = 0.0;
    if (per_row) {
        took[nrows - 1] = now_seconds() - row_start;
        qsort(took, (size_t)nrows, sizeof(double), compare_doubles);
        median = took[nrows / 2];
        p99 = took[(long long)((double)nrows * 0.99)];
        free(took);
    }

    sqlite3_finalize(stmt);
    sqlite3_finalize(begin);
    sqlite3_finalize(commit);
    sqlite3_close(db);
    printf("{\"op\": \"insert\", \"rows\": %lld, \"cols\": %d, \"seconds\": %.9f, \"sqlite\": \"%s\", "
           "\"per_row_commit\": %s, \"synchronous\": \"%s\", \"checkpoint\": %s, "
           "\"median\": %.9f, \"p99\": %.9f}\n",
           nrows, ncols, seconds, sqlite3_libversion(), per_row ? "true" : "false",
           full_sync ? "full" : "normal", checkpoint ? "true" : "false", median, p99);
    return 0;
}

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One scan: every cell of the rows of `stmt` touched once (see the header). */
typedef struct {
    const char *path;
    long long lo, hi;   /* rowids [lo, hi), or lo > hi for the whole table */
    long long rows, int_sum, text_bytes;
    double real_sum;
    int ncols, failed;
} scan_part;

static void *scan_range(void *arg) {
    scan_part *part = arg;
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    int kind[MAX_COLS];
    const char *sql = part->lo > part->hi ? "SELECT * FROM \"default\""
                                          : "SELECT * FROM \"default\" WHERE _rowid_ >= ?1 "
                                            "AND _rowid_ < ?2";
    part->failed = 1;
    /* NOMUTEX, as xetrack_c's reader opens its connections: a serialized connection would
     * take and release its mutex in every sqlite3_column_* call. */
    int rc = sqlite3_open_v2(part->path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    }
    if (rc != SQLITE_OK) {
        fprintf(stderr, "ceiling: scan: %s\n", sqlite3_errmsg(db));
        sqlite3_close(db);
        return NULL;
    }
    if (part->lo <= part->hi) {
        sqlite3_bind_int64(stmt, 1, part->lo);
        sqlite3_bind_int64(stmt, 2, part->hi);
    }
    int ncols = sqlite3_column_count(stmt);
    if (ncols > MAX_COLS) ncols = MAX_COLS;
    part->ncols = ncols;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (part->rows == 0) {
            for (int c = 0; c < ncols; c++) kind[c] = sqlite3_column_type(stmt, c);
        }
        for (int c = 0; c < ncols; c++) {
            switch (kind[c]) {
            case SQLITE_INTEGER: part->int_sum += sqlite3_column_int64(stmt, c); break;
            case SQLITE_FLOAT: part->real_sum += sqlite3_column_double(stmt, c); break;
            default: {
                const unsigned char *text = sqlite3_column_text(stmt, c);
                if (text) part->text_bytes += (long long)strlen((const char *)text);
                break;
            }
            }
        }
        part->rows++;
    }
    if (rc == SQLITE_DONE) part->failed = 0;
    else fprintf(stderr, "ceiling: scan: %s\n", sqlite3_errmsg(db));
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return NULL;
}

/* The whole table on one thread, or in `threads` equal rowid ranges, one thread and
 * connection each (the floor of a parallel read). */
static int run_scan(const char *path, int threads) {
    static scan_part parts[MAX_THREADS];
    static pthread_t ids[MAX_THREADS];
    long long lo = 1, hi = 0;

    if (threads < 1 || threads > MAX_THREADS) {
        fprintf(stderr, "ceiling: need 1 <= THREADS <= %d\n", MAX_THREADS);
        return 2;
    }
    if (threads > 1) {
        sqlite3 *db = NULL;
        sqlite3_stmt *stmt = NULL;
        if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK
            || sqlite3_prepare_v2(db, "SELECT min(_rowid_), max(_rowid_) FROM \"default\"", -1,
                                  &stmt, NULL) != SQLITE_OK
            || sqlite3_step(stmt) != SQLITE_ROW)
            return fail(db, "span");
        lo = sqlite3_column_int64(stmt, 0);
        hi = sqlite3_column_int64(stmt, 1) + 1;
        sqlite3_finalize(stmt);
        sqlite3_close(db);
    }
    double start = now_seconds(), cpu_start = cpu_seconds();
    for (int t = 0; t < threads; t++) {
        parts[t].path = path;
        parts[t].lo = threads > 1 ? lo + (hi - lo) / threads * t : 1;
        parts[t].hi = threads > 1 ? (t == threads - 1 ? hi : lo + (hi - lo) / threads * (t + 1)) : 0;
        if (pthread_create(&ids[t], NULL, scan_range, &parts[t]) != 0) {
            fprintf(stderr, "ceiling: no thread\n");
            return 1;
        }
    }
    long long rows = 0;
    double checksum = 0.0;
    int ncols = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(ids[t], NULL);
        if (parts[t].failed) return 1;
        rows += parts[t].rows;
        ncols = parts[t].ncols;
        checksum += (double)parts[t].int_sum + parts[t].real_sum + (double)parts[t].text_bytes;
    }
    double seconds = now_seconds() - start, cpu = cpu_seconds() - cpu_start;
    /* The checksum keeps the loop from being optimised away. */
    printf("{\"op\": \"scan\", \"rows\": %lld, \"cols\": %d, \"threads\": %d, \"seconds\": %.9f, "
           "\"cpu_seconds\": %.9f, \"sqlite\": \"%s\", \"checksum\": %.1f}\n",
           rows, ncols, threads, seconds, cpu, sqlite3_libversion(), checksum);
    return 0;
}

static int run_blobs(const char *path, long long nrows, long long nbytes, int per_row,
                     int checkpoint) {
    static const char *const sql[] = {
        "CREATE TABLE \"default\" (track_id TEXT, timestamp TEXT, step INTEGER, vec TEXT, "
        "PRIMARY KEY (track_id, timestamp));"
        "CREATE TABLE \"assets\" (key TEXT PRIMARY KEY, value BLOB);"
        "CREATE TABLE \"keys\" (key TEXT PRIMARY KEY, value BLOB);"
        "CREATE TABLE \"counts\" (key TEXT PRIMARY KEY, value BLOB)",
        "INSERT OR IGNORE INTO \"assets\" (key, value) VALUES (?, ?)",
        "REPLACE INTO \"keys\" (key, value) VALUES ('vec', ?)",
        "SELECT value FROM \"counts\" WHERE key = ?",
        "REPLACE INTO \"counts\" (key, value) VALUES (?, X'80054B012E')",
        "INSERT INTO \"default\" (track_id, timestamp, step, vec) VALUES (?, ?, ?, ?)",
    };
    sqlite3 *db = NULL;
    sqlite3_stmt *st[6] = {NULL}, *begin = NULL, *commit = NULL;
    char ts[64], prefix[48], hash[17];
    time_t cached_sec = (time_t)-1;
    struct timespec wall;

    if (nrows < 1 || nbytes < 8) {
        fprintf(stderr, "ceiling: need NROWS >= 1 and BYTES >= 8\n");
        return 2;
    }
    unsigned char *blob = malloc((size_t)nbytes);
    if (blob == NULL) return fail(NULL, "malloc");
    unsigned long long x = 0x9e3779b97f4a7c15ULL; /* xorshift: bytes that do not compress */
    for (long long i = 0; i < nbytes; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        blob[i] = (unsigned char)x;
    }
    if (sqlite3_open(path, &db) != SQLITE_OK) return fail(db, "open");
    if (exec_sql(db, "PRAGMA journal_mode=WAL") || exec_sql(db, "PRAGMA synchronous=NORMAL"))
        return fail(db, "pragma");
    if (!checkpoint && exec_sql(db, "PRAGMA wal_autocheckpoint=0")) return fail(db, "checkpoint");
    if (exec_sql(db, sql[0])) return fail(db, "create tables");
    for (int i = 1; i < 6; i++)
        if (sqlite3_prepare_v2(db, sql[i], -1, &st[i], NULL) != SQLITE_OK) return fail(db, sql[i]);
    if (sqlite3_prepare_v2(db, "BEGIN IMMEDIATE", -1, &begin, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(db, "COMMIT", -1, &commit, NULL) != SQLITE_OK)
        return fail(db, "prepare");
    clock_gettime(CLOCK_REALTIME, &wall);

    double start = now_seconds();
    if (!per_row && step_reset(db, begin, SQLITE_DONE)) return 1;
    for (long long r = 0; r < nrows; r++) {
        memcpy(blob, &r, sizeof r); /* a distinct blob, and a distinct hash, per row */
        snprintf(hash, sizeof hash, "%016llx", (unsigned long long)r * 0x9e3779b97f4a7c15ULL);
        int n = format_timestamp(wall.tv_sec, wall.tv_nsec / 1000 + r, ts, &cached_sec, prefix,
                                 sizeof prefix);
        if (per_row && step_reset(db, begin, SQLITE_DONE)) return 1;
        sqlite3_bind_text(st[1], 1, hash, 16, SQLITE_STATIC);
        sqlite3_bind_zeroblob64(st[1], 2, (sqlite3_uint64)nbytes); /* then written in place */
        sqlite3_bind_blob(st[2], 1, hash, 16, SQLITE_STATIC);
        sqlite3_bind_text(st[3], 1, hash, 16, SQLITE_STATIC);
        sqlite3_bind_text(st[4], 1, hash, 16, SQLITE_STATIC);
        sqlite3_bind_text(st[5], 1, "bench-ceiling-0001", -1, SQLITE_STATIC);
        sqlite3_bind_text(st[5], 2, ts, n, SQLITE_STATIC);
        sqlite3_bind_int64(st[5], 3, r);
        sqlite3_bind_text(st[5], 4, hash, 16, SQLITE_STATIC);
        if (step_reset(db, st[1], SQLITE_DONE)) return 1;
        sqlite3_blob *handle = NULL;
        if (sqlite3_blob_open(db, "main", "assets", "value", sqlite3_last_insert_rowid(db), 1,
                              &handle) != SQLITE_OK
            || sqlite3_blob_write(handle, blob, (int)nbytes, 0) != SQLITE_OK
            || sqlite3_blob_close(handle) != SQLITE_OK)
            return fail(db, "blob write");
        if (step_reset(db, st[2], SQLITE_DONE)
            || step_reset(db, st[3], SQLITE_ROW) || step_reset(db, st[4], SQLITE_DONE)
            || step_reset(db, st[5], SQLITE_DONE))
            return 1;
        if (per_row && step_reset(db, commit, SQLITE_DONE)) return 1;
    }
    if (!per_row && step_reset(db, commit, SQLITE_DONE)) return 1;
    double seconds = now_seconds() - start;
    for (int i = 1; i < 6; i++) sqlite3_finalize(st[i]);
    sqlite3_finalize(begin);
    sqlite3_finalize(commit);
    sqlite3_close(db);
    free(blob);
    printf("{\"op\": \"blobs\", \"rows\": %lld, \"bytes\": %lld, \"seconds\": %.9f, "
           "\"sqlite\": \"%s\"}\n", nrows, nbytes, seconds, sqlite3_libversion());
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 5 && argc <= 8 && strcmp(argv[1], "insert") == 0) {
        int full_sync = argc >= 6 && strcmp(argv[5], "full") == 0;
        int per_row = argc >= 7 && strcmp(argv[6], "each") == 0;
        int checkpoint = !(argc >= 8 && strcmp(argv[7], "nockpt") == 0);
        return run_insert(argv[2], atoll(argv[3]), atoi(argv[4]), full_sync, per_row, checkpoint);
    }
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "scan") == 0)
        return run_scan(argv[2], argc == 4 ? atoi(argv[3]) : 1);
    if (argc >= 5 && argc <= 7 && strcmp(argv[1], "blobs") == 0)
        return run_blobs(argv[2], atoll(argv[3]), atoll(argv[4]),
                         argc < 6 || strcmp(argv[5], "batch") != 0,
                         !(argc >= 7 && strcmp(argv[6], "nockpt") == 0));
    fprintf(stderr, "usage: ceiling insert DB NROWS NCOLS [normal|full] [batch|each] [ckpt|nockpt]"
                    " | ceiling scan DB"
                    " | ceiling blobs DB NROWS BYTES [each|batch] [ckpt|nockpt]\n");
    return 2;
}
