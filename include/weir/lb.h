/*
 * weir/lb.h - upstreams: groups of backends, how one is chosen per request,
 * and how failing backends are taken out and brought back.
 *
 * An upstream holds its backends in an immutable snapshot (the list plus
 * the algorithm's tables: smooth round-robin sequence, Ketama ring, Maglev
 * table) published through one atomic pointer; selection reads the current
 * one without a lock. Membership changes (add, remove, re-weight) take
 * effect at once for weir_upstream_info and the health checker, and mark
 * the tables stale; the next selection rebuilds them once, whatever the
 * number of changes before it (so loading N backends costs one table
 * build, not N), or weir_upstream_prepare does it off the request path.
 * Health changes and drains are flags on the backend: no rebuild. A
 * replaced snapshot is freed a minute later (selection holds it for
 * microseconds).
 *
 * Sizes, all linear in the members: the round-robin period is the sum of
 * the weights divided by their gcd, cut at max(65536, 16 N) picks; the
 * Ketama ring has 160 points per unit of weight, at most 2^21 in all (13
 * bytes each, with its index); the Maglev table has a prime M >= 100 N entries (4 bytes
 * each): 65537 up to 655 members, then the first of 131071, 262139,
 * 524287, 1048573, 2097143, 4194301, 8388593, 16777213 that is >= 100 N.
 *
 * A selected backend is a reference: report the outcome with
 * weir_backend_done(), which also ends its in-flight count. A removed
 * backend stays alive until its last in-flight request is done (drain).
 *
 * Health: a backend is usable when its active check (if any) says healthy,
 * its circuit breaker is not open, and it is not draining. The breaker
 * (passive check) opens after `max_fails` consecutive failures reported by
 * weir_backend_done, lets one probe request through after `fail_timeout`
 * (half-open), and closes again when that probe succeeds.
 *
 * Threads: every function may be called from any thread unless noted.
 */
#ifndef WEIR_LB_H
#define WEIR_LB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weir/peer.h"
#include "weir/types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum weir_lb_algo {
    WEIR_LB_ROUND_ROBIN, /* smooth weighted round robin (nginx's) */
    WEIR_LB_RANDOM,      /* weighted random */
    WEIR_LB_LEAST_CONN,  /* fewest in-flight requests per unit of weight; ties at random */
    WEIR_LB_P2C,         /* power of two (weighted random) choices on in-flight requests */
    WEIR_LB_KETAMA,      /* consistent hashing on a Ketama ring, 160 points per weight unit */
    WEIR_LB_MAGLEV,      /* consistent hashing with a Maglev lookup table */
} weir_lb_algo;

/* Parses "round_robin", "random", "least_conn", "p2c", "ketama", "maglev".
 * Returns 0 or WEIR_ERR_INVAL. */
int weir_lb_algo_parse(const char *name, weir_lb_algo *out);
const char *weir_lb_algo_name(weir_lb_algo algo);

typedef struct weir_upstream_options {
    weir_lb_algo algo;
    uint32_t max_fails;       /* consecutive failures that open the breaker; 0 = never [3] */
    uint32_t fail_timeout_ms; /* how long an open breaker stays open [10000] */
    /* Connections each backend may have open at once, in use or idle in
     * the pool (weir_conn_limit, weir/peer.h); weir_backend_peer passes
     * the backend's limit on. 0 = no limit. */
    uint32_t max_conns;
    /* A backend alone in its upstream is selected even while its breaker
     * is open (nginx's rule for a single server): ejecting it would only
     * turn a burst of errors into 503s for everyone for fail_timeout.
     * Active health checks and draining still take it out; the breaker's
     * state is kept and reported as usual. */
    bool keep_sole_backend;
} weir_upstream_options;

typedef struct weir_upstream weir_upstream;
typedef struct weir_backend weir_backend;

/* Creates an empty upstream; opts may be NULL (defaults). NULL on OOM. */
weir_upstream *weir_upstream_new(const char *name, const weir_upstream_options *opts);
/* Frees it; no request may still use it (call after weir_server_run). */
void weir_upstream_free(weir_upstream *u);
const char *weir_upstream_name(const weir_upstream *u);

/* ---- membership (takes effect for the next selection) ---- */

/* Members per upstream at most: a bound on memory (a member is about 0.3
 * KiB, plus its share of the tables: 2 KiB per unit of weight with Ketama,
 * 0.4 to 0.8 KiB with Maglev), not on time, since the tables build in
 * O(N log N). Define it when building weir to change it (e.g.
 * -DWEIR_UPSTREAM_MAX_BACKENDS=262144); the program checks its config
 * against the same value. */
#ifndef WEIR_UPSTREAM_MAX_BACKENDS
#define WEIR_UPSTREAM_MAX_BACKENDS 65536
#endif

/*
 * Adds a backend at addr ("ip:port", numeric) with weight 1..10000.
 * Returns WEIR_OK, WEIR_ERR_INVAL (bad address or weight, already present,
 * or WEIR_UPSTREAM_MAX_BACKENDS reached) or WEIR_ERR_NOMEM.
 */
int weir_upstream_add(weir_upstream *u, const char *addr, uint32_t weight);
/* Removes a backend: no new requests go to it, in-flight ones finish.
 * WEIR_ERR_INVAL if absent. */
int weir_upstream_remove(weir_upstream *u, const char *addr);
/* Changes a backend's weight (1..10000). */
int weir_upstream_set_weight(weir_upstream *u, const char *addr, uint32_t weight);
/* Drains (true) or undrains a backend: a draining backend gets no new
 * requests but stays a member. */
int weir_upstream_set_drain(weir_upstream *u, const char *addr, bool drain);

/*
 * Builds the selection tables for the current members now, so that the next
 * selection does not have to (call it after a batch of changes, off the
 * request path; the server does for every upstream it is given). Waits for
 * a build another thread is doing. Returns WEIR_OK or WEIR_ERR_NOMEM (the
 * previous tables stay in use, and the next selection tries again).
 */
int weir_upstream_prepare(weir_upstream *u);

/* ---- selection ---- */

/*
 * Chooses a usable backend, never one whose id is in avoid[0..n_avoid)
 * (backends this request already tried). `key` is the request's hash for
 * KETAMA and MAGLEV (ignored by the others). Returns a reference to release
 * with weir_backend_done(), or NULL if no backend is usable.
 *
 * After membership changes, the first selection builds the new tables
 * (unless weir_upstream_prepare did); selections on other threads meanwhile
 * use the previous ones, in which removed and drained backends are skipped
 * already. No allocation otherwise.
 */
weir_backend *weir_upstream_select(weir_upstream *u, uint64_t key, const uint64_t *avoid,
                                   size_t n_avoid);
/* The member with this id (weir_backend_id) if it is usable, as a
 * reference like weir_upstream_select's; NULL otherwise (sticky sessions). */
weir_backend *weir_upstream_find(weir_upstream *u, uint64_t id);
/* Whether the member with this id is there and would take requests now:
 * 1 usable, 0 a member that would not (unhealthy, draining, breaker
 * open), -1 none. No reference, nothing counted, no breaker probe. */
int weir_upstream_member(weir_upstream *u, uint64_t id);

/*
 * The backend weir_upstream_select would choose for key now, without
 * taking it: no reference, nothing counted, no breaker probe claimed (a
 * backend whose breaker would let a probe through counts as usable). Its
 * "ip:port" goes into addr[cap]; returns its length, or 0 if no backend
 * is usable. A ring service answers with it (weir/resp.h).
 */
size_t weir_upstream_owner(weir_upstream *u, uint64_t key, char *addr, size_t cap);
/*
 * How many times who takes requests has changed (a member added, removed,
 * re-weighted or drained, a health verdict, a breaker that opened or
 * closed), and when the last change was (Unix ms, 0 for never) into
 * *last_unix_ms (may be NULL).
 */
uint64_t weir_upstream_changes(weir_upstream *u, uint64_t *last_unix_ms);

/* How a request to a backend went (passive health). */
typedef enum weir_backend_outcome {
    WEIR_BACKEND_OK,           /* a response came back (any status not counted as failure) */
    WEIR_BACKEND_FAILED,       /* connect failure, reset, timeout, or a 5xx counted as failure */
    WEIR_BACKEND_NOT_RELEVANT, /* the request ended for other reasons (client gone) */
} weir_backend_outcome;

/* Reports the outcome, ends the in-flight count and drops the reference. */
void weir_backend_done(weir_backend *b, weir_backend_outcome outcome);

/* Counts a connection used for a request to b: a new one, or one reused
 * from the keep-alive pool (call from connected_to_upstream). */
void weir_backend_note_connection(weir_backend *b, bool reused);

/* The backend's address into peer->addr/addr_len, its text into
 * peer->addr_text and its limit into peer->conn_limit (other fields
 * untouched). */
void weir_backend_peer(const weir_backend *b, weir_peer *peer);
/* Its address as text ("ip:port"); valid while the reference is held. */
const char *weir_backend_addr(const weir_backend *b);
/* A stable id derived from the address (for sticky-session cookies). */
uint64_t weir_backend_id(const weir_backend *b);

/* 64-bit hash of bytes, the one KETAMA and MAGLEV keys should use. */
uint64_t weir_lb_hash(const void *data, size_t len);

/* ---- active health checks ---- */

typedef enum weir_health_kind {
    WEIR_HEALTH_NONE,
    WEIR_HEALTH_TCP,  /* a connect succeeds */
    WEIR_HEALTH_HTTP, /* GET path answers an expected status (and body substring) */
    WEIR_HEALTH_GRPC, /* grpc.health.v1.Health/Check (h2c) answers SERVING for `path`
                         (the service name; empty = the whole server) */
    WEIR_HEALTH_UDP,  /* a datagram (payload) gets any datagram back (holding
                         expect_body, if set); ICMP port unreachable or silence fail */
    WEIR_HEALTH_DNS,  /* a DNS query for `host` (type A) gets an answer with its id
                         and rcode NOERROR or NXDOMAIN (over UDP) */
} weir_health_kind;

typedef struct weir_health_check {
    weir_health_kind kind;
    char host[256];        /* Host header for HTTP checks; empty = the backend's address */
    char path[1024];       /* request path for HTTP checks, e.g. "/healthz" */
    int expect_status[16]; /* accepted statuses; none = any 2xx */
    size_t n_expect_status;
    char expect_body[256]; /* substring the body must contain; empty = any */
    uint32_t interval_ms;  /* between checks of one backend [5000] */
    uint32_t timeout_ms;   /* for one check [2000] */
    uint32_t rise;         /* consecutive successes to become healthy [2] */
    uint32_t fall;         /* consecutive failures to become unhealthy [3] */
    /* HTTP and gRPC checks over TLS, as the upstream's requests go: the
     * client settings (NULL = the default client), and the name to send
     * and check (empty = the backend's own SNI, see weir_backend_peer).
     * Must outlive the check. */
    bool tls;
    const struct weir_tls_client *tls_client;
    char sni[256];
    /* 1 or 2: a check starts with a PROXY header of that version naming no
     * client (v1 "UNKNOWN", v2 LOCAL), for backends that require one (the
     * upstream's send_proxy), as HAProxy's check-send-proxy. */
    uint8_t send_proxy;
    /* WEIR_HEALTH_UDP: the datagram sent (may be empty). */
    uint8_t payload[512];
    size_t payload_len;
} weir_health_check;

/*
 * Sets the active check of an upstream (copied). Checks run on the
 * server's control thread once the upstream is attached to a running server
 * with weir_server_add_upstream (weir/server.h). Members present when the
 * checks start are healthy; a member that joins while they run (admin
 * API, discovery, weir_upstream_update) starts unhealthy, is checked at
 * once, and takes requests after `rise` checks pass.
 * Returns WEIR_OK or WEIR_ERR_INVAL.
 */
int weir_upstream_set_health_check(weir_upstream *u, const weir_health_check *hc);

/* ---- introspection ---- */

typedef enum weir_breaker_state {
    WEIR_BREAKER_CLOSED,    /* normal */
    WEIR_BREAKER_OPEN,      /* ejected after max_fails failures */
    WEIR_BREAKER_HALF_OPEN, /* one probe request allowed */
} weir_breaker_state;

typedef struct weir_backend_info {
    char addr[64];
    uint32_t weight;
    bool healthy;  /* active check verdict (true without checks) */
    bool draining; /* removed or drained: no new requests */
    weir_breaker_state breaker;
    uint64_t in_flight;
    uint64_t requests;       /* selections */
    uint64_t failures;       /* WEIR_BACKEND_FAILED reports */
    uint64_t conns_new;      /* connections opened for requests */
    uint64_t conns_reused;   /* requests sent on a pooled connection */
    uint64_t health_changes; /* healthy <-> unhealthy transitions by the active check */
} weir_backend_info;

/* Copies up to max members' state; returns the number of members. */
size_t weir_upstream_info(weir_upstream *u, weir_backend_info *out, size_t max);

/* ---- membership from a source: change sets and lookup services ---- */

/* One backend a source names. */
typedef struct weir_lb_target {
    char addr[64];   /* "ip:port", numeric ("[v6]:port" for IPv6) */
    uint32_t weight; /* 1..10000 */
} weir_lb_target;

/* What one change set did. */
typedef struct weir_lb_changes {
    size_t added, removed, reweighted, unchanged;
} weir_lb_changes;

/*
 * Makes the members exactly v[0..n) (one entry per address; a repeated
 * address keeps the first one's weight), as one change set against the
 * current members: additions and weights first, removals last, so that the
 * upstream never runs out of members in between. Unchanged members keep
 * their health state, breaker, counters and pooled connections; removed
 * ones drain (weir_upstream_remove); added ones start in the health
 * checker's state machine (see weir_upstream_set_health_check). `out`
 * (may be NULL) gets the counts. Returns WEIR_OK, WEIR_ERR_INVAL (a target
 * is not a numeric address or its weight is out of range: nothing changed)
 * or WEIR_ERR_NOMEM (what was done stays, the rest is not done).
 */
int weir_upstream_update(weir_upstream *u, const weir_lb_target *v, size_t n, weir_lb_changes *out);

/*
 * A lookup service: a source of members that the library asks on an
 * interval (like ginepro's LookupService), on the server's control thread,
 * and whose answers it applies with weir_upstream_update. weir's DNS and
 * SRV discovery is one (weir_lookup_dns_new); a program can plug in its
 * own (Consul, a file, a registry).
 *
 * Rules the library keeps, whatever the source: a failed or empty answer
 * never changes the members (the last good set stays), is logged and
 * counted, and the next round comes sooner, after retry_min_ms doubling
 * up to interval_ms; every change is logged in one line
 * ("upstream api: +10.0.0.7:80 -10.0.0.3:80 (dns, 3 backends)").
 */
typedef struct weir_lookup weir_lookup; /* one round in progress */

typedef struct weir_lookup_service {
    char kind[16]; /* for logs and weir_discovery_info: "dns", "srv", "consul" */
    /* Starts a round. Called on the control thread; must not block (start
     * the work, return). weir_lookup_done must then be called exactly once
     * for this round, from any thread, now or later. */
    void (*lookup)(void *ud, weir_lookup *round);
    /* Optional. Called on the control thread when it stops (shutdown, or
     * the server's set of upstreams changes) while a round is in flight:
     * stop the work soon. weir_lookup_done is still owed; its answer is
     * then dropped. */
    void (*cancel)(void *ud, weir_lookup *round);
    /* Optional. Frees ud when the upstream is freed or another service
     * replaces this one, after the last round is done. */
    void (*free)(void *ud);
    void *ud;
    uint32_t interval_ms;  /* between rounds after a success, unless it says [30000] */
    uint32_t first_ms;     /* from the control thread's start to the first round [0 = at once] */
    uint32_t retry_min_ms; /* the first retry after a failure [1000] */
} weir_lookup_service;

/*
 * Gives the upstream its lookup service (copied; svc->ud is then owned by
 * the upstream). Rounds run while the upstream is attached to a running
 * server (weir_server_add_upstream / weir_server_set_upstreams). NULL
 * removes it. Returns WEIR_OK or WEIR_ERR_INVAL (no lookup callback).
 * Not while a server runs rounds for the upstream.
 */
int weir_upstream_set_lookup(weir_upstream *u, const weir_lookup_service *svc);

/*
 * Ends a round. With n > 0 the members become v[0..n) (weir_upstream_update);
 * with error set as well the round also counts as failed (a partial answer:
 * some names failed, their last good addresses are in v). With n == 0 the
 * members stay and the round failed ("empty answer" when error is NULL).
 * next_ms: when to ask again after a success (0 = interval_ms; e.g. a DNS
 * record's TTL). Any thread; exactly once per round; round is gone after.
 */
void weir_lookup_done(weir_lookup *round, const weir_lb_target *v, size_t n, uint32_t next_ms,
                      const char *error);

/* A lookup service's record (weir_upstream_discovery_info). */
typedef struct weir_discovery_info {
    char kind[16];
    uint64_t rounds;   /* answered rounds */
    uint64_t failures; /* failed, empty or partial rounds */
    uint32_t consecutive_failures;
    uint64_t changes;        /* rounds that changed the members */
    uint64_t added, removed; /* backends, over all rounds */
    int64_t last_success_ms; /* wall clock, ms since the epoch; 0 = never */
    int64_t last_failure_ms; /* likewise */
    int64_t next_round_ms;   /* wall clock of the next round; 0 = none planned */
    char last_error[160];    /* of the last failure ("" if none) */
} weir_discovery_info;

/* Fills out and returns true if u has a lookup service. */
bool weir_upstream_discovery_info(weir_upstream *u, weir_discovery_info *out);

/*
 * Records in u's weir_discovery_info a lookup the program did itself
 * before the rounds began (weir's config loader resolves the names once,
 * blocking, so that the upstream serves from its first request, and
 * applies the answer with weir_upstream_update): one answered round,
 * failed when error is set. Returns false if u has no lookup service.
 */
bool weir_upstream_note_lookup(weir_upstream *u, const char *error);

/* ---- DNS and SRV discovery (c-ares) ---- */

/* A name to resolve. A/AAAA: host and port (the port of every address)
 * and the weight of each address. SRV: host is the record's name
 * ("_http._tcp.api.example"); port and weight come from the records. */
typedef struct weir_dns_name {
    const char *host;
    uint16_t port;
    uint32_t weight;
} weir_dns_name;

typedef struct weir_dns_options {
    const weir_dns_name *names; /* copied */
    size_t n_names;
    bool srv;            /* SRV records instead of A/AAAA */
    const char *servers; /* "ip[:port],ip[:port]" ("[v6]:port"); NULL = /etc/resolv.conf */
    const char *const
        *search; /* domains tried for names without enough dots; NULL = resolv.conf's */
    size_t n_search;
    int family;            /* AF_UNSPEC (both), AF_INET or AF_INET6 only */
    uint32_t timeout_ms;   /* per query try [2000] */
    uint32_t tries;        /* per server [2] */
    uint32_t min_ttl_ms;   /* a TTL below this counts as this [1000] */
    uint32_t interval_ms;  /* rounds: at the shortest TTL, at most this apart [30000] */
    uint32_t retry_min_ms; /* [1000] */
} weir_dns_options;

/*
 * Makes a lookup service resolving o's names on every round, for
 * weir_upstream_set_lookup: asynchronously with c-ares on the control
 * thread. A round's members are the union over the names; the next round
 * comes at the shortest TTL of the answers (not before min_ttl_ms, not
 * after interval_ms). A name whose query fails (timeout, SERVFAIL,
 * refused, a malformed or truncated answer) keeps its last good addresses
 * and makes the round partial (when every name failed, the round failed
 * and changes nothing); a name the server says does not exist or
 * has no records gives none, unless no name gives any (then the round is
 * empty and the members stay). SRV: only the targets of the lowest
 * priority that has addresses are used, SRV weight w as weight
 * max(1, min(w, 10000)). Returns WEIR_OK, or WEIR_ERR_INVAL with err set
 * (a bad server address, no names).
 */
int weir_lookup_dns_new(const weir_dns_options *o, weir_lookup_service *out, char *err,
                        size_t err_len);

/*
 * Resolves o's names once, now, blocking (at most about timeout_ms x tries
 * x servers): for a program's start-up, before it serves. *v (free() it)
 * and *n get the targets, *ttl_ms the time until the next round should
 * be. Returns WEIR_OK (n may be 0: nothing exists), WEIR_ERR with err set
 * (no answer for some name: *v holds what the others gave), or
 * WEIR_ERR_INVAL / WEIR_ERR_NOMEM (bad options, OOM: *v is NULL).
 */
int weir_lookup_dns_now(const weir_dns_options *o, weir_lb_target **v, size_t *n, uint32_t *ttl_ms,
                        char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif
