/* Interrupt: the progress handler that lets Ctrl-C stop a long statement (interrupt.h). */
#include "interrupt.h"

#include <signal.h>

/* Virtual-machine steps between two calls of the progress handler: a few microseconds of
 * work, so the clock read the handler does is noise next to it. */
#define XT_PROGRESS_OPS 1000

/* How often a watched statement looks at Python's pending signals, at most. */
#define XT_SIGNAL_CHECK_MS 50

static int64_t
monotonic_ns(void)
{
    struct timespec now;
#ifdef CLOCK_MONOTONIC_COARSE
    /* A few nanoseconds (no system call); its millisecond resolution is plenty here. */
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
#else
    clock_gettime(CLOCK_MONOTONIC, &now);
#endif
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

/* SQLite's progress handler: nonzero stops the statement with SQLITE_INTERRUPT.  Runs on
 * the thread stepping the statement, usually with the GIL released; PyGILState_Ensure
 * takes it for the check and is a no-op where the thread already holds it.  Only the main
 * thread runs signal handlers; elsewhere PyErr_CheckSignals() returns 0 at once. */
static int
check_signals(void *arg)
{
    xt_interrupt_watch *watch = arg;
    int64_t now = monotonic_ns();

    if (now < watch->next_check_ns) {
        return 0;
    }
    watch->next_check_ns = now + (int64_t)XT_SIGNAL_CHECK_MS * 1000000;
    PyGILState_STATE gil = PyGILState_Ensure();
    int raised = PyErr_CheckSignals() < 0;
    PyGILState_Release(gil);
    watch->raised |= raised;
    return raised;
}

void
xt_watch_interrupts(sqlite3 *db, xt_interrupt_watch *watch)
{
    watch->raised = 0;
    watch->next_check_ns = monotonic_ns() + (int64_t)XT_SIGNAL_CHECK_MS * 1000000;
    sqlite3_progress_handler(db, XT_PROGRESS_OPS, check_signals, watch);
}

void
xt_unwatch_interrupts(sqlite3 *db)
{
    sqlite3_progress_handler(db, 0, NULL, NULL);
}

int
xt_thread_start(pthread_t *thread, void *(*run)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(thread, NULL, run, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return err;
}

struct timespec
xt_realtime_after_ms(int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec += 1;
        until.tv_nsec -= 1000000000L;
    }
    return until;
}
