/*
 * RFC 9111 decisions (cache/policy.c): directive parsing with the odd
 * forms, targeted fields, storability, lifetimes, ages, and what a request
 * may get from a stored response.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "cache/policy.h"
#include "core/arena.h"
#include "http/msg.h"

static weir_arena arena;
static weir_headers h;

static void reset(void)
{
    weir__arena_reset(&arena);
    weir__arena_init(&arena, NULL, 0);
    weir__headers_init(&h, &arena);
}

static void add(const char *name, const char *value)
{
    weir__headers_push(&h, (weir_str){name, strlen(name)}, (weir_str){value, strlen(value)});
}

static weir_cc cc_of(const char *value)
{
    reset();
    add("Cache-Control", value);
    weir_cc cc;
    weir__cc_parse(&h, &cc);
    return cc;
}

TestSuite(cache_policy, .init = reset);

Test(cache_policy, directives)
{
    weir_cc cc = cc_of("public, max-age=60, s-maxage=30, must-revalidate");
    cr_assert(cc.flags & WEIR_CC_PUBLIC && cc.flags & WEIR_CC_MUST_REVALIDATE);
    cr_assert_eq(cc.max_age, 60);
    cr_assert_eq(cc.s_maxage, 30);
    cr_assert_not(cc.flags & WEIR_CC_INVALID);
    cc = cc_of("No-Store,PRIVATE=\"x, y\" , no-cache=\"Set-Cookie\"");
    cr_assert(cc.flags & WEIR_CC_NO_STORE && cc.flags & WEIR_CC_PRIVATE &&
                  cc.flags & WEIR_CC_NO_CACHE,
              "qualified forms count as unqualified");
    cc = cc_of("max-age=\"120\"");
    cr_assert_eq(cc.max_age, 120, "a quoted delta is accepted");
    cc = cc_of("max-age=99999999999999999999");
    cr_assert_eq(cc.max_age, WEIR_CACHE_DELTA_MAX);
    cc = cc_of("max-stale");
    cr_assert_eq(cc.max_stale, WEIR_CACHE_DELTA_MAX);
    cc = cc_of("max-stale=10, min-fresh=5, stale-while-revalidate=30, stale-if-error=60");
    cr_assert_eq(cc.max_stale, 10);
    cr_assert_eq(cc.min_fresh, 5);
    cr_assert_eq(cc.stale_while_revalidate, 30);
    cr_assert_eq(cc.stale_if_error, 60);
    cc = cc_of("foo=\"a,b\", max-age=5, bar");
    cr_assert_eq(cc.max_age, 5, "unknown directives (with commas in quotes) are skipped");
    cr_assert_not(cc.flags & WEIR_CC_NO_STORE);
    static const char *const hiding[] = {"max-age=60; private", "max-age=60 private",
                                         "max-age=60;no-store", "public x, max-age=60",
                                         "max-age=\"60\"x"};
    for (size_t i = 0; i < sizeof(hiding) / sizeof(hiding[0]); i++) {
        cc = cc_of(hiding[i]);
        cr_assert(cc.flags & WEIR_CC_NO_STORE, "%s: not the grammar, may hide private", hiding[i]);
    }
    cc = cc_of("max-age=60 , public\t");
    cr_assert_not(cc.flags & WEIR_CC_NO_STORE, "blanks around the commas are fine");
}

Test(cache_policy, malformed_and_conflicting_freshness_is_stale)
{
    weir_cc cc = cc_of("max-age=abc");
    cr_assert(cc.flags & WEIR_CC_INVALID);
    cr_assert_eq(cc.max_age, 0);
    cc = cc_of("max-age=-1");
    cr_assert(cc.flags & WEIR_CC_INVALID);
    cc = cc_of("max-age");
    cr_assert(cc.flags & WEIR_CC_INVALID);
    reset();
    add("Cache-Control", "max-age=60");
    add("Cache-Control", "max-age=3600");
    weir__cc_parse(&h, &cc);
    cr_assert(cc.flags & WEIR_CC_INVALID, "two max-ages that disagree");
    reset();
    add("Cache-Control", "max-age=60");
    add("cache-control", "max-age=60");
    weir__cc_parse(&h, &cc);
    cr_assert_not(cc.flags & WEIR_CC_INVALID, "the same value twice is fine");
}

Test(cache_policy, targeted_field)
{
    reset();
    add("Cache-Control", "no-store");
    add("CDN-Cache-Control", "max-age=600, stale-if-error=30");
    weir_cache_resp r;
    weir__cache_resp_read(&r, 200, &h, "cdn-cache-control", 1000);
    cr_assert_eq(r.cc.max_age, 600);
    cr_assert_not(r.cc.flags & WEIR_CC_NO_STORE, "the targeted field replaces Cache-Control");
    /* invalid as a Structured Field: ignored, Cache-Control counts */
    const char *bad[] = {"Max-Age=600",  "max-age=600,", "max-age=(1 2)",
                         "max-age=\"60", "=1",           "max-age=1.2.3"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        reset();
        add("Cache-Control", "no-store");
        add("CDN-Cache-Control", bad[i]);
        weir__cache_resp_read(&r, 200, &h, "cdn-cache-control", 1000);
        cr_assert(r.cc.flags & WEIR_CC_NO_STORE, "%s", bad[i]);
    }
    reset();
    add("CDN-Cache-Control", "no-store=?0, private, max-age=10;x=1");
    weir__cache_resp_read(&r, 200, &h, "cdn-cache-control", 1000);
    cr_assert_not(r.cc.flags & WEIR_CC_NO_STORE, "a false boolean sets nothing");
    cr_assert(r.cc.flags & WEIR_CC_PRIVATE);
    cr_assert_eq(r.cc.max_age, 10, "parameters are skipped");
}

static weir_cache_resp resp(int status, const char *cc, time_t date)
{
    reset();
    if (cc)
        add("Cache-Control", cc);
    char d[30];
    weir_http_date(date, d);
    add("Date", d);
    weir_cache_resp r;
    weir__cache_resp_read(&r, status, &h, NULL, date);
    return r;
}

static weir_cache_req req(const char *cc)
{
    reset();
    if (cc)
        add("Cache-Control", cc);
    weir_cache_req q;
    weir__cache_req_read(&q, &h);
    return q;
}

Test(cache_policy, storable)
{
    weir_cache_req q = req(NULL);
    weir_cache_resp r = resp(200, "max-age=60", 1000);
    cr_assert_eq(weir__cache_storable("GET", &q, &r, false), WEIR_NOSTORE_NONE);
    cr_assert_eq(weir__cache_storable("POST", &q, &r, false), WEIR_NOSTORE_METHOD);
    cr_assert_eq(weir__cache_storable("HEAD", &q, &r, false), WEIR_NOSTORE_METHOD);
    r = resp(206, "max-age=60", 1000);
    cr_assert_eq(weir__cache_storable("GET", &q, &r, false), WEIR_NOSTORE_STATUS);
    r = resp(200, "private, max-age=60", 1000);
    cr_assert_eq(weir__cache_storable("GET", &q, &r, false), WEIR_NOSTORE_DIRECTIVE);
    r = resp(200, "max-age=60", 1000);
    weir_cache_req nq = req("no-store");
    cr_assert_eq(weir__cache_storable("GET", &nq, &r, false), WEIR_NOSTORE_DIRECTIVE);
    /* a 302 has no heuristic: only with explicit freshness */
    r = resp(302, NULL, 1000);
    cr_assert_eq(weir__cache_storable("GET", &q, &r, false), WEIR_NOSTORE_NO_FRESHNESS);
    r = resp(302, "max-age=10", 1000);
    cr_assert_eq(weir__cache_storable("GET", &q, &r, false), WEIR_NOSTORE_NONE);
    r = resp(404, NULL, 1000);
    cr_assert_eq(weir__cache_storable("GET", &q, &r, false), WEIR_NOSTORE_NONE);
    /* no-cache responses are stored (and revalidated on every use) */
    r = resp(200, "no-cache", 1000);
    cr_assert_eq(weir__cache_storable("GET", &q, &r, false), WEIR_NOSTORE_NONE);
}

Test(cache_policy, authorization_and_cookies_and_vary)
{
    reset();
    add("Authorization", "Bearer x");
    weir_cache_req q;
    weir__cache_req_read(&q, &h);
    weir_cache_resp r = resp(200, "max-age=60", 1000);
    cr_assert_eq(weir__cache_storable("GET", &q, &r, false), WEIR_NOSTORE_AUTH);
    const char *allow[] = {"public, max-age=60", "s-maxage=60", "must-revalidate, max-age=60"};
    for (size_t i = 0; i < 3; i++) {
        r = resp(200, allow[i], 1000);
        cr_assert_eq(weir__cache_storable("GET", &q, &r, false), WEIR_NOSTORE_NONE, "%s", allow[i]);
    }
    weir_cache_req plain = req(NULL);
    reset();
    add("Cache-Control", "max-age=60");
    add("Set-Cookie", "a=1");
    weir__cache_resp_read(&r, 200, &h, NULL, 1000);
    cr_assert_eq(weir__cache_storable("GET", &plain, &r, false), WEIR_NOSTORE_COOKIE);
    cr_assert_eq(weir__cache_storable("GET", &plain, &r, true), WEIR_NOSTORE_NONE);
    reset();
    add("Cache-Control", "max-age=60");
    add("Vary", "Accept-Encoding, *");
    weir__cache_resp_read(&r, 200, &h, NULL, 1000);
    cr_assert_eq(weir__cache_storable("GET", &plain, &r, false), WEIR_NOSTORE_VARY_STAR);
}

Test(cache_policy, lifetimes)
{
    bool heur;
    weir_cache_resp r = resp(200, "max-age=60, s-maxage=300", 1000);
    cr_assert_eq(weir__cache_lifetime(&r, 86400, &heur), 300, "s-maxage first (shared)");
    r = resp(200, "max-age=60", 1000);
    cr_assert_eq(weir__cache_lifetime(&r, 86400, &heur), 60);
    /* Expires minus Date */
    reset();
    char d[30], e[30];
    weir_http_date(1000, d);
    weir_http_date(1600, e);
    add("Date", d);
    add("Expires", e);
    weir__cache_resp_read(&r, 200, &h, NULL, 1000);
    cr_assert_eq(weir__cache_lifetime(&r, 86400, &heur), 600);
    /* "Expires: 0" and two Expires: already expired */
    reset();
    add("Date", d);
    add("Expires", "0");
    weir__cache_resp_read(&r, 200, &h, NULL, 1000);
    cr_assert_eq(weir__cache_lifetime(&r, 86400, &heur), 0);
    reset();
    add("Date", d);
    add("Expires", e);
    add("Expires", e);
    weir__cache_resp_read(&r, 200, &h, NULL, 1000);
    cr_assert_eq(weir__cache_lifetime(&r, 86400, &heur), 0);
    /* heuristic: 10% of the Last-Modified age, capped, only for its statuses */
    reset();
    char lm[30];
    weir_http_date(1000 - 5000, lm);
    add("Date", d);
    add("Last-Modified", lm);
    weir__cache_resp_read(&r, 200, &h, NULL, 1000);
    cr_assert_eq(weir__cache_lifetime(&r, 86400, &heur), 500);
    cr_assert(heur);
    cr_assert_eq(weir__cache_lifetime(&r, 100, &heur), 100);
    r.status = 302;
    cr_assert_eq(weir__cache_lifetime(&r, 86400, &heur), 0);
    r = resp(200, "max-age=1, max-age=2", 1000);
    cr_assert_eq(weir__cache_lifetime(&r, 86400, &heur), 0, "invalid freshness: stale");
}

Test(cache_policy, age)
{
    reset();
    char d[30];
    weir_http_date(1000, d);
    add("Date", d);
    add("Age", "30");
    weir_cache_resp r;
    weir__cache_resp_read(&r, 200, &h, NULL, 1010);
    /* apparent 10, corrected 30 + delay 2: 32; 50 s resident */
    cr_assert_eq(weir__cache_age(&r, 1008, 1010, 1060), 82);
    /* a Date in the future (a clock ahead): apparent age 0 */
    reset();
    weir_http_date(5000, d);
    add("Date", d);
    weir__cache_resp_read(&r, 200, &h, NULL, 1000);
    cr_assert_eq(weir__cache_age(&r, 1000, 1000, 1005), 5);
    /* Age that is not delta-seconds, or twice: ignored */
    reset();
    add("Age", "1, 2");
    weir__cache_resp_read(&r, 200, &h, NULL, 1000);
    cr_assert_eq(r.age, -1);
}

Test(cache_policy, use)
{
    weir_cache_req q = req(NULL);
    weir_cache_resp r = resp(200, "max-age=60", 1000);
    cr_assert_eq(weir__cache_use(&q, &r, 60, 10), WEIR_CACHE_USE);
    cr_assert_eq(weir__cache_use(&q, &r, 60, 60), WEIR_CACHE_VALIDATE, "age = lifetime is stale");
    weir_cache_req m = req("max-age=5");
    cr_assert_eq(weir__cache_use(&m, &r, 60, 10), WEIR_CACHE_VALIDATE);
    weir_cache_req mf = req("min-fresh=55");
    cr_assert_eq(weir__cache_use(&mf, &r, 60, 10), WEIR_CACHE_VALIDATE);
    weir_cache_req ms = req("max-stale=30");
    cr_assert_eq(weir__cache_use(&ms, &r, 60, 80), WEIR_CACHE_USE_STALE);
    cr_assert_eq(weir__cache_use(&ms, &r, 60, 100), WEIR_CACHE_VALIDATE);
    weir_cache_req nc = req("no-cache");
    cr_assert_eq(weir__cache_use(&nc, &r, 60, 1), WEIR_CACHE_VALIDATE);
    reset();
    add("Pragma", "no-cache");
    weir_cache_req pr;
    weir__cache_req_read(&pr, &h);
    cr_assert_eq(weir__cache_use(&pr, &r, 60, 1), WEIR_CACHE_VALIDATE);
    reset();
    add("Pragma", "no-cache");
    add("Cache-Control", "max-stale");
    weir__cache_req_read(&pr, &h);
    cr_assert_eq(weir__cache_use(&pr, &r, 60, 1), WEIR_CACHE_USE,
                 "Pragma counts only without Cache-Control");
    r = resp(200, "no-cache, max-age=60", 1000);
    cr_assert_eq(weir__cache_use(&q, &r, 60, 1), WEIR_CACHE_VALIDATE);
    r = resp(200, "max-age=60, stale-while-revalidate=30", 1000);
    cr_assert_eq(weir__cache_use(&q, &r, 60, 80), WEIR_CACHE_USE_REVALIDATING);
    cr_assert_eq(weir__cache_use(&q, &r, 60, 95), WEIR_CACHE_VALIDATE);
    /* must-revalidate, proxy-revalidate and s-maxage: never stale */
    const char *strict[] = {"max-age=60, must-revalidate, stale-while-revalidate=30",
                            "max-age=60, proxy-revalidate", "s-maxage=60"};
    for (size_t i = 0; i < 3; i++) {
        r = resp(200, strict[i], 1000);
        cr_assert_eq(weir__cache_use(&ms, &r, 60, 70), WEIR_CACHE_VALIDATE, "%s", strict[i]);
        cr_assert_not(weir__cache_stale_on_error(&q, &r, 60, 70, 3600), "%s", strict[i]);
    }
}

Test(cache_policy, stale_on_error)
{
    weir_cache_req q = req(NULL);
    weir_cache_resp r = resp(200, "max-age=60, stale-if-error=100", 1000);
    cr_assert(weir__cache_stale_on_error(&q, &r, 60, 150, 0));
    cr_assert_not(weir__cache_stale_on_error(&q, &r, 60, 170, 0));
    cr_assert(weir__cache_stale_on_error(&q, &r, 60, 170, 200), "the configured window");
    weir_cache_req qs = req("stale-if-error=500");
    cr_assert(weir__cache_stale_on_error(&qs, &r, 60, 500, 0));
}
