/* Store: the SQLite layer.  Pure C below the Python boundary (connections, statement
 * cache, transactions, busy waiting, the async writer thread), plus the one helper that
 * turns SQLite failures into Python exceptions. */
#ifndef XT_STORE_H
#define XT_STORE_H

#include "module.h"

#include <sqlite3.h>

/* Raise the exception for a failed SQLite call and return NULL.
 *   rc:       the SQLite result code (extended codes are fine)
 *   errmsg:   sqlite3_errmsg() text, or NULL to use sqlite3_errstr(rc)
 *   filename: the database file (or ":memory:") named in the message
 *   sql:      the statement that failed, or NULL
 * SQLITE_NOTADB and SQLITE_CORRUPT raise CorruptDatabaseError; everything else raises
 * StorageError.  The exception carries .sqlite_code, .filename and .sql attributes. */
PyObject *xt_raise_sqlite(xt_state *st, int rc, const char *errmsg, const char *filename,
                          const char *sql);

#endif
