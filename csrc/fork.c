/* Fork: SQLite's global mutexes held across fork(), the registry of connection guards that
 * a fork from Python quiesces, and the fork counter.
 *
 * A child of a threaded process gets a copy of everything the other threads were in the
 * middle of.  For SQLite that is three kinds of state, each handled here:
 *
 * 1. SQLite's static mutexes (the allocator's, the unix VFS's, the PRNG's, ...), held
 *    for a moment by any thread inside SQLite, ours or another library's.  Copied while
 *    held, they stay held in the child forever: its first sqlite3_malloc blocks.  The
 *    pthread_atfork handlers enter all of them before fork() and leave them after it, in
 *    the parent and in the child, so none is held at the instant of the copy.
 * 2. Per-file state of the unix VFS, shared by every connection of the process to one
 *    file: each file's lock mutex and shared-memory mutex (dynamic mutexes, which no
 *    handler can enumerate), and its records of which WAL and file locks this process
 *    holds.  A child that opens the same file reuses these records: if a parent thread
 *    was inside a lock call it blocks forever; if a parent connection was in a write
 *    transaction, the child believes the WAL write lock is held by a sibling and waits
 *    for it until busy_timeout.  So every use of one of our long-lived connections holds
 *    a lock (its guard, registered here), connections opened for one call are counted
 *    (xt_fork_call_open/close), and the os.register_at_fork before-hook, with the GIL
 *    released, waits until the calls are done and takes every guard before the
 *    interpreter forks: no thread of ours is inside SQLite and no transaction of ours
 *    is open at the copy.
 * 3. The copied connections themselves, idle thanks to 2.  Their file and WAL lock
 *    records say "this process holds a shared lock", which is true of the parent only;
 *    a connection the child opens beside them shares the records and never takes the
 *    locks for real, so when the parent closes its last connection it may checkpoint
 *    and delete the WAL under the child, losing the child's committed rows.  The
 *    after-in-child hook therefore closes the copies (no checkpoint on close, nothing to
 *    roll back: nothing the parent shares is written), and the child's next connection
 *    starts from clean records and takes its locks for real.
 *
 * Forks that bypass the interpreter (fork() called from C) get 1 only; CPython does not
 * support running Python in such a child, which therefore never uses our connections.
 * Connections that are not ours (Python's sqlite3 module) get 1 only as well. */
#include "fork.h"

#include <sqlite3.h>
#include <stdatomic.h>

/* ------------------------------------------------------------------------------------ */
/* SQLite's static mutexes                                                              */
/* ------------------------------------------------------------------------------------ */

/* The static mutexes SQLite itself uses, in the order the prepare handler enters them:
 * the order in which SQLite nests them, outermost first, so that waiting for one never
 * closes a cycle with a thread that holds it and waits for the next.
 *   OPEN   shared-cache btree open; takes PRNG, MAIN, VFS1 and MEM inside
 *   PRNG   sqlite3_randomness; takes MAIN (sqlite3_vfs_find) on first use
 *   MAIN   VFS list, initialisation, auto extensions; takes MEM inside
 *   VFS1   the unix VFS's list of files; takes a file's lock mutex and MEM inside
 *   LRU    shared page-cache group; takes PMEM and MEM inside
 *   PMEM   page-cache buffer; a leaf in practice (released before MEM is taken)
 *   MEM    the allocator's; a leaf (released before the soft-limit handler runs)
 * Connection mutexes and per-file mutexes are dynamic and never taken here: a thread that
 * holds one and then waits for a static mutex only makes prepare wait until it is done.
 *
 * APP1-3, VFS2 and VFS3 are left out: SQLite never takes them, so the child's SQLite
 * calls never wait for them, while an application holding one (around its own calls into
 * SQLite, or while waiting for the GIL the forking thread holds) could make prepare wait
 * forever.
 *
 * The child handler may leave what prepare entered: in the system SQLite (mutex_unix.c,
 * SQLITE_MUTEX_PTHREADS, no SQLITE_DEBUG) static mutexes are PTHREAD_MUTEX_INITIALIZER
 * mutexes, not recursive and not error-checking, whose unlock does not compare the owner's
 * thread id (which differs in the child); and the child's only thread is the one that
 * entered them. */
static const int static_mutex_ids[] = {
    SQLITE_MUTEX_STATIC_OPEN, SQLITE_MUTEX_STATIC_PRNG, SQLITE_MUTEX_STATIC_MAIN,
    SQLITE_MUTEX_STATIC_VFS1, SQLITE_MUTEX_STATIC_LRU,  SQLITE_MUTEX_STATIC_PMEM,
    SQLITE_MUTEX_STATIC_MEM,
};
#define N_STATIC_MUTEXES (sizeof(static_mutex_ids) / sizeof(static_mutex_ids[0]))

/* Process-wide because fork() is.  Written once, under atfork_once, before the handlers
 * that read them are installed; read-only afterwards. */
static sqlite3_mutex *static_mutexes[N_STATIC_MUTEXES];
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* Process-wide count of fork()s, bumped in the child.  Atomic: read without a lock. */
static atomic_ulong fork_generation;

/* ------------------------------------------------------------------------------------ */
/* The registry of guards                                                               */
/* ------------------------------------------------------------------------------------ */

/* Process-wide because fork() copies every connection of the process, whichever object
 * or interpreter opened it.  guards_lock guards `guards` and the counts below; it is held
 * for a moment by add, remove and the calls' open and close, and by a fork from Python
 * from its before-hook to its after-hook (except while it waits for calls_closed). */
static pthread_mutex_t guards_lock = PTHREAD_MUTEX_INITIALIZER;
static xt_fork_guard *guards;
/* Connections open for one call, a fork waiting for them to close (new ones wait while
 * it does), and the conditions both wait on. */
static int calls_open, fork_pending;
static pthread_cond_t calls_closed = PTHREAD_COND_INITIALIZER;
static pthread_cond_t fork_done = PTHREAD_COND_INITIALIZER;
/* Calls this thread has open (nested ones count once in calls_open).  Thread-local. */
static _Thread_local int calls_here;

/* Before-hooks this thread has run without their after-hook yet (more than one if the
 * module was loaded twice).  Thread-local, so it needs no lock; in the child it is the
 * forking thread's, which is the child's only thread. */
static _Thread_local int quiesce_depth;

static void
atfork_prepare(void)
{
    for (size_t i = 0; i < N_STATIC_MUTEXES; i++) {
        sqlite3_mutex_enter(static_mutexes[i]);
    }
}

static void
leave_static_mutexes(void)
{
    for (size_t i = N_STATIC_MUTEXES; i-- > 0;) {
        sqlite3_mutex_leave(static_mutexes[i]);
    }
}

static void
atfork_parent(void)
{
    leave_static_mutexes();
}

static void
atfork_child(void)
{
    atomic_fetch_add(&fork_generation, 1);
    leave_static_mutexes();
    if (quiesce_depth == 0) {
        /* A fork our before-hook did not run for: a thread that held the registry, or
         * waited on it, is gone; so are the calls other threads had open.  The guards'
         * own locks are re-made by their owners (xt_fork_generation). */
        pthread_mutex_init(&guards_lock, NULL);
        pthread_cond_init(&calls_closed, NULL);
        pthread_cond_init(&fork_done, NULL);
        calls_open = calls_here;
        fork_pending = 0;
    }
}

static void
install_atfork(void)
{
    /* Settle SQLite's mutex implementation before looking its mutexes up. */
    (void)sqlite3_initialize();
    for (size_t i = 0; i < N_STATIC_MUTEXES; i++) {
        static_mutexes[i] = sqlite3_mutex_alloc(static_mutex_ids[i]);
    }
    (void)pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

unsigned long
xt_fork_generation(void)
{
    pthread_once(&atfork_once, install_atfork);
    return atomic_load_explicit(&fork_generation, memory_order_relaxed);
}

void
xt_fork_guard_add(xt_fork_guard *g, pthread_mutex_t *lock, void *owner,
                  void (*drop_in_child)(void *owner))
{
    pthread_mutex_lock(&guards_lock);
    if (!g->listed) {
        g->lock = lock;
        g->owner = owner;
        g->drop_in_child = drop_in_child;
        g->prev = NULL;
        g->next = guards;
        if (guards != NULL) {
            guards->prev = g;
        }
        guards = g;
        g->listed = 1;
    }
    pthread_mutex_unlock(&guards_lock);
}

void
xt_fork_guard_remove(xt_fork_guard *g)
{
    if (!g->listed) {
        return; /* set and cleared only by the owner's own add and remove */
    }
    pthread_mutex_lock(&guards_lock);
    if (g->listed) {
        if (g->prev != NULL) {
            g->prev->next = g->next;
        }
        else {
            guards = g->next;
        }
        if (g->next != NULL) {
            g->next->prev = g->prev;
        }
        g->prev = g->next = NULL;
        g->listed = 0;
    }
    pthread_mutex_unlock(&guards_lock);
}

void
xt_fork_call_open(void)
{
    if (calls_here++ > 0) {
        return;
    }
    pthread_mutex_lock(&guards_lock);
    while (fork_pending) {
        pthread_cond_wait(&fork_done, &guards_lock);
    }
    calls_open++;
    pthread_mutex_unlock(&guards_lock);
}

void
xt_fork_call_close(void)
{
    if (--calls_here > 0) {
        return;
    }
    pthread_mutex_lock(&guards_lock);
    if (--calls_open == 0 && fork_pending) {
        pthread_cond_signal(&calls_closed);
    }
    pthread_mutex_unlock(&guards_lock);
}

/* ------------------------------------------------------------------------------------ */
/* The os.register_at_fork hooks                                                        */
/* ------------------------------------------------------------------------------------ */

/* Waits with the GIL released: a thread reading through a tracker holds its store's lock,
 * and a call holds its connection, while it takes the GIL back; nobody waits for a
 * guard's lock or for guards_lock while holding the GIL.  No thread holds two guards'
 * locks, and none takes guards_lock while holding one, so waiting for them one after the
 * other closes no cycle.  The wait is as long as the longest write or call in progress
 * (the calls of this very thread, if it forks from inside one, are not waited for). */
PyDoc_STRVAR(fork_prepare__doc__,
"_fork_prepare($module, /)\n--\n\n"
"os.register_at_fork(before=...) hook: wait until no thread uses one of xetrack_c's\n"
"SQLite connections and keep them all locked until the fork is done.");

static PyObject *
fork_prepare(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    if (quiesce_depth++ > 0) {
        Py_RETURN_NONE;
    }
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&guards_lock);
    while (fork_pending) {
        pthread_cond_wait(&fork_done, &guards_lock); /* another thread is forking */
    }
    fork_pending = 1;
    while (calls_open > (calls_here > 0)) {
        pthread_cond_wait(&calls_closed, &guards_lock);
    }
    for (xt_fork_guard *g = guards; g != NULL; g = g->next) {
        pthread_mutex_lock(g->lock);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static void
release_guards(int in_child)
{
    for (xt_fork_guard *g = guards; g != NULL; g = g->next) {
        if (in_child && g->drop_in_child != NULL) {
            g->drop_in_child(g->owner);
        }
        pthread_mutex_unlock(g->lock);
    }
    if (in_child) {
        /* Threads that waited on these are the parent's. */
        pthread_cond_init(&calls_closed, NULL);
        pthread_cond_init(&fork_done, NULL);
    }
    fork_pending = 0;
    pthread_cond_broadcast(&fork_done);
    pthread_mutex_unlock(&guards_lock);
}

PyDoc_STRVAR(fork_parent__doc__,
"_fork_parent($module, /)\n--\n\n"
"os.register_at_fork(after_in_parent=...) hook: unlock the connections.");

static PyObject *
fork_parent(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    if (quiesce_depth > 0 && --quiesce_depth == 0) {
        release_guards(0);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(fork_child__doc__,
"_fork_child($module, /)\n--\n\n"
"os.register_at_fork(after_in_child=...) hook: close the copies of the parent's idle\n"
"connections (each object opens its own on first use) and unlock them.");

static PyObject *
fork_child(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    (void)module;
    if (quiesce_depth > 0 && --quiesce_depth == 0) {
        release_guards(1);
    }
    Py_RETURN_NONE;
}

static PyMethodDef fork_functions[] = {
    {"_fork_prepare", fork_prepare, METH_NOARGS, fork_prepare__doc__},
    {"_fork_parent", fork_parent, METH_NOARGS, fork_parent__doc__},
    {"_fork_child", fork_child, METH_NOARGS, fork_child__doc__},
    {NULL, NULL, 0, NULL},
};

/* Registered when the module loads, before tracker.py registers its flush of async
 * trackers: before-hooks run in reverse order of registration, so queued rows are
 * written first and the connections quiesced last, right before the fork. */
int
xt_fork_exec(PyObject *module, xt_state *st)
{
    (void)st;
    PyObject *os = NULL, *register_at_fork = NULL, *args = NULL, *kwargs = NULL, *res = NULL;
    int rc = -1;

    pthread_once(&atfork_once, install_atfork);
    if (PyModule_AddFunctions(module, fork_functions) < 0) {
        return -1;
    }
    os = PyImport_ImportModule("os");
    if (os == NULL) {
        goto done;
    }
    register_at_fork = PyObject_GetAttrString(os, "register_at_fork");
    if (register_at_fork == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            rc = 0; /* no fork() on this platform */
        }
        goto done;
    }
    args = PyTuple_New(0);
    kwargs = PyDict_New();
    if (args == NULL || kwargs == NULL) {
        goto done;
    }
    static const char *const hooks[][2] = {
        {"before", "_fork_prepare"},
        {"after_in_parent", "_fork_parent"},
        {"after_in_child", "_fork_child"},
    };
    for (size_t i = 0; i < sizeof(hooks) / sizeof(hooks[0]); i++) {
        PyObject *fn = PyObject_GetAttrString(module, hooks[i][1]);
        int set = fn == NULL ? -1 : PyDict_SetItemString(kwargs, hooks[i][0], fn);
        Py_XDECREF(fn);
        if (set < 0) {
            goto done;
        }
    }
    res = PyObject_Call(register_at_fork, args, kwargs);
    if (res == NULL) {
        goto done;
    }
    rc = 0;
done:
    Py_XDECREF(os);
    Py_XDECREF(register_at_fork);
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    Py_XDECREF(res);
    return rc;
}
