/*
 * test_core.c - timers, the event loop's task queues, pools, the arena,
 * the error log's repeat limiter.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/pool.h"
#include "weir/log.h"

/* ---- timers ---- */

typedef struct rec_timer {
    weir_timer t;
    int id;
    int *order;
    int *n;
} rec_timer;

static void record(weir_timer *t)
{
    rec_timer *r = weir_container_of(t, rec_timer, t);
    r->order[(*r->n)++] = r->id;
}

static void stop_loop(void *arg)
{
    weir__loop_stop(arg);
}

static void stop_timer_cb(weir_timer *t)
{
    weir__loop_stop(weir__loop_current());
}

Test(timer, fires_in_due_order_and_cancel_works)
{
    weir_loop *loop = weir__loop_new(0);
    cr_assert_not_null(loop);
    enum { N = 200 };
    rec_timer *ts = calloc(N, sizeof(*ts));
    int order[N], n = 0;
    /* Due times in a scrambled order, some equal. */
    for (int i = 0; i < N; i++) {
        ts[i].id = i;
        ts[i].order = order;
        ts[i].n = &n;
        weir__timer_start(loop, &ts[i].t, (uint64_t)((i * 37) % 50), record);
    }
    /* Cancel every third one, re-arm some others later. */
    int expected = 0;
    for (int i = 0; i < N; i++) {
        if (i % 3 == 0) {
            weir__timer_stop(loop, &ts[i].t);
            cr_assert(!weir__timer_armed(&ts[i].t));
        } else {
            expected++;
        }
    }
    weir__timer_start(loop, &ts[1].t, 60, record); /* re-arm: moves later */
    weir_timer end = {0};
    weir__timer_start(loop, &end, 80, stop_timer_cb);
    cr_assert_eq(weir__loop_run(loop), 0);
    cr_assert_eq(n, expected);
    /* Fired in non-decreasing due order: ts[1] (60 ms) last. */
    uint64_t prev = 0;
    for (int i = 0; i < n; i++) {
        uint64_t due = order[i] == 1 ? 60 : (uint64_t)((order[i] * 37) % 50);
        cr_assert_geq(due, prev, "timer %d fired out of order", order[i]);
        prev = due;
        cr_assert_neq(order[i] % 3, 0, "cancelled timer %d fired", order[i]);
    }
    cr_assert_eq(order[n - 1], 1);
    free(ts);
    weir__loop_free(loop);
}

Test(timer, rearm_earlier_and_stop_unarmed)
{
    weir_loop *loop = weir__loop_new(0);
    int order[4], n = 0;
    rec_timer a = {.id = 1, .order = order, .n = &n}, b = {.id = 2, .order = order, .n = &n};
    weir__timer_start(loop, &a.t, 40, record);
    weir__timer_start(loop, &b.t, 20, record);
    weir__timer_start(loop, &a.t, 5, record); /* earlier now */
    weir__timer_stop(loop, &a.t);
    weir__timer_stop(loop, &a.t); /* stopping twice is harmless */
    weir__timer_start(loop, &a.t, 1, record);
    weir_timer end = {0};
    weir__timer_start(loop, &end, 30, stop_timer_cb);
    weir__loop_run(loop);
    cr_assert_eq(n, 2);
    cr_assert_eq(order[0], 1);
    cr_assert_eq(order[1], 2);
    weir__loop_free(loop);
}

/* ---- cross-thread posts ---- */

typedef struct post_ctx {
    weir_loop *loop;
    int count;
} post_ctx;

static void bump(void *arg)
{
    post_ctx *c = arg;
    if (++c->count == 4000)
        weir__loop_stop(c->loop);
}

static void *poster(void *arg)
{
    post_ctx *c = arg;
    for (int i = 0; i < 1000; i++)
        weir__loop_post(c->loop, bump, c);
    return NULL;
}

Test(loop, posts_from_other_threads_all_run_on_the_loop)
{
    post_ctx c = {.loop = weir__loop_new(0)};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, poster, &c);
    weir_timer guard = {0}; /* bounded: fail rather than hang */
    weir__timer_start(c.loop, &guard, 5000, stop_timer_cb);
    weir__loop_run(c.loop);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    weir__loop_run_pending(c.loop);
    cr_assert_eq(c.count, 4000);
    weir__loop_free(c.loop);
}

static void defer_chain(void *arg)
{
    post_ctx *c = arg;
    if (++c->count < 10)
        weir__loop_defer(c->loop, defer_chain, c);
    else
        weir__loop_defer(c->loop, stop_loop, c->loop);
}

Test(loop, deferred_tasks_run_after_the_current_callback)
{
    post_ctx c = {.loop = weir__loop_new(0)};
    weir__loop_defer(c.loop, defer_chain, &c);
    cr_assert_eq(c.count, 0);
    weir__loop_run(c.loop);
    cr_assert_eq(c.count, 10);
    weir__loop_free(c.loop);
}

/* ---- pools ---- */

/*
 * The test build has WEIR_DEBUG_NOPOOL: there get/put are malloc/free and
 * what an object's user may not rely on (its tail past the zeroed prefix,
 * a buffer's bytes) is poisoned. A release build runs the free lists. Each
 * test pins what its mode promises.
 */

static void expect_bytes(const unsigned char *p, size_t from, size_t to, unsigned char want)
{
    for (size_t i = from; i < to; i++)
        cr_assert_eq(p[i], want, "byte %zu is 0x%02x, expected 0x%02x", i, p[i], want);
}

Test(pool, objects_come_back_zeroed)
{
    weir_pool_class cls = weir__pool_register("test", 100, 4);
    unsigned char *a = weir__pool_get(cls);
    cr_assert_not_null(a);
    expect_bytes(a, 0, 100, 0);
    memset(a, 0xab, 100);
    weir__pool_put(cls, a);
    unsigned char *b = weir__pool_get(cls);
#ifndef WEIR_DEBUG_NOPOOL
    cr_assert_eq(b, a, "the free list hands the freed object back");
#endif
    expect_bytes(b, 0, 100, 0);
    weir__pool_put(cls, b);
    weir__pool_put(cls, NULL);
    weir__pool_thread_release();
}

Test(pool, partial_zeroing_zeroes_only_the_prefix)
{
    weir_pool_class cls = weir__pool_register_partial("test-partial", 64, 4, 16);
    unsigned char *a = weir__pool_get(cls);
    cr_assert_not_null(a);
    expect_bytes(a, 0, 16, 0);
#ifdef WEIR_DEBUG_NOPOOL
    /* Not calloc: a field past the prefix read before it is set is garbage. */
    expect_bytes(a, 16, 64, WEIR_POOL_POISON);
#endif
    memset(a, 0xcd, 64);
    weir__pool_put(cls, a);
    unsigned char *b = weir__pool_get(cls);
    expect_bytes(b, 0, 16, 0);
#ifdef WEIR_DEBUG_NOPOOL
    expect_bytes(b, 16, 64, WEIR_POOL_POISON);
#else
    /* The same memory again, its tail as the last user left it. */
    cr_assert_eq(b, a);
    expect_bytes(b, 16, 64, 0xcd);
#endif
    weir__pool_put(cls, b);
    weir__pool_thread_release();
}

Test(pool, free_list_is_bounded_and_last_in_first_out)
{
    weir_pool_class cls = weir__pool_register("test-bounded", 32, 2);
    void *objs[8];
    for (int i = 0; i < 8; i++)
        objs[i] = weir__pool_get(cls);
    for (int i = 0; i < 8; i++)
        weir__pool_put(cls, objs[i]); /* 6 go back to malloc (ASan checks) */
    void *x = weir__pool_get(cls), *y = weir__pool_get(cls);
#ifndef WEIR_DEBUG_NOPOOL
    /* Only the first two were kept; the last one kept comes first. */
    cr_assert_eq(x, objs[1]);
    cr_assert_eq(y, objs[0]);
#endif
    expect_bytes(x, 0, 32, 0);
    expect_bytes(y, 0, 32, 0);
    weir__pool_put(cls, x);
    weir__pool_put(cls, y);
    weir__pool_thread_release();
}

Test(pool, buffers_are_16k_and_not_zeroed)
{
    unsigned char *b = (unsigned char *)weir__buf_get();
    cr_assert_not_null(b);
#ifdef WEIR_DEBUG_NOPOOL
    expect_bytes(b, 0, WEIR_BUF_SIZE, WEIR_POOL_POISON);
#endif
    memset(b, 1, WEIR_BUF_SIZE); /* ASan flags an undersized buffer */
    weir__buf_put((char *)b);
    weir__pool_thread_release();
}

/* ---- arena ---- */

Test(arena, inline_memory_first_then_chunks)
{
    _Alignas(8) char mem[64];
    weir_arena a;
    weir__arena_init(&a, mem, sizeof(mem));
    char *p = weir__arena_alloc(&a, 10);
    cr_assert(p >= mem && p < mem + sizeof(mem));
    cr_assert_eq((uintptr_t)p % 8, 0);
    char *q = weir__arena_dup(&a, "hello", 5);
    cr_assert_str_eq(q, "hello");
    char *big = weir__arena_alloc(&a, 10000); /* larger than a chunk */
    cr_assert_not_null(big);
    memset(big, 0, 10000);
    char *r = weir__arena_alloc(&a, 100);
    cr_assert(r < mem || r >= mem + sizeof(mem));
    weir__arena_reset(&a);
    cr_assert_null(a.chunks);
    cr_assert_eq(weir__arena_alloc(&a, 8), (void *)mem);
}

/* ---- the error log's repeat limiter ---- */

typedef struct captured {
    int saved_fd;
    char path[64];
} captured;

/* stderr goes to a file until capture_end (Criterion runs each test in
 * its own process, so the limiter starts empty each time). */
static void capture_start(captured *c)
{
    snprintf(c->path, sizeof(c->path), "/tmp/weir-log-test-XXXXXX");
    int fd = mkstemp(c->path);
    cr_assert(fd >= 0);
    c->saved_fd = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
}

/* Restores stderr; returns what was written (free it). */
static char *capture_end(captured *c)
{
    dup2(c->saved_fd, STDERR_FILENO);
    close(c->saved_fd);
    FILE *f = fopen(c->path, "r");
    cr_assert_not_null(f);
    char *out = calloc(1, 1 << 20);
    size_t n = fread(out, 1, (1 << 20) - 1, f);
    out[n] = '\0';
    fclose(f);
    unlink(c->path);
    return out;
}

static int count_lines(const char *text, const char *needle)
{
    int n = 0;
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        const char *hit = strstr(line, needle);
        if (hit && hit + strlen(needle) <= line + len)
            n++;
        line += len + (end ? 1 : 0);
    }
    return n;
}

/* One call site each, as in session.c. */
static void warn_connect(const char *addr, int attempt)
{
    weir_log_warn("upstream %s: connect failed: %s (attempt %d)", addr, "Connection refused",
                  attempt);
}

static void warn_client(const char *ip, const char *id)
{
    weir_log_warn("client %s: 502 (request %.*s)", ip, (int)strlen(id), id);
}

Test(log_repeat, writes_the_first_copy_and_summarises_the_rest)
{
    weir__log_set_repeat_interval(60000);
    captured c;
    capture_start(&c);
    for (int i = 0; i < 100; i++)
        warn_connect("10.0.0.1:80", 1 + i % 3);
    char *before = capture_end(&c);
    cr_assert_eq(count_lines(before, "connect failed"), 1, "%s", before);
    cr_assert_eq(count_lines(before, "(attempt 1)"), 1, "%s", before);
    capture_start(&c);
    weir__log_flush_repeats();
    char *after = capture_end(&c);
    cr_assert_eq(count_lines(after, "upstream 10.0.0.1:80: connect failed: Connection refused "
                                    "(attempt 1) (repeated 99 times)"),
                 1, "%s", after);
    free(before);
    free(after);
}

Test(log_repeat, string_arguments_tell_messages_apart_numbers_and_slices_do_not)
{
    weir__log_set_repeat_interval(60000);
    captured c;
    capture_start(&c);
    for (int i = 0; i < 10; i++) {
        warn_connect("10.0.0.1:80", i); /* the attempt number does not count */
        warn_connect("10.0.0.2:80", i); /* another backend does */
        char id[16];
        snprintf(id, sizeof(id), "id%d", i); /* a %.*s slice does not */
        warn_client("192.0.2.1", id);
    }
    /* A "%s" alone (reload errors): the text is the message. */
    weir_log(WEIR_LEVEL_ERROR, "%s", "weir.toml:3: unknown key 'a'");
    weir_log(WEIR_LEVEL_ERROR, "%s", "weir.toml:4: unknown key 'b'");
    weir_log(WEIR_LEVEL_ERROR, "%s", "weir.toml:4: unknown key 'b'");
    weir__log_flush_repeats();
    char *out = capture_end(&c);
    cr_assert_eq(count_lines(out, "10.0.0.1:80"), 2, "%s", out);
    cr_assert_eq(count_lines(out, "10.0.0.2:80"), 2, "%s", out);
    cr_assert_eq(count_lines(out, "(repeated 9 times)"), 3, "%s", out);
    cr_assert_eq(count_lines(out, "request id0"), 2, "%s", out); /* written, summarised */
    cr_assert_eq(count_lines(out, "unknown key 'a'"), 1, "%s", out);
    cr_assert_eq(count_lines(out, "unknown key 'b' (repeated 1 time)"), 1, "%s", out);
    free(out);
}

Test(log_repeat, a_call_site_writes_at_most_eight_messages_per_interval)
{
    weir__log_set_repeat_interval(60000);
    captured c;
    capture_start(&c);
    for (int i = 0; i < 20; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "192.0.2.%d", i);
        warn_client(ip, "abc");
    }
    weir__log_flush_repeats();
    char *out = capture_end(&c);
    cr_assert_eq(count_lines(out, "client 192.0.2."), 9, "%s", out);
    cr_assert_eq(count_lines(out, "client 192.0.2.0: 502 (request abc) (and 12 more like it)"), 1,
                 "%s", out);
    free(out);
}

static void *warn_many(void *arg)
{
    (void)arg;
    for (int i = 0; i < 2000; i++)
        warn_connect("10.0.0.1:80", 1);
    return NULL;
}

Test(log_repeat, copies_from_concurrent_threads_are_all_counted)
{
    weir__log_set_repeat_interval(60000);
    captured c;
    capture_start(&c);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, warn_many, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    weir__log_flush_repeats();
    char *out = capture_end(&c);
    cr_assert_eq(count_lines(out, "connect failed"), 2, "%s", out);
    cr_assert_eq(count_lines(out, "(repeated 7999 times)"), 1, "%s", out);
    free(out);
}

Test(log_repeat, a_copy_after_the_interval_is_written_after_the_summary)
{
    weir__log_set_repeat_interval(20);
    captured c;
    capture_start(&c);
    warn_connect("10.0.0.1:80", 1);
    warn_connect("10.0.0.1:80", 2);
    usleep(200 * 1000); /* the window ends; the flusher may write the summary */
    warn_connect("10.0.0.1:80", 3);
    weir__log_flush_repeats();
    char *out = capture_end(&c);
    cr_assert_eq(count_lines(out, "connect failed"), 3, "%s", out);
    const char *sum = strstr(out, "(repeated 1 time)");
    const char *third = strstr(out, "(attempt 3)");
    cr_assert(sum && third && sum < third, "%s", out);
    free(out);
}

Test(log_repeat, info_lines_and_a_zero_interval_are_not_limited)
{
    weir__log_set_repeat_interval(60000);
    captured c;
    capture_start(&c);
    for (int i = 0; i < 10; i++)
        weir_log_info("configuration %s reloaded", "weir.toml");
    weir__log_set_repeat_interval(0);
    for (int i = 0; i < 10; i++)
        warn_connect("10.0.0.1:80", 1);
    weir__log_flush_repeats();
    char *out = capture_end(&c);
    cr_assert_eq(count_lines(out, "reloaded"), 10, "%s", out);
    cr_assert_eq(count_lines(out, "connect failed"), 10, "%s", out);
    free(out);
}
