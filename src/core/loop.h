/*
 * loop.h - one event loop per worker thread: edge-triggered epoll, a timer
 * heap, a cached monotonic clock and a cross-thread task queue woken by an
 * eventfd.
 *
 * Threading: a loop and everything registered on it belong to the thread
 * that runs weir__loop_run(). Only weir__loop_post() and weir__loop_stop()
 * may be called from other threads.
 */
#ifndef WEIR_CORE_LOOP_H
#define WEIR_CORE_LOOP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct weir_loop weir_loop;
typedef struct weir_io weir_io;
typedef struct weir_timer weir_timer;

/* Called with the epoll event bits (EPOLLIN, EPOLLOUT, EPOLLERR, ...). */
typedef void (*weir_io_cb)(weir_io *io, uint32_t events);
typedef void (*weir_timer_cb)(weir_timer *t);
typedef void (*weir_task_cb)(void *arg);

/* A file descriptor watched by a loop; embed it in the owning object. */
struct weir_io {
    int fd;
    weir_io_cb cb;
};

/* A one-shot timer; embed it and recover the owner with container_of.
 * Zero-initialize it before first use (heap_ix 0 means "not armed"). */
struct weir_timer {
    uint64_t due_ms;  /* monotonic ms when it fires */
    uint64_t key_ms;  /* its place in the heap: <= due_ms (pushed back lazily) */
    uint32_t heap_ix; /* 0 = not armed; else index + 1 in the heap */
    weir_timer_cb cb;
};

#define weir_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

weir_loop *weir__loop_new(int id);
void weir__loop_free(weir_loop *loop);
int weir__loop_id(const weir_loop *loop);

/* Runs until weir__loop_stop(). Returns 0, or -errno if epoll fails. */
int weir__loop_run(weir_loop *loop);
/* Asks the loop to return from weir__loop_run(); any thread. */
void weir__loop_stop(weir_loop *loop);

/* Registers fd edge-triggered for `events` (EPOLLIN|EPOLLOUT|EPOLLRDHUP...
 * EPOLLET is added). Returns 0 or -errno. */
int weir__io_add(weir_loop *loop, weir_io *io, uint32_t events);
int weir__io_mod(weir_loop *loop, weir_io *io, uint32_t events);
void weir__io_del(weir_loop *loop, weir_io *io);

/* Cached monotonic clock in ms, refreshed once per loop iteration. */
uint64_t weir__loop_now(const weir_loop *loop);
/* The same cached monotonic clock in microseconds. */
uint64_t weir__loop_now_us(const weir_loop *loop);
/* Wall-clock time (ms since the epoch) cached with the monotonic clock. */
uint64_t weir__loop_wall_ms(const weir_loop *loop);
/* Refreshes the cached clock (used after long work within one iteration). */
void weir__loop_update_time(weir_loop *loop);

/* Arms (or re-arms) t to fire `after_ms` from the cached now. */
void weir__timer_start(weir_loop *loop, weir_timer *t, uint64_t after_ms, weir_timer_cb cb);
void weir__timer_stop(weir_loop *loop, weir_timer *t);
static inline bool weir__timer_armed(const weir_timer *t)
{
    return t->heap_ix != 0;
}

/*
 * Queues cb(arg) to run on the loop's thread; any thread may call it.
 * Returns 0, or WEIR_ERR_NOMEM.
 */
int weir__loop_post(weir_loop *loop, weir_task_cb cb, void *arg);

/*
 * Runs cb(arg) at the end of the current loop iteration, on the loop thread
 * (used to defer work out of a callback's stack, e.g. resuming a session).
 */
int weir__loop_defer(weir_loop *loop, weir_task_cb cb, void *arg);

/* Runs queued and deferred tasks now (used after the loop stopped, so
 * deferred frees happen before the loop is freed). */
void weir__loop_run_pending(weir_loop *loop);

/* The loop the calling thread runs, or NULL. */
weir_loop *weir__loop_current(void);

#endif
