/*
 * weir/proxy.h - the request phases a proxy program fills in.
 *
 * A proxy service is a weir_proxy_ops table plus an application pointer
 * (`app`, shared by every request and every worker: the application makes
 * it safe to read from several threads). Phases run on the worker thread
 * that owns the client connection, in this order:
 *
 *   early_request_filter -> request_filter -> [request_body_filter]* ->
 *   upstream_peer -> connected_to_upstream -> upstream_request_filter ->
 *   upstream_response_filter -> response_filter -> [response_body_filter]* ->
 *   logging
 *
 * with fail_to_connect and error_while_proxy on failures. Each is optional
 * except upstream_peer (unless every request is answered earlier).
 */
#ifndef WEIR_PROXY_H
#define WEIR_PROXY_H

#include <stdbool.h>
#include <stdint.h>

#include "weir/cache.h"
#include "weir/peer.h"
#include "weir/session.h"
#include "weir/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A phase returns a weir_phase_result (weir/types.h). */

/* Figures handed to the logging phase. Times in microseconds; -1 if the
 * step did not happen. */
typedef struct weir_session_stats {
    int status;                /* status sent to the client, 0 if none */
    uint64_t bytes_received;   /* request bytes from the client (head + body) */
    uint64_t bytes_sent;       /* response bytes to the client (head + body) */
    int64_t request_time_us;   /* first byte of the request to last byte of the response */
    int64_t upstream_time_us;  /* connect start to the end of the upstream response */
    int64_t connect_time_us;   /* TCP connect of the last attempt; 0 for a reused connection */
    const char *upstream_addr; /* "ip:port" of the last peer tried, or "-" */
    const char *error;         /* why the request failed, or NULL */
    bool client_aborted;       /* the client went away before the end (status 499 if no
                                  response had started) */
    /*
     * How the session ended, as HAProxy's termination state: who ended
     * it, then when. Who: '-' normally, 'C' the client closed or reset,
     * 'c' the client timed out, 'S' the backend failed (refused, reset,
     * closed early, a truncated or malformed response), 's' the backend
     * timed out, 'P' weir refused the request or a phase failed, 'K'
     * shutdown. When: 'R' the request (before a backend was chosen), 'C'
     * connecting, 'H' waiting for the response head, 'D' the response
     * body, 'T' a tunnel; '-' with who '-'.
     */
    char termination[3];
} weir_session_stats;

typedef struct weir_proxy_ops {
    /* Creates the per-request context passed to every phase (may return
     * NULL). Called before early_request_filter. */
    void *(*new_ctx)(weir_session *s, void *app);
    /* Frees it after logging. */
    void (*free_ctx)(void *app, void *ctx);

    /* Before anything else (rate limits, early rejection). May pend. */
    weir_phase_result (*early_request_filter)(weir_session *s, void *ctx);
    /* Inspect/modify the request, or answer it (weir_session_respond +
     * WEIR_PHASE_ANSWERED). May pend. */
    weir_phase_result (*request_filter)(weir_session *s, void *ctx);
    /*
     * Each piece of request body before it goes upstream; `end` is true on
     * the last call (chunk may then be empty). The filter may point
     * *chunk at its own memory (valid until its next call) to change the
     * bytes; if it changes the length it must have removed Content-Length
     * in request_filter. Must not pend. Returns CONTINUE or ERROR.
     */
    weir_phase_result (*request_body_filter)(weir_session *s, void *ctx, weir_str *chunk, bool end);
    /*
     * Chooses the backend: fill *peer (see weir/peer.h). Required. Called
     * again for a retry when fail_to_connect asked for one. May pend (fill
     * *peer before resuming).
     */
    weir_phase_result (*upstream_peer)(weir_session *s, void *ctx, weir_peer *peer);
    /* After a connection to the peer is ready; `reused` is true for a
     * pooled keep-alive connection. */
    void (*connected_to_upstream)(weir_session *s, void *ctx, const weir_peer *peer, bool reused);
    /* Modify the request just before its head is sent (request headers and
     * weir_session_set_target apply). May pend. */
    weir_phase_result (*upstream_request_filter)(weir_session *s, void *ctx);
    /* The upstream response head has arrived (weir_session_resp_headers).
     * May pend. */
    weir_phase_result (*upstream_response_filter)(weir_session *s, void *ctx);
    /* Last change to the response head before it goes to the client; also
     * runs for responses weir generates. May pend. */
    weir_phase_result (*response_filter)(weir_session *s, void *ctx);
    /* Like request_body_filter, for the response body (proxied or
     * generated). If it changes the length it must remove Content-Length
     * in response_filter. When the body's source pauses it is also called
     * once with an empty piece and end false while
     * weir_session_body_flushing() is true. */
    weir_phase_result (*response_body_filter)(weir_session *s, void *ctx, weir_str *chunk,
                                              bool end);
    /*
     * Reaching `peer` failed with `error` (a negative errno): the connect
     * failed (-ECONNREFUSED, -ETIMEDOUT, ...), or the backend reset or
     * closed the connection (-ECONNRESET, -EPIPE) before any response byte
     * and before any request body byte was consumed, so the request can be
     * sent again unchanged; or, if peer->retry_on asked for them, no
     * response came within read_timeout (-ETIMEDOUT) or the backend
     * answered 502/503/504 (error 0). weir_session_failure() tells which.
     * Return true to retry: upstream_peer runs again (choose another
     * peer). `attempt` is 1 for the first failure. Never called once
     * response bytes reached the client. Default: no retry.
     */
    bool (*fail_to_connect)(weir_session *s, void *ctx, const weir_peer *peer, int error,
                            int attempt);
    /*
     * The request failed (`status` is what weir would send: 400, 413, 500,
     * 502, 503, 504; `reason` a short text). Return WEIR_PHASE_CONTINUE to
     * let weir send its error page, or WEIR_PHASE_ANSWERED after writing
     * your own with weir_session_respond. Only called while nothing of the
     * response has reached the client.
     */
    weir_phase_result (*error_while_proxy)(weir_session *s, void *ctx, int status,
                                           const char *reason);
    /* Last phase, always called once per session that ran new_ctx. */
    void (*logging)(weir_session *s, void *ctx, const weir_session_stats *stats);

    /* ---- the HTTP cache (weir/cache.h), Pingora's cache phases ---- */
    /*
     * After request_filter: turn caching on for the request with
     * weir_session_cache_enable (request_filter may do it too). Without
     * either the request never touches a cache. May pend.
     */
    weir_phase_result (*request_cache_filter)(weir_session *s, void *ctx);
    /*
     * The key of the request: write at most cap bytes at out and return
     * the length; 0 (or more than cap) bypasses the cache for it. Default:
     * weir_session_cache_default_key. Requests whose keys are equal share
     * stored responses (and their Vary variants).
     */
    size_t (*cache_key)(weir_session *s, void *ctx, char *out, size_t cap);
    /* A stored response was found that weir would answer with; return
     * true to treat it as stale instead (validated with the origin). */
    bool (*cache_hit_filter)(weir_session *s, void *ctx, const weir_cache_meta *meta);
    /* After upstream_response_filter, for a response to a GET: d holds
     * weir's decision (RFC 9111) on storing it and its lifetime; change
     * them. What is stored is the head as it is now and the body as the
     * backend sends it (before response_body_filter). */
    void (*response_cache_filter)(weir_session *s, void *ctx, weir_cache_decision *d);
    /*
     * The origin failed while a stale stored response exists (error: a
     * negative errno for no connection or a timeout, 0 for a 5xx answer).
     * `allowed` is what stale-if-error and the configured window say;
     * return whether the stale response answers instead. Default: allowed.
     */
    bool (*should_serve_stale)(weir_session *s, void *ctx, int error, bool allowed);
} weir_proxy_ops;

/* An address block ("10.0.0.0/8", "::1/128"), for trusted_proxies. */
typedef struct weir_cidr {
    uint8_t family;     /* AF_INET or AF_INET6 */
    uint8_t prefix_len; /* 0..32 or 0..128 */
    uint8_t addr[16];   /* network byte order; bits past prefix_len are zero */
} weir_cidr;

/* Parses "ADDR" or "ADDR/LEN" (IPv4 or IPv6) into *out. Returns WEIR_OK or
 * WEIR_ERR_INVAL. Any thread. */
int weir_cidr_parse(const char *text, weir_cidr *out);

#define WEIR_MAX_TRUSTED_PROXIES 64

/* Per-service settings; zero fields take the default in brackets. */
typedef struct weir_proxy_options {
    uint32_t client_header_timeout_ms;  /* whole request head [10000] */
    uint32_t client_body_timeout_ms;    /* idle time between request body reads [60000] */
    uint32_t keepalive_timeout_ms;      /* idle client connection [60000] */
    uint32_t send_timeout_ms;           /* idle time writing to the client [60000] */
    uint32_t connect_timeout_ms;        /* upstream connect default [5000] */
    uint32_t upstream_read_timeout_ms;  /* upstream read default [60000] */
    uint32_t upstream_write_timeout_ms; /* upstream write default [60000] */
    uint32_t upstream_idle_timeout_ms;  /* pooled idle upstream connection [60000] */
    uint32_t tunnel_idle_timeout_ms;    /* upgraded connection (WebSocket) idle [600000] */
    uint32_t upstream_keepalive; /* idle connections kept per peer, all workers together [256] */
    uint32_t max_header_bytes;   /* request line + headers (431 beyond) [65536] */
    uint32_t max_headers;        /* header count (431 beyond) [100] */
    uint64_t max_body_bytes;     /* request body limit (413 beyond); 0 = none */
    uint32_t max_uri_bytes;      /* request-target length (414 beyond) [8192] */
    /* Repeated slashes in a path stay as they are ("//a" is not "/a").
     * Default: merged, as nginx's merge_slashes. */
    bool keep_slashes;
    /* Forward header fields whose name has an underscore. Default: they are
     * dropped (nginx's underscores_in_headers off), since "X_Forwarded_For"
     * and "X-Forwarded-For" are one name to some backends (CGI, PHP). */
    bool underscores_in_headers;
    /*
     * Peers whose identity headers are believed. From any other peer, weir
     * drops X-Real-IP, X-Forwarded-Proto, X-Forwarded-Host,
     * X-Forwarded-Port and Forwarded, and sets X-Real-IP and
     * X-Forwarded-Proto from what it saw. From a trusted peer, the client
     * address is the rightmost address of X-Forwarded-For that is not
     * itself trusted (nginx's real_ip_recursive), and its
     * X-Forwarded-Proto is kept. X-Forwarded-For always gets the peer's
     * address appended.
     */
    weir_cidr trusted_proxies[WEIR_MAX_TRUSTED_PROXIES];
    uint32_t n_trusted_proxies;
    /*
     * Every connection starts with a PROXY protocol header (v1 or v2, as
     * HAProxy's send-proxy / send-proxy-v2 and cloud load balancers send
     * it), before TLS. Only peers in trusted_proxies may connect; others
     * are closed at accept. The client address it carries replaces the
     * peer's for everything after (logs, X-Forwarded-For, X-Real-IP,
     * hashing, the trusted-proxy check of identity headers); a v2 LOCAL
     * header (the balancer's own health check) keeps the peer's. A
     * missing or malformed header closes the connection (the header
     * timeout bounds the wait).
     */
    bool proxy_protocol;
    bool no_forwarded_headers; /* don't add X-Forwarded-For/-Proto, X-Real-IP */
    bool no_via;               /* don't add Via */
    bool no_request_id;        /* don't add X-Request-Id to requests that lack one */
    /* TLS on this service's listeners (weir/tls.h); NULL = plain TCP. Must
     * outlive the server. */
    struct weir_tls_server *tls;
    uint32_t tls_handshake_timeout_ms; /* whole TLS handshake [10000] */
    /* HTTP/2 from clients: over TLS when the listener's ALPN offers "h2";
     * on a plain listener with prior knowledge (h2c) when this is set. */
    bool h2c;
    uint32_t h2_max_concurrent_streams; /* streams per HTTP/2 connection [128] */
    /*
     * TLS passthrough on this service's TLS listeners: each connection's
     * ClientHello is read first (after the PROXY header, if any) and
     * offered to passthrough_ops->take (weir/l4.h); a connection it takes
     * becomes a TCP session of passthrough_ops with passthrough_app
     * (connect_timeout_ms, tunnel_idle_timeout_ms and
     * tls_handshake_timeout_ms apply), the rest are terminated here as
     * usual. Needs tls.
     */
    const struct weir_tcp_ops *passthrough_ops;
    void *passthrough_app;

    /*
     * Connection aging: client connections are retired so that clients
     * reconnect, and a reconnect is what lets a load balancer in front of
     * weir (or weir's own workers) spread them again. Each limit below is
     * taken with +-10% of random jitter per connection, so connections
     * made together do not retire together. WEIR_UNLIMITED turns a limit
     * with a default off. HTTP/1 connections read both limits at each
     * request; HTTP/2 ones the age when they start and the count at each
     * stream, so weir_server_update_aging changes them for new
     * connections and for the next request of open ones.
     *
     * HTTP/1.1: the request that reaches keepalive_requests, or the first
     * one starting after keepalive_time, is served normally with
     * "Connection: close", and the connection closes after it (nginx's
     * keepalive_requests and keepalive_time). Pipelined requests behind it
     * are not answered; the client sends them again on a new connection.
     *
     * HTTP/2: after h2_max_connection_age, or once keepalive_requests
     * streams were opened, weir starts a graceful GOAWAY (RFC 9113 6.8: a
     * shutdown notice and a PING, then, once the client answered the PING
     * and at least a second passed (3 s at most), the final GOAWAY naming
     * the last stream it takes). Streams in flight finish; the client
     * opens new ones on a new connection. After an age GOAWAY, streams
     * still open after h2_max_connection_age_grace are reset and the
     * connection closes; after a request-count GOAWAY they may take as
     * long as they need (the limit says nothing about time). Reloads and
     * drains retire HTTP/2 connections the same way.
     */
    uint32_t keepalive_requests;             /* requests per connection [1000] */
    uint32_t keepalive_time_ms;              /* HTTP/1 connection lifetime [3600000] */
    uint32_t h2_max_connection_age_ms;       /* HTTP/2 connection lifetime; 0 = off [0] */
    uint32_t h2_max_connection_age_grace_ms; /* streams' time after an age GOAWAY [30000] */
} weir_proxy_options;

/* Replaces each zero field of *o by its default (the values in brackets
 * above), as weir_server_add_proxy does: what a service will run with. */
void weir_proxy_options_defaults(weir_proxy_options *o);

#ifdef __cplusplus
}
#endif
#endif
