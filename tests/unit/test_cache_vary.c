/*
 * Variant keys (cache/vary.c): the Vary names, and the normalization
 * that makes requests meaning the same share a variant while requests
 * that differ do not.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "cache/vary.h"
#include "core/arena.h"
#include "http/msg.h"

static weir_arena arena;

/* (Filled in place: a weir_headers points into itself until it grows.) */
static void make(weir_headers *h, const char *const *kv)
{
    weir__headers_init(h, &arena);
    for (size_t i = 0; kv[i]; i += 2)
        weir__headers_push(h, (weir_str){kv[i], strlen(kv[i])},
                           (weir_str){kv[i + 1], strlen(kv[i + 1])});
}

static void setup(void)
{
    weir__arena_init(&arena, NULL, 0);
}

static void teardown(void)
{
    weir__arena_reset(&arena);
}

TestSuite(cache_vary, .init = setup, .fini = teardown);

static const char *names_of(const char *const *kv)
{
    static char out[256];
    weir_headers h;
    make(&h, kv);
    long n = weir__vary_names(&h, out, sizeof(out));
    if (n < 0)
        return NULL;
    out[n] = '\0';
    return out;
}

Test(cache_vary, names)
{
    cr_assert_str_eq(names_of((const char *[]){"Content-Type", "x", NULL}), "");
    cr_assert_str_eq(names_of((const char *[]){"Vary", "User-Agent, Accept-Encoding", NULL}),
                     "accept-encoding,user-agent");
    cr_assert_str_eq(names_of((const char *[]){"Vary", "accept-encoding", "vary",
                                               " Origin ,ACCEPT-ENCODING,", NULL}),
                     "accept-encoding,origin", "several lines, once each");
    cr_assert_null(names_of((const char *[]){"Vary", "Accept, *", NULL}), "Vary: *");
    cr_assert_null(names_of((const char *[]){"Vary", "Bad Name", NULL}));
}

/* The variant key, in a buffer of its own (freed with the arena). */
static const char *key_of(const char *names, const char *const *kv)
{
    char *out = weir__arena_alloc(&arena, 1024);
    weir_headers h;
    make(&h, kv);
    long n = weir__vary_key("GET|http://a.test/x", 19, names, strlen(names), &h, out, 1023);
    cr_assert_geq(n, 0);
    out[n] = '\0';
    return out;
}

Test(cache_vary, same_meaning_same_variant)
{
    const char *a =
        key_of("accept-encoding", (const char *[]){"Accept-Encoding", "gzip, br", NULL});
    char first[1024];
    strcpy(first, a);
    cr_assert_str_eq(first, "GET|http://a.test/x\naccept-encoding:br,gzip");
    const char *same[][5] = {
        {"accept-encoding", "br,gzip", NULL},
        {"Accept-Encoding", " GZIP ,  BR ", NULL},
        {"accept-encoding", "br", "accept-encoding", "gzip"},
        {"Accept-Encoding", "gzip,, br,", NULL},
    };
    for (size_t i = 0; i < 4; i++)
        cr_assert_str_eq(key_of("accept-encoding", same[i]), first, "%zu", i);
    cr_assert_str_eq(key_of("accept-encoding",
                            (const char *[]){"Accept-Encoding", "gzip;q=0.5 , br ; q=1", NULL}),
                     "GET|http://a.test/x\naccept-encoding:br;q=1,gzip;q=0.5");
}

Test(cache_vary, different_meaning_different_variant)
{
    char gzip[1024];
    strcpy(gzip, key_of("accept-encoding", (const char *[]){"Accept-Encoding", "gzip", NULL}));
    cr_assert_str_neq(
        key_of("accept-encoding", (const char *[]){"Accept-Encoding", "gzip;q=0", NULL}), gzip);
    /* absent and empty differ */
    char absent[1024];
    strcpy(absent, key_of("accept-encoding", (const char *[]){"Host", "a", NULL}));
    cr_assert_str_eq(absent, "GET|http://a.test/x\naccept-encoding");
    cr_assert_str_neq(key_of("accept-encoding", (const char *[]){"Accept-Encoding", "", NULL}),
                      absent);
    /* other fields keep their case and order */
    cr_assert_str_neq(key_of("x-tenant", (const char *[]){"X-Tenant", "Acme", NULL}),
                      key_of("x-tenant", (const char *[]){"X-Tenant", "acme", NULL}));
    /* ...and so does a field whose name only starts like the Accept ones */
    char profile[1024];
    strcpy(profile, key_of("accept-profile", (const char *[]){"Accept-Profile", "Tenant", NULL}));
    cr_assert_str_neq(key_of("accept-profile", (const char *[]){"Accept-Profile", "tenant", NULL}),
                      profile);
    strcpy(profile, key_of("accept-profile", (const char *[]){"Accept-Profile", "a, b", NULL}));
    cr_assert_str_neq(key_of("accept-profile", (const char *[]){"Accept-Profile", "b, a", NULL}),
                      profile);
    /* a value cannot forge another field's line: names come from Vary,
     * values cannot hold a line break */
    cr_assert_str_eq(
        key_of("origin,x-tenant", (const char *[]){"X-Tenant", "a", "Origin", "https://o", NULL}),
        "GET|http://a.test/x\norigin:https://o\nx-tenant:a");
}

Test(cache_vary, too_long_is_refused)
{
    char big[5000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    weir_headers h;
    make(&h, (const char *[]){"Accept", big, NULL});
    char out[256];
    cr_assert_eq(weir__vary_key("k", 1, "accept", 6, &h, out, sizeof(out)), -1);
}
