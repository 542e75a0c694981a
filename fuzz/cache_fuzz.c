/*
 * cache_fuzz.c - libFuzzer target for the cache's header parsers
 * (cache/policy.c): each line of the input is a field of a response and
 * of a request (Cache-Control, CDN-Cache-Control, Date, Expires, Age,
 * Last-Modified, Pragma, Vary by turns); every decision and the variant
 * key (cache/vary.c) must come out in range, never crash or read past a
 * value.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/entry.h"
#include "cache/policy.h"
#include "cache/vary.h"
#include "core/arena.h"
#include "http/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[] = {"Cache-Control", "CDN-Cache-Control", "Date",   "Expires",
                                        "Age",           "Last-Modified",     "Pragma", "Vary"};
    weir_arena arena;
    weir__arena_init(&arena, NULL, 0);
    weir_headers h;
    weir__headers_init(&h, &arena);
    /* Each value its own copy: a parser that reads past its end is seen. */
    size_t start = 0, k = 0;
    for (size_t i = 0; i <= size && h.n < 64; i++) {
        if (i < size && data[i] != '\n')
            continue;
        size_t len = i - start;
        char *v = weir__arena_alloc(&arena, len ? len : 1);
        if (!v)
            break;
        memcpy(v, data + start, len);
        const char *n = names[k++ % (sizeof(names) / sizeof(names[0]))];
        weir__headers_push(&h, (weir_str){n, strlen(n)}, (weir_str){v, len});
        start = i + 1;
    }
    weir_cache_resp r;
    weir__cache_resp_read(&r, 200, &h, "cdn-cache-control", 1000000);
    weir_cache_req q;
    weir__cache_req_read(&q, &h);
    bool heur;
    int64_t life = weir__cache_lifetime(&r, 86400, &heur);
    int64_t age = weir__cache_age(&r, 999990, 1000000, 1000100);
    if (life < 0 || life > WEIR_CACHE_DELTA_MAX || age < 0 || age > WEIR_CACHE_DELTA_MAX)
        abort();
    weir_cache_use u = weir__cache_use(&q, &r, life, age);
    if (u != WEIR_CACHE_USE && u != WEIR_CACHE_USE_STALE && u != WEIR_CACHE_USE_REVALIDATING &&
        u != WEIR_CACHE_VALIDATE)
        abort();
    (void)weir__cache_storable("GET", &q, &r, false);
    /* Vary: the names, and the variant key of the same head as a request */
    char vary[512], key[2048];
    long nl = weir__vary_names(&h, vary, sizeof(vary));
    if (nl >= 0 &&
        weir__vary_key("k", 1, vary, (size_t)nl, &h, key, sizeof(key)) > (long)sizeof(key))
        abort();
    (void)weir__cache_stale_on_error(&q, &r, life, age, 60);
    /* The input as a stored head (what the disk tier reads back): refused
     * or read whole; and the heads made and refreshed from the fields. */
    weir_centry e;
    if (weir__centry_decode(&e, data, size) == 0)
        weir__centry_free(&e);
    if (weir__centry_make(&e, 200, &h, 1, 2) == 0) {
        weir_centry d;
        if (weir__centry_decode(&d, e.buf, e.len) != 0)
            abort(); /* what it writes it reads back */
        weir__centry_free(&d);
        (void)weir__centry_update(&e, &h, 3, 4);
        weir__centry_free(&e);
    }
    weir__arena_reset(&arena);
    return 0;
}
