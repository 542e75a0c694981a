/*
 * hash.c - the tables behind the selection algorithms: the smooth weighted
 * round-robin sequence, the Ketama ring and the Maglev lookup table.
 */
#include <stdlib.h>
#include <string.h>

#include "lb/upstream_int.h"

#define KETAMA_POINTS 160           /* per unit of weight */
#define KETAMA_MAX_POINTS (1 << 21) /* ring size cap (32 MiB of points) */
#define MAX_RR_PERIOD 65536

/* FNV-1a, then a murmur3-style finalizer so that nearby inputs ("a-1",
 * "a-2") land far apart on the ring. */
uint64_t weir_lb_hash(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
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
    int64_t *cur = calloc(s->n, sizeof(*cur));
    if (!cur)
        return WEIR_ERR_NOMEM;
    for (size_t i = 0; i < s->n; i++)
        total += s->w[i] / g;
    /* One period is `total` picks; past the cap a prefix keeps the
     * proportions within 1/MAX_RR_PERIOD. */
    s->rr_period = total > MAX_RR_PERIOD ? MAX_RR_PERIOD : (size_t)total;
    s->rr_seq = malloc(s->rr_period * sizeof(*s->rr_seq));
    if (!s->rr_seq) {
        free(cur);
        return WEIR_ERR_NOMEM;
    }
    for (size_t k = 0; k < s->rr_period; k++) {
        size_t best = 0;
        for (size_t i = 0; i < s->n; i++) {
            cur[i] += (int64_t)(s->w[i] / g);
            if (cur[i] > cur[best])
                best = i;
        }
        cur[best] -= (int64_t)total;
        s->rr_seq[k] = (uint32_t)best;
    }
    free(cur);
    return 0;
}

/* ---- Ketama ---- */

typedef struct point {
    uint64_t hash;
    uint32_t owner;
} point;

static int cmp_point(const void *a, const void *b)
{
    const point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->owner < y->owner ? -1 : x->owner > y->owner; /* deterministic on collisions */
}

int weir__lb_build_ketama(lb_snapshot *s)
{
    /* 160 points per weight unit; only rings that would pass the cap get
     * fewer (then keys can move between survivors when members change). */
    uint64_t total = 0;
    for (size_t i = 0; i < s->n; i++)
        total += s->w[i];
    uint32_t ppu = KETAMA_POINTS;
    if (total * KETAMA_POINTS > KETAMA_MAX_POINTS)
        ppu = total >= KETAMA_MAX_POINTS ? 1 : (uint32_t)(KETAMA_MAX_POINTS / total);
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += (size_t)s->w[i] * ppu;
    if (n == 0)
        return 0;
    point *pts = malloc(n * sizeof(*pts));
    s->ring = malloc(n * sizeof(*s->ring));
    s->ring_owner = malloc(n * sizeof(*s->ring_owner));
    if (!pts || !s->ring || !s->ring_owner) {
        free(pts);
        return WEIR_ERR_NOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++) {
        /* Points derive from the address alone, so a backend's points are
         * the same whoever else is in the ring: removing one moves only
         * the keys that were on it. */
        char buf[96];
        size_t tl = strlen(s->v[i]->text);
        memcpy(buf, s->v[i]->text, tl);
        for (uint32_t p = 0; p < s->w[i] * ppu; p++) {
            size_t len = tl;
            buf[len++] = '-';
            uint32_t v = p;
            char digits[12];
            size_t nd = 0;
            do {
                digits[nd++] = (char)('0' + v % 10);
                v /= 10;
            } while (v);
            while (nd)
                buf[len++] = digits[--nd];
            pts[k].hash = weir_lb_hash(buf, len);
            pts[k].owner = (uint32_t)i;
            k++;
        }
    }
    qsort(pts, n, sizeof(*pts), cmp_point);
    for (size_t i = 0; i < n; i++) {
        s->ring[i] = pts[i].hash;
        s->ring_owner[i] = pts[i].owner;
    }
    s->n_ring = n;
    free(pts);
    return 0;
}

long weir__lb_ketama_lookup(const lb_snapshot *s, uint64_t key, size_t skip)
{
    if (s->n_ring == 0)
        return -1;
    /* first point >= key, wrapping; `skip` walks further clockwise */
    size_t lo = 0, hi = s->n_ring;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->ring[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (long)s->ring_owner[(lo + skip) % s->n_ring];
}

/* ---- Maglev (Eisenbud et al., NSDI 2016), weighted by turns ---- */

static size_t maglev_size(size_t n)
{
    /* prime, and at least ~100x the members for an even spread */
    static const size_t primes[] = {65537, 655373, 6553621};
    for (size_t i = 0; i < sizeof(primes) / sizeof(primes[0]); i++) {
        if (primes[i] >= n * 100)
            return primes[i];
    }
    return primes[2];
}

int weir__lb_build_maglev(lb_snapshot *s)
{
    if (s->n == 0)
        return 0;
    size_t m = maglev_size(s->n);
    uint64_t g = 0;
    for (size_t i = 0; i < s->n; i++)
        g = gcd(g, s->w[i]);
    uint64_t *offset = malloc(s->n * sizeof(*offset));
    uint64_t *skip = malloc(s->n * sizeof(*skip));
    uint64_t *next = calloc(s->n, sizeof(*next));
    s->maglev = malloc(m * sizeof(*s->maglev));
    if (!offset || !skip || !next || !s->maglev) {
        free(offset);
        free(skip);
        free(next);
        return WEIR_ERR_NOMEM;
    }
    for (size_t i = 0; i < s->n; i++) {
        const char *t = s->v[i]->text;
        uint64_t h1 = weir_lb_hash(t, strlen(t));
        uint64_t h2 = weir_lb_hash(&h1, sizeof(h1));
        offset[i] = h1 % m;
        skip[i] = h2 % (m - 1) + 1;
    }
    memset(s->maglev, 0xff, m * sizeof(*s->maglev));
    size_t filled = 0;
    while (filled < m) {
        for (size_t i = 0; i < s->n && filled < m; i++) {
            /* a backend of weight w takes w turns per round */
            for (uint64_t turn = 0; turn < s->w[i] / g && filled < m; turn++) {
                uint64_t c;
                do {
                    c = (offset[i] + next[i] * skip[i]) % m;
                    next[i]++;
                } while (s->maglev[c] != UINT32_MAX);
                s->maglev[c] = (uint32_t)i;
                filled++;
            }
        }
    }
    s->n_maglev = m;
    free(offset);
    free(skip);
    free(next);
    return 0;
}

long weir__lb_maglev_lookup(const lb_snapshot *s, uint64_t key)
{
    if (s->n_maglev == 0)
        return -1;
    return (long)s->maglev[key % s->n_maglev];
}
