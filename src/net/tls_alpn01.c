/*
 * tls_alpn01.c - TLS-ALPN-01 answers (RFC 8737) on every TLS server: while
 * a challenge is set for a name, a ClientHello for that name offering the
 * "acme-tls/1" protocol gets the challenge certificate and that protocol;
 * every other handshake is untouched (one relaxed load when none is set).
 */
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "net/tls.h"
#include "weir/types.h"

#define MAX_CHALLENGES 16

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char name[256];
    X509 *x509;
    EVP_PKEY *key;
} challenges[MAX_CHALLENGES];
static size_t n_challenges;
static _Atomic size_t any; /* n_challenges, for the fast path */
static _Atomic int mark_index = -1;
static pthread_once_t mark_once = PTHREAD_ONCE_INIT;

static void make_mark(void)
{
    mark_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

int weir_tls_set_acme_challenge(const char *name, const char *cert_pem, const char *key_pem)
{
    pthread_once(&mark_once, make_mark);
    X509 *x = NULL;
    EVP_PKEY *k = NULL;
    if (cert_pem) {
        BIO *b = BIO_new_mem_buf(cert_pem, -1);
        x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        b = BIO_new_mem_buf(key_pem, -1);
        k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        if (!x || !k || strlen(name) >= sizeof(challenges[0].name)) {
            X509_free(x);
            EVP_PKEY_free(k);
            return WEIR_ERR_INVAL;
        }
    }
    int rc = WEIR_OK;
    pthread_mutex_lock(&mu);
    size_t i = 0;
    while (i < n_challenges && strcasecmp(challenges[i].name, name) != 0)
        i++;
    if (i < n_challenges) { /* replaced or removed */
        X509_free(challenges[i].x509);
        EVP_PKEY_free(challenges[i].key);
        challenges[i] = challenges[--n_challenges];
    }
    if (x && n_challenges == MAX_CHALLENGES) {
        rc = WEIR_ERR_NOMEM;
        X509_free(x);
        EVP_PKEY_free(k);
    } else if (x) {
        snprintf(challenges[n_challenges].name, sizeof(challenges[0].name), "%s", name);
        challenges[n_challenges].x509 = x;
        challenges[n_challenges].key = k;
        n_challenges++;
    }
    atomic_store_explicit(&any, n_challenges, memory_order_release);
    pthread_mutex_unlock(&mu);
    return rc;
}

/* Whether the ALPN extension's list (RFC 7301 3.1) offers acme-tls/1. */
static bool offers_acme(const unsigned char *p, size_t len)
{
    if (len < 2 || (size_t)(p[0] << 8 | p[1]) != len - 2)
        return false;
    for (size_t i = 2; i < len;) {
        size_t n = p[i];
        if (i + 1 + n > len)
            return false;
        if (n == 10 && memcmp(p + i + 1, "acme-tls/1", 10) == 0)
            return true;
        i += 1 + n;
    }
    return false;
}

/* The host name of the server_name extension (RFC 6066 3), or false. */
static bool sni_name(const unsigned char *p, size_t len, char *out, size_t cap)
{
    if (len < 5 || (size_t)(p[0] << 8 | p[1]) != len - 2 || p[2] != 0)
        return false;
    size_t n = (size_t)(p[3] << 8 | p[4]);
    if (n == 0 || n + 5 > len || n >= cap)
        return false;
    memcpy(out, p + 5, n);
    out[n] = '\0';
    return true;
}

int weir__tls_alpn01_hello(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    (void)arg;
    if (!atomic_load_explicit(&any, memory_order_acquire))
        return SSL_CLIENT_HELLO_SUCCESS;
    const unsigned char *alpn, *sni;
    size_t alpn_len, sni_len;
    char name[256];
    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &alpn,
                                   &alpn_len) ||
        !offers_acme(alpn, alpn_len) ||
        !SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &sni, &sni_len) ||
        !sni_name(sni, sni_len, name, sizeof(name)))
        return SSL_CLIENT_HELLO_SUCCESS;
    bool used = false;
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < n_challenges && !used; i++) {
        if (strcasecmp(challenges[i].name, name) == 0)
            used = SSL_use_cert_and_key(ssl, challenges[i].x509, challenges[i].key, NULL, 1) == 1;
    }
    pthread_mutex_unlock(&mu);
    if (used)
        SSL_set_ex_data(ssl, mark_index, (void *)1);
    return SSL_CLIENT_HELLO_SUCCESS;
}

bool weir__tls_alpn01_marked(SSL *ssl)
{
    return mark_index >= 0 && SSL_get_ex_data(ssl, mark_index) != NULL;
}
