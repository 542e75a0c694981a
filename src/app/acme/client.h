/*
 * client.h - an ACME v2 client (RFC 8555) over libcurl and jansson: the
 * account, an order for a set of DNS names, its authorizations answered by
 * a challenge of the caller's (HTTP-01: the caller serves the key
 * authorization at /.well-known/acme-challenge/TOKEN), the CSR, and the
 * certificate chain.
 *
 * The protocol's rules: every POST is a JWS with a fresh nonce (each
 * answer's Replay-Nonce is kept for the next; a badNonce refusal is retried
 * with the nonce it carries); Retry-After paces polling; a problem document
 * becomes the error ("urn:ietf:params:acme:error:rateLimited: ...").
 *
 * Blocking calls (each HTTP exchange up to the timeout): for the control
 * thread, never a worker.
 */
#ifndef WEIR_APP_ACME_CLIENT_H
#define WEIR_APP_ACME_CLIENT_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct weir_acme weir_acme;

typedef struct weir_acme_options {
    const char *directory; /* the directory URL */
    const char *ca_file;   /* CAs the ACME server's certificate chains to; NULL = the system's */
    EVP_PKEY *account_key; /* borrowed */
    const char *email;     /* the account's contact; NULL = none */
    uint32_t timeout_ms;   /* per HTTP exchange; 0 = 10 s */
    uint32_t max_wait_ms;  /* for an authorization or order to settle; 0 = 120 s */
    /* A renewal: the ARI identifier (weir__acme_cert_id) of the certificate
     * it replaces, sent as the order's "replaces" when the CA offers ARI
     * (RFC 9773 5); NULL = a first order. */
    const char *replaces;
} weir_acme_options;

/* What the caller does for one challenge. */
typedef struct weir_acme_challenge_ops {
    const char *type; /* "http-01" */
    /* Make key_auth available for token (for domain): 0, or -1 with err. */
    int (*present)(void *arg, const char *domain, const char *token, const char *key_auth,
                   char *err, size_t err_len);
    /* The challenge is over (answered or not). */
    void (*cleanup)(void *arg, const char *domain, const char *token);
    void *arg;
} weir_acme_challenge_ops;

/* Error kinds, from the problem document or the transport. */
typedef enum weir_acme_error {
    WEIR_ACME_OK = 0,
    WEIR_ACME_ERR = -1,          /* anything else */
    WEIR_ACME_UNREACHABLE = -2,  /* the server cannot be reached or answers garbage */
    WEIR_ACME_RATE_LIMITED = -3, /* rateLimited: wait *retry_after_s (0: unknown) */
    WEIR_ACME_CHALLENGE = -4,    /* an authorization failed (its challenge was not met) */
} weir_acme_error;

/* A client (copies o's strings, borrows the key), or NULL. */
weir_acme *weir__acme_new(const weir_acme_options *o);
void weir__acme_free(weir_acme *a);

/*
 * Orders a certificate for domains (n of them) with cert_key: registers
 * the account first if needed (terms agreed). Returns WEIR_ACME_OK and
 * *chain_pem (malloc'd: the leaf, then its chain), or an error with err set
 * and, for WEIR_ACME_RATE_LIMITED, *retry_after_s.
 */
int weir__acme_order(weir_acme *a, const char *const *domains, size_t n, EVP_PKEY *cert_key,
                     const weir_acme_challenge_ops *ops, char **chain_pem, int64_t *retry_after_s,
                     char *err, size_t err_len);

/* ACME Renewal Information (RFC 9773): the CA's suggested window to renew
 * cert_pem's leaf in (Unix times). 0, 1 when the CA offers no ARI, or an
 * error. Needs no account. */
int weir__acme_renewal_window(weir_acme *a, const char *cert_pem, int64_t *start, int64_t *end,
                              char *err, size_t err_len);
/* Its certificate identifier: base64url(authority key id) "."
 * base64url(serial's DER content); NULL without an AKI. */
char *weir__acme_cert_id(const char *cert_pem);

/* The account URL once registered (NULL before). */
const char *weir__acme_account_url(const weir_acme *a);
/* How many badNonce refusals were retried (for tests and metrics). */
uint64_t weir__acme_bad_nonces(const weir_acme *a);

#endif
