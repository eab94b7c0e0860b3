/* Reader: the columnar read path.  The module-level functions that open a database path
 * (read_columns, read_rows, execute) live in dbfile.c; this file keeps everything that
 * touches NumPy and the statement helpers they share (xt_prepare_one, xt_bind_params).
 *
 * xt_read_columns() works in three phases:
 *   1. prepare and bind (bind with the GIL held: it reads Python values);
 *   2. scan: step through the result set once with the GIL released, appending every cell
 *      to per-column C buffers (a storage-class tag, an 8-byte number or arena offset, and
 *      an arena holding the bytes of TEXT and BLOB values).  With a row-count hint the
 *      buffers are allocated once at that size, and each arena is sized from the bytes per
 *      row of the first rows; the slack is given back when the arrays adopt the buffers;
 *   3. build: with the GIL held, choose each column's dtype from the storage classes seen
 *      and fill one NumPy array per column; str and bytes objects are created here: a
 *      value equal to the one of the following row reuses its object, and in a column of
 *      few distinct values every value is looked up in a small hash table so that each
 *      distinct value gets one object (interning, given up when the column turns out to
 *      hold many distinct values). */
#include "reader.h"

#include "interrupt.h"
#include "store.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Only this file uses NumPy's C API, so PY_ARRAY_UNIQUE_SYMBOL is left undefined and the
 * API table is the header's file-static `PyArray_API` pointer.  It is process-wide on
 * purpose: NumPy's C API table is itself one per process (NumPy's extension module is
 * never re-initialised), it is written once, on the first read, with the GIL held, and
 * every later write would store the same value.  Importing it lazily keeps
 * `import xetrack_c` free of NumPy. */
#include <numpy/arrayobject.h>

/* Rows reserved by the first allocation of a scan without a row-count hint; capacity
 * doubles after that. */
#define XT_FIRST_ROWS 64

/* The first rows of a hinted scan whose bytes per row size a column's arena. */
#define XT_ARENA_SAMPLE_ROWS 256

#define XT_BIT(storage_class) (1u << (storage_class))
#define XT_NUMERIC_OR_NULL (XT_BIT(SQLITE_INTEGER) | XT_BIT(SQLITE_FLOAT) | XT_BIT(SQLITE_NULL))

typedef union {
    int64_t i;
    double d;
} xt_cell;

/* Everything read for one column.  The bytes of TEXT and BLOB values are appended to the
 * column's arena; their cell holds the start offset, and a NULL cell holds the arena length
 * at that row, so for a column of TEXT and NULL only, cells[0..n] (with cells[n] = arena
 * length) are exactly the offsets of an Arrow large_string array over the arena.  A value's
 * length is the next TEXT/BLOB/NULL cell's offset (or the arena length) minus its own. */
typedef struct {
    uint8_t *tags;   /* storage class of every row: SQLITE_INTEGER ... SQLITE_NULL */
    xt_cell *cells;  /* the number, or an arena offset */
    char *arena;
    size_t arena_len;
    size_t arena_cap;
    unsigned seen;  /* XT_BIT(class) for every storage class seen */
} xt_column_buf;

/* One pass over a statement; owned by the calling thread, touched without the GIL. */
typedef struct {
    sqlite3_stmt *stmt;
    int ncols;
    xt_column_buf *cols;
    size_t nrows;
    size_t cap;         /* rows the tag and cell buffers hold; always > nrows once allocated */
    size_t rows_hint;   /* expected number of rows (0: unknown); sizes the first allocations */
    int rc;             /* SQLITE_DONE when every row was read */
    int out_of_memory;  /* a C allocation failed */
    const char *sort_by;  /* result column to sort the rows by, or NULL */
    int sort_missing;     /* sort_by names no result column */
    int fixed;            /* a part of a parallel scan: its rows go to buffers it does not
                           * own, which cannot grow (see xt_read_columns_ranges) */
} xt_scan;

/* ------------------------------------------------------------------------------------ */
/* Scan: pure C, runs with the GIL released.                                            */

static int
grow_rows(xt_scan *scan)
{
    if (scan->fixed) {
        return -1; /* more rows than rowids in its range: only a corrupt file does that */
    }
    size_t cap = scan->cap ? scan->cap * 2 : XT_FIRST_ROWS;
    if (scan->cap == 0 && scan->rows_hint >= XT_FIRST_ROWS && scan->rows_hint < SIZE_MAX / 16) {
        cap = scan->rows_hint + 1; /* one spare cell for the closing Arrow offset */
    }
    if (cap > SIZE_MAX / sizeof(xt_cell)) {
        return -1;
    }
    for (int c = 0; c < scan->ncols; c++) {
        xt_column_buf *col = &scan->cols[c];
        uint8_t *tags = realloc(col->tags, cap);
        if (tags == NULL) {
            return -1;
        }
        col->tags = tags;
        xt_cell *cells = realloc(col->cells, cap * sizeof(xt_cell));
        if (cells == NULL) {
            return -1;
        }
        col->cells = cells;
    }
    scan->cap = cap;
    return 0;
}

/* Append the bytes of a TEXT or BLOB value, the one of row `row` of a scan expecting
 * `rows_hint` rows (0: unknown), to the arena; -1 when out of memory.  Past the first
 * XT_ARENA_SAMPLE_ROWS rows of a hinted scan, a full arena grows once to the size its bytes
 * per row so far predict for the whole scan (plus an eighth); otherwise it doubles. */
static int
append_bytes(xt_column_buf *col, const void *bytes, size_t len, size_t row, size_t rows_hint)
{
    size_t need = col->arena_len + len;
    if (need > col->arena_cap) {
        size_t cap = col->arena_cap ? col->arena_cap : 256;
        while (cap < need) {
            if (cap > SIZE_MAX / 2) {
                return -1;
            }
            cap *= 2;
        }
        if (rows_hint > row && row >= XT_ARENA_SAMPLE_ROWS
            && col->arena_len / row < SIZE_MAX / 2 / rows_hint) {
            size_t predicted = col->arena_len / row * rows_hint;
            predicted += predicted / 8;
            if (predicted > cap) {
                cap = predicted;
            }
        }
        char *arena = realloc(col->arena, cap);
        if (arena == NULL) {
            return -1;
        }
        col->arena = arena;
        col->arena_cap = cap;
    }
    if (len > 0) {
        memcpy(col->arena + col->arena_len, bytes, len);
    }
    col->arena_len = need;
    return 0;
}

/* Store column `c` of the current row at `row`; -1 when out of memory.
 * The cell is read through sqlite3_column_value() and the sqlite3_value_* accessors: one
 * lookup per cell instead of one per call.  SQLite calls such a value "unprotected" and
 * reading it is safe only while no other thread uses the connection -- which holds here:
 * the connection is ours alone for the whole scan (xt_read_columns' contract). */
static int
store_cell(sqlite3_stmt *stmt, int c, xt_column_buf *col, size_t row, size_t rows_hint)
{
    sqlite3_value *value = sqlite3_column_value(stmt, c);
    int tag = sqlite3_value_type(value);
    const void *bytes;

    switch (tag) {
    case SQLITE_INTEGER:
        col->cells[row].i = sqlite3_value_int64(value);
        break;
    case SQLITE_FLOAT:
        col->cells[row].d = sqlite3_value_double(value);
        break;
    case SQLITE_TEXT:
    case SQLITE_BLOB:
        /* Zero-length BLOBs come back as NULL pointers; TEXT never does unless SQLite ran
         * out of memory. */
        bytes = tag == SQLITE_TEXT ? (const void *)sqlite3_value_text(value)
                                   : sqlite3_value_blob(value);
        if (bytes == NULL && tag == SQLITE_TEXT) {
            return -1;
        }
        col->cells[row].i = (int64_t)col->arena_len;
        if (append_bytes(col, bytes, (size_t)sqlite3_value_bytes(value), row, rows_hint) < 0) {
            return -1;
        }
        break;
    default:
        tag = SQLITE_NULL;
        col->cells[row].i = (int64_t)col->arena_len;
        break;
    }
    col->tags[row] = (uint8_t)tag;
    col->seen |= XT_BIT(tag);
    return 0;
}

/* Step through every row.  The column count is read after the first step because SQLite
 * re-prepares a statement whose schema changed (another process adding a column) there. */
static void
scan_rows(xt_scan *scan)
{
    sqlite3_stmt *stmt = scan->stmt;
    int rc = sqlite3_step(stmt);
    int ncols = sqlite3_column_count(stmt);

    if (scan->fixed) { /* the columns are set up, for the column count at prepare time */
        if (ncols != scan->ncols) {
            rc = SQLITE_SCHEMA;
            goto done;
        }
    }
    else {
        scan->cols = calloc(ncols > 0 ? (size_t)ncols : 1, sizeof(xt_column_buf));
        if (scan->cols == NULL) {
            scan->out_of_memory = 1;
            goto done;
        }
        scan->ncols = ncols;
        if (grow_rows(scan) < 0) {
            scan->out_of_memory = 1;
            goto done;
        }
    }
    while (rc == SQLITE_ROW) {
        for (int c = 0; c < ncols; c++) {
            if (store_cell(stmt, c, &scan->cols[c], scan->nrows, scan->rows_hint) < 0) {
                scan->out_of_memory = 1;
                goto done;
            }
        }
        scan->nrows++;
        /* Keep one spare cell for the closing Arrow offset. */
        if (scan->nrows == scan->cap && grow_rows(scan) < 0) {
            scan->out_of_memory = 1;
            goto done;
        }
        rc = sqlite3_step(stmt);
    }
done:
    scan->rc = rc;
}

static void
free_column_buf(xt_column_buf *col)
{
    free(col->tags);
    free(col->cells);
    free(col->arena);
    memset(col, 0, sizeof(*col));
}

static void
free_scan(xt_scan *scan)
{
    for (int c = 0; c < scan->ncols; c++) {
        free_column_buf(&scan->cols[c]);
    }
    free(scan->cols);
    scan->cols = NULL;
    scan->ncols = 0;
}

/* True when bytes[0..len) is well-formed UTF-8 (no overlongs, surrogates or values past
 * U+10FFFF), which Arrow string arrays require. */
static int
valid_utf8(const unsigned char *bytes, size_t len)
{
    size_t i = 0;
    while (i < len) {
        /* Eight ASCII bytes at a time: the common case for keys, ids and timestamps. */
        if (len - i >= 8) {
            uint64_t word;
            memcpy(&word, bytes + i, sizeof(word));
            if ((word & 0x8080808080808080ULL) == 0) {
                i += 8;
                continue;
            }
        }
        unsigned char b = bytes[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t extra;
        unsigned char lo = 0x80, hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF) {
            extra = 1;
        }
        else if (b >= 0xE0 && b <= 0xEF) {
            extra = 2;
            lo = b == 0xE0 ? 0xA0 : 0x80;
            hi = b == 0xED ? 0x9F : 0xBF;
        }
        else if (b >= 0xF0 && b <= 0xF4) {
            extra = 3;
            lo = b == 0xF0 ? 0x90 : 0x80;
            hi = b == 0xF4 ? 0x8F : 0xBF;
        }
        else {
            return 0;
        }
        if (len - i <= extra || bytes[i + 1] < lo || bytes[i + 1] > hi) {
            return 0;
        }
        for (size_t k = 2; k <= extra; k++) {
            if (bytes[i + k] < 0x80 || bytes[i + k] > 0xBF) {
                return 0;
            }
        }
        i += extra + 1;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------ */
/* Sort: pure C, GIL released.  Rows are put in the order SQLite's ORDER BY would give for
 * one column with the BINARY collation (NULL < numbers < TEXT < BLOB; text and blobs by
 * memcmp, then length), keeping the scan order of equal keys.  Rows already in order -- the
 * usual case, as rows are appended in time order -- cost one comparison each.           */

/* Byte length of every TEXT/BLOB value (0 for other rows); NULL when out of memory. */
static size_t *
value_lengths(const xt_column_buf *col, size_t nrows)
{
    size_t *lens = malloc((nrows ? nrows : 1) * sizeof(size_t));
    size_t next_start = col->arena_len;
    if (lens == NULL) {
        return NULL;
    }
    for (size_t i = nrows; i-- > 0;) {
        uint8_t tag = col->tags[i];
        lens[i] = 0;
        if (tag == SQLITE_TEXT || tag == SQLITE_BLOB) {
            lens[i] = next_start - (size_t)col->cells[i].i;
            next_start = (size_t)col->cells[i].i;
        }
        else if (tag == SQLITE_NULL) {
            next_start = (size_t)col->cells[i].i;
        }
    }
    return lens;
}

typedef struct {
    const xt_column_buf *col;
    const size_t *lens;
} xt_sort_key;

static int
class_rank(uint8_t tag)
{
    switch (tag) {
    case SQLITE_NULL:
        return 0;
    case SQLITE_INTEGER:
    case SQLITE_FLOAT:
        return 1;
    case SQLITE_TEXT:
        return 2;
    default:
        return 3;
    }
}

/* Rows a and b of `col` in ORDER BY order (<0, 0, >0); la and lb are their byte lengths
 * (used for TEXT/BLOB only). */
static int
compare_values(const xt_column_buf *col, size_t a, size_t la, size_t b, size_t lb)
{
    uint8_t ta = col->tags[a], tb = col->tags[b];
    int ra = class_rank(ta), rb = class_rank(tb);
    if (ra != rb) {
        return ra < rb ? -1 : 1;
    }
    if (ra == 0) {
        return 0;
    }
    if (ra == 1) {
        if (ta == SQLITE_INTEGER && tb == SQLITE_INTEGER) {
            int64_t x = col->cells[a].i, y = col->cells[b].i;
            return (x > y) - (x < y);
        }
        double x = ta == SQLITE_INTEGER ? (double)col->cells[a].i : col->cells[a].d;
        double y = tb == SQLITE_INTEGER ? (double)col->cells[b].i : col->cells[b].d;
        return (x > y) - (x < y);
    }
    int c = memcmp(col->arena + col->cells[a].i, col->arena + col->cells[b].i, la < lb ? la : lb);
    if (c != 0) {
        return c;
    }
    return (la > lb) - (la < lb);
}

static int
compare_rows(const xt_sort_key *key, size_t a, size_t b)
{
    return compare_values(key->col, a, key->lens[a], b, key->lens[b]);
}

/* True when the n rows are in order already (the usual case: rows are appended in time
 * order): one comparison per pair of neighbours, walking backwards so that each value's
 * length is where the following value starts, without an array of lengths. */
static int
already_sorted(const xt_column_buf *col, size_t n)
{
    size_t next_start = col->arena_len, len_b = 0;
    if (n < 2) {
        return 1;
    }
    for (size_t b = n; b-- > 0;) {
        uint8_t tag = col->tags[b];
        size_t len = 0;
        if (tag == SQLITE_TEXT || tag == SQLITE_BLOB) {
            len = next_start - (size_t)col->cells[b].i;
        }
        if (tag == SQLITE_TEXT || tag == SQLITE_BLOB || tag == SQLITE_NULL) {
            next_start = (size_t)col->cells[b].i;
        }
        if (b + 1 < n && compare_values(col, b, len, b + 1, len_b) > 0) {
            return 0;
        }
        len_b = len;
    }
    return 1;
}

/* Stable bottom-up merge sort of the row numbers in `order` (n of them); `tmp` has room
 * for n.  Returns the buffer holding the result (`order` or `tmp`). */
static size_t *
merge_sort(const xt_sort_key *key, size_t *order, size_t *tmp, size_t n)
{
    size_t *src = order, *dst = tmp;
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n;
            size_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                dst[k++] = compare_rows(key, src[j], src[i]) < 0 ? src[j++] : src[i++];
            }
            while (i < mid) {
                dst[k++] = src[i++];
            }
            while (j < hi) {
                dst[k++] = src[j++];
            }
        }
        size_t *swap = src;
        src = dst;
        dst = swap;
    }
    return src;
}

/* Reorder one column's rows to `order`; -1 when out of memory (the column is unchanged). */
static int
permute_column(xt_column_buf *col, const size_t *order, size_t nrows, size_t cap)
{
    uint8_t *tags = malloc(cap);
    xt_cell *cells = malloc(cap * sizeof(xt_cell));
    char *arena = NULL;
    size_t *lens = NULL;
    int res = -1;

    if (tags == NULL || cells == NULL) {
        goto done;
    }
    int has_bytes = (col->seen & (XT_BIT(SQLITE_TEXT) | XT_BIT(SQLITE_BLOB))) != 0;
    if (has_bytes) {
        lens = value_lengths(col, nrows);
        arena = malloc(col->arena_len ? col->arena_len : 1);
        if (lens == NULL || arena == NULL) {
            goto done;
        }
    }
    size_t arena_len = 0;
    for (size_t j = 0; j < nrows; j++) {
        size_t p = order[j];
        uint8_t tag = col->tags[p];
        tags[j] = tag;
        if (tag == SQLITE_TEXT || tag == SQLITE_BLOB) {
            memcpy(arena + arena_len, col->arena + col->cells[p].i, lens[p]);
            cells[j].i = (int64_t)arena_len;
            arena_len += lens[p];
        }
        else if (tag == SQLITE_NULL) {
            cells[j].i = (int64_t)arena_len;
        }
        else {
            cells[j] = col->cells[p];
        }
    }
    free(col->tags);
    free(col->cells);
    col->tags = tags;
    col->cells = cells;
    tags = NULL;
    cells = NULL;
    if (has_bytes) {
        free(col->arena);
        col->arena = arena;
        col->arena_cap = col->arena_len ? col->arena_len : 1;
        arena = NULL;
    }
    res = 0;
done:
    free(tags);
    free(cells);
    free(arena);
    free(lens);
    return res;
}

/* Sort the scanned rows by the column named scan->sort_by. */
static void
sort_scan(xt_scan *scan)
{
    size_t n = scan->nrows, *order = NULL, *tmp = NULL, *lens = NULL;
    int key_col = -1;

    for (int c = 0; c < scan->ncols; c++) {
        const char *name = sqlite3_column_name(scan->stmt, c);
        if (name != NULL && strcmp(name, scan->sort_by) == 0) {
            key_col = c;
            break;
        }
    }
    if (key_col < 0) {
        scan->sort_missing = 1;
        return;
    }
    xt_column_buf *col = &scan->cols[key_col];
    if (already_sorted(col, n)) {
        goto done;
    }
    lens = value_lengths(col, n);
    if (lens == NULL) {
        goto oom;
    }
    xt_sort_key key = {col, lens};
    size_t i;
    order = malloc(n * sizeof(size_t));
    tmp = malloc(n * sizeof(size_t));
    if (order == NULL || tmp == NULL) {
        goto oom;
    }
    for (i = 0; i < n; i++) {
        order[i] = i;
    }
    size_t *sorted = merge_sort(&key, order, tmp, n);
    for (int c = 0; c < scan->ncols; c++) {
        if (permute_column(&scan->cols[c], sorted, n, scan->cap) < 0) {
            goto oom;
        }
    }
    goto done;
oom:
    scan->out_of_memory = 1;
done:
    free(order);
    free(tmp);
    free(lens);
}

/* ------------------------------------------------------------------------------------ */
/* Build: GIL held.                                                                     */

static void
free_capsule_buffer(PyObject *capsule)
{
    free(PyCapsule_GetPointer(capsule, NULL));
}

/* A 1-d array of `n` items of `typenum` over the malloc'd buffer *buf, which the array
 * then owns (through a capsule base that frees it).  *buf is consumed either way. */
static PyObject *
adopt_buffer(void **buf, npy_intp n, int typenum, size_t itemsize)
{
    PyObject *capsule = NULL, *arr = NULL;
    void *data = *buf;

    *buf = NULL;
    if (n == 0 || data == NULL) {
        free(data);
        return PyArray_SimpleNew(1, &n, typenum);
    }
    void *exact = realloc(data, (size_t)n * itemsize); /* give back the growth slack */
    if (exact != NULL) {
        data = exact;
    }
    capsule = PyCapsule_New(data, NULL, free_capsule_buffer);
    if (capsule == NULL) {
        free(data);
        return NULL;
    }
    arr = PyArray_SimpleNewFromData(1, &n, typenum, data);
    if (arr == NULL) {
        Py_DECREF(capsule);
        return NULL;
    }
    if (PyArray_SetBaseObject((PyArrayObject *)arr, capsule) < 0) { /* steals capsule */
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

static PyObject *
value_object(const xt_column_buf *col, uint8_t tag, size_t start, size_t len)
{
    if (tag == SQLITE_TEXT) {
        return PyUnicode_DecodeUTF8(col->arena + start, (Py_ssize_t)len, "replace");
    }
    return PyBytes_FromStringAndSize(col->arena + start, (Py_ssize_t)len);
}

/* Interning: one str/bytes object per distinct value of a column of few distinct values.
 * An open-addressing hash table from (storage class, bytes) to the object made for the
 * first such value; the objects are borrowed from the column's array, which holds them.
 * Once the table holds XT_INTERN_MIN values, it is given up as soon as more than half of
 * the values looked up were new (a column of many distinct values, where a table costs
 * time and saves nothing), and in any case at XT_INTERN_MAX values. */
#define XT_INTERN_FIRST_SLOTS 1024
#define XT_INTERN_MIN 4096
#define XT_INTERN_MAX 65536

typedef struct {
    uint64_t hash;
    size_t start;   /* the value's bytes in the arena */
    size_t len;
    PyObject *obj;  /* borrowed; NULL for an empty slot */
} xt_intern_slot;

typedef struct {
    xt_intern_slot *slots;  /* NULL once given up (or before the first value) */
    size_t mask;            /* slot count - 1, a power of two minus one */
    size_t used;
    size_t lookups;
    int given_up;
} xt_intern;

static uint64_t
hash_value(const unsigned char *bytes, size_t len, uint8_t tag)
{
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)len * 0xFF51AFD7ED558CCDULL) ^ tag;
    while (len >= 8) {
        uint64_t word;
        memcpy(&word, bytes, sizeof(word));
        h = (h ^ word) * 0xFF51AFD7ED558CCDULL;
        h ^= h >> 32;
        bytes += 8;
        len -= 8;
    }
    if (len > 0) {
        uint64_t word = 0;
        memcpy(&word, bytes, len);
        h = (h ^ word) * 0xC4CEB9FE1A85EC53ULL;
    }
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
    return h;
}

/* The slot for (hash, bytes, tag): the one holding that value, or the empty one where it
 * goes. */
static xt_intern_slot *
intern_slot(const xt_intern *table, const char *arena, uint64_t hash, size_t start, size_t len,
            uint8_t tag)
{
    size_t i = (size_t)hash & table->mask;
    for (;;) {
        xt_intern_slot *slot = &table->slots[i];
        if (slot->obj == NULL
            || (slot->hash == hash && slot->len == len
                && (tag == SQLITE_TEXT) == (PyUnicode_CheckExact(slot->obj) != 0)
                && memcmp(arena + slot->start, arena + start, len) == 0)) {
            return slot;
        }
        i = (i + 1) & table->mask;
    }
}

static void
intern_give_up(xt_intern *table)
{
    PyMem_Free(table->slots);
    table->slots = NULL;
    table->given_up = 1;
}

/* Double the table; on failure interning is given up (it only saves memory and time). */
static void
intern_grow(xt_intern *table, const char *arena)
{
    xt_intern old = *table;
    size_t slots = (old.mask + 1) * 2;
    table->slots = PyMem_Calloc(slots, sizeof(xt_intern_slot));
    if (table->slots == NULL) {
        table->slots = old.slots;
        intern_give_up(table);
        return;
    }
    table->mask = slots - 1;
    for (size_t i = 0; i <= old.mask; i++) {
        xt_intern_slot *from = &old.slots[i];
        if (from->obj != NULL) {
            uint8_t tag = PyUnicode_CheckExact(from->obj) ? SQLITE_TEXT : SQLITE_BLOB;
            *intern_slot(table, arena, from->hash, from->start, from->len, tag) = *from;
        }
    }
    PyMem_Free(old.slots);
}

/* The interned object for the value at arena[start..start+len) of storage class `tag` (a new
 * reference), or NULL without an exception when it has none yet: then *slot_out is where
 * intern_add() puts it (NULL when interning is off). */
static PyObject *
intern_find(xt_intern *table, const char *arena, size_t start, size_t len, uint8_t tag,
            uint64_t *hash_out, xt_intern_slot **slot_out)
{
    *slot_out = NULL;
    if (table->given_up) {
        return NULL;
    }
    if (table->slots == NULL) {
        table->slots = PyMem_Calloc(XT_INTERN_FIRST_SLOTS, sizeof(xt_intern_slot));
        if (table->slots == NULL) {
            table->given_up = 1;
            return NULL;
        }
        table->mask = XT_INTERN_FIRST_SLOTS - 1;
    }
    table->lookups++;
    uint64_t hash = hash_value((const unsigned char *)arena + start, len, tag);
    xt_intern_slot *slot = intern_slot(table, arena, hash, start, len, tag);
    if (slot->obj != NULL) {
        return Py_NewRef(slot->obj);
    }
    *hash_out = hash;
    *slot_out = slot;
    return NULL;
}

/* Record `obj` (borrowed: the array holds it) in the empty `slot` found by intern_find(). */
static void
intern_add(xt_intern *table, const char *arena, xt_intern_slot *slot, uint64_t hash,
           size_t start, size_t len, PyObject *obj)
{
    slot->hash = hash;
    slot->start = start;
    slot->len = len;
    slot->obj = obj;
    table->used++;
    if (table->used >= XT_INTERN_MAX
        || (table->used >= XT_INTERN_MIN && table->used * 2 > table->lookups)) {
        intern_give_up(table);
    }
    else if (table->used * 2 > table->mask + 1) {
        intern_grow(table, arena);
    }
}

/* Object array of the Python values, filled from the last row backwards: a value's length
 * is where the following value starts.  A str/bytes equal to the following row's value
 * reuses that object; otherwise the intern table is asked (see xt_intern). */
static PyObject *
build_object_column(const xt_column_buf *col, npy_intp n)
{
    PyObject *arr = PyArray_SimpleNew(1, &n, NPY_OBJECT);
    PyObject *res = NULL;
    PyObject *next = NULL; /* borrowed from the array: the str/bytes of the following row */
    size_t next_start = col->arena_len, next_len = 0;
    uint8_t next_tag = 0;
    xt_intern interned = {NULL, 0, 0, 0, 0};

    if (arr == NULL) {
        goto done;
    }
    /* NumPy zero-fills new object arrays, so a partly filled array is safe to free. */
    PyObject **out = (PyObject **)PyArray_DATA((PyArrayObject *)arr);
    for (npy_intp i = n - 1; i >= 0; i--) {
        uint8_t tag = col->tags[i];
        PyObject *value;
        switch (tag) {
        case SQLITE_INTEGER:
            value = PyLong_FromLongLong(col->cells[i].i);
            break;
        case SQLITE_FLOAT:
            value = PyFloat_FromDouble(col->cells[i].d);
            break;
        case SQLITE_TEXT:
        case SQLITE_BLOB: {
            size_t start = (size_t)col->cells[i].i, len = next_start - start;
            if (next != NULL && tag == next_tag && len == next_len
                && memcmp(col->arena + start, col->arena + next_start, len) == 0) {
                value = Py_NewRef(next);
            }
            else {
                uint64_t hash = 0;
                xt_intern_slot *slot;
                value = intern_find(&interned, col->arena, start, len, tag, &hash, &slot);
                if (value == NULL) {
                    value = value_object(col, tag, start, len);
                    if (value != NULL && slot != NULL) {
                        intern_add(&interned, col->arena, slot, hash, start, len, value);
                    }
                }
                next = value;
                next_tag = tag;
                next_len = len;
            }
            next_start = start;
            break;
        }
        default:
            value = Py_NewRef(Py_None);
            break;
        }
        if (value == NULL) {
            goto done;
        }
        out[i] = value;
    }
    res = Py_NewRef(arr);
done:
    PyMem_Free(interned.slots);
    Py_XDECREF(arr);
    return res;
}

/* (offsets int64[n+1], data uint8[...], validity bitmap uint8[(n+7)/8] or None): the
 * buffers of an Arrow large_string array, taken over from the column without copying. */
static PyObject *
build_text_buffers(xt_column_buf *col, size_t nrows)
{
    PyObject *offsets = NULL, *data = NULL, *validity = NULL, *res = NULL;
    npy_intp n = (npy_intp)nrows;

    col->cells[nrows].i = (int64_t)col->arena_len; /* grow_rows keeps this cell spare */
    if (col->seen & XT_BIT(SQLITE_NULL)) {
        npy_intp nbytes = (n + 7) / 8;
        validity = PyArray_ZEROS(1, &nbytes, NPY_UINT8, 0);
        if (validity == NULL) {
            goto done;
        }
        uint8_t *bits = (uint8_t *)PyArray_DATA((PyArrayObject *)validity);
        for (size_t i = 0; i < nrows; i++) {
            if (col->tags[i] != SQLITE_NULL) {
                bits[i >> 3] |= (uint8_t)(1u << (i & 7));
            }
        }
    }
    else {
        validity = Py_NewRef(Py_None);
    }
    void *cells = col->cells;
    col->cells = NULL;
    offsets = adopt_buffer(&cells, n + 1, NPY_INT64, sizeof(int64_t));
    if (offsets == NULL) {
        goto done;
    }
    void *arena = col->arena;
    col->arena = NULL;
    data = adopt_buffer(&arena, (npy_intp)col->arena_len, NPY_UINT8, 1);
    if (data == NULL) {
        goto done;
    }
    res = PyTuple_Pack(3, offsets, data, validity);
done:
    Py_XDECREF(offsets);
    Py_XDECREF(data);
    Py_XDECREF(validity);
    return res;
}

/* A column declared BOOLEAN whose values are all 0, 1 or NULL reads back as bools: a bool
 * array, or an object array of True/False/None when NULLs occur (NumPy has no nullable
 * bool).  Any other value keeps the column numeric (build_column), so no value read back
 * differs from the one stored. */
static int
holds_bools(const xt_column_buf *col, size_t nrows)
{
    if ((col->seen & ~(XT_BIT(SQLITE_INTEGER) | XT_BIT(SQLITE_NULL))) != 0
        || (col->seen & XT_BIT(SQLITE_INTEGER)) == 0) {
        return 0;
    }
    for (size_t i = 0; i < nrows; i++) {
        if (col->tags[i] == SQLITE_INTEGER && (uint64_t)col->cells[i].i > 1) {
            return 0;
        }
    }
    return 1;
}

static PyObject *
build_bool_column(const xt_column_buf *col, npy_intp n)
{
    int nulls = (col->seen & XT_BIT(SQLITE_NULL)) != 0;
    PyObject *arr = PyArray_SimpleNew(1, &n, nulls ? NPY_OBJECT : NPY_BOOL);
    if (arr == NULL) {
        return NULL;
    }
    if (nulls) {
        PyObject **out = (PyObject **)PyArray_DATA((PyArrayObject *)arr);
        for (npy_intp i = 0; i < n; i++) {
            PyObject *value = col->tags[i] == SQLITE_NULL ? Py_None
                              : col->cells[i].i ? Py_True
                                                : Py_False;
            out[i] = Py_NewRef(value);
        }
    }
    else {
        npy_bool *out = (npy_bool *)PyArray_DATA((PyArrayObject *)arr);
        for (npy_intp i = 0; i < n; i++) {
            out[i] = (npy_bool)(col->cells[i].i != 0);
        }
    }
    return arr;
}

static PyObject *
build_column(xt_column_buf *col, size_t nrows, int flags, int declared_boolean)
{
    npy_intp n = (npy_intp)nrows;
    unsigned seen = col->seen;
    void *cells;

    if (declared_boolean && n > 0 && holds_bools(col, nrows)) {
        return build_bool_column(col, n);
    }
    if (n > 0 && seen == XT_BIT(SQLITE_INTEGER)) {
        cells = col->cells;
        col->cells = NULL;
        return adopt_buffer(&cells, n, NPY_INT64, sizeof(int64_t));
    }
    if (n > 0 && (seen & ~XT_NUMERIC_OR_NULL) == 0
        && (seen & (XT_BIT(SQLITE_INTEGER) | XT_BIT(SQLITE_FLOAT))) != 0) {
        if (seen != XT_BIT(SQLITE_FLOAT)) { /* to doubles in place: both are 8 bytes */
            for (size_t i = 0; i < nrows; i++) {
                uint8_t tag = col->tags[i];
                if (tag == SQLITE_INTEGER) {
                    col->cells[i].d = (double)col->cells[i].i;
                }
                else if (tag == SQLITE_NULL) {
                    col->cells[i].d = NAN;
                }
            }
        }
        cells = col->cells;
        col->cells = NULL;
        return adopt_buffer(&cells, n, NPY_FLOAT64, sizeof(double));
    }
    if ((flags & XT_READ_TEXT_BUFFERS) && n > 0 && (seen & XT_BIT(SQLITE_TEXT))
        && (seen & ~(XT_BIT(SQLITE_TEXT) | XT_BIT(SQLITE_NULL))) == 0
        && valid_utf8((const unsigned char *)col->arena, col->arena_len)) {
        return build_text_buffers(col, nrows);
    }
    return build_object_column(col, n);
}

/* `name`, or name.1, name.2, ... if `columns` already holds it.  New reference. */
static PyObject *
unique_name(PyObject *columns, const char *utf8)
{
    PyObject *name = PyUnicode_DecodeUTF8(utf8, (Py_ssize_t)strlen(utf8), "replace");
    for (long k = 1; name != NULL; k++) {
        int taken = PyDict_Contains(columns, name);
        if (taken <= 0) {
            if (taken < 0) {
                Py_CLEAR(name);
            }
            break;
        }
        Py_DECREF(name);
        name = PyUnicode_FromFormat("%s.%ld", utf8, k);
    }
    return name;
}

static PyObject *
build_columns(xt_scan *scan, int flags)
{
    PyObject *res = NULL, *columns = PyDict_New(), *name = NULL, *arr = NULL;

    if (columns == NULL) {
        goto done;
    }
    for (int c = 0; c < scan->ncols; c++) {
        const char *utf8 = sqlite3_column_name(scan->stmt, c);
        if (utf8 == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        name = unique_name(columns, utf8);
        if (name == NULL) {
            goto done;
        }
        const char *decl = sqlite3_column_decltype(scan->stmt, c);
        int declared_boolean = decl != NULL && sqlite3_stricmp(decl, "BOOLEAN") == 0;
        arr = build_column(&scan->cols[c], scan->nrows, flags, declared_boolean);
        if (arr == NULL || PyDict_SetItem(columns, name, arr) < 0) {
            goto done;
        }
        Py_CLEAR(name);
        Py_CLEAR(arr);
        free_column_buf(&scan->cols[c]); /* keep peak memory near one copy of the data */
    }
    res = Py_NewRef(columns);
done:
    Py_XDECREF(columns);
    Py_XDECREF(name);
    Py_XDECREF(arr);
    return res;
}

/* ------------------------------------------------------------------------------------ */
/* Statements (shared with dbfile.c's read_rows and execute)                            */

/* Bind `params` (tuple, list, or NULL/None for none) to `stmt`. */
int
xt_bind_params(xt_state *st, sqlite3 *db, sqlite3_stmt *stmt, PyObject *params,
               const char *filename, const char *sql)
{
    PyObject *seq = NULL, *number = NULL;
    int res = -1;
    int expected = sqlite3_bind_parameter_count(stmt);
    Py_ssize_t given = 0;

    if (params != NULL && params != Py_None) {
        if (!PyTuple_Check(params) && !PyList_Check(params)) {
            PyErr_Format(PyExc_TypeError, "params must be a tuple or a list, not %.100s",
                         Py_TYPE(params)->tp_name);
            goto done;
        }
        seq = PySequence_Fast(params, "params must be a tuple or a list");
        if (seq == NULL) {
            goto done;
        }
        given = PySequence_Fast_GET_SIZE(seq);
    }
    if (given != expected) {
        PyErr_Format(PyExc_ValueError,
                     "the statement has %d parameter(s) but %zd value(s) were given: %.200s",
                     expected, given, sql);
        goto done;
    }
    for (Py_ssize_t i = 0; i < given; i++) {
        PyObject *value = PySequence_Fast_GET_ITEM(seq, i);
        int pos = (int)i + 1;
        int rc;
        if (value == Py_None) {
            rc = sqlite3_bind_null(stmt, pos);
        }
        else if (PyLong_Check(value) || (!PyFloat_Check(value) && PyIndex_Check(value))) {
            int overflow = 0;
            number = PyNumber_Index(value);
            if (number == NULL) {
                goto done;
            }
            long long v = PyLong_AsLongLongAndOverflow(number, &overflow);
            if (v == -1 && PyErr_Occurred()) {
                goto done;
            }
            if (overflow) {
                PyErr_Format(PyExc_OverflowError,
                             "parameter %zd: %R does not fit SQLite's 64-bit INTEGER; pass it "
                             "as str or float",
                             i, value);
                goto done;
            }
            Py_CLEAR(number);
            rc = sqlite3_bind_int64(stmt, pos, (sqlite3_int64)v);
        }
        else if (PyFloat_Check(value)) {
            rc = sqlite3_bind_double(stmt, pos, PyFloat_AS_DOUBLE(value));
        }
        else if (PyUnicode_Check(value)) {
            Py_ssize_t len;
            const char *text = PyUnicode_AsUTF8AndSize(value, &len);
            if (text == NULL) {
                goto done;
            }
            rc = sqlite3_bind_text64(stmt, pos, text, (sqlite3_uint64)len, SQLITE_TRANSIENT,
                                     SQLITE_UTF8);
        }
        else if (PyBytes_Check(value)) {
            rc = sqlite3_bind_blob64(stmt, pos, PyBytes_AS_STRING(value),
                                     (sqlite3_uint64)PyBytes_GET_SIZE(value), SQLITE_TRANSIENT);
        }
        else if (PyByteArray_Check(value)) {
            rc = sqlite3_bind_blob64(stmt, pos, PyByteArray_AS_STRING(value),
                                     (sqlite3_uint64)PyByteArray_GET_SIZE(value),
                                     SQLITE_TRANSIENT);
        }
        else if (Py_TYPE(value)->tp_as_number != NULL
                 && Py_TYPE(value)->tp_as_number->nb_float != NULL) {
            double v = PyFloat_AsDouble(value);
            if (v == -1.0 && PyErr_Occurred()) {
                goto done;
            }
            rc = sqlite3_bind_double(stmt, pos, v);
        }
        else {
            PyErr_Format(PyExc_TypeError,
                         "parameter %zd: cannot bind %.100s; use None, int, float, str or bytes",
                         i, Py_TYPE(value)->tp_name);
            goto done;
        }
        if (rc != SQLITE_OK) {
            xt_raise_sqlite(st, rc, sqlite3_errmsg(db), filename, sql);
            goto done;
        }
    }
    res = 0;
done:
    Py_XDECREF(seq);
    Py_XDECREF(number);
    return res;
}

/* Prepare exactly one statement; *stmt_out is set on success. */
int
xt_prepare_one(xt_state *st, sqlite3 *db, const char *filename, const char *sql,
               sqlite3_stmt **stmt_out)
{
    sqlite3_stmt *stmt = NULL, *extra = NULL;
    const char *tail = NULL;
    int rc, extra_rc = SQLITE_OK, res = -1;

    Py_BEGIN_ALLOW_THREADS
    rc = sqlite3_prepare_v2(db, sql, -1, &stmt, &tail);
    if (rc == SQLITE_OK && tail != NULL && *tail != '\0') {
        /* Whatever follows must be only whitespace, ';' and comments: preparing it then
         * yields no statement. */
        extra_rc = sqlite3_prepare_v2(db, tail, -1, &extra, NULL);
    }
    Py_END_ALLOW_THREADS
    if (rc != SQLITE_OK) {
        xt_raise_sqlite(st, rc, sqlite3_errmsg(db), filename, sql);
        goto done;
    }
    if (stmt == NULL) {
        PyErr_SetString(PyExc_ValueError, "sql holds no statement; pass one SQL statement");
        goto done;
    }
    if (extra_rc != SQLITE_OK || extra != NULL) {
        PyErr_Format(PyExc_ValueError,
                     "sql must be a single statement; split it and run each on its own: %.200s",
                     sql);
        goto done;
    }
    *stmt_out = stmt;
    stmt = NULL;
    res = 0;
done:
    sqlite3_finalize(stmt);
    sqlite3_finalize(extra);
    return res;
}

/* The row count `sql` predicts: its first column of its first row when that is a positive
 * INTEGER, else 0 (no hint).  Called with the GIL released; a failing statement is no hint. */
static size_t
rows_hint(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt = NULL;
    size_t hint = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK && stmt != NULL
        && sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_type(stmt, 0) == SQLITE_INTEGER) {
        sqlite3_int64 value = sqlite3_column_int64(stmt, 0);
        if (value > 0 && (sqlite3_uint64)value < SIZE_MAX / 16) {
            hint = (size_t)value;
        }
    }
    sqlite3_finalize(stmt);
    return hint;
}

PyObject *
xt_read_columns_ex(xt_state *st, sqlite3 *db, const char *filename, const char *sql,
                   PyObject *params, int flags, const char *sort_by)
{
    return xt_read_columns_hinted(st, db, filename, sql, params, flags, sort_by, NULL);
}

/* The arrays of a finished scan, or NULL with the exception its failure calls for: out of
 * memory, SQLite's error on `db` running `sql`, or a sort_by naming no column. */
static PyObject *
scan_result(xt_state *st, xt_scan *scan, sqlite3 *db, const char *filename, const char *sql,
            int flags)
{
    if (scan->out_of_memory) {
        return PyErr_NoMemory();
    }
    if (scan->rc != SQLITE_DONE) {
        return xt_raise_sqlite(st, scan->rc, sqlite3_errmsg(db), filename, sql);
    }
    if (scan->sort_missing) {
        PyErr_Format(PyExc_ValueError, "sort_by names no column of the result: %s",
                     scan->sort_by);
        return NULL;
    }
    return build_columns(scan, flags);
}

PyObject *
xt_read_columns_hinted(xt_state *st, sqlite3 *db, const char *filename, const char *sql,
                       PyObject *params, int flags, const char *sort_by,
                       const char *rows_hint_sql)
{
    assert(!PyErr_Occurred());
    PyObject *res = NULL;
    sqlite3_stmt *stmt = NULL;
    xt_scan scan;

    memset(&scan, 0, sizeof(scan));
    if (PyArray_ImportNumPyAPI() < 0) {
        goto done;
    }
    if (xt_prepare_one(st, db, filename, sql, &stmt) < 0
        || xt_bind_params(st, db, stmt, params, filename, sql) < 0) {
        goto done;
    }
    scan.stmt = stmt;
    scan.sort_by = sort_by;
    xt_interrupt_watch watch;
    xt_watch_interrupts(db, &watch);
    Py_BEGIN_ALLOW_THREADS
    if (rows_hint_sql != NULL) {
        scan.rows_hint = rows_hint(db, rows_hint_sql);
    }
    if (!watch.raised) { /* Ctrl-C during the hint: the handler ran on this thread */
        scan_rows(&scan);
    }
    if (scan.rc == SQLITE_DONE && !scan.out_of_memory && sort_by != NULL) {
        sort_scan(&scan);
    }
    Py_END_ALLOW_THREADS
    xt_unwatch_interrupts(db);
    if (watch.raised) {
        goto done; /* Ctrl-C: the KeyboardInterrupt is set */
    }
    res = scan_result(st, &scan, db, filename, sql, flags);
done:
    free_scan(&scan);
    sqlite3_finalize(stmt);
    assert(res != NULL || PyErr_Occurred());
    return res;
}

PyObject *
xt_read_columns(xt_state *st, sqlite3 *db, const char *filename, const char *sql,
                PyObject *params)
{
    return xt_read_columns_ex(st, db, filename, sql, params, 0, NULL);
}

/* ------------------------------------------------------------------------------------ */
/* Parallel scan: one rowid range per connection and thread; the parts are then joined in
 * range order into one scan, which is sorted and built as a single scan is.              */

/* How often the calling thread looks at Python's signals while the parts scan. */
#define XT_PART_CHECK_MS 50

typedef struct {
    xt_scan scan;
    pthread_t thread;
    int started;
    struct xt_parts *all;
} xt_part;

/* Parallel reads begun in this process, and their parts, in all (for the tests). */
static _Atomic long long parallel_reads, parallel_parts;

void
xt_parallel_stats(long long *reads, long long *parts)
{
    *reads = atomic_load(&parallel_reads);
    *parts = atomic_load(&parallel_parts);
}

typedef struct xt_parts {
    pthread_mutex_t lock;
    pthread_cond_t finished;
    int running;
} xt_parts;

static void *
scan_part(void *arg)
{
    xt_part *part = arg;
    scan_rows(&part->scan);
    pthread_mutex_lock(&part->all->lock);
    part->all->running--;
    pthread_cond_signal(&part->all->finished);
    pthread_mutex_unlock(&part->all->lock);
    return NULL;
}

/* Give every part its place in `out`'s buffers: `out` gets, for each of `ncols` columns,
 * tags and cells for every rowid of the whole span (plus the spare cell), and part p
 * writes its rows from the row of its first rowid on, so that a table without gaps in its
 * rowids needs no copy afterwards.  Each part keeps an arena of its own.  -1 when out of
 * memory (`out` and the parts are then freed by the caller). */
static int
place_parts(xt_part *parts, int k, const int64_t *bounds, int ncols, xt_scan *out)
{
    size_t span = (size_t)(bounds[k] - bounds[0]);
    if (span >= SIZE_MAX / sizeof(xt_cell) - 1) {
        return -1;
    }
    out->cols = calloc(ncols > 0 ? (size_t)ncols : 1, sizeof(xt_column_buf));
    if (out->cols == NULL) {
        return -1;
    }
    out->ncols = ncols;
    out->cap = span + 1;
    for (int c = 0; c < ncols; c++) {
        out->cols[c].tags = malloc(span + 1);
        out->cols[c].cells = malloc((span + 1) * sizeof(xt_cell));
        if (out->cols[c].tags == NULL || out->cols[c].cells == NULL) {
            return -1;
        }
    }
    for (int p = 0; p < k; p++) {
        xt_scan *scan = &parts[p].scan;
        size_t first = (size_t)(bounds[p] - bounds[0]);
        scan->cols = calloc(ncols > 0 ? (size_t)ncols : 1, sizeof(xt_column_buf));
        if (scan->cols == NULL) {
            return -1;
        }
        scan->ncols = ncols;
        scan->fixed = 1;
        scan->cap = (size_t)(bounds[p + 1] - bounds[p]) + 1; /* never reached: one row per rowid */
        for (int c = 0; c < ncols; c++) {
            scan->cols[c].tags = out->cols[c].tags + first;
            scan->cols[c].cells = out->cols[c].cells + first;
        }
    }
    return 0;
}

/* After the parts scanned: move each part's rows down to follow the rows before (a no-op
 * where the rowids had no gaps), join the parts' arenas, and move the arena offsets that
 * TEXT, BLOB and NULL cells hold (see xt_column_buf) by the bytes of the parts before.
 * Each part's arena is freed once copied.  -1 when out of memory. */
static int
pack_parts(xt_part *parts, int k, const int64_t *bounds, xt_scan *out)
{
    size_t total = 0;
    for (int p = 0; p < k; p++) {
        total += parts[p].scan.nrows;
    }
    out->nrows = total;
    for (int c = 0; c < out->ncols; c++) {
        xt_column_buf *dst = &out->cols[c];
        size_t arena = 0, row = 0;
        for (int p = 0; p < k; p++) {
            arena += parts[p].scan.cols[c].arena_len;
        }
        dst->arena = malloc(arena > 0 ? arena : 1);
        if (dst->arena == NULL) {
            return -1;
        }
        dst->arena_cap = arena > 0 ? arena : 1;
        for (int p = 0; p < k; p++) {
            xt_column_buf *src = &parts[p].scan.cols[c];
            size_t n = parts[p].scan.nrows, first = (size_t)(bounds[p] - bounds[0]);
            size_t moved = dst->arena_len;
            if (n > 0 && first != row) {
                memmove(dst->tags + row, dst->tags + first, n);
                memmove(dst->cells + row, dst->cells + first, n * sizeof(xt_cell));
            }
            if (n > 0 && moved > 0
                && (src->seen & ~(XT_BIT(SQLITE_INTEGER) | XT_BIT(SQLITE_FLOAT))) != 0) {
                for (size_t i = row; i < row + n; i++) {
                    uint8_t tag = dst->tags[i];
                    if (tag != SQLITE_INTEGER && tag != SQLITE_FLOAT) {
                        dst->cells[i].i += (int64_t)moved;
                    }
                }
            }
            if (src->arena_len > 0) {
                memcpy(dst->arena + moved, src->arena, src->arena_len);
            }
            dst->arena_len = moved + src->arena_len;
            dst->seen |= src->seen;
            row += n;
            free(src->arena);
            src->arena = NULL;
        }
    }
    return 0;
}

/* A part's columns: the tags and cells are `out`'s (place_parts), the arena its own. */
static void
free_part(xt_scan *scan)
{
    for (int c = 0; c < scan->ncols; c++) {
        if (scan->fixed) {
            scan->cols[c].tags = NULL;
            scan->cols[c].cells = NULL;
        }
        free_column_buf(&scan->cols[c]);
    }
    free(scan->cols);
    scan->cols = NULL;
    scan->ncols = 0;
}

/* Wait for the parts' threads, looking at Python's signals every XT_PART_CHECK_MS; on
 * Ctrl-C every connection is interrupted (the parts then end with SQLITE_INTERRUPT).
 * Called with the GIL released; returns 1 when a signal handler raised. */
static int
wait_for_parts(xt_parts *all, sqlite3 **dbs, int k)
{
    int raised = 0;
    pthread_mutex_lock(&all->lock);
    while (all->running > 0) {
        struct timespec until = xt_realtime_after_ms(XT_PART_CHECK_MS);
        if (pthread_cond_timedwait(&all->finished, &all->lock, &until) != 0 && !raised) {
            pthread_mutex_unlock(&all->lock);
            PyGILState_STATE gil = PyGILState_Ensure();
            raised = PyErr_CheckSignals() < 0;
            PyGILState_Release(gil);
            if (raised) {
                for (int p = 0; p < k; p++) {
                    sqlite3_interrupt(dbs[p]);
                }
            }
            pthread_mutex_lock(&all->lock);
        }
    }
    pthread_mutex_unlock(&all->lock);
    return raised;
}

PyObject *
xt_read_columns_ranges(xt_state *st, sqlite3 **dbs, int k, const char *filename,
                       const char *range_sql, const int64_t *bounds, int flags,
                       const char *sort_by)
{
    assert(!PyErr_Occurred() && k >= 1);
    PyObject *res = NULL;
    xt_scan joined;
    xt_parts all;
    xt_part *parts = calloc((size_t)k, sizeof(xt_part));
    int raised = 0, failed = -1, out_of_memory = 0;

    memset(&joined, 0, sizeof(joined));
    if (parts == NULL) {
        return PyErr_NoMemory();
    }
    pthread_mutex_init(&all.lock, NULL);
    pthread_cond_init(&all.finished, NULL);
    all.running = 0;
    if (PyArray_ImportNumPyAPI() < 0) {
        goto done;
    }
    for (int p = 0; p < k; p++) {
        parts[p].all = &all;
        if (xt_prepare_one(st, dbs[p], filename, range_sql, &parts[p].scan.stmt) < 0) {
            goto done;
        }
        int rc = sqlite3_bind_int64(parts[p].scan.stmt, 1, bounds[p]);
        if (rc == SQLITE_OK) {
            rc = sqlite3_bind_int64(parts[p].scan.stmt, 2, bounds[p + 1]);
        }
        if (rc != SQLITE_OK) {
            xt_raise_sqlite(st, rc, sqlite3_errmsg(dbs[p]), filename, range_sql);
            goto done;
        }
        parts[p].scan.rows_hint = (size_t)(bounds[p + 1] - bounds[p]);
    }
    if (place_parts(parts, k, bounds, sqlite3_column_count(parts[0].scan.stmt), &joined) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    atomic_fetch_add(&parallel_reads, 1);
    atomic_fetch_add(&parallel_parts, k);
    Py_BEGIN_ALLOW_THREADS
    for (int p = 0; p < k; p++) {
        pthread_mutex_lock(&all.lock);
        all.running++;
        pthread_mutex_unlock(&all.lock);
        parts[p].started = pthread_create(&parts[p].thread, NULL, scan_part, &parts[p]) == 0;
        if (!parts[p].started) {
            scan_part(&parts[p]); /* no thread to be had: this one scans the part itself */
        }
    }
    raised = wait_for_parts(&all, dbs, k);
    for (int p = 0; p < k; p++) {
        if (parts[p].started) {
            pthread_join(parts[p].thread, NULL);
        }
        out_of_memory |= parts[p].scan.out_of_memory;
        if (failed < 0 && parts[p].scan.rc != SQLITE_DONE) {
            failed = p;
        }
    }
    joined.stmt = parts[0].scan.stmt; /* names and declared types of the columns */
    joined.sort_by = sort_by;
    joined.rc = failed >= 0 ? parts[failed].scan.rc : SQLITE_DONE;
    if (!raised && !out_of_memory && failed < 0) {
        out_of_memory = pack_parts(parts, k, bounds, &joined) < 0;
        if (!out_of_memory && sort_by != NULL) {
            sort_scan(&joined);
            out_of_memory = joined.out_of_memory;
        }
    }
    joined.out_of_memory = out_of_memory;
    Py_END_ALLOW_THREADS
    if (raised) {
        goto done; /* the KeyboardInterrupt (or the handler's exception) is set */
    }
    res = scan_result(st, &joined, dbs[failed >= 0 ? failed : 0], filename, range_sql, flags);
done:
    joined.stmt = NULL;
    free_scan(&joined);
    for (int p = 0; p < k; p++) {
        free_part(&parts[p].scan);
        sqlite3_finalize(parts[p].scan.stmt);
    }
    free(parts);
    pthread_mutex_destroy(&all.lock);
    pthread_cond_destroy(&all.finished);
    assert(res != NULL || PyErr_Occurred());
    return res;
}
