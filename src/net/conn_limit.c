/*
 * conn_limit.c - per-backend connection caps and their wait queues (see
 * conn_limit.h and weir_conn_limit in weir/peer.h).
 */
#include "net/conn_limit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct weir_conn_limit {
    _Atomic uint32_t refs;
    uint32_t max;
    pthread_mutex_t lock;
    uint32_t n;                    /* slots held: connections open or being opened */
    weir_conn_waiter *head, *tail; /* FIFO of waiting requests */
    _Atomic uint32_t n_waiting;
};

weir_conn_limit *weir_conn_limit_new(uint32_t max)
{
    if (max == 0)
        return NULL;
    weir_conn_limit *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    atomic_init(&l->refs, 1);
    l->max = max;
    pthread_mutex_init(&l->lock, NULL);
    return l;
}

void weir__climit_ref(weir_conn_limit *l)
{
    atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
}

void weir__climit_unref(weir_conn_limit *l)
{
    if (!l || atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_mutex_destroy(&l->lock);
    free(l);
}

void weir_conn_limit_free(weir_conn_limit *l)
{
    weir__climit_unref(l);
}

uint32_t weir_conn_limit_in_use(weir_conn_limit *l)
{
    pthread_mutex_lock(&l->lock);
    uint32_t n = l->n;
    pthread_mutex_unlock(&l->lock);
    return n;
}

uint32_t weir_conn_limit_waiting(weir_conn_limit *l)
{
    return atomic_load_explicit(&l->n_waiting, memory_order_relaxed);
}

static void push(weir_conn_limit *l, weir_conn_waiter *w, bool front)
{
    w->state = WEIR_WAITER_WAITING;
    if (front) {
        w->prev = NULL;
        w->next = l->head;
        if (l->head)
            l->head->prev = w;
        else
            l->tail = w;
        l->head = w;
    } else {
        w->next = NULL;
        w->prev = l->tail;
        if (l->tail)
            l->tail->next = w;
        else
            l->head = w;
        l->tail = w;
    }
    atomic_fetch_add_explicit(&l->n_waiting, 1, memory_order_relaxed);
}

static void unlink_waiter(weir_conn_limit *l, weir_conn_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        l->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        l->tail = w->prev;
    w->next = w->prev = NULL;
    atomic_fetch_sub_explicit(&l->n_waiting, 1, memory_order_relaxed);
}

int weir__climit_acquire(weir_conn_limit *l, weir_conn_waiter *w, bool front)
{
    pthread_mutex_lock(&l->lock);
    /* A free slot goes to the head of the queue, never past it. */
    bool take = l->n < l->max && (front || !l->head);
    if (take)
        l->n++;
    else
        push(l, w, front);
    pthread_mutex_unlock(&l->lock);
    return take ? WEIR_OK : WEIR_AGAIN;
}

bool weir__climit_busy(weir_conn_limit *l)
{
    return atomic_load_explicit(&l->n_waiting, memory_order_relaxed) > 0;
}

/* Pops the first waiter and marks it woken (lock held); NULL if none.
 * Without a slot (an idle connection to take), the first that can use one:
 * an HTTP/2 stream cannot. */
static weir_conn_waiter *wake_first(weir_conn_limit *l, bool slot)
{
    weir_conn_waiter *w = l->head;
    while (w && !slot && w->slot_only)
        w = w->next;
    if (!w)
        return NULL;
    unlink_waiter(l, w);
    w->state = WEIR_WAITER_WOKEN;
    w->slot = slot;
    return w;
}

void weir__climit_release(weir_conn_limit *l)
{
    pthread_mutex_lock(&l->lock);
    /* The slot passes to the first waiter as it is: n does not move. */
    weir_conn_waiter *w = wake_first(l, true);
    if (!w && l->n > 0)
        l->n--;
    /* Posted under the lock: a waiter that cancels finds it woken and
     * waits for this task, which the loop runs even at shutdown. */
    if (w)
        weir__loop_post(w->loop, w->granted, w->arg);
    pthread_mutex_unlock(&l->lock);
}

void weir__climit_idle(weir_conn_limit *l)
{
    if (!weir__climit_busy(l))
        return;
    pthread_mutex_lock(&l->lock);
    weir_conn_waiter *w = wake_first(l, false);
    if (w)
        weir__loop_post(w->loop, w->granted, w->arg);
    pthread_mutex_unlock(&l->lock);
}

bool weir__climit_cancel(weir_conn_limit *l, weir_conn_waiter *w)
{
    pthread_mutex_lock(&l->lock);
    bool waiting = w->state == WEIR_WAITER_WAITING;
    if (waiting) {
        unlink_waiter(l, w);
        w->state = WEIR_WAITER_IDLE;
    }
    pthread_mutex_unlock(&l->lock);
    return waiting;
}
