/* track(): call a function, time it and log a row describing the call (function name,
 * args, kwargs, error, function_time, unpacked dataclass/pydantic arguments, the result,
 * params); with the result cache on, look the call up first and store its result after. */
#ifndef XT_TRACK_H
#define XT_TRACK_H

#include "tracker.h"

/* TrackerCore.track(func, params=None, args=None, kwargs=None, cache_force=False),
 * METH_FASTCALL | METH_KEYWORDS, and its docstring. */
PyObject *xt_tracker_track(TrackerCore *self, PyObject *const *fargs, Py_ssize_t nargs,
                           PyObject *kwnames);
extern const char xt_track__doc__[];

#endif
