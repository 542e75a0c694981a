/*
 * rr.c - the smooth weighted round-robin schedule: one period of nginx's
 * smooth weighted round robin, computed in O((N + P) log^2 N) for N members
 * and a period of P picks.
 *
 * nginx's rule, at every pick: each member's `current` grows by its weight,
 * the largest `current` wins (the lowest index on a tie) and loses the total
 * weight T. Run literally that is O(N) per pick, so O(N * P) per period:
 * with N equal weights P = N, and a few thousand members took seconds per
 * table (once per member added, so minutes for a config).
 *
 * The same rule, written per member: after m_i picks of member i, at pick
 * t its current is t * w_i - m_i * T, a line in t of slope w_i that drops by
 * T when i wins. The winner is the top line at t, which a kinetic
 * tournament tree tracks: every node keeps the winner of its subtree and the
 * first future pick at which that could change (its loser's line crossing
 * its winner's, or a change below). A pick revisits only the nodes whose
 * time has come, plus the winner's path after its line drops. The result is
 * exactly nginx's sequence (unit tests compare it with the literal rule).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "lb/upstream_int.h"

/* Periods longer than this keep their first weir__lb_rr_max_period()
 * picks: nginx's rule is smooth, so each member's count in that prefix is
 * within about one pick of its share, and the table stays linear in N (at
 * most 16 picks, 64 bytes, per member past 4096 members). */
#define RR_MIN_CAP 65536
#define RR_PER_MEMBER 16
#define NEVER INT64_MAX

size_t weir__lb_rr_max_period(size_t n)
{
    return n * RR_PER_MEMBER > RR_MIN_CAP ? n * RR_PER_MEMBER : RR_MIN_CAP;
}

typedef struct kt {
    const int64_t *w; /* slope: reduced weight */
    int64_t *a;       /* intercept: -picks * T */
    int32_t *win;     /* per node: winning member, -1 for an empty subtree */
    int64_t *fail;    /* per node: first pick at which its winner may change */
    size_t leaves;
} kt;

static int64_t line(const kt *k, int32_t i, int64_t t)
{
    return k->a[i] + k->w[i] * t;
}

/* Whether member x beats y at pick t (nginx: the lowest index on a tie). */
static bool beats(const kt *k, int32_t x, int32_t y, int64_t t)
{
    if (y < 0)
        return true;
    if (x < 0)
        return false;
    int64_t vx = line(k, x, t), vy = line(k, y, t);
    return vx > vy || (vx == vy && x < y);
}

/* The first pick after t at which y beats x, the winner at t. */
static int64_t overtakes(const kt *k, int32_t x, int32_t y, int64_t t)
{
    /* Parallel or diverging lines: x stays ahead. */
    if (y < 0 || k->w[y] <= k->w[x])
        return NEVER;
    int64_t lead = line(k, x, t) - line(k, y, t); /* >= 0 */
    int64_t gain = k->w[y] - k->w[x];
    int64_t steps = y < x ? (lead + gain - 1) / gain /* a tie is enough */
                          : lead / gain + 1;         /* y must pass */
    return t + (steps < 1 ? 1 : steps);
}

static void pull(kt *k, size_t node, int64_t t)
{
    int32_t l = k->win[2 * node], r = k->win[2 * node + 1];
    int64_t f;
    if (beats(k, l, r, t)) {
        k->win[node] = l;
        f = l < 0 ? NEVER : overtakes(k, l, r, t);
    } else {
        k->win[node] = r;
        f = overtakes(k, r, l, t);
    }
    if (k->fail[2 * node] < f)
        f = k->fail[2 * node];
    if (k->fail[2 * node + 1] < f)
        f = k->fail[2 * node + 1];
    k->fail[node] = f;
}

/* Brings the subtree of node up to pick t. */
static void advance(kt *k, size_t node, int64_t t)
{
    if (k->fail[node] > t)
        return;
    advance(k, 2 * node, t);
    advance(k, 2 * node + 1, t);
    pull(k, node, t);
}

static uint64_t gcd(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

int weir__lb_build_rr(lb_snapshot *s)
{
    if (s->n == 0)
        return 0;
    uint64_t g = 0, total = 0;
    for (size_t i = 0; i < s->n; i++)
        g = gcd(g, s->w[i]);
    if (g == 0)
        g = 1; /* weights are >= 1; this only keeps the division defined */
    for (size_t i = 0; i < s->n; i++)
        total += s->w[i] / g;
    size_t cap = weir__lb_rr_max_period(s->n);
    s->rr_period = total > cap ? cap : (size_t)total;
    s->rr_seq = malloc(s->rr_period * sizeof(*s->rr_seq));
    if (!s->rr_seq)
        return WEIR_ERR_NOMEM;
    if (total == s->n) {
        /* All weights equal: nginx goes through the members in order. */
        for (size_t i = 0; i < s->n; i++)
            s->rr_seq[i] = (uint32_t)i;
        return 0;
    }
    kt k = {0};
    k.leaves = 2;
    while (k.leaves < s->n)
        k.leaves *= 2;
    int64_t *w = malloc(s->n * sizeof(*w));
    k.a = calloc(s->n, sizeof(*k.a));
    k.win = malloc(2 * k.leaves * sizeof(*k.win));
    k.fail = malloc(2 * k.leaves * sizeof(*k.fail));
    if (!w || !k.a || !k.win || !k.fail) {
        free(w);
        free(k.a);
        free(k.win);
        free(k.fail);
        free(s->rr_seq);
        s->rr_seq = NULL;
        return WEIR_ERR_NOMEM;
    }
    for (size_t i = 0; i < s->n; i++)
        w[i] = (int64_t)(s->w[i] / g);
    k.w = w;
    for (size_t i = 0; i < k.leaves; i++) {
        k.win[k.leaves + i] = i < s->n ? (int32_t)i : -1;
        k.fail[k.leaves + i] = NEVER;
    }
    for (size_t node = k.leaves - 1; node >= 1; node--)
        pull(&k, node, 1);
    for (size_t p = 0; p < s->rr_period; p++) {
        int64_t t = (int64_t)p + 1;
        advance(&k, 1, t);
        int32_t i = k.win[1];
        s->rr_seq[p] = (uint32_t)i;
        k.a[i] -= (int64_t)total;
        for (size_t node = (k.leaves + (size_t)i) / 2; node >= 1; node /= 2)
            pull(&k, node, t);
    }
    free(w);
    free(k.a);
    free(k.win);
    free(k.fail);
    return 0;
}
