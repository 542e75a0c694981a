/*
 * weir/peer.h - an upstream peer: where one request is sent and how.
 */
#ifndef WEIR_PEER_H
#define WEIR_PEER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "weir/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A cap on the connections to one backend, shared by every worker:
 * connections in use plus idle pooled ones (HAProxy's server maxconn). A
 * request that finds no idle connection and no free slot waits, in order,
 * for one, at most its peer's queue_timeout_ms (then 503 with
 * Retry-After). HTTP/1 backends only: an HTTP/2 backend's streams are
 * bounded by its own SETTINGS.
 */
typedef struct weir_conn_limit weir_conn_limit;
/* max > 0; NULL for 0 or out of memory. Any thread. */
weir_conn_limit *weir_conn_limit_new(uint32_t max);
/* Drops the creator's reference; connections still open under it keep it
 * alive until they close. */
void weir_conn_limit_free(weir_conn_limit *l);
/* Slots held now (connections open or opening), and requests waiting. */
uint32_t weir_conn_limit_in_use(weir_conn_limit *l);
uint32_t weir_conn_limit_waiting(weir_conn_limit *l);

/*
 * Filled by the upstream_peer phase. The session zeroes it and sets the
 * timeouts to the service defaults before the phase runs, so a phase only
 * sets what it wants to change. A timeout of 0 means "the default".
 */
typedef struct weir_peer {
    struct sockaddr_storage addr; /* backend address (IPv4 or IPv6) */
    socklen_t addr_len;
    bool tls;      /* TLS to the backend */
    char sni[256]; /* TLS server name, NUL-terminated; empty = none */
    /* How to do TLS (verification, CA, client certificate, ALPN; see
     * weir/tls.h); NULL = verify against the system CAs, offer http/1.1.
     * Must outlive the request. */
    const struct weir_tls_client *tls_client;
    /* HTTP/2 to the backend: over TLS its ALPN must pick "h2" (give a
     * tls_client offering "h2"); without TLS, h2c with prior knowledge.
     * Requests share connections (as many streams as the backend allows). */
    bool h2;
    /* With tls: offer both "h2" and "http/1.1" by ALPN and speak what the
     * backend picks (give a tls_client offering both). Once a backend took
     * h2, this worker's next requests to it share that connection. */
    bool h2_or_h1;
    uint32_t connect_timeout_ms; /* TCP connect */
    uint32_t read_timeout_ms;    /* idle time between bytes of the response */
    uint32_t write_timeout_ms;   /* idle time while sending the request */
    uint32_t idle_timeout_ms;    /* how long a pooled idle connection is kept */
    uint32_t keepalive;          /* idle connections kept for this peer (shared pool); preset to the
                                    service's upstream_keepalive, 0 = never pool */
    /*
     * Connection aging upstream: a connection to this peer older than
     * max_connection_age_ms (+-10% jitter per connection), or that carried
     * max_requests requests, is not used for new ones: over HTTP/1 it is
     * closed instead of going back to the pool; over HTTP/2 it takes no
     * new streams and closes when its streams end, so requests move to a
     * new connection (and, behind a load balancer or after a scale-out,
     * to other backends). 0 = no limit. Fixed for a connection when it is
     * made, from the peer of the request that made it.
     */
    uint32_t max_connection_age_ms;
    uint32_t max_requests;
    /* Connections to this backend are capped (weir_conn_limit): HTTP/1
     * connections open, in use or pooled; over HTTP/2, streams in flight.
     * NULL = none. Must stay valid while the request runs. */
    weir_conn_limit *conn_limit;
    uint32_t queue_timeout_ms; /* wait for a connection under conn_limit [30000] */
    /* Failures besides a failed connect and a reset before the response
     * that fail_to_connect is asked about (WEIR_RETRY_* bits; 0 = none).
     * Only while no request body byte has been sent. */
    uint8_t retry_on;
    /*
     * New connections start with a PROXY protocol header naming the
     * client's connection (1: v1, 2: v2 with the client's TLS server
     * name as AUTHORITY), as HAProxy's send-proxy and send-proxy-v2. A
     * pooled one is then reused only for the client connection it names.
     * Not with h2 (an HTTP/2 connection carries many clients).
     */
    uint8_t send_proxy;
    void *user; /* the application's own pointer, e.g. its backend */
    /* addr as "ip:port" ("[v6]:port"), if the application keeps it, so logs
     * need not format it per request; NULL = weir formats it when asked.
     * Copied when upstream_peer returns (weir_backend_peer sets it). */
    const char *addr_text;
} weir_peer;

/* weir_peer.retry_on bits. */
enum {
    WEIR_RETRY_TIMEOUT = 1, /* no response byte within read_timeout */
    WEIR_RETRY_502 = 2,     /* the backend answered with this status: if a */
    WEIR_RETRY_503 = 4,     /* retry follows, its response is dropped; if */
    WEIR_RETRY_504 = 8,     /* not, it goes to the client as usual */
};

/*
 * Sets peer->addr from "ip:port" or "[ipv6]:port" (numeric; no DNS on the
 * request path). Returns WEIR_OK or WEIR_ERR_INVAL. Any thread.
 */
int weir_peer_set_addr(weir_peer *peer, const char *ip_port);

/*
 * Writes "ip:port" of the peer into buf (64 bytes are always enough).
 * Returns buf. Any thread.
 */
const char *weir_peer_addr_str(const weir_peer *peer, char *buf, size_t buf_len);

#ifdef __cplusplus
}
#endif
#endif
