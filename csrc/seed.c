/* Placeholder: the seed concern adds its functions here. */
#include "module.h"

int
xt_seed_exec(PyObject *module, xt_state *st)
{
    (void)module;
    (void)st;
    return 0;
}
