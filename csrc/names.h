/* Names: key sanitising (xetrack's rules), identifier quoting, track ids. */
#ifndef XT_NAMES_H
#define XT_NAMES_H

#include "module.h"

/* Longest column name xetrack keeps, in code points. */
#define XT_MAX_KEY_LENGTH 64

/* Column name for `key`: str(key) with every character outside [A-Za-z0-9_] replaced by
 * '_' and cut to XT_MAX_KEY_LENGTH characters.  New reference, or NULL with ValueError
 * for a key that sanitises to nothing. */
PyObject *xt_sanitize_key(PyObject *key);

/* `name` as a quoted SQLite identifier, embedded quotes doubled.  New reference. */
PyObject *xt_quote_identifier(PyObject *name);

/* A fresh adjective-noun-NNNN track id.  New reference. */
PyObject *xt_new_track_id(void);

#endif
