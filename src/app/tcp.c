/*
 * tcp.c - the phases of protocol = "tcp" and "udp" servers (weir/l4.h):
 * the server's upstream chooses each session's backend (every algorithm;
 * hash:ip hashes the client address), a failed connect (for UDP: a
 * backend that refused) goes to another backend as the upstream's
 * max_retries and retry_timeout allow, and the session ends in the access
 * log and the metrics.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/access_log.h"
#include "app/admin/metrics.h"
#include "app/app_int.h"

typedef struct tcp_ctx {
    weir_config *cfg; /* pinned for the session */
    const weir_cfg_server *srv;
    server_app *sa;
    weir_backend *backend;     /* the current attempt's (a reference) */
    uint64_t tried[MAX_TRIED]; /* ids of backends that failed this session */
    size_t n_tried;
    uint64_t start_ms;
    char backend_addr[64]; /* the last backend's, for the metrics after its release */
    uint64_t backend_id;
} tcp_ctx;

static void *l4_new_ctx(void *app)
{
    server_app *sa = app;
    tcp_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->sa = sa;
    c->cfg = weir__config_ref(atomic_load_explicit(&sa->app->current, memory_order_acquire));
    c->srv = weir__app_find_server(c->cfg, sa);
    c->start_ms = weir__app_mono_ms();
    return c;
}

static void *new_ctx(weir_tcp_session *s, void *app)
{
    (void)s;
    return l4_new_ctx(app);
}

static void free_ctx(void *app, void *ctx)
{
    (void)app;
    tcp_ctx *c = ctx;
    if (!c)
        return;
    if (c->backend)
        weir_backend_done(c->backend, WEIR_BACKEND_NOT_RELEVANT);
    weir__config_unref(c->cfg);
    free(c);
}

/* The backend for a client of IP ip from upstream u. */
static weir_phase_result pick(tcp_ctx *c, const weir_cfg_upstream *u, weir_str ip, weir_peer *peer)
{
    if (!u || !u->lb)
        return WEIR_PHASE_ERROR;
    uint64_t key = 0;
    if (u->hash_key == WEIR_HASH_IP)
        key = weir_lb_hash(ip.ptr, ip.len);
    weir_backend *b = weir_upstream_select(u->lb, key, c->tried, c->n_tried);
    if (!b)
        return WEIR_PHASE_ERROR;
    c->backend = b;
    weir_backend_peer(b, peer);
    snprintf(c->backend_addr, sizeof(c->backend_addr), "%s", weir_backend_addr(b));
    c->backend_id = weir_backend_id(b);
    if (u->connection_timeout_ms)
        peer->connect_timeout_ms = u->connection_timeout_ms;
    if (u->total_connection_timeout_ms &&
        (!peer->connect_timeout_ms || u->total_connection_timeout_ms < peer->connect_timeout_ms))
        peer->connect_timeout_ms = u->total_connection_timeout_ms;
    peer->queue_timeout_ms = u->queue_timeout_ms;
    peer->keepalive = 0; /* a tunnel's connection is never reused */
    weir__app_peer_tls(u, peer);
    peer->send_proxy = u->send_proxy;
    return WEIR_PHASE_CONTINUE;
}

static weir_phase_result upstream_peer(weir_tcp_session *s, void *ctx, weir_peer *peer)
{
    tcp_ctx *c = ctx;
    if (!c || !c->srv)
        return WEIR_PHASE_ERROR;
    /* Passthrough goes by the ClientHello's name, else to the default. */
    const weir_cfg_sni_route *r = weir__cfg_sni_route(c->srv, weir_tcp_session_sni(s));
    return pick(c, r ? r->upstream : c->srv->upstream, weir_tcp_session_client_ip(s), peer);
}

/* The attempt on c's backend failed: true to try another of u's. */
static bool failed(tcp_ctx *c, const weir_cfg_upstream *u, int attempt)
{
    weir__metrics_tcp_connect_failed(c->srv, c->backend_addr, c->backend_id);
    if (c->n_tried < MAX_TRIED)
        c->tried[c->n_tried++] = c->backend_id;
    weir_backend_done(c->backend, WEIR_BACKEND_FAILED);
    c->backend = NULL;
    if (!u || (uint32_t)attempt > u->max_retries || c->n_tried >= MAX_TRIED ||
        !(u->retry_on & WEIR_CFG_RETRY_CONNECT))
        return false;
    return !u->retry_timeout_ms || weir__app_mono_ms() - c->start_ms < u->retry_timeout_ms;
}

static bool fail_to_connect(weir_tcp_session *s, void *ctx, const weir_peer *peer, int error,
                            int attempt)
{
    (void)peer;
    (void)error;
    tcp_ctx *c = ctx;
    if (!c || !c->backend)
        return false;
    const weir_cfg_sni_route *r =
        c->srv ? weir__cfg_sni_route(c->srv, weir_tcp_session_sni(s)) : NULL;
    return failed(c, r ? r->upstream : c->srv ? c->srv->upstream : NULL, attempt);
}

static void connected(weir_tcp_session *s, void *ctx, const weir_peer *peer)
{
    (void)s;
    (void)peer;
    tcp_ctx *c = ctx;
    if (c && c->backend)
        weir_backend_note_connection(c->backend, false);
}

/* The session's end: the backend's verdict, the metrics, the log line. */
static void ended(tcp_ctx *c, const weir_l4_who *who, const weir_l4_stats *st,
                  weir_backend_outcome verdict)
{
    if (c->backend) {
        weir_backend_done(c->backend, verdict);
        c->backend = NULL;
    }
    weir__metrics_tcp(c->srv, c->backend_addr[0] ? c->backend_addr : NULL, c->backend_id, st);
    /* An HTTPS server's passthrough connections have a TCP log of their own. */
    const weir_access_log *log = c->srv && c->srv->protocol == WEIR_CFG_HTTP
                                     ? c->srv->tcp_access_log
                                 : c->srv ? c->srv->access_log
                                          : NULL;
    if (!log || !c->sa->logger)
        return;
    char line[4096];
    size_t n = weir__access_log_render_tcp(log, who, st, c->srv->name, line, sizeof(line));
    weir_logger_write(c->sa->logger, line, n);
}

static void logging(weir_tcp_session *s, void *ctx, const weir_l4_stats *st)
{
    tcp_ctx *c = ctx;
    if (!c)
        return;
    weir_l4_who who = {weir_tcp_session_client_ip(s), weir_tcp_session_listen_addr(s),
                       weir_tcp_session_sni(s), "TCP"};
    /* The tunnel ran: the backend answered, whoever closed it. One that
     * never connected (its queue timed out, shutdown) says nothing of
     * the backend. */
    ended(c, &who, st, st->connect_time_us >= 0 ? WEIR_BACKEND_OK : WEIR_BACKEND_NOT_RELEVANT);
}

/* TLS passthrough on an HTTPS server: its tls_passthrough names pass,
 * the rest it terminates. */
static bool take(weir_tcp_session *s, void *app)
{
    server_app *sa = app;
    weir_config *cfg =
        weir__config_ref(atomic_load_explicit(&sa->app->current, memory_order_acquire));
    const weir_cfg_server *srv = weir__app_find_server(cfg, sa);
    bool yes = srv && weir__cfg_sni_route(srv, weir_tcp_session_sni(s)) != NULL;
    weir__config_unref(cfg);
    return yes;
}

const weir_tcp_ops weir__app_tcp_ops = {
    .new_ctx = new_ctx,
    .free_ctx = free_ctx,
    .upstream_peer = upstream_peer,
    .fail_to_connect = fail_to_connect,
    .take = take,
    .connected_to_upstream = connected,
    .logging = logging,
};

/* ---- protocol = "udp" ---- */

static void *udp_new_ctx(weir_udp_session *s, void *app)
{
    (void)s;
    return l4_new_ctx(app);
}

/* Whether addr (as "ip:port") is one of u's backends (a backend's id is
 * the hash of that text: one lookup). */
static bool is_member(const weir_cfg_upstream *u, const char *addr)
{
    return u && u->lb && weir_upstream_member(u->lb, weir_lb_hash(addr, strlen(addr))) >= 0;
}

static weir_phase_result udp_upstream_peer(weir_udp_session *s, void *ctx, weir_peer *peer)
{
    tcp_ctx *c = ctx;
    if (!c || !c->srv)
        return WEIR_PHASE_ERROR;
    /* A datagram from a backend's own address (spoofed, or a backend that
     * answers to the listener) would start a session to the backends,
     * whose answers go back to it, and so on forever: refused. */
    char from[WEIR_ADDR_STRLEN];
    weir_addr_format(weir_udp_session_client_addr(s), from, sizeof(from));
    if (is_member(c->srv->upstream, from)) {
        weir_log(WEIR_LEVEL_WARN, "[servers.%s]: a datagram from backend %s: dropped (a loop)",
                 c->srv->name, from);
        return WEIR_PHASE_ERROR;
    }
    return pick(c, c->srv->upstream, weir_udp_session_client_ip(s), peer);
}

/* The session's backend is no longer a usable member of the server's
 * upstream in the running configuration. */
static bool udp_stale(weir_udp_session *s, void *ctx)
{
    (void)s;
    tcp_ctx *c = ctx;
    if (!c || !c->backend_addr[0])
        return false;
    weir_config *cur =
        weir__config_ref(atomic_load_explicit(&c->sa->app->current, memory_order_acquire));
    const weir_cfg_server *srv = weir__app_find_server(cur, c->sa);
    bool gone = !srv || !srv->upstream || !srv->upstream->lb ||
                weir_upstream_member(srv->upstream->lb, c->backend_id) != 1;
    weir__config_unref(cur);
    return gone;
}

static bool udp_refused(weir_udp_session *s, void *ctx, const weir_peer *peer, int error,
                        int attempt)
{
    (void)s;
    (void)peer;
    (void)error;
    tcp_ctx *c = ctx;
    if (!c || !c->backend)
        return false;
    return failed(c, c->srv ? c->srv->upstream : NULL, attempt);
}

static void udp_logging(weir_udp_session *s, void *ctx, const weir_l4_stats *st)
{
    tcp_ctx *c = ctx;
    if (!c)
        return;
    weir_l4_who who = {weir_udp_session_client_ip(s), weir_udp_session_listen_addr(s), NULL, "UDP"};
    /* A backend that answered did its part. One that never did is only at
     * fault when replies were expected (responses set) and the session
     * ran its course: a syslog server never answers, and a shutdown or a
     * removed listener ('K') says nothing of it. */
    weir_backend_outcome verdict =
        st->upstream_datagrams_received ? WEIR_BACKEND_OK
        : c->srv && c->srv->udp.responses && st->status == 200 && st->termination[0] == 'c'
            ? WEIR_BACKEND_FAILED
            : WEIR_BACKEND_NOT_RELEVANT;
    ended(c, &who, st, verdict);
}

const weir_udp_ops weir__app_udp_ops = {
    .new_ctx = udp_new_ctx,
    .free_ctx = free_ctx,
    .upstream_peer = udp_upstream_peer,
    .fail_to_connect = udp_refused,
    .stale = udp_stale,
    .logging = udp_logging,
};
