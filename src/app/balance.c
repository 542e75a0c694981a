/*
 * balance.c - smooth weighted round robin (see balance.h).
 */
#include "app/balance.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "app/config.h"

#define MAX_PERIOD 65536

struct weir_rr_state {
    uint32_t *seq; /* backend indexes, one period */
    size_t period;
    _Atomic uint64_t next;
};

static uint64_t gcd(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

weir_rr_state *weir__rr_new(const struct weir_cfg_upstream *u)
{
    size_t n = u->n_backends;
    if (n == 0)
        return NULL;
    uint64_t g = 0, total = 0;
    for (size_t i = 0; i < n; i++)
        g = gcd(g, u->backends[i].weight);
    int64_t *w = calloc(n, sizeof(*w));
    int64_t *cur = calloc(n, sizeof(*cur));
    weir_rr_state *rr = calloc(1, sizeof(*rr));
    if (!w || !cur || !rr)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        w[i] = (int64_t)(u->backends[i].weight / g);
        total += (uint64_t)w[i];
    }
    /* One period of the smooth sequence is `total` picks long; beyond the
     * cap, a prefix of it keeps the proportions within 1/MAX_PERIOD. */
    rr->period = total > MAX_PERIOD ? MAX_PERIOD : (size_t)total;
    rr->seq = malloc(rr->period * sizeof(*rr->seq));
    if (!rr->seq)
        goto fail;
    for (size_t k = 0; k < rr->period; k++) {
        size_t best = 0;
        for (size_t i = 0; i < n; i++) {
            cur[i] += w[i];
            if (cur[i] > cur[best])
                best = i;
        }
        cur[best] -= (int64_t)total;
        rr->seq[k] = (uint32_t)best;
    }
    free(w);
    free(cur);
    return rr;
fail:
    free(w);
    free(cur);
    if (rr)
        free(rr->seq);
    free(rr);
    return NULL;
}

void weir__rr_free(weir_rr_state *rr)
{
    if (!rr)
        return;
    free(rr->seq);
    free(rr);
}

size_t weir__rr_next(weir_rr_state *rr)
{
    uint64_t k = atomic_fetch_add_explicit(&rr->next, 1, memory_order_relaxed);
    return rr->seq[k % rr->period];
}

size_t weir__rr_period(const weir_rr_state *rr)
{
    return rr->period;
}

size_t weir__rr_at(const weir_rr_state *rr, size_t i)
{
    return rr->seq[i % rr->period];
}
