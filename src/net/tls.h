/*
 * tls.h - internal side of weir/tls.h: making SSL objects for connections,
 * describing failures, counting handshakes.
 */
#ifndef WEIR_NET_TLS_H
#define WEIR_NET_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>

#include "weir/peer.h"
#include "weir/session.h"
#include "weir/tls.h"

/* A server-side SSL for a new client connection (current settings of t);
 * NULL on allocation failure. Any thread. */
SSL *weir__tls_server_ssl(weir_tls_server *t);

/* A client-side SSL for a connection to peer, with SNI, the name or IP
 * check, ALPN and a cached session to resume. c NULL = the default client.
 * NULL on failure. Any thread. */
SSL *weir__tls_client_ssl(const weir_tls_client *c, const weir_peer *peer);

/* The id that tells pooled connections of different clients apart (0 for
 * the default client). */
uint64_t weir__tls_client_id(const weir_tls_client *c);

/* Why the last TLS call on ssl failed with SSL_get_error() result `err`:
 * OpenSSL's reason, or the certificate check that failed. Clears the
 * thread's OpenSSL error queue. Returns buf. */
const char *weir__tls_describe(SSL *ssl, int err, char *buf, size_t len);

/* The negotiated ALPN protocol, or an empty string. */
weir_str weir__tls_alpn(SSL *ssl);

/* A connection's TLS as weir_tls_info: false (zeroed) when ssl is NULL. */
bool weir__tls_info(SSL *ssl, weir_tls_info *out);

/* Counters (per thread, summed by weir__tls_stats). */
typedef enum weir_tls_event {
    WEIR_TLS_HANDSHAKE,
    WEIR_TLS_RESUMED,
    WEIR_TLS_FAILURE,
    WEIR_TLS_UP_HANDSHAKE,
    WEIR_TLS_UP_RESUMED,
    WEIR_TLS_UP_FAILURE,
    WEIR_TLS_N_EVENTS,
} weir_tls_event;
void weir__tls_count(weir_tls_event ev);
/* One completed handshake's duration, with a client (server side) or a
 * backend, into this thread's histogram. */
void weir__tls_observe_handshake(bool with_client, uint64_t us);

/* TLS-ALPN-01 (tls_alpn01.c): the client-hello callback of every server
 * context, and whether it gave ssl a challenge certificate. */
int weir__tls_alpn01_hello(SSL *ssl, int *alert, void *arg);
bool weir__tls_alpn01_marked(SSL *ssl);

/* OCSP stapling (tls_ocsp.c): the status callback of every server context. */
int weir__tls_ocsp_status(SSL *ssl, void *arg);
void weir__tls_stats(weir_tls_stats *out);

#endif
