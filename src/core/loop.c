/*
 * loop.c - per-thread event loop: epoll (edge-triggered), timer min-heap,
 * cached clock, cross-thread task queue (mutex + eventfd) and deferred tasks.
 */
#include "core/loop.h"

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "weir/types.h"

#define MAX_EVENTS 256

typedef struct task {
    weir_task_cb cb;
    void *arg;
} task;

typedef struct task_vec {
    task *v;
    size_t n, cap;
} task_vec;

struct weir_loop {
    int id;
    int epfd;
    _Atomic int stop;
    uint64_t now_ms;
    uint64_t now_us;
    uint64_t wall_ms;

    weir_timer **heap; /* min-heap on key_ms */
    size_t n_heap, cap_heap;

    weir_io wake;            /* eventfd for posts and stop */
    pthread_mutex_t lock;    /* guards `posted` */
    task_vec posted;         /* filled by any thread */
    _Atomic bool has_posted; /* posted.n > 0, readable without the lock */
    task_vec deferred;       /* loop thread only */
};

static __thread weir_loop *current_loop;

weir_loop *weir__loop_current(void)
{
    return current_loop;
}

static int vec_push(task_vec *tv, weir_task_cb cb, void *arg)
{
    if (tv->n == tv->cap) {
        size_t cap = tv->cap ? tv->cap * 2 : 64;
        task *nv = realloc(tv->v, cap * sizeof(*nv));
        if (!nv)
            return WEIR_ERR_NOMEM;
        tv->v = nv;
        tv->cap = cap;
    }
    tv->v[tv->n++] = (task){cb, arg};
    return 0;
}

void weir__loop_update_time(weir_loop *loop)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    loop->now_us = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
    loop->now_ms = loop->now_us / 1000;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    loop->wall_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t weir__loop_now(const weir_loop *loop)
{
    return loop->now_ms;
}

uint64_t weir__loop_now_us(const weir_loop *loop)
{
    return loop->now_us;
}

uint64_t weir__loop_wall_ms(const weir_loop *loop)
{
    return loop->wall_ms;
}

int weir__loop_id(const weir_loop *loop)
{
    return loop->id;
}

static void on_wake(weir_io *io, uint32_t events)
{
    uint64_t v;
    while (read(io->fd, &v, sizeof(v)) > 0) {
    }
}

weir_loop *weir__loop_new(int id)
{
    weir_loop *loop = calloc(1, sizeof(*loop));
    if (!loop)
        return NULL;
    loop->id = id;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    loop->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->epfd < 0 || loop->wake.fd < 0)
        goto fail;
    pthread_mutex_init(&loop->lock, NULL);
    loop->wake.cb = on_wake;
    if (weir__io_add(loop, &loop->wake, EPOLLIN) < 0)
        goto fail;
    weir__loop_update_time(loop);
    return loop;
fail:
    weir_log_error("event loop: %s", strerror(errno));
    if (loop->epfd >= 0)
        close(loop->epfd);
    if (loop->wake.fd >= 0)
        close(loop->wake.fd);
    free(loop);
    return NULL;
}

void weir__loop_free(weir_loop *loop)
{
    if (!loop)
        return;
    close(loop->epfd);
    close(loop->wake.fd);
    pthread_mutex_destroy(&loop->lock);
    free(loop->heap);
    free(loop->posted.v);
    free(loop->deferred.v);
    free(loop);
}

int weir__io_add(weir_loop *loop, weir_io *io, uint32_t events)
{
    struct epoll_event ev = {.events = events | EPOLLET, .data.ptr = io};
    return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, io->fd, &ev) < 0 ? -errno : 0;
}

int weir__io_mod(weir_loop *loop, weir_io *io, uint32_t events)
{
    struct epoll_event ev = {.events = events | EPOLLET, .data.ptr = io};
    return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0 ? -errno : 0;
}

void weir__io_del(weir_loop *loop, weir_io *io)
{
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
}

/*
 * ---- timers: binary min-heap with back-indices for O(log n) cancel ----
 *
 * Timeouts are pushed back on almost every event (activity on a
 * connection), so moving a timer later is O(1): only due_ms changes, and
 * the heap keeps the old, earlier key. When such a timer reaches the top
 * it is re-filed at its real due time instead of firing.
 */

static void heap_set(weir_loop *loop, size_t ix, weir_timer *t)
{
    loop->heap[ix] = t;
    t->heap_ix = (uint32_t)ix + 1;
}

static void heap_up(weir_loop *loop, size_t ix)
{
    weir_timer *t = loop->heap[ix];
    while (ix > 0) {
        size_t parent = (ix - 1) / 2;
        if (loop->heap[parent]->key_ms <= t->key_ms)
            break;
        heap_set(loop, ix, loop->heap[parent]);
        ix = parent;
    }
    heap_set(loop, ix, t);
}

static void heap_down(weir_loop *loop, size_t ix)
{
    weir_timer *t = loop->heap[ix];
    for (;;) {
        size_t child = 2 * ix + 1;
        if (child >= loop->n_heap)
            break;
        if (child + 1 < loop->n_heap && loop->heap[child + 1]->key_ms < loop->heap[child]->key_ms)
            child++;
        if (loop->heap[child]->key_ms >= t->key_ms)
            break;
        heap_set(loop, ix, loop->heap[child]);
        ix = child;
    }
    heap_set(loop, ix, t);
}

void weir__timer_stop(weir_loop *loop, weir_timer *t)
{
    if (!t->heap_ix)
        return;
    size_t ix = t->heap_ix - 1;
    t->heap_ix = 0;
    weir_timer *last = loop->heap[--loop->n_heap];
    if (ix == loop->n_heap)
        return;
    loop->heap[ix] = last;
    last->heap_ix = (uint32_t)ix + 1;
    if (ix > 0 && loop->heap[(ix - 1) / 2]->key_ms > last->key_ms)
        heap_up(loop, ix);
    else
        heap_down(loop, ix);
}

void weir__timer_start(weir_loop *loop, weir_timer *t, uint64_t after_ms, weir_timer_cb cb)
{
    t->cb = cb;
    uint64_t due = loop->now_ms + after_ms;
    if (t->heap_ix) {
        t->due_ms = due;
        if (due < t->key_ms) {
            t->key_ms = due;
            heap_up(loop, t->heap_ix - 1);
        }
        return;
    }
    if (loop->n_heap == loop->cap_heap) {
        size_t cap = loop->cap_heap ? loop->cap_heap * 2 : 1024;
        weir_timer **nh = realloc(loop->heap, cap * sizeof(*nh));
        if (!nh) {
            /* Cannot happen in practice; a timer that never fires would hang
             * a connection, so fail loudly. */
            weir_log_error("timer heap: out of memory");
            abort();
        }
        loop->heap = nh;
        loop->cap_heap = cap;
    }
    t->due_ms = t->key_ms = due;
    loop->heap[loop->n_heap] = t;
    t->heap_ix = (uint32_t)++loop->n_heap;
    heap_up(loop, loop->n_heap - 1);
}

static void run_timers(weir_loop *loop)
{
    while (loop->n_heap > 0 && loop->heap[0]->key_ms <= loop->now_ms) {
        weir_timer *t = loop->heap[0];
        if (t->due_ms > loop->now_ms) {
            t->key_ms = t->due_ms; /* pushed back meanwhile: re-file it */
            heap_down(loop, 0);
            continue;
        }
        weir__timer_stop(loop, t);
        t->cb(t);
    }
}

static int next_timeout(const weir_loop *loop)
{
    if (loop->deferred.n > 0)
        return 0;
    if (loop->n_heap == 0)
        return 1000;
    uint64_t due = loop->heap[0]->key_ms;
    if (due <= loop->now_ms)
        return 0;
    uint64_t d = due - loop->now_ms;
    return d > 1000 ? 1000 : (int)d;
}

/* ---- tasks ---- */

int weir__loop_post(weir_loop *loop, weir_task_cb cb, void *arg)
{
    pthread_mutex_lock(&loop->lock);
    int rc = vec_push(&loop->posted, cb, arg);
    if (rc == 0)
        atomic_store_explicit(&loop->has_posted, true, memory_order_release);
    pthread_mutex_unlock(&loop->lock);
    if (rc == 0) {
        uint64_t one = 1;
        ssize_t w = write(loop->wake.fd, &one, sizeof(one));
        (void)w; /* EAGAIN means a wake-up is already pending */
    }
    return rc;
}

int weir__loop_defer(weir_loop *loop, weir_task_cb cb, void *arg)
{
    return vec_push(&loop->deferred, cb, arg);
}

static void run_tasks(weir_loop *loop)
{
    if (atomic_load_explicit(&loop->has_posted, memory_order_acquire)) {
        pthread_mutex_lock(&loop->lock);
        task_vec mine = loop->posted;
        loop->posted = (task_vec){0};
        atomic_store_explicit(&loop->has_posted, false, memory_order_relaxed);
        pthread_mutex_unlock(&loop->lock);
        for (size_t i = 0; i < mine.n; i++)
            mine.v[i].cb(mine.v[i].arg);
        free(mine.v);
    }
    /* Deferred tasks may defer more; bound each round to what was queued at
     * its start so one iteration always ends. */
    size_t n = loop->deferred.n;
    if (n == 0)
        return;
    for (size_t i = 0; i < n; i++)
        loop->deferred.v[i].cb(loop->deferred.v[i].arg);
    memmove(loop->deferred.v, loop->deferred.v + n, (loop->deferred.n - n) * sizeof(task));
    loop->deferred.n -= n;
}

void weir__loop_run_pending(weir_loop *loop)
{
    while (loop->deferred.n > 0 || atomic_load(&loop->has_posted))
        run_tasks(loop);
}

void weir__loop_stop(weir_loop *loop)
{
    loop->stop = 1;
    uint64_t one = 1;
    ssize_t w = write(loop->wake.fd, &one, sizeof(one));
    (void)w;
}

int weir__loop_run(weir_loop *loop)
{
    struct epoll_event events[MAX_EVENTS];
    current_loop = loop;
    while (!loop->stop) {
        int n = epoll_wait(loop->epfd, events, MAX_EVENTS, next_timeout(loop));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        weir__loop_update_time(loop);
        for (int i = 0; i < n; i++) {
            weir_io *io = events[i].data.ptr;
            io->cb(io, events[i].events);
        }
        run_tasks(loop);
        run_timers(loop);
        run_tasks(loop);
    }
    current_loop = NULL;
    return 0;
}
