/* Reader: the columnar read path (reader.c).  One pass over a SELECT fills C buffers with
 * the GIL released; NumPy arrays (and the str/bytes objects of text columns) are built from
 * them afterwards with the GIL held.  NumPy is imported on the first read, never at module
 * import.  Also the statement helpers that dbfile.c (the module-level functions on a
 * database path) shares with the read path; dbfile.c's xt_reader_exec() is declared in
 * module.h with the other exec hooks. */
#ifndef XT_READER_H
#define XT_READER_H

#include "module.h"

#include <sqlite3.h>

/* Run `sql` on the open connection `db` and return a new dict {column name: ndarray}, in
 * SELECT order, or NULL with an exception set.
 *
 *   st:       module state (exception classes)
 *   db:       an open connection; only this call uses it until it returns, so the caller
 *             may hold its own lock around the call (nothing here takes another lock)
 *   filename: the database named in error messages (":memory:" is fine)
 *   sql:      exactly one statement; trailing whitespace, ';' and comments are allowed
 *   params:   a tuple or list of bind values (None, int, float, str, bytes, bytearray),
 *             or NULL for none
 *
 * Must be called with the GIL held; the GIL is released while SQLite prepares and steps.
 * While it steps, Ctrl-C stops the statement: a signal handler that raises (the default
 * SIGINT handler raises KeyboardInterrupt) is run within a fraction of a second and its
 * exception is returned (interrupt.h; any progress handler `db` had is removed).
 * Column types, decided from the values actually read (as pandas.read_sql_query does):
 *   only INTEGER                    -> int64
 *   INTEGER/REAL with NULLs or mixed -> float64, NaN for NULL
 *   only NULL, or no rows at all    -> object array of None (empty object array)
 *   anything else (TEXT, BLOB, mixed storage classes) -> object array of str, bytes,
 *                                      int, float or None
 * TEXT that is not valid UTF-8 is decoded with U+FFFD replacement characters.
 * A repeated column name gets a suffix as pandas does for duplicate labels: the second
 * "a" becomes "a.1", the third "a.2" (skipping names already taken).
 * SQLite failures raise through xt_raise_sqlite(), naming `filename` and `sql`.  The
 * statement runs in whatever transaction the caller has open (an implicit one if none). */
PyObject *xt_read_columns(xt_state *st, sqlite3 *db, const char *filename, const char *sql,
                          PyObject *params);

/* Flags for xt_read_columns_ex(). */
enum {
    /* A column holding only TEXT and NULL (at least one TEXT), all valid UTF-8, comes back
     * not as an object array but as the buffers of an Arrow large_string array, handed
     * over without copying and without creating a str per row:
     *   (offsets: int64 ndarray of n+1, data: uint8 ndarray of UTF-8 bytes,
     *    validity: uint8 ndarray, an LSB-first bitmap with 1 = not NULL, or None)
     * xetrack_c._dataframe.frame_from_columns() accepts such tuples. */
    XT_READ_TEXT_BUFFERS = 1,
};

/* xt_read_columns() with `flags` (a combination of the XT_READ_* values above) and
 * `sort_by`: NULL, or the name of a result column by which the rows are sorted after the
 * scan, in C and without the GIL, exactly as `ORDER BY sort_by` with the BINARY collation
 * would order them (NULL, then INTEGER/REAL by value, then TEXT, then BLOB, bytewise),
 * keeping scan order among equal keys.  Rows already in order cost one comparison each,
 * which makes this much cheaper than SQLite's sorter for tables appended in time order.
 * ValueError if no result column has that name. */
PyObject *xt_read_columns_ex(xt_state *st, sqlite3 *db, const char *filename, const char *sql,
                             PyObject *params, int flags, const char *sort_by);

/* xt_read_columns_ex() with `rows_hint_sql`: NULL, or a statement run first on `db` (in the
 * caller's transaction, so in the same snapshot) whose first value estimates the number of
 * rows `sql` returns, e.g. the span of the table's rowids.  The scan's buffers are then
 * allocated once at that size instead of growing from 64 rows; a wrong estimate costs only
 * memory or growth (more rows than hinted grow the buffers as without a hint, slack is given
 * back), and a statement that fails or returns no positive INTEGER means no hint. */
PyObject *xt_read_columns_hinted(xt_state *st, sqlite3 *db, const char *filename,
                                 const char *sql, PyObject *params, int flags,
                                 const char *sort_by, const char *rows_hint_sql);

/* The parallel scan: `range_sql` (a SELECT with two parameters, the first rowid and the
 * rowid past the last of a range, returning the rows in rowid order) runs on each of the
 * `k` connections `dbs`, each in a thread of its own, for the range
 * [bounds[i], bounds[i + 1]); the parts are joined in that order and built as
 * xt_read_columns_ex() builds one scan (sorted by `sort_by` when not NULL).  The caller
 * has put every connection in a read transaction on one snapshot.  While the threads
 * scan, the calling thread looks at Python's signals every 50 ms and interrupts every
 * connection on Ctrl-C (KeyboardInterrupt).  A new reference, or NULL with an
 * exception set. */
PyObject *xt_read_columns_ranges(xt_state *st, sqlite3 **dbs, int k, const char *filename,
                                 const char *range_sql, const int64_t *bounds, int flags,
                                 const char *sort_by);

/* How many parallel reads (xt_read_columns_ranges) this process began, and their parts. */
void xt_parallel_stats(long long *reads, long long *parts);

/* Prepare exactly one statement of `sql` on `db` (the GIL is released while SQLite
 * prepares) and set *stmt_out; 0 on success, -1 with an exception set.  Trailing
 * whitespace, ';' and comments are allowed; an empty `sql` or a second statement raises
 * ValueError, a SQLite failure raises through xt_raise_sqlite() naming `filename` and
 * `sql`.  The caller finalizes *stmt_out. */
int xt_prepare_one(xt_state *st, sqlite3 *db, const char *filename, const char *sql,
                   sqlite3_stmt **stmt_out);

/* Bind `params` (a tuple or list, or NULL or None for none) to the placeholders of `stmt`,
 * with the GIL held: None, int (or any __index__), float (or any __float__), str, bytes and
 * bytearray.  0 on success, -1 with an exception set: ValueError when the count does not
 * match the statement's placeholders, TypeError or OverflowError for a value that cannot
 * be bound, a SQLite failure through xt_raise_sqlite(). */
int xt_bind_params(xt_state *st, sqlite3 *db, sqlite3_stmt *stmt, PyObject *params,
                   const char *filename, const char *sql);

#endif
