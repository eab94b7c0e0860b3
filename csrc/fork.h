/* Fork: what makes fork() safe for the SQLite connections of this process.
 *
 * Owns the process-wide fork counter, the pthread_atfork handlers that hold SQLite's
 * global (static) mutexes across fork(), and the registry of connection guards: the
 * locks that every use of one of our connections holds.  A fork made through Python
 * (os.fork, multiprocessing, subprocess with preexec_fn) runs os.register_at_fork
 * hooks that take every guard first, so no thread of ours is inside SQLite and no
 * transaction is open when the process is copied; the child then closes the copied,
 * idle connections (see docs/design.md, "Fork"). */
#ifndef XT_FORK_H
#define XT_FORK_H

#include "module.h"

#include <pthread.h>

typedef struct xt_fork_guard xt_fork_guard;

/* One of our connections, as the fork hooks see it.  Embedded in its owner (a store, a
 * result cache); every field belongs to fork.c once the guard is added. */
struct xt_fork_guard {
    pthread_mutex_t *lock; /* held around every use of the connection */
    void *owner;
    /* In a child of a quiesced fork, with `lock` held: close the copied connection,
     * which was idle, without writing anything the parent shares. */
    void (*drop_in_child)(void *owner);
    xt_fork_guard *prev, *next;
    int listed;
};

/* How many fork()s this process has been through (counted in the child, process-wide): an
 * object that saved it at open and sees it change is in a child and must not touch the
 * parent's connection. */
unsigned long xt_fork_generation(void);

/* List or unlist a guard.  Call without the GIL and without holding any guard's lock:
 * both wait while a fork from Python is in progress.  Adding twice, or removing a guard
 * never added, does nothing. */
void xt_fork_guard_add(xt_fork_guard *g, pthread_mutex_t *lock, void *owner,
                       void (*drop_in_child)(void *owner));
void xt_fork_guard_remove(xt_fork_guard *g);

/* Around the life of a connection opened for one call (dbfile.c): open before opening it,
 * close after closing it.  A fork from Python waits until no such connection is open, and
 * new ones wait for the fork.  Call without the GIL; nested pairs on one thread count
 * once. */
void xt_fork_call_open(void);
void xt_fork_call_close(void);

#endif
