/* Placeholder: the reader concern adds its functions here. */
#include "module.h"

int
xt_reader_exec(PyObject *module, xt_state *st)
{
    (void)module;
    (void)st;
    return 0;
}
