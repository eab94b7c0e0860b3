/* Tracker: the TrackerCore type, whose log() and log_batch() encode rows in C and hand
 * them to the store.  xetrack_c.Tracker (Python) subclasses it for the rest of the API. */
#ifndef XT_TRACKER_H
#define XT_TRACKER_H

#include "module.h"
#include "store.h"

/* Bind a Python value to parameter `index` (1-based) of `stmt`: None, bool, int, float,
 * str, bytes, bytearray; anything else as str(value).  0 on success, -1 with an
 * exception set. */
int xt_bind_python(sqlite3_stmt *stmt, int index, PyObject *value);

#endif
