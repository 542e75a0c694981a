/*
 * tls_ocsp.c - OCSP stapling on every TLS server: the OCSP responses set
 * for certificates (by their SHA-256 fingerprint) are stapled to the
 * handshakes of clients that ask (status_request). A handshake never waits:
 * what is set is copied, what is not is not sent.
 */
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "net/tls.h"
#include "weir/types.h"

#define MAX_RESPONSES 256

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    unsigned char fp[32];
    unsigned char *der;
    size_t len;
} responses[MAX_RESPONSES];
static size_t n_responses;
static _Atomic size_t any;

int weir_tls_set_ocsp(const unsigned char fingerprint[32], const unsigned char *der, size_t len)
{
    unsigned char *copy = NULL;
    if (len) {
        copy = malloc(len);
        if (!copy)
            return WEIR_ERR_NOMEM;
        memcpy(copy, der, len);
    }
    int rc = WEIR_OK;
    pthread_mutex_lock(&mu);
    size_t i = 0;
    while (i < n_responses && memcmp(responses[i].fp, fingerprint, 32) != 0)
        i++;
    if (i < n_responses) {
        free(responses[i].der);
        if (copy) {
            responses[i].der = copy;
            responses[i].len = len;
        } else {
            responses[i] = responses[--n_responses];
        }
    } else if (copy && n_responses == MAX_RESPONSES) {
        free(copy);
        rc = WEIR_ERR_NOMEM;
    } else if (copy) {
        memcpy(responses[n_responses].fp, fingerprint, 32);
        responses[n_responses].der = copy;
        responses[n_responses].len = len;
        n_responses++;
    }
    atomic_store_explicit(&any, n_responses, memory_order_release);
    pthread_mutex_unlock(&mu);
    return rc;
}

int weir__tls_ocsp_status(SSL *ssl, void *arg)
{
    (void)arg;
    if (!atomic_load_explicit(&any, memory_order_acquire))
        return SSL_TLSEXT_ERR_NOACK;
    X509 *x = SSL_get_certificate(ssl);
    unsigned char fp[32];
    unsigned int n = 0;
    if (!x || X509_digest(x, EVP_sha256(), fp, &n) != 1 || n != 32)
        return SSL_TLSEXT_ERR_NOACK;
    unsigned char *copy = NULL;
    size_t len = 0;
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < n_responses && !copy; i++) {
        if (memcmp(responses[i].fp, fp, 32) == 0) {
            copy = OPENSSL_malloc(responses[i].len);
            if (copy) {
                memcpy(copy, responses[i].der, responses[i].len);
                len = responses[i].len;
            }
        }
    }
    pthread_mutex_unlock(&mu);
    if (!copy)
        return SSL_TLSEXT_ERR_NOACK;
    /* OpenSSL frees the copy with the connection. */
    if (SSL_set_tlsext_status_ocsp_resp(ssl, copy, (long)len) != 1) {
        OPENSSL_free(copy);
        return SSL_TLSEXT_ERR_NOACK;
    }
    return SSL_TLSEXT_ERR_OK;
}
