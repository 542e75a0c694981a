/*
 * jws.h - the cryptography of an ACME client (RFC 8555) on OpenSSL 3:
 * account and certificate keys, their JWK (RFC 7517) and thumbprint (RFC
 * 7638), requests signed as flattened JWS (RFC 7515, ES256/ES384/RS256),
 * key authorizations, and certificate signing requests.
 */
#ifndef WEIR_APP_ACME_JWS_H
#define WEIR_APP_ACME_JWS_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum weir_acme_key_type {
    WEIR_ACME_EC256,
    WEIR_ACME_EC384,
    WEIR_ACME_RSA2048,
    WEIR_ACME_RSA4096,
} weir_acme_key_type;

/* "ec256", "ec384", "rsa2048", "rsa4096": 0 and *out, or -1. */
int weir__acme_key_type(const char *name, weir_acme_key_type *out);

/* A new private key; NULL on failure. */
EVP_PKEY *weir__acme_key_new(weir_acme_key_type type);
/* The key in a PEM file, or a new one written there (mode 0600, atomic)
 * when the file does not exist. NULL with err set. */
EVP_PKEY *weir__acme_key_load_or_create(const char *path, weir_acme_key_type type, char *err,
                                        size_t err_len);

/* The private key as PEM text, malloc'd (cleanse it before free). */
char *weir__acme_key_pem(EVP_PKEY *k);

/* base64url without padding of len bytes, malloc'd. */
char *weir__b64url(const void *p, size_t len);

/* The public JWK of key (members in the order RFC 7638 hashes them),
 * malloc'd JSON; NULL for another key kind. */
char *weir__acme_jwk(EVP_PKEY *key);
/* Its RFC 7638 thumbprint (SHA-256, base64url), malloc'd. */
char *weir__acme_thumbprint(EVP_PKEY *key);
/* token "." thumbprint: what an HTTP-01 or TLS-ALPN-01 challenge answers. */
char *weir__acme_key_authorization(const char *token, EVP_PKEY *account_key);

/*
 * A flattened JWS JSON object for an ACME POST to url: protected header
 * {alg, nonce, url} with kid (the account URL) or, when kid is NULL, the
 * jwk; payload is the JSON text, or "" for POST-as-GET. malloc'd; NULL on
 * failure.
 */
char *weir__acme_jws(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
                     const char *payload);

/* A DER certificate signing request for domains (the first also the CN),
 * base64url, malloc'd; NULL on failure. */
char *weir__acme_csr(EVP_PKEY *key, const char *const *domains, size_t n);

/* A self-signed certificate for domains (EC P-256, 90 days): what a TLS
 * listener serves for them until the real one is obtained. PEM text of
 * the certificate and the key, malloc'd; false on failure. */
bool weir__acme_placeholder(const char *const *domains, size_t n, char **cert_pem, char **key_pem);

/* The TLS-ALPN-01 challenge certificate of domain (RFC 8737 3): its
 * acmeIdentifier holds SHA-256(key_auth). PEM text, malloc'd. */
bool weir__acme_alpn_cert(const char *domain, const char *key_auth, char **cert_pem,
                          char **key_pem);

/* The expiry (Unix time) of the first certificate in a PEM file; 0 when
 * it cannot be read. */
int64_t weir__acme_cert_not_after(const char *path);

#endif
