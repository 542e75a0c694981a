/*
 * Stored heads (cache/entry.c): what is kept of a response head, how a
 * 304 refreshes it, and that a torn or corrupt encoding is always refused
 * (every truncation, every flipped byte).
 */
#include <criterion/criterion.h>
#include <string.h>

#include "cache/entry.h"
#include "core/arena.h"
#include "http/msg.h"

static weir_arena arena;

static void setup(void)
{
    weir__arena_init(&arena, NULL, 0);
}

static void teardown(void)
{
    weir__arena_reset(&arena);
}

TestSuite(cache_entry, .init = setup, .fini = teardown);

static void make(weir_headers *h, const char *const *kv)
{
    weir__headers_init(h, &arena);
    for (size_t i = 0; kv[i]; i += 2)
        weir__headers_push(h, (weir_str){kv[i], strlen(kv[i])},
                           (weir_str){kv[i + 1], strlen(kv[i + 1])});
}

static bool has(const weir_centry *e, const char *name, const char *value)
{
    const weir_str *v = weir__centry_field(e, name);
    return v && v->len == strlen(value) && memcmp(v->ptr, value, v->len) == 0;
}

Test(cache_entry, what_is_kept)
{
    weir_headers h;
    make(&h, (const char *[]){"Content-Type", "text/plain", "Connection", "close, X-Hop", "X-Hop",
                              "1", "Keep-Alive", "timeout=5", "Transfer-Encoding", "chunked", "Age",
                              "30", "ETag", "\"v1\"", "Set-Cookie", "a=1", NULL});
    weir_centry e;
    cr_assert_eq(weir__centry_make(&e, 200, &h, 100, 101), 0);
    cr_assert_eq(e.status, 200);
    cr_assert_eq(e.request_time, 100);
    cr_assert_eq(e.response_time, 101);
    cr_assert(has(&e, "content-type", "text/plain"));
    cr_assert(has(&e, "ETag", "\"v1\""));
    cr_assert(has(&e, "Set-Cookie", "a=1"));
    const char *gone[] = {"Connection", "X-Hop", "Keep-Alive", "Transfer-Encoding", "Age"};
    for (size_t i = 0; i < 5; i++)
        cr_assert_null(weir__centry_field(&e, gone[i]), "%s", gone[i]);
    cr_assert_eq(e.n_fields, 3);
    weir__centry_free(&e);
}

Test(cache_entry, a_304_refreshes_the_head)
{
    weir_headers h, h304;
    make(&h, (const char *[]){"Content-Type", "text/html", "Content-Length", "5", "ETag", "\"v1\"",
                              "Cache-Control", "max-age=60", "X-A", "1", "X-A", "2", "Date",
                              "Sun, 06 Nov 1994 08:49:37 GMT", NULL});
    weir_centry e;
    cr_assert_eq(weir__centry_make(&e, 200, &h, 100, 101), 0);
    make(&h304, (const char *[]){"Cache-Control", "max-age=600", "X-A", "3", "Content-Type",
                                 "application/evil", "Content-Length", "0", "Date",
                                 "Mon, 07 Nov 1994 08:49:37 GMT", "Connection", "X-Secret",
                                 "X-Secret", "s", "X-New", "n", NULL});
    cr_assert_eq(weir__centry_update(&e, &h304, 200, 202), 0);
    cr_assert(has(&e, "cache-control", "max-age=600"));
    cr_assert(has(&e, "date", "Mon, 07 Nov 1994 08:49:37 GMT"));
    cr_assert(has(&e, "x-new", "n"));
    cr_assert(has(&e, "etag", "\"v1\""), "not in the 304: kept");
    cr_assert(has(&e, "content-type", "text/html"), "what describes the body stays");
    cr_assert(has(&e, "content-length", "5"));
    cr_assert_null(weir__centry_field(&e, "x-secret"), "hop-by-hop by Connection");
    size_t xa = 0;
    for (size_t i = 0; i < e.n_fields; i++)
        xa += e.fields[i].name.len == 3 && strncasecmp(e.fields[i].name.ptr, "x-a", 3) == 0;
    cr_assert_eq(xa, 1, "both stored X-A lines replaced by the 304's one");
    cr_assert(has(&e, "x-a", "3"));
    cr_assert_eq(e.response_time, 202);
    cr_assert_eq(e.status, 200);
    weir__centry_free(&e);
}

Test(cache_entry, encoding_round_trip_and_corruption)
{
    weir_headers h;
    make(&h,
         (const char *[]){"Content-Type", "text/plain", "ETag", "\"abc\"", "X-Empty", "", NULL});
    weir_centry e, d;
    cr_assert_eq(weir__centry_make(&e, 404, &h, -5, 1700000000), 0);
    cr_assert_eq(weir__centry_decode(&d, e.buf, e.len), 0);
    cr_assert_eq(d.status, 404);
    cr_assert_eq(d.request_time, -5);
    cr_assert_eq(d.response_time, 1700000000);
    cr_assert_eq(d.n_fields, 3);
    cr_assert(has(&d, "x-empty", ""));
    weir__centry_free(&d);
    /* every truncation and every flipped byte is refused */
    char *copy = malloc(e.len);
    for (size_t n = 0; n < e.len; n++)
        cr_assert_eq(weir__centry_decode(&d, e.buf, n), WEIR_ERR_INVAL, "torn at %zu", n);
    for (size_t i = 0; i < e.len; i++) {
        memcpy(copy, e.buf, e.len);
        copy[i] ^= 0x5a;
        cr_assert_eq(weir__centry_decode(&d, copy, e.len), WEIR_ERR_INVAL, "byte %zu", i);
    }
    free(copy);
    weir__centry_free(&e);
}
