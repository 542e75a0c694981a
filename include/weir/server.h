/*
 * weir/server.h - the server: worker threads, listeners, signals.
 *
 * Typical use:
 *     weir_server *srv = weir_server_new(&opts);
 *     weir_server_add_proxy(srv, addrs, n, &ops, app, &popts);
 *     int rc = weir_server_run(srv);   // until SIGTERM/SIGINT/SIGQUIT
 *     weir_server_free(srv);
 */
#ifndef WEIR_SERVER_H
#define WEIR_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weir/lb.h"
#include "weir/proxy.h"
#include "weir/tls.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weir_server weir_server;

typedef struct weir_server_options {
    int threads;              /* worker threads; 0 = one per CPU */
    uint32_t grace_period_ms; /* SIGTERM drain limit; 0 = 10000 */
    const char *access_log;   /* NULL = none, "-" = stdout, else a file path (appended) */
    bool handle_signals;      /* run installs SIGTERM/SIGINT/SIGQUIT handling (signalfd) */
    /* With handle_signals: called on the main thread on SIGHUP (reload the
     * configuration) and SIGUSR1 (reopen log files); NULL = ignored. */
    void (*on_reload)(void *arg);
    void (*on_reopen_logs)(void *arg);
    void *signal_arg;
    /* Unix socket path on which the running server hands its listening
     * sockets to a successor (zero-downtime upgrade); NULL = none. */
    const char *upgrade_sock;
    /* Called on the main thread once the workers serve every listener (for
     * a daemon's readiness report); NULL = none. Gets signal_arg. */
    void (*on_started)(void *arg);
} weir_server_options;

/* Creates a server; NULL on allocation failure. Main thread. */
weir_server *weir_server_new(const weir_server_options *opts);

/*
 * Adds a proxy service listening on each "ip:port" of listen_addrs (a
 * socket per worker with SO_REUSEPORT). ops and app must outlive the
 * server; opts may be NULL (defaults) and is copied. Returns WEIR_OK,
 * WEIR_ERR_INVAL (bad address, one already listened on, no upstream_peer,
 * or 256 services) or -errno from bind. Before weir_server_run, or on a
 * running server from its main thread (a reload): the sockets are then
 * bound at once, so a bind error leaves everything as it was. An address
 * weir_server_release_listen released moves to this service with its
 * sockets instead.
 */
int weir_server_add_proxy(weir_server *srv, const char *const *listen_addrs, size_t n_addrs,
                          const weir_proxy_ops *ops, void *app, const weir_proxy_options *opts);

/*
 * Attaches an upstream whose active health checks (weir_upstream_set_health_check)
 * the server runs on its control thread while it runs. The upstream must
 * outlive the server's run. Returns WEIR_OK, or WEIR_ERR_INVAL when called
 * on a running server or beyond 1024 upstreams. Main thread, before run.
 */
int weir_server_add_upstream(weir_server *srv, weir_upstream *u);

/*
 * Stops listening on addr (a reload that dropped it): every worker closes
 * its socket; connections already accepted finish normally. The address
 * may be added again later. Main thread. WEIR_ERR_INVAL if not listened on.
 * A UDP service's address is named "udp://ip:port" here and in
 * weir_server_release_listen; its sessions end at their next reply.
 */
int weir_server_remove_listen(weir_server *srv, const char *addr);

/*
 * Marks addr, listened on, as about to change service (a reload that gives
 * it to another server): it goes on accepting for its current one until
 * weir_server_add_proxy names it again, which moves it there with its
 * sockets (connections queued on them are served, none is reset), or until
 * weir_server_remove_listen closes it. Connections already accepted stay
 * with their service. Main thread. WEIR_ERR_INVAL if not listened on.
 */
int weir_server_release_listen(weir_server *srv, const char *addr);

/*
 * Replaces the set of upstreams whose health checks the control thread
 * runs (a reload): the checker restarts on the new set; backends of the new
 * upstreams start healthy. Main thread, while the server runs (e.g. from
 * on_reload). Returns WEIR_OK, or WEIR_ERR_NOMEM (the old set stays).
 */
int weir_server_set_upstreams(weir_server *srv, weir_upstream *const *ups, size_t n);

/*
 * Runs fn(arg) on the server's main thread (where reload-type work such as
 * weir_server_set_upstreams belongs), soon, while the server runs. Any
 * thread. Returns WEIR_OK, or WEIR_ERR_INVAL if the server is not running,
 * or WEIR_ERR_NOMEM.
 */
int weir_server_call_main(weir_server *srv, void (*fn)(void *arg), void *arg);

/*
 * Makes this (new) server take over the listening sockets of the server
 * running at upgrade_sock instead of binding its own: weir_server_run then
 * serves them, tells the old server it is ready (the old one drains and
 * exits), and offers upgrades itself on opts.upgrade_sock. Listen addresses
 * the old server had but this one lacks are closed; new ones are bound.
 * Call after weir_server_add_proxy, before run. Returns WEIR_OK or a
 * negative error (no server answered: nothing was taken).
 */
int weir_server_take_over(weir_server *srv, const char *upgrade_sock);

/*
 * Starts the workers and blocks until the server stops: on SIGTERM/SIGINT
 * (with handle_signals) or weir_server_shutdown(srv, true) it stops
 * accepting, lets in-flight requests finish within the grace period and
 * returns 0; on SIGQUIT or weir_server_shutdown(srv, false) it stops at
 * once. Returns -errno if a worker cannot start. Main thread.
 */
int weir_server_run(weir_server *srv);

/* Asks a running server to stop (graceful or immediate). Any thread,
 * async-signal-safe. */
void weir_server_shutdown(weir_server *srv, bool graceful);

/*
 * Asks the long-lived HTTP/2 connections to move on, as after a reload:
 * each client connection gets GOAWAY (its streams in flight finish, the
 * client opens a new connection for new requests) and each backend
 * connection takes no new streams (idle ones close with GOAWAY at once,
 * busy ones when their streams end). Any thread, while the server runs.
 */
void weir_server_renew_connections(weir_server *srv);

/*
 * Changes the connection-aging limits of the service listening on
 * listen_addr ("ip:port", as given to weir_server_add_proxy) to those of
 * opts (keepalive_requests, keepalive_time_ms, h2_max_connection_age_ms,
 * h2_max_connection_age_grace_ms; zero fields take their defaults; the
 * other fields are ignored), without a restart: HTTP/1 connections apply
 * them from their next request on, HTTP/2 connections the request count
 * from their next stream and the age when they start (an open one keeps
 * the age it started with). Returns WEIR_OK, or WEIR_ERR_INVAL if no
 * service listens there. The thread that adds services (the main thread
 * of a running server).
 */
int weir_server_update_aging(weir_server *srv, const char *listen_addr,
                             const weir_proxy_options *opts);

/* Live figures of a running server, for metrics. */
typedef struct weir_server_stats {
    uint64_t client_connections;    /* open HTTP/1 client connections, all workers */
    uint64_t client_connections_h2; /* open HTTP/2 client connections */
    uint64_t tcp_sessions;          /* open TCP (L4) sessions (weir/l4.h) */
    uint64_t udp_sessions;          /* open UDP sessions (weir/l4.h) */
    uint64_t udp_dropped;           /* UDP datagrams dropped since the start */
    uint64_t resp_connections;      /* open RESP client connections (weir/resp.h) */
    uint64_t pool_idle;             /* idle upstream connections in the shared pool */
    uint64_t pool_migrations;       /* idle connections taken over by another worker */
    int workers;
    weir_tls_stats tls; /* TLS handshakes, both sides (whole process) */
} weir_server_stats;

/* Fills *out. Any thread, while the server runs (zeroes otherwise). */
void weir_server_get_stats(weir_server *srv, weir_server_stats *out);

/* The shared pool's idle connections per backend: cb(addr ("ip:port"),
 * how many, arg) once per backend with any, in address order. Any thread;
 * cb runs outside the pool's lock. */
typedef void (*weir_pool_idle_cb)(const char *addr, uint64_t idle, void *arg);
void weir_server_pool_idle_each(weir_pool_idle_cb cb, void *arg);

/* Frees a server that is not running. */
void weir_server_free(weir_server *srv);

/*
 * Sets the error-log level by name: "error", "warn", "info" (the default)
 * or "debug". Returns WEIR_OK or WEIR_ERR_INVAL. Any thread.
 */
int weir_set_log_level(const char *level);

/* The library version, e.g. "0.1.0". */
const char *weir_version(void);

#ifdef __cplusplus
}
#endif
#endif
