/*
 * manager.h - the certificates weir obtains itself: every
 * [certificates.NAME] with `acme` is ordered when its files are missing,
 * do not cover its domains or are due for renewal, on a thread of its own
 * (the ACME exchanges block; no worker waits for them). A new certificate
 * is written to the storage directory (0600, atomically) and swapped into
 * the running TLS listeners without a reload: new handshakes use it,
 * established connections keep theirs. A failure keeps what is served and
 * tries again with backoff (5 s doubling to an hour; a rate limit's
 * Retry-After when longer).
 *
 * With the config in etcd (fleet not NULL), only the instance holding the
 * fleet's singleton lock orders; it stores the certificate and key under
 * /PREFIX/acme/NAME with a compare on the lock's fencing token, and every
 * instance loads what is there when it is newer than its own.
 *
 * HTTP-01 answers: while an order runs, weir__acme_http01 gives the key
 * authorization of each token it presented; the phases answer
 * /.well-known/acme-challenge/TOKEN with it before any location.
 */
#ifndef WEIR_APP_ACME_MANAGER_H
#define WEIR_APP_ACME_MANAGER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app/app.h"

typedef struct weir_acme_manager weir_acme_manager;
struct weir_etcd_source;

/* Starts the thread; it reads the running configuration's certificates
 * each round, so reloads that add or change them are followed. Main
 * thread, once srv runs. NULL on failure. */
weir_acme_manager *weir__acme_manager_start(weir_app *app, weir_server *srv,
                                            struct weir_etcd_source *fleet);
/* Stops the thread (an order in flight ends at its next exchange). */
void weir__acme_manager_stop(weir_acme_manager *m);

/* The key authorization for token[0..len) when an order presented it:
 * copied into buf (NUL-terminated); false when unknown or too long. Any
 * thread. */
bool weir__acme_http01(const char *token, size_t len, char *buf, size_t cap);

/* An HTTP-01 answer another instance of the fleet presented (from etcd's
 * /PREFIX/acme/http-01/TOKEN), or its removal (key_auth NULL). Any thread.
 * True when this instance now gives that answer. */
bool weir__acme_http01_set(const char *token, const char *key_auth);
/* Another fleet instance's TLS-ALPN-01 challenge for domain (key_auth
 * NULL: it is over): its challenge certificate, made here, is served by
 * this instance's TLS listeners too. The etcd watch calls it. True when
 * this instance now serves it. */
bool weir__acme_alpn_set(const char *domain, const char *key_auth);

/* Per certificate: state, expiry, last error; orders counted. Any thread. */
json_t *weir__acme_status(weir_acme_manager *m);
/* When c's certificate expires (Unix time; 0: unknown): a file's as read
 * at load, an acme one's as served. Any thread. */
struct weir_cfg_cert;
int64_t weir__acme_not_after(const struct weir_cfg_cert *c);

/* The running manager (the last started and not stopped), or NULL. */
weir_acme_manager *weir__acme_manager_running(void);

#endif
