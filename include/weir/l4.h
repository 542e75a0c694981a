/*
 * weir/l4.h - TCP (L4) services: every accepted connection is balanced to
 * a backend and bytes are moved both ways until both sides are done, as
 * HAProxy's mode tcp and nginx's stream module do.
 *
 * A TCP session runs on the worker that accepted its connection: the
 * optional PROXY header, the TLS handshake when the service terminates
 * TLS, then upstream_peer (which backend), the connect
 * (connect_timeout_ms; on failure fail_to_connect decides whether
 * upstream_peer runs again for another backend), then the tunnel. Between
 * two plain sockets bytes go through splice(2), never through user space.
 * A side that finishes sending (a TCP FIN) is passed on as a FIN to the
 * other, which may go on sending (a half-close); the session ends when
 * both directions are done, on an error (the other side gets a FIN), or
 * after idle_timeout_ms without a byte either way.
 */
#ifndef WEIR_L4_H
#define WEIR_L4_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "weir/peer.h"
#include "weir/proxy.h"
#include "weir/session.h"
#include "weir/types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weir_server weir_server;
typedef struct weir_tcp_session weir_tcp_session;

/* Figures handed to the logging phase of a TCP or a UDP session. Times
 * in microseconds. */
typedef struct weir_l4_stats {
    /*
     * As nginx's stream $status: 200 the session ran (however it ended),
     * 400 a bad PROXY header, 403 refused, 499 the client reset while
     * its backend was queued for or connecting ("CQ", "CC"), 500 an
     * internal failure, 502 no backend could be connected, 503 no
     * backend was usable.
     */
    int status;
    uint64_t bytes_received;          /* from the client */
    uint64_t bytes_sent;              /* to the client */
    uint64_t upstream_bytes_received; /* from the backend */
    uint64_t upstream_bytes_sent;     /* to the backend */
    /* UDP: datagrams from the client and to it, and from the backend (0
     * for TCP). */
    uint64_t datagrams_received;
    uint64_t datagrams_sent;
    uint64_t upstream_datagrams_received;
    int64_t session_time_us;   /* accept (a UDP session's first datagram) to the end */
    int64_t connect_time_us;   /* connect of the attempt that worked; -1 if none did */
    const char *upstream_addr; /* "ip:port" of the last backend tried, or "-" */
    int attempts;              /* backends tried */
    const char *error;         /* why it failed, or NULL */
    /*
     * How it ended, as HAProxy's termination state: who, then when. Who:
     * '-' both sides finished normally, 'C' the client reset or failed,
     * 'c' the idle timeout (or a PROXY header that never came), 'S' the
     * backend refused, reset or failed, 's' the backend's connect timed
     * out (or no slot under its conn_limit within queue_timeout_ms:
     * "sQ", status 503), 'P' weir refused it or had no backend, 'K'
     * shutdown. When: 'R' before a backend was chosen, 'C' connecting,
     * 'Q' queued, 'T' the tunnel.
     */
    char termination[3];
} weir_l4_stats;

typedef struct weir_tcp_ops {
    /* Creates the per-session context passed to every phase (may return
     * NULL). */
    void *(*new_ctx)(weir_tcp_session *s, void *app);
    /* Frees it after logging. */
    void (*free_ctx)(void *app, void *ctx);
    /*
     * Chooses the backend: fill *peer (its address, connect_timeout_ms,
     * conn_limit, queue_timeout_ms, tls/sni/tls_client to originate TLS).
     * Required; must not pend. Return WEIR_PHASE_CONTINUE, or
     * WEIR_PHASE_ERROR to close the client's connection (no backend).
     * Called again for each retry.
     */
    weir_phase_result (*upstream_peer)(weir_tcp_session *s, void *ctx, weir_peer *peer);
    /* Connecting to peer failed with error (-ECONNREFUSED, -ETIMEDOUT,
     * -EPROTO for a TLS failure...). Return true to try again
     * (upstream_peer runs again). `attempt` is 1 for the first failure.
     * Default: no retry. */
    bool (*fail_to_connect)(weir_tcp_session *s, void *ctx, const weir_peer *peer, int error,
                            int attempt);
    /*
     * TLS passthrough on an HTTPS listener (weir_proxy_options.passthrough_ops):
     * called once the ClientHello is read (weir_tcp_session_sni), before
     * new_ctx. Return true to pass this connection through as a TCP
     * session, false to hand it, untouched, to the HTTP service, which
     * terminates its TLS. Default: true.
     */
    bool (*take)(weir_tcp_session *s, void *app);
    /* The backend's connection is ready; the tunnel starts. */
    void (*connected_to_upstream)(weir_tcp_session *s, void *ctx, const weir_peer *peer);
    /* Last phase, once per session that ran new_ctx. */
    void (*logging)(weir_tcp_session *s, void *ctx, const weir_l4_stats *stats);
} weir_tcp_ops;

/* Per-service settings; zero fields take the default in brackets. */
typedef struct weir_tcp_options {
    uint32_t connect_timeout_ms; /* a peer's default when it gives none [5000] */
    uint32_t idle_timeout_ms;    /* no byte either way: the session ends [600000] */
    /* Bytes per second read from the client (upload) and from the backend
     * (download), per session; 0 = unlimited. A second's worth may come
     * at once. */
    uint64_t upload_rate;
    uint64_t download_rate;
    /* The PROXY protocol on accepted connections, as for HTTP services
     * (weir/proxy.h): only from trusted_proxies, others are closed at
     * accept; its client address is the session's. */
    bool proxy_protocol;
    weir_cidr trusted_proxies[WEIR_MAX_TRUSTED_PROXIES];
    uint32_t n_trusted_proxies;
    uint32_t handshake_timeout_ms; /* the PROXY header must be complete by then [10000] */
    /* TLS on the listeners (weir/tls.h): terminated, the backend gets the
     * plain bytes (a backend's TLS is the peer's: weir_peer.tls). NULL =
     * plain TCP. Must outlive the server. */
    struct weir_tls_server *tls;
    uint32_t tls_handshake_timeout_ms; /* whole TLS handshake, or the ClientHello's wait [10000] */
    /*
     * TLS passthrough: the client's ClientHello is read before anything
     * else (at most 16 KB, within tls_handshake_timeout_ms) but not
     * answered; upstream_peer sees its server name (weir_tcp_session_sni)
     * and the backend gets every byte as the client sent it. A connection
     * that does not start with a ClientHello is closed. Not with tls.
     */
    bool peek_client_hello;
} weir_tcp_options;

/*
 * Listens on the addresses for a TCP service (like weir_server_add_proxy,
 * including taking over addresses another service released). ops and app
 * must outlive the server.
 */
int weir_server_add_tcp(weir_server *srv, const char *const *listen_addrs, size_t n_addrs,
                        const weir_tcp_ops *ops, void *app, const weir_tcp_options *opts);

/* The client's address (the PROXY header's when there was one). */
const struct sockaddr *weir_tcp_session_client_addr(const weir_tcp_session *s);
/* The client's IP as text, valid for the session. */
weir_str weir_tcp_session_client_ip(const weir_tcp_session *s);
/* The address of the listener that accepted the connection. */
const char *weir_tcp_session_listen_addr(const weir_tcp_session *s);
/* The server name of the client's ClientHello (peek_client_hello, or the
 * TLS it terminates), lower case; "" for none, NULL before it is known. */
const char *weir_tcp_session_sni(const weir_tcp_session *s);
/* The client's TLS (version, cipher, SNI, ALPN) when the service
 * terminates it: true with *out filled; false for plain TCP. */
bool weir_tcp_session_tls(const weir_tcp_session *s, weir_tls_info *out);

/*
 * ---- UDP services ----
 *
 * Datagrams are balanced per client address (its IP and port): the first
 * datagram from a client starts a session, which chooses a backend
 * (upstream_peer) and gets a socket of its own connected to it; the
 * client's later datagrams go the same way, and every datagram the
 * backend sends back goes to the client from the address the client sent
 * to (a wildcard listener answers from the right local address). A
 * session ends after idle_timeout_ms without a datagram either way, or
 * once the backend sent `responses` datagrams for each of the client's
 * (DNS: 1), so the client's next datagram is balanced anew.
 *
 * Each worker has its own SO_REUSEPORT socket per address; the kernel
 * sends one client's datagrams to one of them, so a session lives on one
 * worker. A backend that answers with ICMP port unreachable before its
 * first reply fails the attempt: fail_to_connect decides whether the
 * client's last datagram (up to 4 KB) goes to another backend. A session
 * whose backend left or turned unusable (ops->stale, asked at most once a
 * second) ends at the client's next datagram, which starts a new one.
 * Datagrams are never queued: one that cannot be sent at once (a full
 * socket buffer, the service's max_sessions reached, no descriptor left)
 * is dropped, as the network may do, and counted
 * (weir_server_stats.udp_dropped).
 *
 * The session's stats (weir_l4_stats) count bytes and datagrams; status
 * is 200 when a backend was used, 502 when every backend tried refused,
 * 503 when none was usable, 500 when weir had no socket for it;
 * termination is "-T" (the responses came), "cT" (idle), "ST"/"SC" (the
 * backend refused after/before replying), "PR" (no backend, or no
 * socket), or "KT" (shutdown or a drain's shorter quiet, the listener
 * removed, the backend gone: stale).
 */
typedef struct weir_udp_session weir_udp_session;

typedef struct weir_udp_ops {
    /* As weir_tcp_ops: the per-session context, and its release. */
    void *(*new_ctx)(weir_udp_session *s, void *app);
    void (*free_ctx)(void *app, void *ctx);
    /* Chooses the backend: fill peer->addr (the rest of *peer is unused).
     * Required; must not pend. WEIR_PHASE_ERROR ends the session at once
     * (status 503, logged) and drops the datagram. */
    weir_phase_result (*upstream_peer)(weir_udp_session *s, void *ctx, weir_peer *peer);
    /* The backend refused (error -ECONNREFUSED, or -EHOSTUNREACH...)
     * before it replied; return true to send the client's last datagram
     * (if at most 4 KB) to another backend (upstream_peer runs again).
     * attempt is 1 for the first failure. Default: no. */
    bool (*fail_to_connect)(weir_udp_session *s, void *ctx, const weir_peer *peer, int error,
                            int attempt);
    /* Whether the session's backend is gone (removed by a reload or
     * discovery, unhealthy, draining): true ends the session and the
     * client's datagram starts a new one. Optional; at most once a second
     * per session, on a client datagram. */
    bool (*stale)(weir_udp_session *s, void *ctx);
    /* Last phase, once per session that ran new_ctx. */
    void (*logging)(weir_udp_session *s, void *ctx, const weir_l4_stats *stats);
} weir_udp_ops;

typedef struct weir_udp_options {
    uint32_t idle_timeout_ms; /* no datagram either way: the session ends [30000] */
    uint32_t responses;       /* backend datagrams per client datagram that end it; 0 = none */
    uint32_t max_sessions;    /* open at once, all workers together; a datagram that would
                                 start one more is dropped [4096] */
} weir_udp_options;

/* Listens on the addresses (UDP; "*:53" may also be a TCP service's) for
 * a UDP service. ops and app must outlive the server. */
int weir_server_add_udp(weir_server *srv, const char *const *listen_addrs, size_t n_addrs,
                        const weir_udp_ops *ops, void *app, const weir_udp_options *opts);

/* The client's address and IP (as text, valid for the session). */
const struct sockaddr *weir_udp_session_client_addr(const weir_udp_session *s);
weir_str weir_udp_session_client_ip(const weir_udp_session *s);
/* The address of the listener the client sent to. */
const char *weir_udp_session_listen_addr(const weir_udp_session *s);

#ifdef __cplusplus
}
#endif
#endif
