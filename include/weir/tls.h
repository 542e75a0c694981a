/*
 * weir/tls.h - TLS settings for listeners (downstream) and for connections
 * to backends (upstream), on OpenSSL 3.
 *
 * A weir_tls_server is what a TLS listener serves: certificates chosen by
 * SNI, protocol versions, ALPN, session tickets, client-certificate checks.
 * It can be changed while the server runs (weir_tls_server_update, e.g. on
 * a reload): new handshakes use the new settings, established connections
 * keep theirs, and session tickets issued before stay valid.
 *
 * A weir_tls_client is how weir connects to TLS backends: verification,
 * CA file, a client certificate, ALPN. It keeps the TLS sessions of the
 * backends it talked to, so a new connection to one resumes instead of
 * doing a full handshake. Peers name one in weir_peer.tls_client;
 * connections made with different clients are pooled apart.
 *
 * Both objects are safe to use from every worker at once.
 */
#ifndef WEIR_TLS_H
#define WEIR_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weir_tls_server weir_tls_server;
typedef struct weir_tls_client weir_tls_client;

/* One certificate with its key. */
typedef struct weir_tls_cert_spec {
    const char *cert_file;  /* PEM: the leaf, optionally followed by its chain */
    const char *key_file;   /* PEM private key matching the leaf */
    const char *chain_file; /* extra PEM chain certificates; NULL = none */
    /* Instead of the files (cert_file NULL): the leaf (and chain) and key
     * as PEM text, e.g. a certificate made in memory. */
    const char *cert_pem, *key_pem;
    /* Names this certificate is served for: exact ("a.example") or one
     * wildcard label ("*.example", matching "x.example" only). n_names 0 =
     * the certificate's DNS subjectAltNames, or its CN when it has none. */
    const char *const *names;
    size_t n_names;
} weir_tls_cert_spec;

typedef struct weir_tls_server_spec {
    const weir_tls_cert_spec *certs; /* at least one */
    size_t n_certs;
    size_t default_cert;         /* index served when SNI is absent or matches nothing */
    int min_version;             /* 12 (TLS 1.2, the default when 0) or 13 */
    const char *ciphers;         /* TLS 1.2 cipher list; NULL = ECDHE with AES-GCM/ChaCha20 */
    const char *ciphersuites;    /* TLS 1.3 suites; NULL = OpenSSL's default */
    const char *alpn;            /* protocols offered, preferred first, comma-separated,
                                    e.g. "h2,http/1.1"; NULL = "http/1.1", "" = none */
    bool no_tickets;             /* no session tickets (the session cache still resumes) */
    const char *client_ca_file;  /* mTLS: client certificates must chain to these; NULL = off */
    bool client_verify_optional; /* with client_ca_file: a client without a certificate passes */
} weir_tls_server_spec;

/*
 * Builds server settings from spec: reads and checks every file (a key
 * must match its certificate). Returns NULL on error with a message in err
 * (always NUL-terminated, naming the file and OpenSSL's reason). Any thread.
 */
weir_tls_server *weir_tls_server_new(const weir_tls_server_spec *spec, char *err, size_t err_len);

/*
 * Replaces t's settings with spec's, atomically for new handshakes; the
 * session-ticket keys are kept so resumption keeps working. On error t is
 * unchanged, err says why, and the result is WEIR_ERR_INVAL. Any thread.
 */
int weir_tls_server_update(weir_tls_server *t, const weir_tls_server_spec *spec, char *err,
                           size_t err_len);

/* Frees t once no listener uses it (connections keep what they need). */
void weir_tls_server_free(weir_tls_server *t);

/*
 * TLS-ALPN-01 (RFC 8737), for an ACME client: while a challenge is set for
 * name, a handshake on any TLS server for that name that offers the
 * "acme-tls/1" protocol gets cert_pem/key_pem (the challenge certificate)
 * and that protocol; other handshakes are untouched. cert_pem NULL removes
 * it. WEIR_OK, WEIR_ERR_INVAL (unreadable PEM) or WEIR_ERR_NOMEM (16 at
 * once). Any thread.
 */
int weir_tls_set_acme_challenge(const char *name, const char *cert_pem, const char *key_pem);

/*
 * OCSP stapling: der (len bytes, a DER OCSPResponse) is stapled to every
 * handshake, on any TLS server, that serves the certificate whose SHA-256
 * fingerprint is given and whose client asks for it; len 0 removes it.
 * The caller fetches, checks and refreshes the responses (weir's do:
 * src/app/ocsp.c). WEIR_OK or WEIR_ERR_NOMEM (256 at most). Any thread.
 */
int weir_tls_set_ocsp(const unsigned char fingerprint[32], const unsigned char *der, size_t len);

typedef struct weir_tls_client_spec {
    bool no_verify;         /* accept any backend certificate (not recommended) */
    const char *ca_file;    /* trusted CAs (PEM); NULL = the system's */
    const char *cert_file;  /* client certificate for mTLS to backends; NULL = none */
    const char *key_file;   /* its key */
    const char *chain_file; /* its extra chain; NULL = none */
    const char *alpn;       /* protocols offered, comma-separated; NULL = "http/1.1" */
    int min_version;        /* 12 (default when 0) or 13 */
} weir_tls_client_spec;

/*
 * Builds client settings. Returns NULL with a message in err on error.
 * With verification on (the default) the backend's chain is checked and
 * its name must match the peer's SNI, or its IP address when there is no
 * SNI. Any thread.
 */
weir_tls_client *weir_tls_client_new(const weir_tls_client_spec *spec, char *err, size_t err_len);

/* Frees c once no peer names it any more (pooled connections made with it
 * keep what they need). */
void weir_tls_client_free(weir_tls_client *c);

/* TLS counters of a running server (see weir_server_get_stats). */
/* Handshake durations are counted in these buckets: at most 1, 5, 10,
 * 25, 50, 100, 250, 500, 1,000, 2,500 ms, and more. */
#define WEIR_TLS_BUCKETS 11
extern const uint32_t weir_tls_bucket_us[WEIR_TLS_BUCKETS - 1];

typedef struct weir_tls_stats {
    uint64_t handshakes;    /* completed client handshakes */
    uint64_t resumed;       /* of which resumed a session */
    uint64_t failures;      /* failed client handshakes (bad data, timeout, refused cert) */
    uint64_t up_handshakes; /* completed handshakes with backends */
    uint64_t up_resumed;    /* of which resumed */
    uint64_t up_failures;   /* failed handshakes with backends */
    /* Durations of completed handshakes, from the first step to the end
     * (round trips included): [0] with clients, [1] with backends; per
     * bucket (not cumulative), and their sum in microseconds. */
    uint64_t duration[2][WEIR_TLS_BUCKETS];
    uint64_t duration_sum_us[2];
} weir_tls_stats;

#ifdef __cplusplus
}
#endif
#endif
