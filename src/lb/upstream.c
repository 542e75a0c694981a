/*
 * upstream.c - upstream membership, backend selection and the passive
 * circuit breaker (see weir/lb.h).
 *
 * Selection is lock-free: it loads the current snapshot and reads its
 * tables; per-backend health is a few atomics. Membership changes build a
 * whole new snapshot under the upstream's mutex and swap the pointer; the
 * old snapshot is freed after RETIRE_MS, long after any selection that
 * could have loaded it has finished.
 *
 * Breaker, per backend:
 *   CLOSED --max_fails consecutive failures--> OPEN
 *   OPEN --fail_timeout elapsed, a selection claims the probe--> HALF_OPEN
 *   HALF_OPEN --probe succeeds--> CLOSED     HALF_OPEN --probe fails--> OPEN
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "lb/upstream_int.h"
#include "net/sock.h"

#define RETIRE_MS 60000
#define AVOID_TRIES 8

uint64_t weir__lb_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *const algo_names[] = {"round_robin", "random", "least_conn",
                                         "p2c",         "ketama", "maglev"};

int weir_lb_algo_parse(const char *name, weir_lb_algo *out)
{
    for (size_t i = 0; i < sizeof(algo_names) / sizeof(algo_names[0]); i++) {
        if (strcmp(name, algo_names[i]) == 0) {
            *out = (weir_lb_algo)i;
            return WEIR_OK;
        }
    }
    return WEIR_ERR_INVAL;
}

const char *weir_lb_algo_name(weir_lb_algo algo)
{
    return (size_t)algo < sizeof(algo_names) / sizeof(algo_names[0]) ? algo_names[algo] : "?";
}

/* ---- backends and snapshots ---- */

static void backend_ref(weir_backend *b)
{
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

void weir__lb_backend_unref(weir_backend *b)
{
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
        free(b);
}

static void snapshot_free(lb_snapshot *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        weir__lb_backend_unref(s->v[i]);
    free(s->v);
    free(s->w);
    free(s->rr_seq);
    free(s->cum_weight);
    free(s->ring);
    free(s->ring_owner);
    free(s->maglev);
    free(s);
}

/* Builds a snapshot of members v[0..n) (takes a reference to each). */
static lb_snapshot *snapshot_build(const weir_upstream *u, weir_backend *const *v, size_t n)
{
    lb_snapshot *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->v = calloc(n ? n : 1, sizeof(*s->v));
    s->w = calloc(n ? n : 1, sizeof(*s->w));
    s->cum_weight = calloc(n ? n : 1, sizeof(*s->cum_weight));
    if (!s->v || !s->w || !s->cum_weight)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        s->v[i] = v[i];
        backend_ref(v[i]);
        s->w[i] = atomic_load(&v[i]->weight);
        s->total_weight += s->w[i];
        s->cum_weight[i] = s->total_weight;
    }
    s->n = n;
    int rc = 0;
    switch (u->opts.algo) {
    case WEIR_LB_ROUND_ROBIN:
        rc = weir__lb_build_rr(s);
        break;
    case WEIR_LB_KETAMA:
        rc = weir__lb_build_ketama(s);
        break;
    case WEIR_LB_MAGLEV:
        rc = weir__lb_build_maglev(s);
        break;
    default:
        break;
    }
    if (rc == 0)
        return s;
fail:
    snapshot_free(s);
    return NULL;
}

/* Publishes s (u->lock held): the old snapshot retires. */
static void publish(weir_upstream *u, lb_snapshot *s)
{
    uint64_t now = weir__lb_now_ms();
    lb_snapshot *old = atomic_exchange(&u->snap, s);
    /* Free what retired long enough ago. */
    lb_snapshot **pp = &u->retired;
    while (*pp) {
        if (now - (*pp)->retired_ms >= RETIRE_MS) {
            lb_snapshot *dead = *pp;
            *pp = dead->next_retired;
            snapshot_free(dead);
        } else {
            pp = &(*pp)->next_retired;
        }
    }
    if (old) {
        old->retired_ms = now;
        old->next_retired = u->retired;
        u->retired = old;
    }
}

weir_upstream *weir_upstream_new(const char *name, const weir_upstream_options *opts)
{
    weir_upstream *u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    snprintf(u->name, sizeof(u->name), "%s", name ? name : "");
    if (opts)
        u->opts = *opts;
    else
        u->opts.max_fails = 3;
    if (!u->opts.fail_timeout_ms)
        u->opts.fail_timeout_ms = 10000;
    pthread_mutex_init(&u->lock, NULL);
    lb_snapshot *s = snapshot_build(u, NULL, 0);
    if (!s) {
        free(u);
        return NULL;
    }
    atomic_store(&u->snap, s);
    return u;
}

void weir_upstream_free(weir_upstream *u)
{
    if (!u)
        return;
    snapshot_free(atomic_load(&u->snap));
    while (u->retired) {
        lb_snapshot *s = u->retired;
        u->retired = s->next_retired;
        snapshot_free(s);
    }
    pthread_mutex_destroy(&u->lock);
    free(u);
}

const char *weir_upstream_name(const weir_upstream *u)
{
    return u->name;
}

static long find_member(const lb_snapshot *s, const char *addr)
{
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->v[i]->text, addr) == 0)
            return (long)i;
    }
    return -1;
}

int weir_upstream_add(weir_upstream *u, const char *addr, uint32_t weight)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (weight < 1 || weight > 10000 || weir__addr_parse(addr, &ss, &len) < 0)
        return WEIR_ERR_INVAL;
    weir_backend *b = calloc(1, sizeof(*b));
    if (!b)
        return WEIR_ERR_NOMEM;
    b->refs = 1; /* ours until the snapshot holds it */
    memcpy(&b->addr, &ss, sizeof(ss));
    b->addr_len = len;
    /* Canonical text, so "127.0.0.1:80" added twice is found. */
    weir__addr_format((struct sockaddr *)&ss, b->text, sizeof(b->text));
    b->id = weir_lb_hash(b->text, strlen(b->text));
    b->weight = weight;
    b->up = u;
    atomic_store(&b->healthy, true);
    pthread_mutex_lock(&u->lock);
    lb_snapshot *cur = atomic_load(&u->snap);
    int rc = WEIR_ERR_INVAL;
    if (cur->n < WEIR_UPSTREAM_MAX_BACKENDS && find_member(cur, b->text) < 0) {
        weir_backend **v = malloc((cur->n + 1) * sizeof(*v));
        lb_snapshot *s = NULL;
        if (v) {
            memcpy(v, cur->v, cur->n * sizeof(*v));
            v[cur->n] = b;
            s = snapshot_build(u, v, cur->n + 1);
            free(v);
        }
        if (s) {
            publish(u, s);
            rc = WEIR_OK;
        } else {
            rc = WEIR_ERR_NOMEM;
        }
    }
    pthread_mutex_unlock(&u->lock);
    weir__lb_backend_unref(b);
    return rc;
}

/* Rebuilds the snapshot with member `addr` replaced by `repl` (NULL to
 * remove it). Returns WEIR_OK or WEIR_ERR_INVAL if absent. */
static int replace_member(weir_upstream *u, const char *addr, weir_backend *repl)
{
    char canon[64];
    struct sockaddr_storage ss;
    socklen_t len;
    if (weir__addr_parse(addr, &ss, &len) < 0)
        return WEIR_ERR_INVAL;
    weir__addr_format((struct sockaddr *)&ss, canon, sizeof(canon));
    pthread_mutex_lock(&u->lock);
    lb_snapshot *cur = atomic_load(&u->snap);
    long i = find_member(cur, canon);
    int rc = WEIR_ERR_INVAL;
    if (i >= 0) {
        weir_backend **v = malloc((cur->n ? cur->n : 1) * sizeof(*v));
        lb_snapshot *s = NULL;
        size_t n = 0;
        if (v) {
            for (size_t k = 0; k < cur->n; k++) {
                if ((long)k != i)
                    v[n++] = cur->v[k];
                else if (repl)
                    v[n++] = repl;
            }
            s = snapshot_build(u, v, n);
            free(v);
        }
        if (s) {
            if (!repl)
                atomic_store(&cur->v[i]->draining, true); /* for refs still out there */
            publish(u, s);
            rc = WEIR_OK;
        } else {
            rc = WEIR_ERR_NOMEM;
        }
    }
    pthread_mutex_unlock(&u->lock);
    return rc;
}

int weir_upstream_remove(weir_upstream *u, const char *addr)
{
    return replace_member(u, addr, NULL);
}

int weir_upstream_set_weight(weir_upstream *u, const char *addr, uint32_t weight)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char canon[64];
    if (weight < 1 || weight > 10000 || weir__addr_parse(addr, &ss, &len) < 0)
        return WEIR_ERR_INVAL;
    weir__addr_format((struct sockaddr *)&ss, canon, sizeof(canon));
    /* The member keeps its identity (health, breaker, in-flight count,
     * counters); only the tables are rebuilt with the new weight. */
    pthread_mutex_lock(&u->lock);
    lb_snapshot *cur = atomic_load(&u->snap);
    long i = find_member(cur, canon);
    int rc = WEIR_ERR_INVAL;
    if (i >= 0) {
        uint32_t old = atomic_exchange(&cur->v[i]->weight, weight);
        lb_snapshot *s = snapshot_build(u, cur->v, cur->n);
        if (s) {
            publish(u, s);
            rc = WEIR_OK;
        } else {
            atomic_store(&cur->v[i]->weight, old);
            rc = WEIR_ERR_NOMEM;
        }
    }
    pthread_mutex_unlock(&u->lock);
    return rc;
}

int weir_upstream_set_drain(weir_upstream *u, const char *addr, bool drain)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char canon[64];
    if (weir__addr_parse(addr, &ss, &len) < 0)
        return WEIR_ERR_INVAL;
    weir__addr_format((struct sockaddr *)&ss, canon, sizeof(canon));
    lb_snapshot *cur = atomic_load(&u->snap);
    pthread_mutex_lock(&u->lock);
    cur = atomic_load(&u->snap);
    long i = find_member(cur, canon);
    if (i >= 0)
        atomic_store(&cur->v[i]->draining, drain);
    pthread_mutex_unlock(&u->lock);
    return i >= 0 ? WEIR_OK : WEIR_ERR_INVAL;
}

/* ---- health ---- */

enum { NOT_USABLE, USABLE, PROBE };

/* Whether b may take a request now: USABLE, or PROBE when this call claimed
 * the one half-open probe (only with claim). */
static int usable(weir_backend *b, bool claim)
{
    if (atomic_load_explicit(&b->draining, memory_order_relaxed) ||
        !atomic_load_explicit(&b->healthy, memory_order_relaxed))
        return NOT_USABLE;
    int st = atomic_load_explicit(&b->breaker, memory_order_acquire);
    if (st == WEIR_BREAKER_CLOSED)
        return USABLE;
    if (st == WEIR_BREAKER_HALF_OPEN)
        return NOT_USABLE; /* its one probe is out */
    uint64_t opened = atomic_load(&b->opened_at_ms);
    if (weir__lb_now_ms() - opened < b->up->opts.fail_timeout_ms)
        return NOT_USABLE;
    if (!claim)
        return USABLE;
    /* One selection wins the probe. */
    int expect = WEIR_BREAKER_OPEN;
    return atomic_compare_exchange_strong(&b->breaker, &expect, WEIR_BREAKER_HALF_OPEN)
               ? PROBE
               : NOT_USABLE;
}

static bool avoided(const weir_backend *b, const uint64_t *avoid, size_t n_avoid)
{
    for (size_t i = 0; i < n_avoid; i++) {
        if (avoid[i] == b->id)
            return true;
    }
    return false;
}

static bool ok(weir_backend *b, const uint64_t *avoid, size_t n_avoid)
{
    return !avoided(b, avoid, n_avoid) && usable(b, false) != NOT_USABLE;
}

/* Cheap thread-local xorshift for random choices. */
static uint64_t rnd(void)
{
    static __thread uint64_t x;
    if (!x)
        x = ((uint64_t)(uintptr_t)&x ^ weir__lb_now_ms()) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

static long weighted_random(const lb_snapshot *s)
{
    if (s->total_weight == 0)
        return -1;
    uint64_t r = rnd() % s->total_weight;
    size_t lo = 0, hi = s->n - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->cum_weight[mid] > r)
            hi = mid;
        else
            lo = mid + 1;
    }
    return (long)lo;
}

/* in_flight(a)/weight(a) < in_flight(b)/weight(b), without division */
static int load_cmp(const lb_snapshot *s, size_t a, size_t b)
{
    uint64_t la = atomic_load_explicit(&s->v[a]->in_flight, memory_order_relaxed) * s->w[b];
    uint64_t lb = atomic_load_explicit(&s->v[b]->in_flight, memory_order_relaxed) * s->w[a];
    return la < lb ? -1 : la > lb;
}

static long pick(weir_upstream *u, const lb_snapshot *s, uint64_t key, const uint64_t *avoid,
                 size_t n_avoid)
{
    switch (u->opts.algo) {
    case WEIR_LB_ROUND_ROBIN: {
        /* A new turn per try spreads a dead backend's share evenly over
         * the others. But other threads take turns too, so these turns can
         * all land on dead backends (a 503 with a healthy backend up): then
         * walk the schedule once from the last turn, which must find any
         * usable backend. */
        uint64_t k = 0;
        for (size_t t = 0; t < s->rr_period; t++) {
            k = atomic_fetch_add_explicit(&u->rr_next, 1, memory_order_relaxed);
            long i = s->rr_seq[k % s->rr_period];
            if (ok(s->v[i], avoid, n_avoid))
                return i;
        }
        for (size_t t = 1; t < s->rr_period; t++) {
            long i = s->rr_seq[(k + t) % s->rr_period];
            if (ok(s->v[i], avoid, n_avoid))
                return i;
        }
        break;
    }
    case WEIR_LB_RANDOM:
        for (int t = 0; t < AVOID_TRIES; t++) {
            long i = weighted_random(s);
            if (i >= 0 && ok(s->v[i], avoid, n_avoid))
                return i;
        }
        break; /* unlucky or mostly down: scan */
    case WEIR_LB_LEAST_CONN: {
        long best = -1;
        uint64_t ties = 0;
        size_t start = (size_t)(rnd() % (s->n ? s->n : 1));
        for (size_t k = 0; k < s->n; k++) {
            size_t i = (start + k) % s->n;
            if (!ok(s->v[i], avoid, n_avoid))
                continue;
            int c = best < 0 ? -1 : load_cmp(s, i, (size_t)best);
            if (c < 0) {
                best = (long)i;
                ties = 1;
            } else if (c == 0 && rnd() % ++ties == 0) {
                best = (long)i; /* reservoir: each tie equally likely */
            }
        }
        return best;
    }
    case WEIR_LB_P2C: {
        long a = -1, b = -1;
        for (int t = 0; t < AVOID_TRIES && (a < 0 || b < 0); t++) {
            long i = weighted_random(s);
            if (i < 0 || !ok(s->v[i], avoid, n_avoid))
                continue;
            if (a < 0)
                a = i;
            else if (i != a)
                b = i;
        }
        if (a >= 0 && b >= 0)
            return load_cmp(s, (size_t)b, (size_t)a) < 0 ? b : a;
        if (a >= 0)
            return a;
        break;
    }
    case WEIR_LB_KETAMA:
        /* Walk clockwise past unusable points: keys of the backends that
         * stay up never move. */
        for (size_t t = 0; t < s->n_ring; t++) {
            long i = weir__lb_ketama_lookup(s, key, t);
            if (i >= 0 && ok(s->v[i], avoid, n_avoid))
                return i;
            if (t > 64 * s->n)
                break;
        }
        break;
    case WEIR_LB_MAGLEV: {
        uint64_t k = key;
        for (int t = 0; t < AVOID_TRIES * 4; t++) {
            long i = weir__lb_maglev_lookup(s, k);
            if (i >= 0 && ok(s->v[i], avoid, n_avoid))
                return i;
            k = weir_lb_hash(&k, sizeof(k)); /* rehash: keys of others stay */
        }
        break;
    }
    }
    /* Fallback: the first usable member from a random start. */
    size_t start = (size_t)(rnd() % (s->n ? s->n : 1));
    for (size_t k = 0; k < s->n; k++) {
        size_t i = (start + k) % s->n;
        if (ok(s->v[i], avoid, n_avoid))
            return (long)i;
    }
    return -1;
}

/*
 * A reference for one request. The half-open probe gets its own handle (a
 * copy pointing at the real backend through probe_of), so that its outcome
 * alone decides the breaker: outcomes of requests selected before the
 * ejection, still in flight, must not close or re-open it.
 */
static weir_backend *take(weir_backend *b, int how)
{
    if (how == NOT_USABLE)
        return NULL;
    backend_ref(b);
    atomic_fetch_add_explicit(&b->in_flight, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->requests, 1, memory_order_relaxed);
    if (how != PROBE)
        return b;
    weir_backend *h = malloc(sizeof(*h));
    if (!h) {
        /* No handle: give the probe back and treat it as unavailable. */
        atomic_store(&b->breaker, WEIR_BREAKER_OPEN);
        atomic_fetch_sub_explicit(&b->in_flight, 1, memory_order_relaxed);
        weir__lb_backend_unref(b);
        return NULL;
    }
    memcpy(h, b, sizeof(*h)); /* address, text, id for the accessors */
    atomic_store(&h->refs, 1);
    h->probe_of = b;
    return h;
}

weir_backend *weir_upstream_select(weir_upstream *u, uint64_t key, const uint64_t *avoid,
                                   size_t n_avoid)
{
    lb_snapshot *s = atomic_load_explicit(&u->snap, memory_order_acquire);
    if (s->n == 0)
        return NULL;
    for (int t = 0; t < 4; t++) {
        long i = pick(u, s, key, avoid, n_avoid);
        if (i < 0)
            return NULL;
        /* Claim a half-open probe (or see that another request took it). */
        weir_backend *b = take(s->v[i], usable(s->v[i], true));
        if (b)
            return b;
    }
    return NULL;
}

weir_backend *weir_upstream_find(weir_upstream *u, uint64_t id)
{
    lb_snapshot *s = atomic_load_explicit(&u->snap, memory_order_acquire);
    for (size_t i = 0; i < s->n; i++) {
        if (s->v[i]->id == id)
            return take(s->v[i], usable(s->v[i], true));
    }
    return NULL;
}

void weir_backend_done(weir_backend *b, weir_backend_outcome outcome)
{
    weir_backend *probe = NULL;
    if (b->probe_of) {
        probe = b;
        b = b->probe_of;
    }
    weir_upstream *u = b->up;
    atomic_fetch_sub_explicit(&b->in_flight, 1, memory_order_relaxed);
    if (outcome == WEIR_BACKEND_FAILED)
        atomic_fetch_add_explicit(&b->failures, 1, memory_order_relaxed);
    if (probe) {
        /* The probe's outcome decides: closed, open again, or (it told
         * nothing) open with the timeout already over, so the next
         * selection probes again. */
        if (outcome == WEIR_BACKEND_OK) {
            atomic_store(&b->consecutive_fails, 0);
            atomic_store(&b->breaker, WEIR_BREAKER_CLOSED);
            weir_log_info("upstream %s: backend %s recovered (breaker closed)", u->name, b->text);
        } else {
            if (outcome == WEIR_BACKEND_FAILED)
                atomic_store(&b->opened_at_ms, weir__lb_now_ms());
            atomic_store(&b->breaker, WEIR_BREAKER_OPEN);
        }
        free(probe);
    } else if (atomic_load(&b->breaker) == WEIR_BREAKER_CLOSED) {
        /* Outcomes of ordinary requests only count while closed: after an
         * ejection, late results of older requests change nothing. */
        if (outcome == WEIR_BACKEND_OK) {
            atomic_store_explicit(&b->consecutive_fails, 0, memory_order_relaxed);
        } else if (outcome == WEIR_BACKEND_FAILED) {
            uint32_t n = atomic_fetch_add(&b->consecutive_fails, 1) + 1;
            int st = WEIR_BREAKER_CLOSED;
            if (u->opts.max_fails && n >= u->opts.max_fails) {
                atomic_store(&b->opened_at_ms, weir__lb_now_ms());
                if (atomic_compare_exchange_strong(&b->breaker, &st, WEIR_BREAKER_OPEN))
                    weir_log_warn("upstream %s: backend %s ejected after %u consecutive "
                                  "failures (breaker open for %u ms)",
                                  u->name, b->text, n, u->opts.fail_timeout_ms);
            }
        }
    }
    weir__lb_backend_unref(b);
}

void weir_backend_note_connection(weir_backend *b, bool reused)
{
    if (b->probe_of)
        b = b->probe_of;
    atomic_fetch_add_explicit(reused ? &b->conns_reused : &b->conns_new, 1, memory_order_relaxed);
}

void weir_backend_peer(const weir_backend *b, weir_peer *peer)
{
    memcpy(&peer->addr, &b->addr, sizeof(peer->addr));
    peer->addr_len = b->addr_len;
}

const char *weir_backend_addr(const weir_backend *b)
{
    return b->text;
}

uint64_t weir_backend_id(const weir_backend *b)
{
    return b->id;
}

/* ---- members for the health checker and introspection ---- */

weir_backend **weir__lb_members(weir_upstream *u, size_t *n)
{
    pthread_mutex_lock(&u->lock);
    lb_snapshot *s = atomic_load(&u->snap);
    weir_backend **v = malloc((s->n ? s->n : 1) * sizeof(*v));
    *n = 0;
    if (v) {
        for (size_t i = 0; i < s->n; i++) {
            backend_ref(s->v[i]);
            v[i] = s->v[i];
        }
        *n = s->n;
    }
    pthread_mutex_unlock(&u->lock);
    return v;
}

void weir__lb_members_put(weir_backend **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        weir__lb_backend_unref(v[i]);
    free(v);
}

size_t weir_upstream_info(weir_upstream *u, weir_backend_info *out, size_t max)
{
    size_t n;
    weir_backend **v = weir__lb_members(u, &n);
    for (size_t i = 0; v && i < n && i < max; i++) {
        weir_backend *b = v[i];
        weir_backend_info *o = &out[i];
        snprintf(o->addr, sizeof(o->addr), "%s", b->text);
        o->weight = atomic_load(&b->weight);
        o->healthy = atomic_load(&b->healthy);
        o->draining = atomic_load(&b->draining);
        o->breaker = (weir_breaker_state)atomic_load(&b->breaker);
        o->in_flight = atomic_load(&b->in_flight);
        o->requests = atomic_load(&b->requests);
        o->failures = atomic_load(&b->failures);
        o->conns_new = atomic_load(&b->conns_new);
        o->conns_reused = atomic_load(&b->conns_reused);
        o->health_changes = atomic_load(&b->health_changes);
    }
    if (v)
        weir__lb_members_put(v, n);
    return n;
}

int weir_upstream_set_health_check(weir_upstream *u, const weir_health_check *hc)
{
    if (!hc || (hc->kind == WEIR_HEALTH_HTTP && hc->path[0] != '/'))
        return WEIR_ERR_INVAL;
    pthread_mutex_lock(&u->lock);
    u->hc = *hc;
    if (!u->hc.interval_ms)
        u->hc.interval_ms = 5000;
    if (!u->hc.timeout_ms)
        u->hc.timeout_ms = 2000;
    if (!u->hc.rise)
        u->hc.rise = 2;
    if (!u->hc.fall)
        u->hc.fall = 3;
    u->has_hc = hc->kind != WEIR_HEALTH_NONE;
    pthread_mutex_unlock(&u->lock);
    return WEIR_OK;
}
