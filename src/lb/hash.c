/*
 * hash.c - the tables behind consistent hashing: the Ketama ring and the
 * Maglev lookup table (the round-robin schedule is in rr.c).
 *
 * Both are linear in the members: the ring has 160 points per unit of
 * weight up to KETAMA_MAX_POINTS in all (about 13 bytes a point with its
 * index), the Maglev table 100 to 200 entries per member (4 bytes each),
 * see weir__lb_maglev_size().
 */
#include <stdlib.h>
#include <string.h>

#include "lb/upstream_int.h"

#define KETAMA_POINTS 160           /* per unit of weight */
#define KETAMA_MAX_POINTS (1 << 21) /* ring size cap (24 MiB of points) */

#define FNV_BASIS 1469598103934665603ull

static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static uint64_t finalize(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* FNV-1a, then a murmur3-style finalizer so that nearby inputs ("a-1",
 * "a-2") land far apart on the ring. */
uint64_t weir_lb_hash(const void *data, size_t len)
{
    return finalize(fnv1a(FNV_BASIS, data, len));
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

/* ---- Ketama ---- */

/* The points of a member of weight w when the weights add up to total:
 * 160 per unit, or, on rings that would pass the cap, an equal share of it
 * per unit (then keys can move between survivors when members change). */
static size_t ketama_points(uint64_t w, uint64_t total)
{
    if (total * KETAMA_POINTS <= KETAMA_MAX_POINTS)
        return (size_t)(w * KETAMA_POINTS);
    if (total <= KETAMA_MAX_POINTS)
        return (size_t)(w * (KETAMA_MAX_POINTS / total));
    /* Heavier than the cap in units: the ring holds about the cap, and
     * every member at least one point. */
    uint64_t p = w * KETAMA_MAX_POINTS / total;
    return p ? (size_t)p : 1;
}

/* The hash of point p of a member, weir_lb_hash("ADDR-p"), from `prefix`,
 * the FNV state after "ADDR" (hashed once per member, not per point). */
static uint64_t point_hash(uint64_t prefix, uint32_t p)
{
    char buf[12];
    size_t len = 0;
    buf[len++] = '-';
    char digits[10];
    size_t nd = 0;
    do {
        digits[nd++] = (char)('0' + p % 10);
        p /= 10;
    } while (p);
    while (nd)
        buf[len++] = digits[--nd];
    return finalize(fnv1a(prefix, buf, len));
}

/*
 * The ring is sorted by (hash, owner) with one distribution pass on the top
 * bits of the hash into buckets of about four points, then an insertion sort
 * per bucket: O(points), where qsort took 300 ms for 10,000 members. The
 * bucket starts stay as an index for lookups (a bit over a byte a point):
 * a lookup reads its bucket only, instead of a binary search over a ring
 * that outgrows the caches.
 */
int weir__lb_build_ketama(lb_snapshot *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += ketama_points(s->w[i], s->total_weight);
    if (n == 0)
        return 0;
    unsigned bits = 1;
    while (bits < 24 && ((size_t)1 << bits) < n / 4)
        bits++;
    size_t nb = (size_t)1 << bits;
    unsigned shift = 64 - bits;
    uint64_t *hash = malloc(n * sizeof(*hash));
    uint32_t *at = malloc(nb * sizeof(*at));
    s->ring = malloc(n * sizeof(*s->ring));
    s->ring_owner = malloc(n * sizeof(*s->ring_owner));
    s->ring_start = calloc(nb + 1, sizeof(*s->ring_start));
    if (!hash || !at || !s->ring || !s->ring_owner || !s->ring_start) {
        free(hash);
        free(at);
        return WEIR_ERR_NOMEM;
    }
    /* Points derive from the address alone, so a backend's points are the
     * same whoever else is in the ring: removing one moves only the keys
     * that were on it. */
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++) {
        const char *text = s->v[i]->text;
        uint64_t prefix = fnv1a(FNV_BASIS, text, strlen(text));
        size_t np = ketama_points(s->w[i], s->total_weight);
        for (size_t p = 0; p < np; p++) {
            hash[k] = point_hash(prefix, (uint32_t)p);
            s->ring_start[(hash[k] >> shift) + 1]++;
            k++;
        }
    }
    for (size_t b = 0; b < nb; b++) {
        s->ring_start[b + 1] += s->ring_start[b];
        at[b] = s->ring_start[b];
    }
    k = 0;
    for (size_t i = 0; i < s->n; i++) {
        size_t np = ketama_points(s->w[i], s->total_weight);
        for (size_t p = 0; p < np; p++, k++) {
            uint32_t pos = at[hash[k] >> shift]++;
            s->ring[pos] = hash[k];
            s->ring_owner[pos] = (uint32_t)i;
        }
    }
    /* Within a bucket, owners arrived in increasing order: a stable sort on
     * the hash orders equal hashes by owner, deterministically. */
    for (size_t b = 0; b < nb; b++) {
        for (size_t i = s->ring_start[b] + 1; i < s->ring_start[b + 1]; i++) {
            uint64_t h = s->ring[i];
            uint32_t o = s->ring_owner[i];
            size_t j = i;
            for (; j > s->ring_start[b] && s->ring[j - 1] > h; j--) {
                s->ring[j] = s->ring[j - 1];
                s->ring_owner[j] = s->ring_owner[j - 1];
            }
            s->ring[j] = h;
            s->ring_owner[j] = o;
        }
    }
    s->n_ring = n;
    s->ring_shift = shift;
    free(hash);
    free(at);
    return 0;
}

long weir__lb_ketama_lookup(const lb_snapshot *s, uint64_t key, size_t skip)
{
    if (s->n_ring == 0)
        return -1;
    /* First point >= key, wrapping; `skip` walks further clockwise. Points
     * before key's bucket are smaller, those after it larger. */
    size_t b = (size_t)(key >> s->ring_shift);
    size_t lo = s->ring_start[b], hi = s->ring_start[b + 1];
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

/*
 * The table size M: prime, and at least 100 entries per member for an even
 * spread (each member's share is then within about 1% of its weight's).
 * M depends on the member count alone, so every weir with the same members
 * has the same table; it steps through primes near powers of two, so the
 * table is 256 KiB up to 655 members, then 400 to 800 bytes per member. A
 * change that crosses a step (656, 1311, 2622, 5243, 10486, ... members)
 * remaps most keys, as it would in any Maglev that keeps M >= 100 N. Past
 * 167,772 members M stays at the largest (64 MiB) and the spread coarsens.
 * Filling the table costs about M log M probes (0.05 s for 10,000 members).
 */
static const size_t maglev_primes[] = {65537,   131071,  262139,  524287,  1048573,
                                       2097143, 4194301, 8388593, 16777213};
#define N_MAGLEV_PRIMES (sizeof(maglev_primes) / sizeof(maglev_primes[0]))

size_t weir__lb_maglev_size(size_t n)
{
    for (size_t i = 0; i < N_MAGLEV_PRIMES; i++) {
        if (maglev_primes[i] >= n * 100)
            return maglev_primes[i];
    }
    return maglev_primes[N_MAGLEV_PRIMES - 1];
}

/* Members by address, then weight (a qsort_r comparison on indices). */
static int by_text(const void *a, const void *b, void *arg)
{
    const lb_snapshot *s = arg;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    int c = strcmp(s->v[i]->text, s->v[j]->text);
    if (c != 0)
        return c;
    return s->w[i] < s->w[j] ? -1 : s->w[i] > s->w[j];
}

int weir__lb_build_maglev(lb_snapshot *s)
{
    if (s->n == 0)
        return 0;
    size_t m = weir__lb_maglev_size(s->n);
    uint64_t g = 0;
    for (size_t i = 0; i < s->n; i++)
        g = gcd(g, s->w[i]);
    if (g == 0)
        g = 1; /* weights are >= 1; this only keeps the division defined */
    /* Member i's preference list is offset, offset + skip, ... (mod m):
     * pos is where its walk stands. */
    uint64_t *pos = malloc(s->n * sizeof(*pos));
    uint64_t *skip = malloc(s->n * sizeof(*skip));
    size_t *order = malloc(s->n * sizeof(*order));
    s->maglev = malloc(m * sizeof(*s->maglev));
    if (!pos || !skip || !order || !s->maglev) {
        free(pos);
        free(skip);
        free(order);
        free(s->maglev);
        s->maglev = NULL;
        return WEIR_ERR_NOMEM;
    }
    /* Members take their turns in the order of their addresses, not of the
     * config: which member wins a contested entry must not depend on how
     * the list was written, or listing the same backends in another order
     * (or adding one in the middle) would move keys between the others. */
    for (size_t i = 0; i < s->n; i++)
        order[i] = i;
    qsort_r(order, s->n, sizeof(*order), by_text, s);
    for (size_t i = 0; i < s->n; i++) {
        const char *t = s->v[i]->text;
        uint64_t h1 = weir_lb_hash(t, strlen(t));
        uint64_t h2 = weir_lb_hash(&h1, sizeof(h1));
        pos[i] = h1 % m;
        skip[i] = h2 % (m - 1) + 1;
    }
    memset(s->maglev, 0xff, m * sizeof(*s->maglev));
    size_t filled = 0;
    while (filled < m) {
        for (size_t k = 0; k < s->n && filled < m; k++) {
            size_t i = order[k];
            /* a backend of weight w takes w turns per round */
            for (uint64_t turn = 0; turn < s->w[i] / g && filled < m; turn++) {
                uint64_t c = pos[i];
                while (s->maglev[c] != UINT32_MAX) {
                    c += skip[i];
                    if (c >= m)
                        c -= m;
                }
                s->maglev[c] = (uint32_t)i;
                filled++;
                c += skip[i];
                pos[i] = c >= m ? c - m : c;
            }
        }
    }
    s->n_maglev = m;
    free(pos);
    free(skip);
    free(order);
    return 0;
}

long weir__lb_maglev_lookup(const lb_snapshot *s, uint64_t key)
{
    if (s->n_maglev == 0)
        return -1;
    return (long)s->maglev[key % s->n_maglev];
}
