/*
 * upstream_int.h - the internals of weir_upstream shared by the selection
 * code (upstream.c, rr.c, hash.c) and the health checker (health.c).
 */
#ifndef WEIR_LB_UPSTREAM_INT_H
#define WEIR_LB_UPSTREAM_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "weir/lb.h"

/* One member. Refcounted: one reference per snapshot holding it, one per
 * request using it. Health fields are atomics written by the control thread
 * (active checks) and workers (breaker). */
struct weir_backend {
    _Atomic long refs;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char text[64];           /* "ip:port" */
    uint64_t id;             /* weir_lb_hash of text */
    _Atomic uint32_t weight; /* the member's weight; snapshots keep their own copy */
    weir_upstream *up;
    struct weir_backend *probe_of; /* set on a half-open probe handle: the real backend */
    weir_conn_limit *conn_limit;   /* max_conns, or NULL; the backend's (not a probe's) */

    _Atomic bool draining;
    _Atomic bool healthy; /* active check verdict */
    _Atomic int breaker;  /* weir_breaker_state */
    _Atomic uint32_t consecutive_fails;
    _Atomic uint64_t opened_at_ms; /* when the breaker opened */
    _Atomic uint64_t in_flight;
    _Atomic uint64_t requests;
    _Atomic uint64_t failures;
    _Atomic uint64_t conns_new;
    _Atomic uint64_t conns_reused;
    _Atomic uint64_t health_changes;

    /* active check state: control thread only */
    uint32_t hc_rise, hc_fall;
};

/* The immutable member list and the algorithm's tables, built from the
 * upstream's membership at `version`. Owner: the upstream; freed
 * RETIRE_MS after it is replaced (selection reads it without a lock). */
typedef struct lb_snapshot {
    uint64_t version;
    weir_backend **v; /* members in insertion order */
    uint32_t *w;      /* their weights when the snapshot was built */
    size_t n;
    uint64_t total_weight;
    uint32_t *by_id; /* open addressing on id: member index + 1, 0 = free */
    size_t by_id_mask;
    uint32_t *rr_seq; /* smooth round robin: one period of member indexes */
    size_t rr_period;
    uint64_t *cum_weight; /* weighted random: prefix sums */
    /* Ketama: sorted points and the member of each; ring_start[b] is the
     * first point whose hash has b as its top (64 - ring_shift) bits */
    uint64_t *ring;
    uint32_t *ring_owner;
    size_t n_ring;
    uint32_t *ring_start;
    unsigned ring_shift;
    /* Maglev: lookup table of member indexes */
    uint32_t *maglev;
    size_t n_maglev;
    uint64_t retired_ms; /* when it was replaced (0 = current) */
    struct lb_snapshot *next_retired;
} lb_snapshot;

/*
 * Membership changes edit `members` in place and bump `version`; they build
 * no tables. Selection compares the published snapshot's version with it
 * and, when behind, one selecting thread (build_lock, tried, never waited
 * for) builds the next snapshot from a copy of the members, outside `lock`.
 * So a burst of N changes costs one table build, not N.
 */
struct weir_upstream {
    char name[128];
    weir_upstream_options opts;
    _Atomic(lb_snapshot *) snap;
    _Atomic uint64_t version; /* of the membership; written under lock */
    /* Changes to who takes requests (weir_upstream_changes), and when the
     * last was (wall clock, ms). */
    _Atomic uint64_t changes, changed_unix_ms;
    pthread_mutex_t lock;   /* members, their index, version, hc */
    weir_backend **members; /* insertion order; one reference each */
    size_t n_members, cap_members;
    weir_backend **index; /* open addressing on id: the members, NULL = free */
    size_t index_mask;
    pthread_mutex_t build_lock; /* one snapshot builder at a time; the retired list */
    lb_snapshot *retired;
    weir_health_check hc;
    bool has_hc;
    /* Members joined since the checker last looked (hc_newcomers), and
     * how to tell it: set by the control thread while it checks u. */
    bool hc_newcomers;
    void (*hc_kick)(void *arg);
    void *hc_kick_arg;
    struct lb_discovery *disc; /* the lookup service's state, or NULL */
    /* Written by every round-robin pick: its own cache line. */
    _Alignas(64) _Atomic uint64_t rr_next;
};

/* Builds the algorithm tables of s (rr.c, hash.c) from s->v, s->w, s->n
 * and s->total_weight. Returns 0 or WEIR_ERR_NOMEM. */
/* Counts a change to who takes requests (weir_upstream_changes). */
void weir__lb_note_change(weir_upstream *u);

int weir__lb_build_ketama(lb_snapshot *s);
int weir__lb_build_maglev(lb_snapshot *s);
int weir__lb_build_rr(lb_snapshot *s);
/* The round-robin period kept for n members (longer ones are cut). */
size_t weir__lb_rr_max_period(size_t n);
/* The Maglev table size for n members (a prime, >= 100 n up to its cap). */
size_t weir__lb_maglev_size(size_t n);
/* Table lookups: index of the member, or -1 if the table is empty. */
long weir__lb_ketama_lookup(const lb_snapshot *s, uint64_t key, size_t skip);
long weir__lb_maglev_lookup(const lb_snapshot *s, uint64_t key);

/* Monotonic milliseconds. */
uint64_t weir__lb_now_ms(void);

/* Takes a reference to each current member for the caller to walk
 * (health checker), in insertion order. Release with weir__lb_members_put. */
weir_backend **weir__lb_members(weir_upstream *u, size_t *n);
void weir__lb_members_put(weir_backend **v, size_t n);
void weir__lb_backend_unref(weir_backend *b);

/* weir_upstream_update, calling cb(ctx, added, text) for each member
 * added or removed (u->lock held: cb must not call back into u). */
typedef void (*weir__lb_change_cb)(void *ctx, bool added, const char *text);
int weir__lb_update(weir_upstream *u, const weir_lb_target *v, size_t n, weir_lb_changes *out,
                    weir__lb_change_cb cb, void *ctx);

/* discovery.c: the lookup service of an upstream, on the control thread
 * (health.c's runner): attach starts its rounds on loop, detach cancels
 * a round in flight and stops them; free is weir_upstream_free's part. */
struct weir_loop;
void weir__discovery_attach(weir_upstream *u, struct weir_loop *loop);
void weir__discovery_detach(weir_upstream *u);
void weir__discovery_free(weir_upstream *u);

#endif
