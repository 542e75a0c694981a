/*
 * conn_limit.h - a cap on the connections to one backend, shared by all
 * workers, with a FIFO queue of the requests waiting for one (HAProxy's
 * server maxconn and timeout queue).
 *
 * What counts: every HTTP/1 connection opened under the limit, in use or
 * idle in the pool, until it is closed; and every HTTP/2 stream in flight
 * (its session holds the slot; an HTTP/2 connection holds none, since it
 * carries many requests at once). A request that finds no idle connection
 * and no free slot queues; it is woken, in order, when a connection closes
 * (and then holds that connection's slot) or goes idle into the pool (and
 * then looks there first). While anyone waits, newcomers queue behind.
 *
 * Locking: one mutex per limit, held for a list operation only; the wake
 * is a task posted to the waiter's loop, which runs it on its own thread.
 */
#ifndef WEIR_NET_CONN_LIMIT_H
#define WEIR_NET_CONN_LIMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/loop.h"
#include "weir/peer.h"

typedef struct weir_conn_waiter weir_conn_waiter;

/* Embedded in the waiting session; loop thread of that session only,
 * except the fields the limit's lock guards. */
struct weir_conn_waiter {
    weir_conn_waiter *next, *prev; /* guarded by the limit's lock */
    weir_loop *loop;
    weir_task_cb granted; /* posted to loop with arg when woken */
    void *arg;
    int state; /* guarded: WAITING, WOKEN or IDLE (below) */
    bool slot; /* set with WOKEN: the wake carries a slot */
    /* Set by the waiter before acquire: only a slot will do (an HTTP/2
     * stream; an idle HTTP/1 connection is of no use to it). */
    bool slot_only;
};

enum { WEIR_WAITER_IDLE = 0, WEIR_WAITER_WAITING, WEIR_WAITER_WOKEN };

/*
 * Takes a slot (WEIR_OK) or queues w (WEIR_AGAIN; w->granted runs on
 * w->loop when it is its turn). front: w was woken without a slot and
 * found the pool empty: it goes back to the head of the queue.
 */
int weir__climit_acquire(weir_conn_limit *l, weir_conn_waiter *w, bool front);
/* True while requests wait (for a newcomer that could take an idle
 * connection ahead of them). */
bool weir__climit_busy(weir_conn_limit *l);
/* A connection under the limit closed: its slot goes to the first waiter,
 * or back to the limit. */
void weir__climit_release(weir_conn_limit *l);
/* A connection under the limit went idle into the pool: the first waiter
 * is woken to take it. */
void weir__climit_idle(weir_conn_limit *l);
/* Leaves the queue: true if w was waiting (its wake will not come), false
 * if its wake is already on its way (w->slot tells whether it brings a
 * slot, to be released by the waiter). */
bool weir__climit_cancel(weir_conn_limit *l, weir_conn_waiter *w);

void weir__climit_ref(weir_conn_limit *l);
void weir__climit_unref(weir_conn_limit *l);

#endif
