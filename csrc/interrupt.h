/* Interrupt: Ctrl-C (and any other Python signal handler that raises) stops a long SQLite
 * statement that runs with the GIL released.
 *
 * Python runs signal handlers only when the main thread executes Python code, which a
 * thread stepping through a statement in C does not.  While a statement is watched, SQLite
 * calls a progress handler every XT_PROGRESS_OPS virtual-machine steps; at most every
 * XT_SIGNAL_CHECK_MS milliseconds (a monotonic clock decides, with no lock) the handler
 * takes the GIL for an instant (PyGILState_Ensure) and calls PyErr_CheckSignals().  When a
 * handler raised, SQLite ends the statement with SQLITE_INTERRUPT and the exception
 * (KeyboardInterrupt) stays set for the caller to return.  A statement shorter than
 * XT_SIGNAL_CHECK_MS never takes the GIL. */
#ifndef XT_INTERRUPT_H
#define XT_INTERRUPT_H

#include "module.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <time.h>

/* One watched statement at a time per connection; lives on the caller's stack. */
typedef struct {
    int64_t next_check_ns; /* monotonic time at which the signals are next looked at */
    int raised;            /* a signal handler raised: its exception is set */
} xt_interrupt_watch;

/* Watch the statements `db` runs from now on, until xt_unwatch_interrupts(): they must run
 * on this thread, which has a Python thread state (it may hold the GIL or have released
 * it).  Replaces any progress handler of `db`.  Pure C: callable with or without the GIL. */
void xt_watch_interrupts(sqlite3 *db, xt_interrupt_watch *watch);

/* Stop watching.  Afterwards, watch->raised says whether a statement ended with
 * SQLITE_INTERRUPT because a signal handler raised; then the exception is set (the GIL
 * must be held to look at it) and the caller returns NULL without raising another. */
void xt_unwatch_interrupts(sqlite3 *db);

/* pthread_create with every signal blocked in the new thread: Python runs its handlers on
 * the main thread, and a thread of ours must not take a signal meant for it (nor pass
 * its mask to a child).  0, or an errno value. */
int xt_thread_start(pthread_t *thread, void *(*run)(void *), void *arg);

/* The CLOCK_REALTIME time `ms` milliseconds from now, for pthread_cond_timedwait: a
 * waiter that looks at Python's signals every `ms` while it waits. */
struct timespec xt_realtime_after_ms(int ms);

#endif
