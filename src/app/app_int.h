/*
 * app_int.h - what the weir program's parts share (app.c: snapshots,
 * reloads, listeners; phases.c: the phases; balance.c: choosing the
 * backend). Private to src/app.
 */
#ifndef WEIR_APP_APP_INT_H
#define WEIR_APP_APP_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "app/app.h"
#include "app/config/config.h"
#include "weir/weir.h"

#define MAX_SERVERS WEIR_CFG_MAX_APP_SERVERS

/* One per [servers.NAME]: what its service's phases need. */
typedef struct server_app {
    weir_app *app;
    char name[128];       /* the [servers.NAME] it was made for */
    weir_logger *logger;  /* NULL = no access log */
    weir_tls_server *tls; /* its listeners' TLS (kept across reloads), NULL = plain */
} server_app;

#define MAX_RETIRED 16
#define RETIRE_GRACE_MS 2000

struct weir_app {
    _Atomic(weir_config *) current;
    weir_server *srv;                 /* the server it runs on (stats) */
    time_t started_at;                /* wall clock, for stats */
    weir_app_reload_info last_reload; /* main thread */
    server_app servers[MAX_SERVERS];
    _Atomic size_t n_servers; /* grows on reloads (main thread); read anywhere */
    /* Snapshots replaced by reloads keep the app's reference for a grace
     * period: a request that loaded the pointer just before the swap takes
     * its own reference within nanoseconds, so the old snapshot must not be
     * freed under it. Main thread only (reloads run there). */
    weir_config *retired[MAX_RETIRED];
    uint64_t retired_at[MAX_RETIRED];
    size_t n_retired;
};

#define MAX_TRIED 16

typedef struct weir_req_trace weir_req_trace; /* app/otel/request.h */

typedef struct req_ctx {
    weir_config *cfg; /* pinned for the request */
    weir_cfg_server *srv;
    weir_cfg_location *loc;
    server_app *sa;
    weir_backend *backend;     /* the backend of the current attempt (a reference) */
    uint64_t tried[MAX_TRIED]; /* ids of backends that failed this request */
    size_t n_tried;
    weir_backend *next; /* chosen for a retry after a 5xx status (a reference), or NULL */
    uint64_t start_ms;  /* for retry_timeout (set only when it is) */
    bool set_sticky;    /* the response sets the sticky cookie */
    bool grpc;          /* a gRPC request on a location with grpc_idle_timeout */
    /* The upstream this request goes to instead of its location's (a
     * traffic_splitting plugin), or NULL. */
    const weir_cfg_upstream *upstream;
    /* plugins (phases.c) */
    void **pctx;                      /* per-request memory by the location's plugin slot */
    const struct weir_plugin *parked; /* the plugin whose hook is PENDING, or NULL */
    void *parked_ctx;                 /* its per-request memory */
    uint8_t park_chain;               /* where its chain goes on */
    uint16_t park_pos;
    bool body_started;      /* a request body piece went through the chain */
    bool body_restart;      /* a new attempt: the next piece starts the body over */
    const void *cache_conf; /* the cache plugin that turned caching on, or NULL */
    /* The location's router (balance.c): asked once per request. */
    bool routed;           /* asked (or skipped: down, busy) */
    bool route_ok;         /* it named a backend: route_ss */
    bool route_used;       /* the first attempt went there */
    weir_peer *route_peer; /* upstream_peer's, while the router's answer is awaited */
    weir_session *route_s;
    struct sockaddr_storage route_ss;
    socklen_t route_len;
    char route_text[64];
    weir_req_trace *trace; /* its trace and Server-Timing, or NULL (app/otel/request.h) */
} req_ctx;

/* The upstream of the request: a plugin's choice, else its location's. */
static inline const weir_cfg_upstream *weir__app_upstream(const req_ctx *c)
{
    return c->upstream ? c->upstream : c->loc ? c->loc->upstream : NULL;
}

/* Milliseconds of CLOCK_MONOTONIC. */
uint64_t weir__app_mono_ms(void);

/* Answers `status` with "STATUS TEXT\n" (a 5xx is also logged). */
weir_phase_result weir__app_answer(weir_session *s, int status, const char *text);

/* balance.c: the upstream phases of weir__app_ops. */
weir_phase_result weir__app_upstream_peer(weir_session *s, void *ctx, weir_peer *peer);
bool weir__app_fail_to_connect(weir_session *s, void *ctx, const weir_peer *peer, int error,
                               int attempt);
void weir__app_connected_to_upstream(weir_session *s, void *ctx, const weir_peer *peer,
                                     bool reused);
/* TLS to the upstream's backends, if it asks for it, into *peer. */
void weir__app_peer_tls(const weir_cfg_upstream *u, weir_peer *peer);

/* The server sa's sessions get in snapshot cfg; NULL if a reload removed
 * it (its last connections finish). phases.c. */
weir_cfg_server *weir__app_find_server(weir_config *cfg, server_app *sa);

/* tcp.c: the phases of protocol = "tcp" servers. */
extern const weir_tcp_ops weir__app_tcp_ops;
extern const weir_udp_ops weir__app_udp_ops;
/* ring.c: the commands of protocol = "resp" servers. */
extern const weir_resp_ops weir__app_resp_ops;

#endif
