/*
 * test_lb.c - load balancing (weir/lb.h): the distribution of each
 * algorithm, smooth round-robin order, consistent-hashing movement,
 * skipping of unusable backends, the circuit breaker, membership changes,
 * a concurrency smoke test, and scale (the round-robin schedule against
 * nginx's rule, 10,000 members, table sizes).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lb/upstream_int.h"
#include "weir/lb.h"

#define NPICKS 100000
#define NKEYS 100000
#define MAXB 8
#define BASE_PORT 8001

/* ---- helpers ---- */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* "127.0.0.1:8001" for i = 0, "127.0.0.1:8002" for i = 1, ... */
static const char *addr_of(int i)
{
    static __thread char buf[MAXB][32];
    snprintf(buf[i], sizeof(buf[i]), "127.0.0.1:%d", BASE_PORT + i);
    return buf[i];
}

/* The member index of a selected backend (inverse of addr_of). */
static int idx_of(const weir_backend *b)
{
    const char *a = weir_backend_addr(b);
    const char *colon = strrchr(a, ':');
    cr_assert_not_null(colon, "bad backend address %s", a);
    int i = atoi(colon + 1) - BASE_PORT;
    cr_assert(i >= 0 && i < MAXB, "unexpected backend %s", a);
    return i;
}

static uint64_t key_of(long i)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "key-%ld", i);
    return weir_lb_hash(buf, (size_t)n);
}

static weir_upstream *mk(weir_lb_algo algo, uint32_t max_fails, uint32_t fail_timeout_ms)
{
    weir_upstream_options o = {
        .algo = algo, .max_fails = max_fails, .fail_timeout_ms = fail_timeout_ms};
    weir_upstream *u = weir_upstream_new("test", &o);
    cr_assert_not_null(u);
    return u;
}

/* An upstream of n members 0..n-1 with the given weights (NULL = all 1). */
static weir_upstream *mk_with(weir_lb_algo algo, const uint32_t *weights, int n)
{
    weir_upstream *u = mk(algo, 3, 10000);
    for (int i = 0; i < n; i++)
        cr_assert_eq(weir_upstream_add(u, addr_of(i), weights ? weights[i] : 1), WEIR_OK, "add %s",
                     addr_of(i));
    return u;
}

/* Selects `picks` times with keys key-0.., releasing each pick at once. */
static void count_picks(weir_upstream *u, long picks, long *counts)
{
    for (long i = 0; i < picks; i++) {
        weir_backend *b = weir_upstream_select(u, key_of(i), NULL, 0);
        cr_assert_not_null(b, "pick %ld: no backend", i);
        counts[idx_of(b)]++;
        weir_backend_done(b, WEIR_BACKEND_OK);
    }
}

/* Every count within rel_tol (relative) of its share of the weights. */
static void expect_shares(const char *what, const long *counts, const uint32_t *weights, int n,
                          long total, double rel_tol)
{
    double wsum = 0;
    for (int i = 0; i < n; i++)
        wsum += weights[i];
    for (int i = 0; i < n; i++) {
        double want = (double)total * weights[i] / wsum;
        double got = (double)counts[i];
        cr_expect(got >= want * (1 - rel_tol) && got <= want * (1 + rel_tol),
                  "%s: backend %d (weight %u) got %ld picks, want %.0f +-%.0f%%", what, i,
                  weights[i], counts[i], want, rel_tol * 100);
    }
}

/* The id of member addr, found by selecting (released at once). */
static uint64_t id_of(weir_upstream *u, const char *addr)
{
    for (long i = 0; i < 10000; i++) {
        weir_backend *b = weir_upstream_select(u, key_of(i), NULL, 0);
        cr_assert_not_null(b);
        bool hit = strcmp(weir_backend_addr(b), addr) == 0;
        uint64_t id = weir_backend_id(b);
        weir_backend_done(b, WEIR_BACKEND_NOT_RELEVANT);
        if (hit)
            return id;
    }
    cr_assert_fail("%s never selected", addr);
    return 0;
}

/* The state of member addr; fails the test if absent. */
static weir_backend_info info_of(weir_upstream *u, const char *addr)
{
    weir_backend_info v[MAXB];
    size_t n = weir_upstream_info(u, v, MAXB);
    for (size_t i = 0; i < n && i < MAXB; i++) {
        if (strcmp(v[i].addr, addr) == 0)
            return v[i];
    }
    cr_assert_fail("%s is not a member", addr);
    return v[0];
}

/* A reference to the member with this id (which must be usable). */
static weir_backend *get(weir_upstream *u, uint64_t id)
{
    weir_backend *b = weir_upstream_find(u, id);
    cr_assert_not_null(b, "find(%llx) failed", (unsigned long long)id);
    return b;
}

/* find(id) must return NULL (a reference it returns anyway is released). */
__attribute__((format(printf, 3, 4))) static void expect_no_find(weir_upstream *u, uint64_t id,
                                                                 const char *fmt, ...)
{
    weir_backend *b = weir_upstream_find(u, id);
    char what[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    cr_expect_null(b, "find returned %s: %s", b ? weir_backend_addr(b) : "", what);
    if (b)
        weir_backend_done(b, WEIR_BACKEND_NOT_RELEVANT);
}

/* Reports `n` failures of member id. */
static void fail_n(weir_upstream *u, uint64_t id, int n)
{
    for (int i = 0; i < n; i++)
        weir_backend_done(get(u, id), WEIR_BACKEND_FAILED);
}

/* Member i of a big upstream is 127.0.0.1:(BIG_PORT + i). */
#define BIG_PORT 10000

static weir_upstream *mk_big(weir_lb_algo algo, const uint32_t *w, size_t n)
{
    weir_upstream *u = mk(algo, 3, 10000);
    char a[32];
    for (size_t i = 0; i < n; i++) {
        snprintf(a, sizeof(a), "127.0.0.1:%zu", BIG_PORT + i);
        cr_assert_eq(weir_upstream_add(u, a, w ? w[i] : 1), WEIR_OK, "add %s", a);
    }
    return u;
}

/* The member of the next selection, released at once. */
static size_t next_pick(weir_upstream *u, uint64_t key)
{
    weir_backend *b = weir_upstream_select(u, key, NULL, 0);
    cr_assert_not_null(b);
    size_t i = (size_t)atoi(strrchr(weir_backend_addr(b), ':') + 1) - BIG_PORT;
    weir_backend_done(b, WEIR_BACKEND_OK);
    return i;
}

/* ---- 1. distribution ---- */

static void rr_exact(const uint32_t *weights, int n, long period)
{
    weir_upstream *u = mk_with(WEIR_LB_ROUND_ROBIN, weights, n);
    long picks = NPICKS - NPICKS % period; /* whole periods: exact counts */
    long counts[MAXB] = {0};
    count_picks(u, picks, counts);
    uint64_t wsum = 0;
    for (int i = 0; i < n; i++)
        wsum += weights[i];
    for (int i = 0; i < n; i++)
        cr_expect_eq(counts[i], picks * (long)weights[i] / (long)wsum,
                     "weight %u: %ld of %ld picks", weights[i], counts[i], picks);
    weir_upstream_free(u);
}

Test(lb_dist, round_robin_exact)
{
    rr_exact((const uint32_t[]){5, 1, 1}, 3, 7);
    rr_exact((const uint32_t[]){3, 1}, 2, 4);
    rr_exact((const uint32_t[]){1, 1, 1, 1}, 4, 4);
    /* equal weights above 1 reduce by their gcd */
    rr_exact((const uint32_t[]){7, 7, 7}, 3, 3);
    /* not reduced: 4/6/2 -> 2/3/1, period 6 */
    rr_exact((const uint32_t[]){4, 6, 2}, 3, 6);
}

static void weighted_dist(weir_lb_algo algo)
{
    const uint32_t w[] = {1, 2, 3};
    weir_upstream *u = mk_with(algo, w, 3);
    long counts[MAXB] = {0};
    count_picks(u, NPICKS, counts);
    expect_shares(weir_lb_algo_name(algo), counts, w, 3, NPICKS, 0.03);
    weir_upstream_free(u);
}

Test(lb_dist, random_weighted)
{
    weighted_dist(WEIR_LB_RANDOM);
}

/* With every pick released at once all loads are 0: p2c keeps its first
 * (weighted random) choice on the tie. */
Test(lb_dist, p2c_weighted_when_idle)
{
    weighted_dist(WEIR_LB_P2C);
}

/* With every pick released at once all loads are 0 and least_conn breaks
 * the tie uniformly at random ("ties at random"): weights only act through
 * the load per unit of weight. */
Test(lb_dist, least_conn_idle_is_uniform)
{
    const uint32_t w[] = {1, 2, 3};
    weir_upstream *u = mk_with(WEIR_LB_LEAST_CONN, w, 3);
    long counts[MAXB] = {0};
    count_picks(u, NPICKS, counts);
    expect_shares("least_conn (idle)", counts, (const uint32_t[]){1, 1, 1}, 3, NPICKS, 0.03);
    weir_upstream_free(u);
}

Test(lb_dist, least_conn_prefers_less_loaded)
{
    weir_upstream *u = mk_with(WEIR_LB_LEAST_CONN, NULL, 2);
    uint64_t ida = id_of(u, addr_of(0));
    weir_backend *held[32];
    size_t nh = 0;
    for (int i = 0; i < 5; i++)
        held[nh++] = get(u, ida);
    cr_assert_eq(info_of(u, addr_of(0)).in_flight, 5);
    /* B gets every pick until it carries as many as A */
    for (int i = 0; i < 5; i++) {
        weir_backend *b = weir_upstream_select(u, 0, NULL, 0);
        cr_assert_not_null(b);
        cr_expect_eq(idx_of(b), 1, "pick %d with A=5, B=%d in flight went to A", i, i);
        held[nh++] = b;
    }
    cr_expect_eq(info_of(u, addr_of(1)).in_flight, 5);
    /* loads equal: the next pick goes to either; whichever it is, the one
     * after goes to the other */
    weir_backend *x = weir_upstream_select(u, 0, NULL, 0);
    weir_backend *y = weir_upstream_select(u, 0, NULL, 0);
    cr_assert(x && y);
    cr_expect_neq(idx_of(x), idx_of(y), "at 6/5 the less loaded one must be picked");
    held[nh++] = x;
    held[nh++] = y;
    for (size_t i = 0; i < nh; i++)
        weir_backend_done(held[i], WEIR_BACKEND_OK);
    cr_expect_eq(info_of(u, addr_of(0)).in_flight, 0);
    cr_expect_eq(info_of(u, addr_of(1)).in_flight, 0);
    weir_upstream_free(u);
}

/* Load is per unit of weight: A (weight 1) with 2 in flight is busier than
 * B (weight 3) with 5 in flight (2/1 > 5/3). */
Test(lb_dist, least_conn_load_per_weight)
{
    weir_upstream *u = mk_with(WEIR_LB_LEAST_CONN, (const uint32_t[]){1, 3}, 2);
    uint64_t ida = id_of(u, addr_of(0)), idb = id_of(u, addr_of(1));
    weir_backend *held[8];
    size_t nh = 0;
    for (int i = 0; i < 2; i++)
        held[nh++] = get(u, ida);
    for (int i = 0; i < 5; i++)
        held[nh++] = get(u, idb);
    for (int i = 0; i < 100; i++) {
        weir_backend *b = weir_upstream_select(u, 0, NULL, 0);
        cr_assert_not_null(b);
        cr_expect_eq(idx_of(b), 1);
        weir_backend_done(b, WEIR_BACKEND_OK);
    }
    for (size_t i = 0; i < nh; i++)
        weir_backend_done(held[i], WEIR_BACKEND_OK);
    weir_upstream_free(u);
}

/* p2c compares its two choices: with A loaded, B wins whenever both are
 * drawn (all but ~1/128 of the picks with two equal-weight members). */
Test(lb_dist, p2c_prefers_less_loaded)
{
    weir_upstream *u = mk_with(WEIR_LB_P2C, NULL, 2);
    uint64_t ida = id_of(u, addr_of(0));
    weir_backend *held[5];
    for (int i = 0; i < 5; i++)
        held[i] = get(u, ida);
    long counts[MAXB] = {0};
    count_picks(u, 10000, counts);
    cr_expect_gt(counts[1], 9500, "B got only %ld of 10000 picks", counts[1]);
    for (int i = 0; i < 5; i++)
        weir_backend_done(held[i], WEIR_BACKEND_OK);
    weir_upstream_free(u);
}

static void hash_dist(weir_lb_algo algo, uint32_t unit, double rel_tol)
{
    const uint32_t w[] = {unit, 2 * unit, 3 * unit};
    weir_upstream *u = mk_with(algo, w, 3);
    long counts[MAXB] = {0};
    count_picks(u, NKEYS, counts);
    expect_shares(weir_lb_algo_name(algo), counts, w, 3, NKEYS, rel_tol);
    weir_upstream_free(u);

    const uint32_t eq[] = {unit, unit, unit, unit, unit};
    u = mk_with(algo, eq, 5);
    memset(counts, 0, sizeof(counts));
    count_picks(u, NKEYS, counts);
    expect_shares(weir_lb_algo_name(algo), counts, eq, 5, NKEYS, rel_tol);
    weir_upstream_free(u);
}

/*
 * A member's share of the Ketama ring is the sum of its points' arcs: with
 * k points its relative deviation is about 1/sqrt(k), 7.9% for the 160
 * points of weight 1 (over 100 random sets of 5 members, 61 had one member
 * beyond +-10%, the worst at 24%). So weight 1 gets +-30% (about 4 sigma);
 * weights of 10 units (1600 points, sigma 2.5%) get +-10%.
 */
Test(lb_dist, ketama_by_weight)
{
    hash_dist(WEIR_LB_KETAMA, 1, 0.30);
    hash_dist(WEIR_LB_KETAMA, 10, 0.10);
}

Test(lb_dist, maglev_by_weight)
{
    hash_dist(WEIR_LB_MAGLEV, 1, 0.05);
    hash_dist(WEIR_LB_MAGLEV, 10, 0.05);
}

/* The same key always lands on the same member. */
Test(lb_dist, hash_algos_are_deterministic)
{
    weir_lb_algo algos[] = {WEIR_LB_KETAMA, WEIR_LB_MAGLEV};
    for (size_t a = 0; a < 2; a++) {
        weir_upstream *u1 = mk_with(algos[a], NULL, 4);
        weir_upstream *u2 = mk_with(algos[a], NULL, 4);
        for (long i = 0; i < 1000; i++) {
            weir_backend *x = weir_upstream_select(u1, key_of(i), NULL, 0);
            weir_backend *y = weir_upstream_select(u1, key_of(i), NULL, 0);
            weir_backend *z = weir_upstream_select(u2, key_of(i), NULL, 0);
            cr_assert(x && y && z);
            cr_expect(x == y && idx_of(x) == idx_of(z), "%s: key-%ld moved",
                      weir_lb_algo_name(algos[a]), i);
            weir_backend_done(x, WEIR_BACKEND_OK);
            weir_backend_done(y, WEIR_BACKEND_OK);
            weir_backend_done(z, WEIR_BACKEND_OK);
        }
        weir_upstream_free(u1);
        weir_upstream_free(u2);
    }
}

/* ---- 2. smooth interleaving ---- */

Test(lb_order, smooth_5_1_1)
{
    weir_upstream *u = mk_with(WEIR_LB_ROUND_ROBIN, (const uint32_t[]){5, 1, 1}, 3);
    const char want[] = "aabacaa";
    for (int i = 0; i < 21; i++) {
        weir_backend *b = weir_upstream_select(u, 0, NULL, 0);
        cr_assert_not_null(b);
        char got = (char)('a' + idx_of(b));
        cr_expect_eq(got, want[i % 7], "pick %d: got %c, want %c", i, got, want[i % 7]);
        weir_backend_done(b, WEIR_BACKEND_OK);
    }
    weir_upstream_free(u);
}

Test(lb_order, smooth_2_1_never_three_in_a_row)
{
    weir_upstream *u = mk_with(WEIR_LB_ROUND_ROBIN, (const uint32_t[]){2, 1}, 2);
    int prev = -1, run = 0;
    long counts[2] = {0};
    for (int i = 0; i < 300; i++) {
        weir_backend *b = weir_upstream_select(u, 0, NULL, 0);
        cr_assert_not_null(b);
        int k = idx_of(b);
        run = k == prev ? run + 1 : 1;
        prev = k;
        counts[k]++;
        cr_expect_lt(run, 3, "pick %d: backend %d three times in a row", i, k);
        weir_backend_done(b, WEIR_BACKEND_OK);
    }
    cr_expect_eq(counts[0], 200);
    cr_expect_eq(counts[1], 100);
    weir_upstream_free(u);
}

/* ---- 3. consistent hashing movement ---- */

typedef struct keymap {
    uint64_t *keys;
    int *a, *b;
} keymap;

static keymap keymap_new(void)
{
    keymap m = {malloc(NKEYS * sizeof(uint64_t)), malloc(NKEYS * sizeof(int)),
                malloc(NKEYS * sizeof(int))};
    cr_assert(m.keys && m.a && m.b);
    for (long i = 0; i < NKEYS; i++)
        m.keys[i] = key_of(i);
    return m;
}

static void keymap_free(keymap *m)
{
    free(m->keys);
    free(m->a);
    free(m->b);
}

static void map_keys(weir_upstream *u, const uint64_t *keys, int *out)
{
    for (long i = 0; i < NKEYS; i++) {
        weir_backend *b = weir_upstream_select(u, keys[i], NULL, 0);
        cr_assert_not_null(b, "key %ld: no backend", i);
        out[i] = idx_of(b);
        weir_backend_done(b, WEIR_BACKEND_OK);
    }
}

typedef struct movement {
    long moved;          /* keys whose member changed */
    long on_gone;        /* keys that were on member `gone` */
    long gone_stayed;    /* keys of `gone` still on it afterwards */
    long between_others; /* keys moved from one other member to another */
    long others;         /* keys that were not on `gone` */
    long to_other;       /* moved keys whose new member is not `fresh` */
} movement;

/* Compares before/after maps: `gone` lost its keys (-1: none), `fresh`
 * is a new member (-1: none). */
static movement compare(const keymap *m, int gone, int fresh)
{
    movement r = {0};
    for (long i = 0; i < NKEYS; i++) {
        bool moved = m->a[i] != m->b[i];
        r.moved += moved;
        if (m->a[i] == gone) {
            r.on_gone++;
            r.gone_stayed += !moved;
        } else {
            r.others++;
            r.between_others += moved && m->b[i] != fresh;
        }
        r.to_other += moved && m->b[i] != fresh;
    }
    return r;
}

static void move_on_remove(weir_lb_algo algo)
{
    const int n = 5;
    keymap m = keymap_new();
    weir_upstream *u = mk_with(algo, NULL, n);
    map_keys(u, m.keys, m.a);
    cr_assert_eq(weir_upstream_remove(u, addr_of(2)), WEIR_OK);
    map_keys(u, m.keys, m.b);
    movement r = compare(&m, 2, -1);
    const char *name = weir_lb_algo_name(algo);
    cr_expect_eq(r.gone_stayed, 0, "%s: %ld keys still on the removed member", name, r.gone_stayed);
    if (algo == WEIR_LB_KETAMA)
        cr_expect_eq(r.between_others, 0, "%s: %ld keys moved between survivors", name,
                     r.between_others);
    else
        cr_expect_lt(r.between_others, r.others / 50, "%s: %ld of %ld survivors' keys moved", name,
                     r.between_others, r.others);
    double frac = (double)r.moved / NKEYS;
    cr_expect(frac >= 0.5 / n && frac <= 1.5 / n, "%s: %.4f of keys moved, want ~%.4f", name, frac,
              1.0 / n);
    weir_upstream_free(u);
    keymap_free(&m);
}

static void move_on_add(weir_lb_algo algo)
{
    const int n = 6;
    keymap m = keymap_new();
    weir_upstream *u = mk_with(algo, NULL, n - 1);
    map_keys(u, m.keys, m.a);
    cr_assert_eq(weir_upstream_add(u, addr_of(n - 1), 1), WEIR_OK);
    map_keys(u, m.keys, m.b);
    movement r = compare(&m, -1, n - 1);
    const char *name = weir_lb_algo_name(algo);
    double frac = (double)r.moved / NKEYS;
    cr_expect(frac >= 0.5 / n && frac <= 1.5 / n, "%s: %.4f of keys moved, want ~%.4f", name, frac,
              1.0 / n);
    if (algo == WEIR_LB_KETAMA)
        cr_expect_eq(r.to_other, 0, "%s: %ld keys moved to an old member", name, r.to_other);
    else
        cr_expect_lt(r.to_other, NKEYS / 50, "%s: %ld keys moved between old members", name,
                     r.to_other);
    weir_upstream_free(u);
    keymap_free(&m);
}

/* Unusable members are skipped on the same tables: only their keys move,
 * and they come back when the member does. */
static void move_on_drain(weir_lb_algo algo)
{
    keymap m = keymap_new();
    weir_upstream *u = mk_with(algo, NULL, 5);
    map_keys(u, m.keys, m.a);
    cr_assert_eq(weir_upstream_set_drain(u, addr_of(1), true), WEIR_OK);
    map_keys(u, m.keys, m.b);
    movement r = compare(&m, 1, -1);
    const char *name = weir_lb_algo_name(algo);
    cr_expect_gt(r.on_gone, 0);
    cr_expect_eq(r.gone_stayed, 0, "%s: %ld keys still on the drained member", name, r.gone_stayed);
    cr_expect_eq(r.between_others, 0, "%s: %ld keys of usable members moved", name,
                 r.between_others);
    cr_expect_eq(r.moved, r.on_gone);
    /* undrain: back to the original map */
    cr_assert_eq(weir_upstream_set_drain(u, addr_of(1), false), WEIR_OK);
    map_keys(u, m.keys, m.b);
    r = compare(&m, -1, -1);
    cr_expect_eq(r.moved, 0, "%s: %ld keys differ after undrain", name, r.moved);
    weir_upstream_free(u);
    keymap_free(&m);
}

static void move_on_breaker(weir_lb_algo algo)
{
    keymap m = keymap_new();
    weir_upstream *u = mk_with(algo, NULL, 5); /* max_fails 3, fail_timeout 10 s */
    map_keys(u, m.keys, m.a);
    long k = 0;
    while (m.a[k] != 3)
        k++;
    /* three failures of member 3, reached through one of its keys */
    for (int i = 0; i < 3; i++) {
        weir_backend *b = weir_upstream_select(u, m.keys[k], NULL, 0);
        cr_assert_not_null(b);
        cr_assert_eq(idx_of(b), 3, "failure %d: key went to %d", i, idx_of(b));
        weir_backend_done(b, WEIR_BACKEND_FAILED);
    }
    cr_assert_eq(info_of(u, addr_of(3)).breaker, WEIR_BREAKER_OPEN);
    map_keys(u, m.keys, m.b);
    movement r = compare(&m, 3, -1);
    const char *name = weir_lb_algo_name(algo);
    cr_expect_gt(r.on_gone, 0);
    cr_expect_eq(r.gone_stayed, 0, "%s: %ld keys still on the ejected member", name, r.gone_stayed);
    cr_expect_eq(r.between_others, 0, "%s: %ld keys of usable members moved", name,
                 r.between_others);
    weir_upstream_free(u);
    keymap_free(&m);
}

Test(lb_hash, ketama_remove)
{
    move_on_remove(WEIR_LB_KETAMA);
}

Test(lb_hash, maglev_remove)
{
    move_on_remove(WEIR_LB_MAGLEV);
}

Test(lb_hash, ketama_add)
{
    move_on_add(WEIR_LB_KETAMA);
}

Test(lb_hash, maglev_add)
{
    move_on_add(WEIR_LB_MAGLEV);
}

Test(lb_hash, ketama_drain)
{
    move_on_drain(WEIR_LB_KETAMA);
}

Test(lb_hash, maglev_drain)
{
    move_on_drain(WEIR_LB_MAGLEV);
}

Test(lb_hash, ketama_breaker)
{
    move_on_breaker(WEIR_LB_KETAMA);
}

Test(lb_hash, maglev_breaker)
{
    move_on_breaker(WEIR_LB_MAGLEV);
}

/* The tables are the ones defined before they were built faster (points
 * "ADDR-p" on a sorted ring; Maglev's (offset + j * skip) mod 65537 walks,
 * members taking turns in address order, here the order they were added):
 * keys keep their backends across versions. */
static int cmp_point(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b;
    return x[0] != y[0] ? (x[0] < y[0] ? -1 : 1) : (x[1] > y[1]) - (x[1] < y[1]);
}

Test(lb_hash, tables_match_their_definition)
{
    enum { N = 30, M = 65537 };
    uint32_t w[N], *table = malloc(M * sizeof(*table));
    uint64_t(*pts)[2] = malloc(N * 4 * 160 * sizeof(*pts)), off[N], skip[N], next[N] = {0};
    cr_assert(table && pts);
    size_t np = 0;
    for (size_t i = 0; i < N; i++) {
        char a[64];
        int len = snprintf(a, sizeof(a), "127.0.0.1:%zu", BIG_PORT + i);
        uint64_t h1 = weir_lb_hash(a, (size_t)len), h2 = weir_lb_hash(&h1, sizeof(h1));
        off[i] = h1 % M;
        skip[i] = h2 % (M - 1) + 1;
        w[i] = 1 + (uint32_t)i % 4;
        for (uint32_t p = 0; p < 160 * w[i]; p++, np++) {
            int pl = snprintf(a + len, sizeof(a) - (size_t)len, "-%u", p);
            pts[np][0] = weir_lb_hash(a, (size_t)(len + pl));
            pts[np][1] = i;
        }
    }
    qsort(pts, np, sizeof(*pts), cmp_point);
    memset(table, 0xff, M * sizeof(*table));
    for (size_t filled = 0; filled < M;) {
        for (size_t i = 0; i < N && filled < M; i++) {
            for (uint32_t t = 0; t < w[i] && filled < M; t++, filled++) {
                uint64_t c;
                do
                    c = (off[i] + next[i]++ * skip[i]) % M;
                while (table[c] != UINT32_MAX);
                table[c] = (uint32_t)i;
            }
        }
    }
    weir_upstream *ku = mk_big(WEIR_LB_KETAMA, w, N), *mu = mk_big(WEIR_LB_MAGLEV, w, N);
    for (long i = 0; i < 5000; i++) {
        uint64_t key = key_of(i);
        size_t lo = 0;
        while (lo < np && pts[lo][0] < key)
            lo++;
        cr_expect_eq(next_pick(ku, key), pts[lo % np][1], "ketama, key-%ld", i);
        cr_expect_eq(next_pick(mu, key), table[key % M], "maglev, key-%ld", i);
    }
    weir_upstream_free(ku);
    weir_upstream_free(mu);
    free(table);
    free(pts);
}

/* The order in which the members were listed does not matter: the same
 * members (and weights) added in reverse give every key the same member.
 * Maglev once filled its table in list order, so the order decided the
 * entries two members contended for. */
Test(lb_hash, member_order_does_not_matter)
{
    enum { N = 12 };
    uint32_t w[N];
    for (size_t i = 0; i < N; i++)
        w[i] = 1 + (uint32_t)(i * 7) % 3;
    weir_lb_algo algos[] = {WEIR_LB_KETAMA, WEIR_LB_MAGLEV};
    for (size_t a = 0; a < 2; a++) {
        weir_upstream *fwd = mk_big(algos[a], w, N);
        weir_upstream *rev = mk(algos[a], 3, 10000);
        char addr[32];
        for (size_t i = N; i-- > 0;) {
            snprintf(addr, sizeof(addr), "127.0.0.1:%zu", BIG_PORT + i);
            cr_assert_eq(weir_upstream_add(rev, addr, w[i]), WEIR_OK);
        }
        long moved = 0;
        for (long k = 0; k < 20000; k++)
            moved += next_pick(fwd, key_of(k)) != next_pick(rev, key_of(k));
        cr_expect_eq(moved, 0, "%s: %ld keys depend on the member order",
                     weir_lb_algo_name(algos[a]), moved);
        weir_upstream_free(fwd);
        weir_upstream_free(rev);
    }
}

/* ---- 4. skipping and all-down ---- */

static const weir_lb_algo all_algos[] = {WEIR_LB_ROUND_ROBIN, WEIR_LB_RANDOM, WEIR_LB_LEAST_CONN,
                                         WEIR_LB_P2C,         WEIR_LB_KETAMA, WEIR_LB_MAGLEV};
#define N_ALGOS (sizeof(all_algos) / sizeof(all_algos[0]))

Test(lb_skip, unusable_never_selected)
{
    for (size_t a = 0; a < N_ALGOS; a++) {
        const char *name = weir_lb_algo_name(all_algos[a]);
        weir_upstream *u = mk_with(all_algos[a], NULL, 4);
        uint64_t id[4];
        for (int i = 0; i < 4; i++)
            id[i] = id_of(u, addr_of(i));
        /* 1 drained, 2 ejected by its breaker */
        cr_assert_eq(weir_upstream_set_drain(u, addr_of(1), true), WEIR_OK);
        fail_n(u, id[2], 3);
        cr_assert_eq(info_of(u, addr_of(2)).breaker, WEIR_BREAKER_OPEN);
        cr_expect(info_of(u, addr_of(1)).draining);
        long counts[MAXB] = {0};
        count_picks(u, 2000, counts);
        cr_expect_eq(counts[1], 0, "%s: drained member picked %ld times", name, counts[1]);
        cr_expect_eq(counts[2], 0, "%s: ejected member picked %ld times", name, counts[2]);
        cr_expect(counts[0] > 0 && counts[3] > 0, "%s: usable members %ld/%ld", name, counts[0],
                  counts[3]);

        /* avoid: 0 excluded leaves 3; 0 and 3 excluded leaves nothing */
        for (long i = 0; i < 500; i++) {
            weir_backend *b = weir_upstream_select(u, key_of(i), &id[0], 1);
            cr_assert_not_null(b, "%s: nothing left avoiding 0", name);
            cr_expect_eq(idx_of(b), 3, "%s: avoided %d", name, idx_of(b));
            weir_backend_done(b, WEIR_BACKEND_OK);
        }
        uint64_t avoid[] = {id[3], id[0]};
        for (long i = 0; i < 50; i++)
            cr_expect_null(weir_upstream_select(u, key_of(i), avoid, 2), "%s", name);

        /* find: by id, NULL when unusable or unknown */
        weir_backend *b = weir_upstream_find(u, id[3]);
        cr_assert_not_null(b, "%s", name);
        cr_expect_eq(idx_of(b), 3);
        cr_expect_eq(weir_backend_id(b), id[3]);
        weir_backend_done(b, WEIR_BACKEND_OK);
        expect_no_find(u, id[1], "%s: found a drained member", name);
        expect_no_find(u, id[2], "%s: found an ejected member", name);
        uint64_t unknown = 12345;
        while (unknown == id[0] || unknown == id[1] || unknown == id[2] || unknown == id[3])
            unknown++;
        expect_no_find(u, unknown, "%s", name);

        /* everything drained: nothing */
        cr_assert_eq(weir_upstream_set_drain(u, addr_of(0), true), WEIR_OK);
        cr_assert_eq(weir_upstream_set_drain(u, addr_of(3), true), WEIR_OK);
        for (long i = 0; i < 50; i++)
            cr_expect_null(weir_upstream_select(u, key_of(i), NULL, 0), "%s: all down", name);
        /* undrained: back */
        cr_assert_eq(weir_upstream_set_drain(u, addr_of(3), false), WEIR_OK);
        b = weir_upstream_select(u, key_of(0), NULL, 0);
        cr_assert_not_null(b, "%s", name);
        cr_expect_eq(idx_of(b), 3);
        weir_backend_done(b, WEIR_BACKEND_OK);
        weir_upstream_free(u);
    }
}

Test(lb_skip, all_drained_and_empty)
{
    for (size_t a = 0; a < N_ALGOS; a++) {
        const char *name = weir_lb_algo_name(all_algos[a]);
        weir_upstream *u = mk(all_algos[a], 3, 10000);
        cr_expect_null(weir_upstream_select(u, 1, NULL, 0), "%s: empty", name);
        expect_no_find(u, 1, "%s: empty", name);
        for (int i = 0; i < 3; i++) {
            cr_assert_eq(weir_upstream_add(u, addr_of(i), (uint32_t)i + 1), WEIR_OK);
            cr_assert_eq(weir_upstream_set_drain(u, addr_of(i), true), WEIR_OK);
        }
        for (long i = 0; i < 100; i++)
            cr_expect_null(weir_upstream_select(u, key_of(i), NULL, 0), "%s: all drained", name);
        /* removing every member empties it again */
        for (int i = 0; i < 3; i++)
            cr_assert_eq(weir_upstream_remove(u, addr_of(i)), WEIR_OK);
        cr_expect_eq(weir_upstream_info(u, NULL, 0), 0);
        cr_expect_null(weir_upstream_select(u, 1, NULL, 0), "%s: emptied", name);
        weir_upstream_free(u);
    }
}

/* ---- 5. circuit breaker ---- */

#define FAIL_TIMEOUT_MS 200
#define WAIT_MS 260 /* past the timeout, with room for the coarse clock */

/* Two members, A = 0 and B = 1, round robin, max_fails 3, 200 ms. */
static weir_upstream *breaker_setup(uint64_t *ida)
{
    weir_upstream *u = mk(WEIR_LB_ROUND_ROBIN, 3, FAIL_TIMEOUT_MS);
    cr_assert_eq(weir_upstream_add(u, addr_of(0), 1), WEIR_OK);
    cr_assert_eq(weir_upstream_add(u, addr_of(1), 1), WEIR_OK);
    *ida = id_of(u, addr_of(0));
    return u;
}

/* Selects `n` times holding every pick; returns how many went to A and,
 * if probe is not NULL, the first A pick (if any, still held) in *probe;
 * releases the others as NOT_RELEVANT, which leaves the breakers alone. */
static int picks_of_a(weir_upstream *u, int n, weir_backend **probe)
{
    int hits = 0;
    if (probe)
        *probe = NULL;
    weir_backend *held[64];
    int nh = 0;
    for (int i = 0; i < n; i++) {
        weir_backend *b = weir_upstream_select(u, 0, NULL, 0);
        cr_assert_not_null(b);
        if (idx_of(b) == 0) {
            hits++;
            if (probe && !*probe) {
                *probe = b;
                continue;
            }
        }
        held[nh++] = b;
    }
    for (int i = 0; i < nh; i++)
        weir_backend_done(held[i], WEIR_BACKEND_NOT_RELEVANT);
    return hits;
}

Test(lb_breaker, opens_after_max_fails)
{
    uint64_t ida;
    weir_upstream *u = breaker_setup(&ida);
    const char *a = addr_of(0);
    fail_n(u, ida, 2);
    cr_expect_eq(info_of(u, a).breaker, WEIR_BREAKER_CLOSED);
    cr_expect_eq(info_of(u, a).failures, 2);
    weir_backend *p;
    cr_expect_eq(picks_of_a(u, 10, &p), 5, "closed after 2 failures: A in half the picks");
    if (p)
        weir_backend_done(p, WEIR_BACKEND_NOT_RELEVANT); /* keeps the count at 2 */

    fail_n(u, ida, 1);
    cr_expect_eq(info_of(u, a).breaker, WEIR_BREAKER_OPEN);
    cr_expect_eq(info_of(u, a).failures, 3);
    cr_expect_eq(picks_of_a(u, 20, NULL), 0, "open: A must be skipped");
    expect_no_find(u, ida, "open breaker");
    weir_upstream_free(u);
}

Test(lb_breaker, half_open_probe_success_closes)
{
    uint64_t ida;
    weir_upstream *u = breaker_setup(&ida);
    const char *a = addr_of(0);
    fail_n(u, ida, 3);
    cr_assert_eq(info_of(u, a).breaker, WEIR_BREAKER_OPEN);
    sleep_ms(WAIT_MS);
    /* exactly one selection gets the probe, the others skip A */
    weir_backend *probe;
    cr_expect_eq(picks_of_a(u, 10, &probe), 1, "exactly one probe after the timeout");
    cr_assert_not_null(probe);
    cr_expect_eq(info_of(u, a).breaker, WEIR_BREAKER_HALF_OPEN);
    expect_no_find(u, ida, "a second probe through find");
    weir_backend *p;
    cr_expect_eq(picks_of_a(u, 10, NULL), 0, "probe out: A must be skipped");
    weir_backend_done(probe, WEIR_BACKEND_OK);
    cr_expect_eq(info_of(u, a).breaker, WEIR_BREAKER_CLOSED);
    cr_expect_eq(picks_of_a(u, 10, &p), 5, "closed again: A in half the picks");
    if (p)
        weir_backend_done(p, WEIR_BACKEND_OK);
    weir_upstream_free(u);
}

Test(lb_breaker, half_open_probe_failure_reopens)
{
    uint64_t ida;
    weir_upstream *u = breaker_setup(&ida);
    const char *a = addr_of(0);
    fail_n(u, ida, 3);
    sleep_ms(WAIT_MS);
    weir_backend *probe, *p;
    cr_assert_eq(picks_of_a(u, 10, &probe), 1);
    cr_assert_not_null(probe);
    weir_backend_done(probe, WEIR_BACKEND_FAILED);
    cr_expect_eq(info_of(u, a).breaker, WEIR_BREAKER_OPEN);
    cr_expect_eq(picks_of_a(u, 20, NULL), 0, "re-opened: A must be skipped for another timeout");
    expect_no_find(u, ida, "re-opened breaker");
    sleep_ms(WAIT_MS);
    /* another probe, through find this time; it succeeds */
    probe = weir_upstream_find(u, ida);
    cr_assert_not_null(probe, "no probe after the second timeout");
    cr_expect_eq(info_of(u, a).breaker, WEIR_BREAKER_HALF_OPEN);
    cr_expect_eq(picks_of_a(u, 10, NULL), 0, "probe out: A must be skipped");
    weir_backend_done(probe, WEIR_BACKEND_OK);
    cr_expect_eq(info_of(u, a).breaker, WEIR_BREAKER_CLOSED);
    cr_expect_eq(picks_of_a(u, 10, &p), 5);
    if (p)
        weir_backend_done(p, WEIR_BACKEND_OK);
    weir_upstream_free(u);
}

/* A probe that tells nothing (client gone) lets another request probe. */
Test(lb_breaker, half_open_probe_not_relevant)
{
    uint64_t ida;
    weir_upstream *u = breaker_setup(&ida);
    fail_n(u, ida, 3);
    sleep_ms(WAIT_MS);
    weir_backend *probe = weir_upstream_find(u, ida);
    cr_assert_not_null(probe);
    weir_backend_done(probe, WEIR_BACKEND_NOT_RELEVANT);
    cr_expect_neq(info_of(u, addr_of(0)).breaker, WEIR_BREAKER_CLOSED);
    probe = weir_upstream_find(u, ida);
    cr_expect_not_null(probe, "a new probe is allowed");
    if (probe)
        weir_backend_done(probe, WEIR_BACKEND_OK);
    cr_expect_eq(info_of(u, addr_of(0)).breaker, WEIR_BREAKER_CLOSED);
    weir_upstream_free(u);
}

Test(lb_breaker, success_resets_consecutive_count)
{
    uint64_t ida;
    weir_upstream *u = breaker_setup(&ida);
    const char *a = addr_of(0);
    fail_n(u, ida, 2);
    weir_backend_done(get(u, ida), WEIR_BACKEND_OK);
    fail_n(u, ida, 2);
    cr_expect_eq(info_of(u, a).breaker, WEIR_BREAKER_CLOSED);
    cr_expect_eq(info_of(u, a).failures, 4);
    weir_backend *p;
    cr_expect_eq(picks_of_a(u, 10, &p), 5);
    if (p)
        weir_backend_done(p, WEIR_BACKEND_NOT_RELEVANT);
    /* a third consecutive one opens it */
    fail_n(u, ida, 1);
    cr_expect_eq(info_of(u, a).breaker, WEIR_BREAKER_OPEN);
    weir_upstream_free(u);
}

Test(lb_breaker, max_fails_zero_never_opens)
{
    weir_upstream *u = mk(WEIR_LB_ROUND_ROBIN, 0, FAIL_TIMEOUT_MS);
    cr_assert_eq(weir_upstream_add(u, addr_of(0), 1), WEIR_OK);
    uint64_t ida = id_of(u, addr_of(0));
    fail_n(u, ida, 50);
    cr_expect_eq(info_of(u, addr_of(0)).breaker, WEIR_BREAKER_CLOSED);
    cr_expect_eq(info_of(u, addr_of(0)).failures, 50);
    weir_upstream_free(u);
}

/*
 * Regression: set_weight during a half-open probe used to copy the backend
 * (breaker included), so the probe's success landed on the old copy and
 * the new one stayed half-open for good. Re-weighting now keeps the member.
 */
Test(lb_breaker, set_weight_during_probe)
{
    uint64_t ida;
    weir_upstream *u = breaker_setup(&ida);
    const char *a = addr_of(0);
    fail_n(u, ida, 3);
    sleep_ms(WAIT_MS);
    weir_backend *probe = weir_upstream_find(u, ida);
    cr_assert_not_null(probe);
    cr_assert_eq(weir_upstream_set_weight(u, a, 2), WEIR_OK);
    weir_backend_done(probe, WEIR_BACKEND_OK); /* the probe succeeded */
    sleep_ms(WAIT_MS);
    cr_expect_neq(info_of(u, a).breaker, WEIR_BREAKER_HALF_OPEN,
                  "breaker stuck half-open after the probe succeeded");
    cr_expect_gt(picks_of_a(u, 30, NULL), 0, "backend never selected again");
    weir_upstream_free(u);
}

/*
 * Regression: a success reported by a request selected before the breaker
 * opened used to close it at once. Only the half-open probe's outcome
 * decides now (it gets its own handle).
 */
Test(lb_breaker, stale_success_keeps_it_open)
{
    uint64_t ida;
    weir_upstream *u = breaker_setup(&ida);
    const char *a = addr_of(0);
    weir_backend *slow = get(u, ida); /* in flight before the failures */
    fail_n(u, ida, 3);
    cr_assert_eq(info_of(u, a).breaker, WEIR_BREAKER_OPEN);
    weir_backend_done(slow, WEIR_BACKEND_OK);
    cr_expect_eq(info_of(u, a).breaker, WEIR_BREAKER_OPEN,
                 "a request from before the ejection closed the breaker");
    cr_expect_eq(picks_of_a(u, 10, NULL), 0, "ejected backend selected before fail_timeout");
    weir_upstream_free(u);
}

/*
 * Regression: while the probe was out, a NOT_RELEVANT outcome of an older
 * request reset HALF_OPEN to OPEN, letting a second probe through.
 */
Test(lb_breaker, stale_outcome_keeps_one_probe)
{
    uint64_t ida;
    weir_upstream *u = breaker_setup(&ida);
    const char *a = addr_of(0);
    weir_backend *slow = get(u, ida); /* in flight before the failures */
    fail_n(u, ida, 3);
    sleep_ms(WAIT_MS);
    weir_backend *probe = weir_upstream_find(u, ida);
    cr_assert_not_null(probe);
    weir_backend_done(slow, WEIR_BACKEND_NOT_RELEVANT); /* its client went away */
    cr_expect_eq(info_of(u, a).breaker, WEIR_BREAKER_HALF_OPEN);
    expect_no_find(u, ida, "a second probe while the first is out");
    weir_backend_done(probe, WEIR_BACKEND_OK);
    weir_upstream_free(u);
}

/* ---- 6. membership ---- */

Test(lb_members, add_rejects)
{
    weir_upstream *u = mk(WEIR_LB_ROUND_ROBIN, 3, 10000);
    cr_expect_str_eq(weir_upstream_name(u), "test");
    cr_expect_eq(weir_upstream_add(u, "127.0.0.1:8001", 1), WEIR_OK);
    cr_expect_eq(weir_upstream_add(u, "127.0.0.1:8001", 1), WEIR_ERR_INVAL, "duplicate");
    cr_expect_eq(weir_upstream_add(u, "127.0.0.1:8001", 5), WEIR_ERR_INVAL, "duplicate");
    cr_expect_eq(weir_upstream_add(u, "127.0.0.1:08001", 1), WEIR_ERR_INVAL,
                 "duplicate in another spelling");
    cr_expect_eq(weir_upstream_add(u, "127.0.0.1:8002", 0), WEIR_ERR_INVAL, "weight 0");
    cr_expect_eq(weir_upstream_add(u, "127.0.0.1:8002", 10001), WEIR_ERR_INVAL, "weight 10001");
    cr_expect_eq(weir_upstream_add(u, "localhost:8002", 1), WEIR_ERR_INVAL, "not numeric");
    cr_expect_eq(weir_upstream_add(u, "127.0.0.1", 1), WEIR_ERR_INVAL, "no port");
    cr_expect_eq(weir_upstream_add(u, "127.0.0.1:8002", 10000), WEIR_OK);
    cr_expect_eq(weir_upstream_add(u, "[::1]:8001", 1), WEIR_OK);
    cr_expect_eq(weir_upstream_info(u, NULL, 0), 3);

    cr_expect_eq(weir_upstream_remove(u, "127.0.0.1:9999"), WEIR_ERR_INVAL, "remove unknown");
    cr_expect_eq(weir_upstream_remove(u, "127.0.0.1:8002"), WEIR_OK);
    cr_expect_eq(weir_upstream_remove(u, "127.0.0.1:8002"), WEIR_ERR_INVAL, "removed twice");
    cr_expect_eq(weir_upstream_set_weight(u, "127.0.0.1:9999", 2), WEIR_ERR_INVAL);
    cr_expect_eq(weir_upstream_set_weight(u, "127.0.0.1:8001", 0), WEIR_ERR_INVAL);
    cr_expect_eq(weir_upstream_set_weight(u, "127.0.0.1:8001", 10001), WEIR_ERR_INVAL);
    cr_expect_eq(weir_upstream_set_drain(u, "127.0.0.1:9999", true), WEIR_ERR_INVAL);
    cr_expect_eq(weir_upstream_info(u, NULL, 0), 2);
    weir_upstream_free(u);
}

Test(lb_members, remove_while_held)
{
    weir_upstream *u = mk_with(WEIR_LB_ROUND_ROBIN, NULL, 2);
    uint64_t ida = id_of(u, addr_of(0));
    weir_backend *held = get(u, ida);
    weir_backend *held2 = get(u, ida);
    cr_assert_eq(weir_upstream_remove(u, addr_of(0)), WEIR_OK);
    /* still a valid reference */
    cr_expect_str_eq(weir_backend_addr(held), addr_of(0));
    cr_expect_eq(weir_backend_id(held), ida);
    cr_expect_eq(weir_upstream_info(u, NULL, 0), 1);
    cr_expect_str_eq(info_of(u, addr_of(1)).addr, addr_of(1));
    cr_expect_eq(picks_of_a(u, 10, NULL), 0, "removed member selected");
    expect_no_find(u, ida, "removed member");
    /* more membership churn while the references are out */
    cr_assert_eq(weir_upstream_add(u, addr_of(2), 1), WEIR_OK);
    cr_assert_eq(weir_upstream_set_weight(u, addr_of(1), 3), WEIR_OK);
    weir_backend_done(held, WEIR_BACKEND_OK);
    cr_assert_eq(weir_upstream_add(u, addr_of(0), 1), WEIR_OK); /* back, as a new member */
    cr_expect_eq(info_of(u, addr_of(0)).in_flight, 0);
    weir_backend_done(held2, WEIR_BACKEND_FAILED);
    cr_expect_eq(info_of(u, addr_of(0)).failures, 0, "the old member's failure counted");
    weir_upstream_free(u);
}

Test(lb_members, set_weight_changes_round_robin)
{
    weir_upstream *u = mk_with(WEIR_LB_ROUND_ROBIN, NULL, 2);
    long c[MAXB] = {0};
    count_picks(u, 1000, c);
    cr_expect(c[0] == 500 && c[1] == 500, "1:1 gave %ld/%ld", c[0], c[1]);
    cr_assert_eq(weir_upstream_set_weight(u, addr_of(0), 3), WEIR_OK);
    cr_expect_eq(info_of(u, addr_of(0)).weight, 3);
    memset(c, 0, sizeof(c));
    count_picks(u, 1000, c);
    cr_expect(c[0] == 750 && c[1] == 250, "3:1 gave %ld/%ld", c[0], c[1]);
    cr_assert_eq(weir_upstream_set_weight(u, addr_of(1), 9), WEIR_OK);
    memset(c, 0, sizeof(c));
    count_picks(u, 1200, c);
    cr_expect(c[0] == 300 && c[1] == 900, "3:9 gave %ld/%ld", c[0], c[1]);
    weir_upstream_free(u);
}

Test(lb_members, set_weight_keeps_state)
{
    weir_upstream *u = mk_with(WEIR_LB_ROUND_ROBIN, NULL, 2);
    uint64_t ida = id_of(u, addr_of(0));
    fail_n(u, ida, 2);
    weir_backend_info before = info_of(u, addr_of(0));
    cr_assert_eq(weir_upstream_set_drain(u, addr_of(1), true), WEIR_OK);
    cr_assert_eq(weir_upstream_set_weight(u, addr_of(0), 4), WEIR_OK);
    cr_assert_eq(weir_upstream_set_weight(u, addr_of(1), 4), WEIR_OK);
    weir_backend_info after = info_of(u, addr_of(0));
    cr_expect_eq(after.weight, 4);
    cr_expect_eq(after.requests, before.requests);
    cr_expect_eq(after.failures, 2);
    cr_expect(info_of(u, addr_of(1)).draining, "drain lost by set_weight");
    /* the consecutive count survives: one more failure opens it */
    fail_n(u, ida, 1);
    cr_expect_eq(info_of(u, addr_of(0)).breaker, WEIR_BREAKER_OPEN);
    weir_upstream_free(u);
}

Test(lb_members, info_counts)
{
    weir_upstream *u = mk_with(WEIR_LB_ROUND_ROBIN, (const uint32_t[]){1, 1}, 2);
    weir_backend_info v[MAXB];
    cr_assert_eq(weir_upstream_info(u, v, MAXB), 2);
    for (int i = 0; i < 2; i++) {
        cr_expect_str_eq(v[i].addr, addr_of(i), "members in insertion order");
        cr_expect_eq(v[i].weight, 1);
        cr_expect(v[i].healthy);
        cr_expect_not(v[i].draining);
        cr_expect_eq(v[i].breaker, WEIR_BREAKER_CLOSED);
        cr_expect_eq(v[i].in_flight, 0);
        cr_expect_eq(v[i].requests, 0);
        cr_expect_eq(v[i].failures, 0);
    }
    /* 6 picks held: 3 each */
    weir_backend *held[6];
    for (int i = 0; i < 6; i++) {
        held[i] = weir_upstream_select(u, 0, NULL, 0);
        cr_assert_not_null(held[i]);
    }
    cr_assert_eq(weir_upstream_info(u, v, MAXB), 2);
    for (int i = 0; i < 2; i++) {
        cr_expect_eq(v[i].in_flight, 3, "%s in flight %llu", v[i].addr,
                     (unsigned long long)v[i].in_flight);
        cr_expect_eq(v[i].requests, 3);
    }
    /* A: 2 failed, 1 ok; B: 1 not relevant, 2 ok */
    int fa = 0, nb = 0;
    for (int i = 0; i < 6; i++) {
        weir_backend_outcome o;
        if (idx_of(held[i]) == 0)
            o = fa++ < 2 ? WEIR_BACKEND_FAILED : WEIR_BACKEND_OK;
        else
            o = nb++ < 1 ? WEIR_BACKEND_NOT_RELEVANT : WEIR_BACKEND_OK;
        weir_backend_done(held[i], o);
        cr_assert_eq(weir_upstream_info(u, v, MAXB), 2);
        cr_expect_eq(v[0].in_flight + v[1].in_flight, (uint64_t)(5 - i));
    }
    cr_assert_eq(weir_upstream_info(u, v, MAXB), 2);
    cr_expect_eq(v[0].in_flight, 0);
    cr_expect_eq(v[1].in_flight, 0);
    cr_expect_eq(v[0].requests, 3);
    cr_expect_eq(v[1].requests, 3);
    cr_expect_eq(v[0].failures, 2);
    cr_expect_eq(v[1].failures, 0);
    cr_expect_eq(v[0].breaker, WEIR_BREAKER_CLOSED);
    /* max caps the copy, the count is still every member */
    cr_expect_eq(weir_upstream_info(u, v, 1), 2);
    /* drain shows */
    cr_assert_eq(weir_upstream_set_drain(u, addr_of(1), true), WEIR_OK);
    cr_expect(info_of(u, addr_of(1)).draining);
    cr_expect_not(info_of(u, addr_of(0)).draining);
    weir_upstream_free(u);
}

/* ---- 7. concurrency ---- */

#define SEL_THREADS 4
#define SEL_ITERS 50000

typedef struct conc {
    weir_upstream *u;
    atomic_int running;
    atomic_long picked;
} conc;

typedef struct sel_arg {
    conc *c;
    int seed;
} sel_arg;

static void *selector(void *p)
{
    sel_arg *a = p;
    long picked = 0, bad = 0;
    weir_backend *held[4] = {0};
    for (long i = 0; i < SEL_ITERS; i++) {
        uint64_t key = key_of(i * SEL_THREADS + a->seed);
        weir_backend *b = weir_upstream_select(a->c->u, key, NULL, 0);
        if (!b)
            continue;
        picked++;
        const char *addr = weir_backend_addr(b);
        if (strncmp(addr, "127.0.0.1:80", 12) != 0)
            bad++;
        /* hold up to 4 at a time to keep loads varied */
        size_t slot = (size_t)(i % 4);
        if (held[slot])
            weir_backend_done(held[slot], i % 7 == 0 ? WEIR_BACKEND_FAILED : WEIR_BACKEND_OK);
        held[slot] = b;
    }
    for (size_t s = 0; s < 4; s++) {
        if (held[s])
            weir_backend_done(held[s], WEIR_BACKEND_OK);
    }
    atomic_fetch_add(&a->c->picked, picked);
    atomic_fetch_sub(&a->c->running, 1);
    return (void *)(intptr_t)bad;
}

static void *mutator(void *p)
{
    conc *c = p;
    unsigned it = 0;
    /* 0 and 1 stay; 2..5 come and go. Bounded: every change leaves a
     * snapshot retired for a minute. */
    while (atomic_load(&c->running) > 0 && it < 1000) {
        int k = 2 + (int)(it % 4);
        const char *a = addr_of(k);
        switch ((it / 4) % 4) {
        case 0:
            weir_upstream_add(c->u, a, 1 + it % 5);
            break;
        case 1:
            weir_upstream_set_weight(c->u, a, 1 + (it * 7) % 9);
            weir_upstream_set_weight(c->u, addr_of((int)(it % 2)), 1 + it % 3);
            break;
        case 2:
            weir_upstream_set_drain(c->u, a, it % 8 < 4);
            break;
        case 3:
            weir_upstream_remove(c->u, a);
            break;
        }
        it++;
        nanosleep(&(struct timespec){0, 200000}, NULL);
    }
    return NULL;
}

static void concurrency(weir_lb_algo algo)
{
    conc c = {.u = mk(algo, 0, 10000)}; /* no breaker: members stay usable */
    for (int i = 0; i < 4; i++)
        cr_assert_eq(weir_upstream_add(c.u, addr_of(i), 1), WEIR_OK);
    atomic_store(&c.running, SEL_THREADS);
    pthread_t sel[SEL_THREADS], mut;
    sel_arg args[SEL_THREADS];
    for (int i = 0; i < SEL_THREADS; i++) {
        args[i] = (sel_arg){&c, i};
        cr_assert_eq(pthread_create(&sel[i], NULL, selector, &args[i]), 0);
    }
    cr_assert_eq(pthread_create(&mut, NULL, mutator, &c), 0);
    long bad = 0;
    for (int i = 0; i < SEL_THREADS; i++) {
        void *r;
        pthread_join(sel[i], &r);
        bad += (long)(intptr_t)r;
    }
    pthread_join(mut, NULL);
    cr_expect_eq(bad, 0, "%ld selections returned a foreign address", bad);
    cr_expect_gt(atomic_load(&c.picked), SEL_THREADS * SEL_ITERS / 2);

    weir_backend_info v[MAXB];
    size_t n = weir_upstream_info(c.u, v, MAXB);
    cr_expect_geq(n, 2);
    cr_expect_leq(n, 6);
    for (size_t i = 0; i < n && i < MAXB; i++) {
        cr_expect_eq(v[i].in_flight, 0, "%s: %llu in flight at the end", v[i].addr,
                     (unsigned long long)v[i].in_flight);
        cr_expect_leq(v[i].failures, v[i].requests, "%s", v[i].addr);
        cr_expect_eq(v[i].breaker, WEIR_BREAKER_CLOSED);
    }
    /* still works afterwards */
    for (int i = 0; i < 6; i++)
        weir_upstream_set_drain(c.u, addr_of(i), false);
    weir_backend *b = weir_upstream_select(c.u, 42, NULL, 0);
    cr_assert_not_null(b);
    weir_backend_done(b, WEIR_BACKEND_OK);
    weir_upstream_free(c.u);
}

Test(lb_concurrency, least_conn_with_churn, .timeout = 30)
{
    concurrency(WEIR_LB_LEAST_CONN);
}

Test(lb_concurrency, round_robin_with_churn, .timeout = 30)
{
    concurrency(WEIR_LB_ROUND_ROBIN);
}

Test(lb_concurrency, ketama_with_churn, .timeout = 30)
{
    concurrency(WEIR_LB_KETAMA);
}

/* ---- 8. scale: the round-robin schedule, many members, table sizes ---- */

static uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* The first np picks of weights w[0..n) are those of nginx's rule, run
 * literally: every current grows by its weight, the largest (the lowest
 * index on a tie) wins and loses the total. Returns the picks. */
static uint32_t *expect_nginx_order(const uint32_t *w, size_t n, size_t np)
{
    weir_upstream *u = mk_big(WEIR_LB_ROUND_ROBIN, w, n);
    uint32_t *got = malloc(np * sizeof(*got));
    int64_t *cur = calloc(n, sizeof(*cur)), total = 0;
    cr_assert(got && cur);
    for (size_t i = 0; i < n; i++)
        total += w[i];
    size_t bad = 0;
    for (size_t p = 0; p < np; p++) {
        size_t best = 0;
        for (size_t i = 0; i < n; i++) {
            cur[i] += w[i];
            best = cur[i] > cur[best] ? i : best;
        }
        cur[best] -= total;
        got[p] = (uint32_t)next_pick(u, 0);
        if (got[p] != best && bad++ < 3)
            cr_expect_eq(got[p], best, "%zu members, pick %zu: %u, nginx %zu", n, p, got[p], best);
    }
    cr_expect_eq(bad, 0, "%zu members: %zu of %zu picks differ from nginx's", n, bad, np);
    free(cur);
    weir_upstream_free(u);
    return got;
}

Test(lb_rr, same_order_as_nginx)
{
    uint64_t x = 88172645463325252ull, total;
    uint32_t w[40], max[] = {3, 100, 10000, 1}; /* small, medium, large; one heavy */
    for (int round = 0; round < 48; round++) {
        size_t n = 1 + xorshift(&x) % 40;
        for (size_t i = 0; i < n; i++)
            w[i] = 1 + (uint32_t)(xorshift(&x) % max[round % 4]);
        if (round % 4 == 3)
            w[xorshift(&x) % n] = 5000;
        total = 0;
        for (size_t i = 0; i < n; i++)
            total += w[i];
        free(expect_nginx_order(w, n, total * 2 < 20000 ? (size_t)total * 2 : 20000));
    }
    /* A period past the cap (65536 picks here) keeps its start, in which
     * nginx's rule gives every member its share within one pick. */
    for (size_t i = 0; i < 20; i++)
        w[i] = 10000 - 7 * (uint32_t)i;
    cr_assert_lt(weir__lb_rr_max_period(20), 20 * 9000);
    free(expect_nginx_order(w, 20, weir__lb_rr_max_period(20)));
}

/* Whole periods give every member exactly its weight: N = 1, one huge
 * weight (the light ones spread out); all equal in lb_scale below. */
Test(lb_rr, whole_cycle_edge_cases)
{
    free(expect_nginx_order((const uint32_t[]){7}, 1, 50));
    uint32_t *got = expect_nginx_order((const uint32_t[]){10000, 1, 1, 1, 1}, 5, 2 * 10004);
    long counts[5] = {0}, last = -10000;
    for (size_t p = 0; p < 2 * 10004; p++) {
        counts[got[p]]++;
        if (got[p] != 0) {
            cr_expect_geq((long)p - last, 1900, "light picks %ld and %zu", last, p);
            last = (long)p;
        }
    }
    cr_expect(counts[0] == 20000 && counts[1] == 2 && counts[2] == 2 && counts[3] == 2 &&
              counts[4] == 2);
    free(got);
}

/* 10,000 members: they load, the tables are linear in N, every member gets
 * its share (round robin: exactly, in order; Maglev: 104 or 105 of 1048573
 * entries; Ketama: arcs within a factor of two of the fair one). */
Test(lb_scale, ten_thousand_members, .timeout = 120)
{
    const size_t n = 10000;
    const weir_lb_algo algos[] = {WEIR_LB_ROUND_ROBIN, WEIR_LB_MAGLEV, WEIR_LB_KETAMA};
    long *counts = calloc(n, sizeof(*counts)); /* Maglev entries per member */
    cr_assert_not_null(counts);
    for (size_t a = 0; a < 3; a++) {
        weir_upstream *u = mk_big(algos[a], NULL, n);
        cr_assert_eq(weir_upstream_prepare(u), WEIR_OK);
        const lb_snapshot *s = atomic_load(&u->snap);
        if (algos[a] == WEIR_LB_ROUND_ROBIN) { /* all weights equal: in order */
            cr_expect_eq(s->rr_period, n);
            for (size_t p = 0; p < 2 * n; p++)
                cr_expect_eq(next_pick(u, 0), p % n);
        } else if (algos[a] == WEIR_LB_MAGLEV) {
            cr_expect_eq(s->n_maglev, 1048573);
            for (size_t k = 0; k < s->n_maglev; k++)
                counts[s->maglev[k]]++;
            for (size_t i = 0; i < n; i++)
                cr_expect(counts[i] == 104 || counts[i] == 105, "member %zu: %ld entries", i,
                          counts[i]);
        } else {
            cr_expect_eq(s->n_ring, 160 * n);
            double fair = 18446744073709551616.0 / (double)n;
            double *share = calloc(n, sizeof(*share));
            for (size_t k = 0; k < s->n_ring; k++) /* the arc before each point */
                share[s->ring_owner[k]] +=
                    (double)(s->ring[k] - s->ring[k ? k - 1 : s->n_ring - 1]);
            for (size_t i = 0; i < n; i++)
                cr_expect(share[i] > fair / 2 && share[i] < fair * 2, "member %zu: %.2f of fair", i,
                          share[i] / fair);
            free(share);
        }
        weir_upstream_free(u);
    }
    free(counts);
    /* Maglev sizes: the documented steps */
    const size_t steps[][2] = {{1, 65537},         {655, 65537},     {656, 131071},
                               {10485, 1048573},   {10486, 2097143}, {167772, 16777213},
                               {1000000, 16777213}};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++)
        cr_expect_eq(weir__lb_maglev_size(steps[i][0]), steps[i][1], "%zu members", steps[i][0]);
}

/* Changes record at once and build nothing: the next selection builds one
 * snapshot for all of them. */
Test(lb_scale, batch_of_changes_builds_once)
{
    weir_upstream *u = mk_big(WEIR_LB_MAGLEV, NULL, 2000);
    cr_expect_eq(weir_upstream_info(u, NULL, 0), 2000);
    cr_expect_eq(atomic_load(&u->snap)->n, 0, "tables built before any selection");
    cr_expect_lt(next_pick(u, 1), 2000);
    const lb_snapshot *s = atomic_load(&u->snap);
    cr_expect_eq(s->n, 2000);
    cr_expect_eq(s->version, atomic_load(&u->version));
    cr_expect_eq(next_pick(u, 2), next_pick(u, 2));
    cr_expect_eq(atomic_load(&u->snap), s, "rebuilt without a change");
    char a[32];
    for (size_t i = 0; i < 1000; i++) {
        snprintf(a, sizeof(a), "127.0.0.1:%zu", BIG_PORT + i);
        cr_assert_eq(weir_upstream_remove(u, a), WEIR_OK);
    }
    for (long i = 0; i < 5000; i++)
        cr_expect_geq(next_pick(u, key_of(i)), 1000, "key-%ld on a removed member", i);
    cr_expect_eq(atomic_load(&u->snap)->n, 1000);
    weir_upstream_free(u);
}

/* The member index against a model, through adds, removes and re-weights. */
Test(lb_members, index_matches_a_model)
{
    weir_upstream *u = mk(WEIR_LB_ROUND_ROBIN, 3, 10000);
    bool in[300] = {0};
    size_t n_in = 0;
    uint64_t x = 2463534242ull;
    char a[32];
    for (int op = 0; op < 30000; op++) {
        size_t i = xorshift(&x) % 300;
        snprintf(a, sizeof(a), "127.0.0.1:%zu", BIG_PORT + i);
        int what = (int)(xorshift(&x) % 3);
        int rc = what == 0   ? weir_upstream_add(u, a, 1)
                 : what == 1 ? weir_upstream_remove(u, a)
                             : weir_upstream_set_weight(u, a, 2);
        /* add fails on a member, remove and set_weight on a non-member */
        cr_assert_eq(rc, (what == 0) == in[i] ? WEIR_ERR_INVAL : WEIR_OK, "op %d, %s", what, a);
        if (what < 2 && in[i] != (what == 0)) {
            n_in = what == 0 ? n_in + 1 : n_in - 1;
            in[i] = what == 0;
        }
        if (op % 997 == 0 && n_in) {
            cr_assert_eq(weir_upstream_info(u, NULL, 0), n_in);
            cr_assert(in[next_pick(u, 0)], "a removed member was selected");
        }
    }
    weir_upstream_free(u);
}

Test(lb_members, max_backends, .timeout = 60)
{
    weir_upstream *u = mk(WEIR_LB_ROUND_ROBIN, 3, 10000);
    char a[32];
    for (size_t i = 0; i <= WEIR_UPSTREAM_MAX_BACKENDS; i++) {
        snprintf(a, sizeof(a), "127.%zu.%zu.%zu:80", i >> 16, (i >> 8) & 255, i & 255);
        cr_assert_eq(weir_upstream_add(u, a, 1),
                     i < WEIR_UPSTREAM_MAX_BACKENDS ? WEIR_OK : WEIR_ERR_INVAL, "add %zu", i);
    }
    cr_expect_eq(weir_upstream_remove(u, "127.0.0.0:80"), WEIR_OK);
    cr_expect_eq(weir_upstream_add(u, a, 1), WEIR_OK);
    cr_expect_eq(weir_upstream_info(u, NULL, 0), WEIR_UPSTREAM_MAX_BACKENDS);
    weir_upstream_free(u);
}

/* ---- 9. algorithm names ---- */

Test(lb_algo, parse_name_round_trip)
{
    const char *names[] = {"round_robin", "random", "least_conn", "p2c", "ketama", "maglev"};
    const weir_lb_algo want[] = {WEIR_LB_ROUND_ROBIN, WEIR_LB_RANDOM, WEIR_LB_LEAST_CONN,
                                 WEIR_LB_P2C,         WEIR_LB_KETAMA, WEIR_LB_MAGLEV};
    for (size_t i = 0; i < 6; i++) {
        weir_lb_algo a = (weir_lb_algo)-1;
        cr_expect_eq(weir_lb_algo_parse(names[i], &a), WEIR_OK, "%s", names[i]);
        cr_expect_eq(a, want[i], "%s", names[i]);
        cr_expect_str_eq(weir_lb_algo_name(a), names[i]);
        weir_lb_algo back;
        cr_expect_eq(weir_lb_algo_parse(weir_lb_algo_name(want[i]), &back), WEIR_OK);
        cr_expect_eq(back, want[i]);
    }
}

Test(lb_algo, parse_rejects_unknown)
{
    const char *bad[] = {"",           "roundrobin", "Round_Robin", "ROUND_ROBIN", "least_conn ",
                         " ketama",    "maglev2",    "p2",          "hash",        "least",
                         "consistent", "rr"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        weir_lb_algo a = WEIR_LB_MAGLEV;
        cr_expect_eq(weir_lb_algo_parse(bad[i], &a), WEIR_ERR_INVAL, "\"%s\" accepted", bad[i]);
        cr_expect_eq(a, WEIR_LB_MAGLEV, "\"%s\": output written on failure", bad[i]);
    }
    cr_expect_str_eq(weir_lb_algo_name((weir_lb_algo)6), "?");
    cr_expect_str_eq(weir_lb_algo_name((weir_lb_algo)100), "?");
}
