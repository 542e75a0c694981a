/*
 * upstream.c - upstream membership, backend selection and the passive
 * circuit breaker (see weir/lb.h).
 *
 * Selection is lock-free: it loads the current snapshot and reads its
 * tables; per-backend health is a few atomics. Membership changes edit the
 * member list under the upstream's mutex and bump its version, nothing
 * more: adding N backends one by one (a config load, an admin PUT) used to
 * rebuild every table N times, O(N^2) work and, with the retired copies,
 * O(N^2) memory. The first selection that sees the version move builds one
 * new snapshot for all the changes and swaps the pointer (others go on
 * with the old one meanwhile); the old snapshot is freed after RETIRE_MS,
 * long after any selection that could have loaded it has finished.
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
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1) {
        weir_conn_limit_free(b->conn_limit); /* open connections keep it alive */
        free(b);
    }
}

static void snapshot_free(lb_snapshot *s)
{
    if (!s)
        return;
    for (size_t i = 0; s->v && i < s->n; i++)
        weir__lb_backend_unref(s->v[i]);
    free(s->v);
    free(s->w);
    free(s->by_id);
    free(s->rr_seq);
    free(s->cum_weight);
    free(s->ring);
    free(s->ring_owner);
    free(s->ring_start);
    free(s->maglev);
    free(s);
}

/* A power of two at least twice n (and at least 8): hash table sizes. */
static size_t table_size(size_t n)
{
    size_t m = 8;
    while (m < 2 * n)
        m *= 2;
    return m;
}

static size_t home(uint64_t id, size_t mask)
{
    return (size_t)(id ^ (id >> 32)) & mask; /* ids are hashes already */
}

/* Builds the tables of s, whose members and weights are set. */
static int snapshot_tables(const weir_upstream *u, lb_snapshot *s)
{
    size_t n = s->n;
    s->cum_weight = calloc(n ? n : 1, sizeof(*s->cum_weight));
    s->by_id_mask = table_size(n) - 1;
    s->by_id = calloc(s->by_id_mask + 1, sizeof(*s->by_id));
    if (!s->cum_weight || !s->by_id)
        return WEIR_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        s->total_weight += s->w[i];
        s->cum_weight[i] = s->total_weight;
        size_t k = home(s->v[i]->id, s->by_id_mask);
        while (s->by_id[k])
            k = (k + 1) & s->by_id_mask;
        s->by_id[k] = (uint32_t)i + 1; /* the first of equal ids stays first */
    }
    switch (u->opts.algo) {
    case WEIR_LB_ROUND_ROBIN:
        return weir__lb_build_rr(s);
    case WEIR_LB_KETAMA:
        return weir__lb_build_ketama(s);
    case WEIR_LB_MAGLEV:
        return weir__lb_build_maglev(s);
    default:
        return 0;
    }
}

/* Publishes s (build_lock held): the old snapshot retires. */
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

/*
 * Builds and publishes a snapshot of the current members if the published
 * one is behind (build_lock held). The members are copied under `lock`, so
 * that changes go on while the tables are built. *out is the snapshot to
 * select from: the new one, or on OOM the old one. Returns WEIR_OK or
 * WEIR_ERR_NOMEM.
 */
static int rebuild(weir_upstream *u, lb_snapshot **out)
{
    lb_snapshot *cur = atomic_load_explicit(&u->snap, memory_order_acquire);
    *out = cur;
    if (cur->version == atomic_load_explicit(&u->version, memory_order_acquire))
        return WEIR_OK;
    lb_snapshot *s = calloc(1, sizeof(*s));
    if (!s)
        return WEIR_ERR_NOMEM;
    pthread_mutex_lock(&u->lock);
    size_t n = u->n_members;
    s->v = malloc((n ? n : 1) * sizeof(*s->v));
    s->w = malloc((n ? n : 1) * sizeof(*s->w));
    if (s->v && s->w) {
        for (size_t i = 0; i < n; i++) {
            s->v[i] = u->members[i];
            backend_ref(s->v[i]);
            s->w[i] = atomic_load_explicit(&s->v[i]->weight, memory_order_relaxed);
        }
        s->n = n;
        s->version = atomic_load_explicit(&u->version, memory_order_relaxed);
    }
    pthread_mutex_unlock(&u->lock);
    if (!s->v || !s->w || snapshot_tables(u, s) < 0) {
        snapshot_free(s);
        return WEIR_ERR_NOMEM;
    }
    publish(u, s);
    *out = s;
    return WEIR_OK;
}

/* The snapshot to select from: the published one, first brought up to the
 * members unless another thread is doing that now. */
static lb_snapshot *current(weir_upstream *u)
{
    lb_snapshot *s = atomic_load_explicit(&u->snap, memory_order_acquire);
    if (__builtin_expect(s->version != atomic_load_explicit(&u->version, memory_order_acquire),
                         0)) {
        /* Another thread building: go on with the old tables, unless they
         * are empty (the first build, at startup): those would answer 503
         * with backends configured, so wait for the build instead. */
        if (s->n == 0)
            pthread_mutex_lock(&u->build_lock);
        else if (pthread_mutex_trylock(&u->build_lock) != 0)
            return s;
        rebuild(u, &s); /* on OOM, the old tables serve */
        pthread_mutex_unlock(&u->build_lock);
    }
    return s;
}

int weir_upstream_prepare(weir_upstream *u)
{
    lb_snapshot *s;
    pthread_mutex_lock(&u->build_lock);
    int rc = rebuild(u, &s);
    pthread_mutex_unlock(&u->build_lock);
    return rc;
}

weir_upstream *weir_upstream_new(const char *name, const weir_upstream_options *opts)
{
    /* Aligned for rr_next's own cache line. */
    size_t size = (sizeof(weir_upstream) + 63) / 64 * 64;
    weir_upstream *u = aligned_alloc(64, size);
    lb_snapshot *s = calloc(1, sizeof(*s));
    if (!u || !s)
        goto fail;
    memset(u, 0, size);
    snprintf(u->name, sizeof(u->name), "%s", name ? name : "");
    if (opts)
        u->opts = *opts;
    else
        u->opts.max_fails = 3;
    if (!u->opts.fail_timeout_ms)
        u->opts.fail_timeout_ms = 10000;
    u->index_mask = table_size(0) - 1;
    u->index = calloc(u->index_mask + 1, sizeof(*u->index));
    if (!u->index || snapshot_tables(u, s) < 0)
        goto fail;
    pthread_mutex_init(&u->lock, NULL);
    pthread_mutex_init(&u->build_lock, NULL);
    atomic_store(&u->snap, s);
    return u;
fail:
    if (u)
        free(u->index);
    snapshot_free(s);
    free(u);
    return NULL;
}

void weir_upstream_free(weir_upstream *u)
{
    if (!u)
        return;
    weir__discovery_free(u);
    snapshot_free(atomic_load(&u->snap));
    while (u->retired) {
        lb_snapshot *s = u->retired;
        u->retired = s->next_retired;
        snapshot_free(s);
    }
    for (size_t i = 0; i < u->n_members; i++)
        weir__lb_backend_unref(u->members[i]);
    free(u->members);
    free(u->index);
    pthread_mutex_destroy(&u->lock);
    pthread_mutex_destroy(&u->build_lock);
    free(u);
}

const char *weir_upstream_name(const weir_upstream *u)
{
    return u->name;
}

/* ---- the members and their index (u->lock held) ---- */

/* The member whose canonical address is `text`, or NULL. */
static weir_backend *member_find(const weir_upstream *u, const char *text)
{
    uint64_t id = weir_lb_hash(text, strlen(text));
    for (size_t k = home(id, u->index_mask); u->index[k]; k = (k + 1) & u->index_mask) {
        if (u->index[k]->id == id && strcmp(u->index[k]->text, text) == 0)
            return u->index[k];
    }
    return NULL;
}

static void index_put(weir_backend **index, size_t mask, weir_backend *b)
{
    size_t k = home(b->id, mask);
    while (index[k])
        k = (k + 1) & mask;
    index[k] = b;
}

/* Appends b (taking the caller's reference). Returns 0 or WEIR_ERR_NOMEM. */
static int member_append(weir_upstream *u, weir_backend *b)
{
    if (u->n_members == u->cap_members) {
        size_t cap = u->cap_members ? 2 * u->cap_members : 8;
        weir_backend **v = realloc(u->members, cap * sizeof(*v));
        if (!v)
            return WEIR_ERR_NOMEM;
        u->members = v;
        u->cap_members = cap;
    }
    if (2 * (u->n_members + 1) > u->index_mask + 1) {
        size_t size = table_size(u->n_members + 1);
        weir_backend **index = calloc(size, sizeof(*index));
        if (!index)
            return WEIR_ERR_NOMEM;
        for (size_t i = 0; i < u->n_members; i++)
            index_put(index, size - 1, u->members[i]);
        free(u->index);
        u->index = index;
        u->index_mask = size - 1;
    }
    u->members[u->n_members++] = b;
    index_put(u->index, u->index_mask, b);
    return 0;
}

/* Takes b out of the members (the caller gets their reference). */
static void index_remove(weir_upstream *u, weir_backend *b);

static void member_remove(weir_upstream *u, weir_backend *b)
{
    size_t i = 0;
    while (u->members[i] != b)
        i++;
    memmove(&u->members[i], &u->members[i + 1], (u->n_members - i - 1) * sizeof(*u->members));
    u->n_members--;
    index_remove(u, b);
}

/* Takes b out of the index only. */
static void index_remove(weir_upstream *u, weir_backend *b)
{
    /* Linear probing: shift later entries of the run back over the hole. */
    size_t mask = u->index_mask, hole = home(b->id, mask);
    while (u->index[hole] != b)
        hole = (hole + 1) & mask;
    for (size_t k = (hole + 1) & mask; u->index[k]; k = (k + 1) & mask) {
        size_t want = home(u->index[k]->id, mask);
        /* entry k may fill the hole unless its home lies in (hole, k] */
        bool stays = hole < k ? (want > hole && want <= k) : (want > hole || want <= k);
        if (!stays) {
            u->index[hole] = u->index[k];
            hole = k;
        }
    }
    u->index[hole] = NULL;
}

/* Records a membership change (u->lock held): the tables are now stale. */
static void changed(weir_upstream *u)
{
    atomic_fetch_add_explicit(&u->version, 1, memory_order_release);
    weir__lb_note_change(u);
}

void weir__lb_note_change(weir_upstream *u)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    atomic_store_explicit(&u->changed_unix_ms,
                          (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000,
                          memory_order_relaxed);
    atomic_fetch_add_explicit(&u->changes, 1, memory_order_release);
}

uint64_t weir_upstream_changes(weir_upstream *u, uint64_t *last_unix_ms)
{
    uint64_t n = atomic_load_explicit(&u->changes, memory_order_acquire);
    if (last_unix_ms)
        *last_unix_ms = atomic_load_explicit(&u->changed_unix_ms, memory_order_relaxed);
    return n;
}

/* The canonical text of addr into canon[64]; -1 if it is not an address. */
static int canonical(const char *addr, char *canon)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (weir__addr_parse(addr, &ss, &len) < 0)
        return -1;
    weir__addr_format((struct sockaddr *)&ss, canon, 64);
    return 0;
}

/* A new member for u at ss (not yet in the members). NULL on OOM. */
static weir_backend *backend_new(weir_upstream *u, const struct sockaddr_storage *ss, socklen_t len,
                                 uint32_t weight)
{
    weir_backend *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->refs = 1; /* the members' reference */
    memcpy(&b->addr, ss, sizeof(*ss));
    b->addr_len = len;
    /* Canonical text, so "127.0.0.1:80" added twice is found. */
    weir__addr_format((const struct sockaddr *)ss, b->text, sizeof(b->text));
    b->id = weir_lb_hash(b->text, strlen(b->text));
    b->weight = weight;
    b->up = u;
    atomic_store(&b->healthy, true);
    if (u->opts.max_conns && !(b->conn_limit = weir_conn_limit_new(u->opts.max_conns))) {
        free(b);
        return NULL;
    }
    return b;
}

static void backend_discard(weir_backend *b)
{
    weir_conn_limit_free(b->conn_limit);
    free(b);
}

/* Appends a new member (u->lock held). While a server checks the
 * upstream, a newcomer is unhealthy until `rise` checks pass: discovery
 * must not send traffic to an address before it is known to answer.
 * Before (a config load), members start healthy. */
static int member_join(weir_upstream *u, weir_backend *b)
{
    int rc = member_append(u, b);
    if (rc == 0) {
        if (u->has_hc && u->hc_kick) {
            atomic_store(&b->healthy, false);
            u->hc_newcomers = true;
        }
        changed(u);
    }
    return rc;
}

/* Asks the health checker to probe newcomers now rather than at its next
 * tick (u->lock not held). */
static void kick_checker(weir_upstream *u)
{
    pthread_mutex_lock(&u->lock);
    bool kick = u->hc_newcomers && u->hc_kick;
    u->hc_newcomers = false;
    if (kick)
        u->hc_kick(u->hc_kick_arg);
    pthread_mutex_unlock(&u->lock);
}

int weir_upstream_add(weir_upstream *u, const char *addr, uint32_t weight)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (weight < 1 || weight > 10000 || weir__addr_parse(addr, &ss, &len) < 0)
        return WEIR_ERR_INVAL;
    weir_backend *b = backend_new(u, &ss, len, weight);
    if (!b)
        return WEIR_ERR_NOMEM;
    pthread_mutex_lock(&u->lock);
    int rc = WEIR_ERR_INVAL;
    if (u->n_members < WEIR_UPSTREAM_MAX_BACKENDS && !member_find(u, b->text))
        rc = member_join(u, b);
    pthread_mutex_unlock(&u->lock);
    if (rc != 0)
        backend_discard(b);
    else
        kick_checker(u);
    return rc;
}

int weir_upstream_remove(weir_upstream *u, const char *addr)
{
    char canon[64];
    if (canonical(addr, canon) < 0)
        return WEIR_ERR_INVAL;
    pthread_mutex_lock(&u->lock);
    weir_backend *b = member_find(u, canon);
    if (b) {
        member_remove(u, b);
        /* Snapshots still holding it (until the next build, or retired)
         * skip it from now on; its in-flight requests finish. */
        atomic_store(&b->draining, true);
        changed(u);
    }
    pthread_mutex_unlock(&u->lock);
    if (!b)
        return WEIR_ERR_INVAL;
    weir__lb_backend_unref(b);
    return WEIR_OK;
}

int weir_upstream_set_weight(weir_upstream *u, const char *addr, uint32_t weight)
{
    char canon[64];
    if (weight < 1 || weight > 10000 || canonical(addr, canon) < 0)
        return WEIR_ERR_INVAL;
    /* The member keeps its identity (health, breaker, in-flight count,
     * counters); only the tables are rebuilt with the new weight. */
    pthread_mutex_lock(&u->lock);
    weir_backend *b = member_find(u, canon);
    if (b) {
        atomic_store(&b->weight, weight);
        changed(u);
    }
    pthread_mutex_unlock(&u->lock);
    return b ? WEIR_OK : WEIR_ERR_INVAL;
}

int weir_upstream_set_drain(weir_upstream *u, const char *addr, bool drain)
{
    char canon[64];
    if (canonical(addr, canon) < 0)
        return WEIR_ERR_INVAL;
    /* A flag every snapshot sees: no rebuild. */
    pthread_mutex_lock(&u->lock);
    weir_backend *b = member_find(u, canon);
    if (b && atomic_exchange(&b->draining, drain) != drain)
        weir__lb_note_change(u);
    pthread_mutex_unlock(&u->lock);
    return b ? WEIR_OK : WEIR_ERR_INVAL;
}

/* ---- change sets ---- */

typedef struct target_slot {
    struct sockaddr_storage ss;
    socklen_t len;
    char text[64];
    uint64_t id;
    uint32_t weight;
    bool dup;        /* a repeat of an earlier target */
    weir_backend *b; /* the member this set added for it, if any */
} target_slot;

/* Whether text is one of the targets (set: open addressing on id). */
static bool in_targets(const target_slot *t, const uint32_t *set, size_t mask, const char *text,
                       uint64_t id)
{
    for (size_t k = home(id, mask); set[k]; k = (k + 1) & mask) {
        const target_slot *x = &t[set[k] - 1];
        if (x->id == id && strcmp(x->text, text) == 0)
            return true;
    }
    return false;
}

int weir__lb_update(weir_upstream *u, const weir_lb_target *v, size_t n, weir_lb_changes *out,
                    weir__lb_change_cb cb, void *ctx)
{
    weir_lb_changes ch = {0};
    if (out)
        *out = ch;
    if (n > WEIR_UPSTREAM_MAX_BACKENDS)
        return WEIR_ERR_INVAL;
    target_slot *t = calloc(n ? n : 1, sizeof(*t));
    size_t mask = table_size(n) - 1;
    uint32_t *set = calloc(mask + 1, sizeof(*set));
    weir_backend **gone = NULL;
    size_t n_gone = 0;
    int rc = WEIR_ERR_NOMEM;
    if (!t || !set)
        goto out;
    /* Everything is checked before anything changes. */
    rc = WEIR_ERR_INVAL;
    for (size_t i = 0; i < n; i++) {
        if (v[i].weight < 1 || v[i].weight > 10000 ||
            weir__addr_parse(v[i].addr, &t[i].ss, &t[i].len) < 0)
            goto out;
        weir__addr_format((struct sockaddr *)&t[i].ss, t[i].text, sizeof(t[i].text));
        t[i].id = weir_lb_hash(t[i].text, strlen(t[i].text));
        t[i].weight = v[i].weight;
        if (in_targets(t, set, mask, t[i].text, t[i].id)) {
            t[i].dup = true;
            continue;
        }
        size_t k = home(t[i].id, mask);
        while (set[k])
            k = (k + 1) & mask;
        set[k] = (uint32_t)i + 1;
    }
    rc = WEIR_OK;
    pthread_mutex_lock(&u->lock);
    /* Additions and weights first: the members never run out in between,
     * whatever a selection on another thread sees. */
    for (size_t i = 0; i < n && rc == WEIR_OK; i++) {
        if (t[i].dup)
            continue;
        weir_backend *b = member_find(u, t[i].text);
        if (b) {
            if (atomic_load(&b->weight) != t[i].weight) {
                atomic_store(&b->weight, t[i].weight);
                changed(u);
                ch.reweighted++;
            } else {
                ch.unchanged++;
            }
            continue;
        }
        b = backend_new(u, &t[i].ss, t[i].len, t[i].weight);
        if (!b || member_join(u, b) != 0) {
            if (b)
                backend_discard(b);
            rc = WEIR_ERR_NOMEM;
            break;
        }
        t[i].b = b;
        ch.added++;
        if (cb)
            cb(ctx, true, b->text);
    }
    /* A set that replaces every healthy member (a rotation of all the
     * addresses) must not leave the upstream with none that serves until
     * the newcomers pass `rise` checks: they then serve at once, as
     * without health checks, and the checks asked for now take out those
     * that fail. Decided, and done, before any member that goes is marked
     * draining: workers read the flags as they change, and a moment with
     * the old members draining and the new ones not yet healthy is a 503. */
    bool usable = false;
    for (size_t i = 0; rc == WEIR_OK && ch.added && i < u->n_members && !usable; i++) {
        weir_backend *b = u->members[i];
        usable = in_targets(t, set, mask, b->text, b->id) && atomic_load(&b->healthy) &&
                 !atomic_load(&b->draining);
    }
    if (rc == WEIR_OK && ch.added && !usable) {
        for (size_t i = 0; i < n; i++) {
            if (t[i].b)
                atomic_store(&t[i].b->healthy, true);
        }
        changed(u);
    }
    if (rc == WEIR_OK && u->n_members > ch.added + ch.reweighted + ch.unchanged) {
        gone = malloc(u->n_members * sizeof(*gone));
        if (!gone)
            rc = WEIR_ERR_NOMEM;
        /* One pass, keeping the order of those that stay. */
        size_t w = 0;
        for (size_t i = 0; gone && i < u->n_members; i++) {
            weir_backend *b = u->members[i];
            if (in_targets(t, set, mask, b->text, b->id)) {
                u->members[w++] = b;
                continue;
            }
            index_remove(u, b);
            atomic_store(&b->draining, true);
            gone[n_gone++] = b;
            if (cb)
                cb(ctx, false, b->text);
        }
        if (gone) {
            u->n_members = w;
            if (n_gone)
                changed(u);
        }
    }
    pthread_mutex_unlock(&u->lock);
    ch.removed = n_gone;
    for (size_t i = 0; i < n_gone; i++)
        weir__lb_backend_unref(gone[i]); /* in-flight requests keep theirs */
    if (ch.added)
        kick_checker(u);
    if (out)
        *out = ch;
out:
    free(gone);
    free(set);
    free(t);
    return rc;
}

int weir_upstream_update(weir_upstream *u, const weir_lb_target *v, size_t n, weir_lb_changes *out)
{
    return weir__lb_update(u, v, n, out, NULL, NULL);
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
    weir_backend *h = calloc(1, sizeof(*h));
    if (!h) {
        /* No handle: give the probe back and treat it as unavailable. */
        atomic_store(&b->breaker, WEIR_BREAKER_OPEN);
        atomic_fetch_sub_explicit(&b->in_flight, 1, memory_order_relaxed);
        weir__lb_backend_unref(b);
        return NULL;
    }
    /* Only what the accessors read, all fixed at creation: a copy of the
     * whole struct would read the counters other threads are writing. */
    memcpy(&h->addr, &b->addr, sizeof(h->addr));
    h->addr_len = b->addr_len;
    memcpy(h->text, b->text, sizeof(h->text));
    h->id = b->id;
    h->up = b->up;
    h->conn_limit = b->conn_limit;
    atomic_init(&h->weight, atomic_load_explicit(&b->weight, memory_order_relaxed));
    atomic_store(&h->refs, 1);
    h->probe_of = b;
    return h;
}

weir_backend *weir_upstream_select(weir_upstream *u, uint64_t key, const uint64_t *avoid,
                                   size_t n_avoid)
{
    lb_snapshot *s = current(u);
    if (s->n == 0)
        return NULL;
    if (s->n == 1 && u->opts.keep_sole_backend) {
        weir_backend *b = s->v[0];
        if (avoided(b, avoid, n_avoid) || atomic_load(&b->draining) || !atomic_load(&b->healthy))
            return NULL;
        return take(b, USABLE);
    }
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
    lb_snapshot *s = current(u);
    for (size_t k = home(id, s->by_id_mask); s->by_id[k]; k = (k + 1) & s->by_id_mask) {
        weir_backend *b = s->v[s->by_id[k] - 1];
        if (b->id == id)
            return take(b, usable(b, true));
    }
    return NULL;
}

size_t weir_upstream_owner(weir_upstream *u, uint64_t key, char *addr, size_t cap)
{
    lb_snapshot *s = current(u);
    long i = -1;
    if (s->n == 1 && u->opts.keep_sole_backend) {
        weir_backend *b = s->v[0];
        i = atomic_load(&b->draining) || !atomic_load(&b->healthy) ? -1 : 0;
    } else if (s->n) {
        i = pick(u, s, key, NULL, 0);
    }
    if (i < 0 || cap == 0)
        return 0;
    /* A retired snapshot outlives any reader by seconds: copy now. */
    size_t n = strlen(s->v[i]->text);
    if (n >= cap)
        return 0;
    memcpy(addr, s->v[i]->text, n + 1);
    return n;
}

int weir_upstream_member(weir_upstream *u, uint64_t id)
{
    lb_snapshot *s = current(u);
    for (size_t k = home(id, s->by_id_mask); s->by_id[k]; k = (k + 1) & s->by_id_mask) {
        weir_backend *b = s->v[s->by_id[k] - 1];
        if (b->id == id)
            return usable(b, false) == NOT_USABLE ? 0 : 1;
    }
    return -1;
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
            weir__lb_note_change(u);
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
                if (atomic_compare_exchange_strong(&b->breaker, &st, WEIR_BREAKER_OPEN)) {
                    weir__lb_note_change(u);
                    weir_log_warn("upstream %s: backend %s ejected after %u consecutive "
                                  "failures (breaker open for %u ms)",
                                  u->name, b->text, n, u->opts.fail_timeout_ms);
                }
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
    peer->conn_limit = b->conn_limit; /* a probe handle carries its backend's */
    peer->addr_text = b->text;
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
    weir_backend **v = malloc((u->n_members ? u->n_members : 1) * sizeof(*v));
    *n = 0;
    if (v) {
        for (size_t i = 0; i < u->n_members; i++) {
            backend_ref(u->members[i]);
            v[i] = u->members[i];
        }
        *n = u->n_members;
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
    if (!hc || (hc->kind == WEIR_HEALTH_HTTP && hc->path[0] != '/') ||
        (hc->kind == WEIR_HEALTH_DNS && !hc->host[0]) || hc->payload_len > sizeof(hc->payload))
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
