/* Result cache, single flight: the in-process table of calls being computed.  The first
 * thread to ask for a key computes it (the owner); threads asking for the same key
 * meanwhile wait on a condition variable, with the GIL released, and then look the key up
 * again.  A wait that would end up waiting for the waiting thread itself (recursion with
 * the same key, threads waiting in a ring) computes without the table instead.  The table
 * and its lock live in the ResultCache (cache_internal.h). */
#include "cache_internal.h"

#include <stdlib.h>
#include <string.h>

struct xt_flight {
    uint8_t key[XT_CACHE_KEY_SIZE];
    pthread_t owner;
    int done;
    int refs; /* the owner and each waiter */
    struct xt_flight *next;
};

/* A thread waiting for a flight; lives on that thread's stack while it waits. */
struct xt_wait {
    pthread_t thread;
    xt_flight *on;
    struct xt_wait *next;
};

/* After fork (from xt_cache_check_fork): only this thread's flights remain, and no
 * thread waits. */
void
xt_cache_flights_after_fork(ResultCache *c)
{
    pthread_t self = pthread_self();
    xt_flight **link = &c->flights;
    while (*link != NULL) {
        if (pthread_equal((*link)->owner, self)) {
            link = &(*link)->next;
        }
        else {
            *link = (*link)->next; /* its thread does not exist here; left allocated */
        }
    }
    c->waits = NULL;
}

static xt_wait *
wait_of(ResultCache *c, pthread_t thread)
{
    for (xt_wait *w = c->waits; w != NULL; w = w->next) {
        if (pthread_equal(w->thread, thread)) {
            return w;
        }
    }
    return NULL;
}

/* Would waiting for `f` wait, through the chain of owners waiting for other flights,
 * for this very thread?  (Recursion with the same key, or threads waiting in a ring.) */
static int
waits_for_self(ResultCache *c, xt_flight *f, pthread_t self)
{
    for (int hops = 0; f != NULL && hops < 10000; hops++) {
        if (pthread_equal(f->owner, self)) {
            return 1;
        }
        xt_wait *w = wait_of(c, f->owner);
        f = w ? w->on : NULL;
    }
    return 0;
}

/* Pure C, flight_lock held. */
static int
flight_enter_locked(ResultCache *c, const uint8_t *key, pthread_t self, xt_flight **mine)
{
    xt_flight *f = c->flights;
    while (f != NULL && memcmp(f->key, key, XT_CACHE_KEY_SIZE) != 0) {
        f = f->next;
    }
    if (f == NULL) {
        f = calloc(1, sizeof(*f));
        if (f == NULL) {
            return XT_FLIGHT_BYPASS;
        }
        memcpy(f->key, key, XT_CACHE_KEY_SIZE);
        f->owner = self;
        f->refs = 1;
        f->next = c->flights;
        c->flights = f;
        *mine = f;
        return XT_FLIGHT_OWNER;
    }
    if (waits_for_self(c, f, self)) {
        return XT_FLIGHT_BYPASS;
    }
    xt_wait me = {.thread = self, .on = f, .next = c->waits};
    c->waits = &me;
    f->refs++;
    while (!f->done) {
        pthread_cond_wait(&c->flight_done, &c->flight_lock);
    }
    for (xt_wait **link = &c->waits; *link != NULL; link = &(*link)->next) {
        if (*link == &me) {
            *link = me.next;
            break;
        }
    }
    if (--f->refs == 0) {
        free(f);
    }
    return XT_FLIGHT_RETRY;
}

static void
flight_finish_locked(ResultCache *c, xt_flight *f)
{
    for (xt_flight **link = &c->flights; *link != NULL; link = &(*link)->next) {
        if (*link == f) {
            *link = f->next;
            break;
        }
    }
    f->done = 1;
    pthread_cond_broadcast(&c->flight_done);
    if (--f->refs == 0) {
        free(f);
    }
}

int
xt_cache_flight_begin(PyObject *cache, const xt_cache_key *key, xt_flight **flight)
{
    ResultCache *c = xt_as_cache(cache);
    pthread_t self = pthread_self();
    xt_flight *mine = NULL;
    int role;

    xt_cache_check_fork(c);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&c->flight_lock);
    role = flight_enter_locked(c, key->bytes, self, &mine);
    pthread_mutex_unlock(&c->flight_lock);
    Py_END_ALLOW_THREADS
    *flight = mine;
    return role;
}

void
xt_cache_flight_end(PyObject *cache, xt_flight *flight)
{
    ResultCache *c = xt_as_cache(cache);
    xt_cache_check_fork(c);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&c->flight_lock);
    flight_finish_locked(c, flight);
    pthread_mutex_unlock(&c->flight_lock);
    Py_END_ALLOW_THREADS
}
