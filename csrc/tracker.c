/* Placeholder: replaced by the Tracker core. */
#include "module.h"

int
xt_tracker_exec(PyObject *module, xt_state *st)
{
    (void)module;
    (void)st;
    return 0;
}
