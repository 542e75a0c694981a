/*
 * ocsp.c - OCSP responses for every certificate of the configuration
 * (ocsp.h): fetched from the responder its AIA names, checked, handed to
 * the TLS servers to staple (weir_tls_set_ocsp), refreshed before they
 * expire.
 */
#include "app/ocsp.h"

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "app/config/config.h"
#include "app/http_body.h"
#include "weir/log.h"
#include "weir/tls.h"

#define MAX_ANSWER (64u * 1024)
#define BACKOFF_FIRST_S 5
#define BACKOFF_MAX_S 3600
#define NO_OCSP_RECHECK_S 3600

typedef struct entry {
    char *path;
    int64_t mtime;
    unsigned char fp[32];
    bool has_fp;       /* a response is set for fp */
    int64_t next_s;    /* next fetch */
    int64_t expires_s; /* the response's nextUpdate; 0: none set */
    uint32_t backoff_s;
    bool seen;
} entry;

static struct {
    weir_app *app;
    pthread_t thread;
    _Atomic bool stop;
    bool running;
    entry *v;
    size_t n;
} O;

/* Every certificate in the PEM file path, appended to sk. */
static void read_pem(const char *path, STACK_OF(X509) * sk)
{
    FILE *f = path ? fopen(path, "r") : NULL;
    X509 *x;
    while (f && (x = PEM_read_X509(f, NULL, NULL, NULL)))
        if (!sk_X509_push(sk, x))
            X509_free(x);
    if (f)
        fclose(f);
    ERR_clear_error();
}

static int64_t asn1_unix(const ASN1_GENERALIZEDTIME *t)
{
    struct tm tm;
    return t && ASN1_TIME_to_tm(t, &tm) == 1 ? (int64_t)timegm(&tm) : 0;
}

/*
 * One fetch for the leaf of cert_path (its issuer in the same file or in
 * chain_path): 1 and *expires set when a good response is stapled from now
 * on, 0 when the certificate names no responder, -2 when it is revoked,
 * -1 with err.
 */
static int fetch(entry *e, const char *cert_path, const char *chain_path, int64_t *expires,
                 char *err, size_t err_len)
{
    STACK_OF(X509) *sk = sk_X509_new_null();
    read_pem(cert_path, sk);
    read_pem(chain_path, sk);
    X509 *leaf = sk_X509_num(sk) ? sk_X509_value(sk, 0) : NULL, *issuer = NULL;
    for (int i = 1; leaf && i < sk_X509_num(sk) && !issuer; i++)
        if (X509_check_issued(sk_X509_value(sk, i), leaf) == X509_V_OK)
            issuer = sk_X509_value(sk, i);
    STACK_OF(OPENSSL_STRING) *urls = leaf ? X509_get1_ocsp(leaf) : NULL;
    const char *url = urls && sk_OPENSSL_STRING_num(urls) ? sk_OPENSSL_STRING_value(urls, 0) : NULL;
    int rc = -1;
    OCSP_CERTID *id = NULL;
    OCSP_REQUEST *req = NULL;
    OCSP_RESPONSE *resp = NULL;
    OCSP_BASICRESP *bs = NULL;
    X509_STORE *store = NULL;
    STACK_OF(X509) *signers = NULL;
    unsigned char *reqder = NULL;
    weir_http_body b = {.max = MAX_ANSWER};
    if (!leaf) {
        snprintf(err, err_len, "%s: no certificate", cert_path);
        goto out;
    }
    if (!url) {
        rc = 0;
        goto out;
    }
    if (!issuer) {
        snprintf(err, err_len, "%s: its issuer is not in the file or its chain", cert_path);
        goto out;
    }
    id = OCSP_cert_to_id(NULL, leaf, issuer);
    req = OCSP_REQUEST_new();
    OCSP_CERTID *id2 = id ? OCSP_CERTID_dup(id) : NULL;
    if (!req || !id2 || !OCSP_request_add0_id(req, id2)) {
        OCSP_CERTID_free(id2);
        snprintf(err, err_len, "out of memory");
        goto out;
    }
    int reqlen = i2d_OCSP_REQUEST(req, &reqder);
    CURL *c = reqlen > 0 ? curl_easy_init() : NULL;
    if (!c) {
        snprintf(err, err_len, "out of memory");
        goto out;
    }
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/ocsp-request");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, reqder);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)reqlen);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, weir__http_body_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    CURLcode crc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    if (crc != CURLE_OK || status != 200) {
        snprintf(err, err_len, "%s: %s", url,
                 crc != CURLE_OK ? curl_easy_strerror(crc) : "not HTTP 200");
        goto out;
    }
    const unsigned char *p = (const unsigned char *)b.p;
    resp = b.p ? d2i_OCSP_RESPONSE(NULL, &p, (long)b.len) : NULL;
    if (!resp || OCSP_response_status(resp) != OCSP_RESPONSE_STATUS_SUCCESSFUL ||
        !(bs = OCSP_response_get1_basic(resp))) {
        snprintf(err, err_len, "%s: %s", url,
                 resp ? OCSP_response_status_str(OCSP_response_status(resp))
                      : "not an OCSP response");
        goto out;
    }
    store = X509_STORE_new();
    signers = sk_X509_new_null();
    if (!store || !signers || !X509_STORE_add_cert(store, issuer) ||
        !sk_X509_push(signers, issuer)) {
        snprintf(err, err_len, "out of memory");
        goto out;
    }
    if (OCSP_basic_verify(bs, signers, store, OCSP_TRUSTOTHER) <= 0) {
        snprintf(err, err_len, "%s: the response's signature does not verify", url);
        goto out;
    }
    int st = -1, reason = 0;
    ASN1_GENERALIZEDTIME *rev = NULL, *thisupd = NULL, *nextupd = NULL;
    if (OCSP_resp_find_status(bs, id, &st, &reason, &rev, &thisupd, &nextupd) != 1 ||
        st != V_OCSP_CERTSTATUS_GOOD || OCSP_check_validity(thisupd, nextupd, 300, -1) != 1) {
        snprintf(err, err_len, "%s: certificate status %s", url,
                 st < 0 ? "missing or out of date" : OCSP_cert_status_str(st));
        if (st == V_OCSP_CERTSTATUS_REVOKED)
            rc = -2;
        goto out;
    }
    /* check_validity allows a nextUpdate 5 min past (clock skew); weir
     * never staples one that is (a lagging responder's or cache's): the
     * last good answer stays, and it is asked again with the backoff. */
    if (nextupd && asn1_unix(nextupd) <= (int64_t)time(NULL)) {
        snprintf(err, err_len, "%s: the response's nextUpdate has passed", url);
        goto out;
    }
    unsigned int n = 0;
    if (X509_digest(leaf, EVP_sha256(), e->fp, &n) != 1 ||
        weir_tls_set_ocsp(e->fp, (const unsigned char *)b.p, b.len) != WEIR_OK) {
        snprintf(err, err_len, "cannot keep the response");
        goto out;
    }
    e->has_fp = true;
    *expires = nextupd ? asn1_unix(nextupd) : 0;
    rc = 1;
out:
    free(b.p);
    OPENSSL_free(reqder);
    sk_X509_free(signers); /* issuer belongs to sk */
    X509_STORE_free(store);
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(resp);
    OCSP_REQUEST_free(req);
    OCSP_CERTID_free(id);
    X509_email_free(urls);
    sk_X509_pop_free(sk, X509_free);
    ERR_clear_error();
    return rc;
}

static void drop(entry *e)
{
    if (e->has_fp)
        weir_tls_set_ocsp(e->fp, NULL, 0);
    e->has_fp = false;
    e->expires_s = 0;
}

static entry *find(const char *path)
{
    for (size_t i = 0; i < O.n; i++)
        if (strcmp(O.v[i].path, path) == 0)
            return &O.v[i];
    return NULL;
}

static void look_at(const char *path, const char *chain, const char *name)
{
    struct stat stt;
    if (stat(path, &stt) != 0)
        return;
    entry *e = find(path);
    if (!e) {
        entry *nv = realloc(O.v, (O.n + 1) * sizeof(*nv));
        if (!nv)
            return;
        O.v = nv;
        e = &O.v[O.n++];
        *e = (entry){.path = strdup(path)};
    }
    e->seen = true;
    int64_t now = (int64_t)time(NULL);
    if (e->mtime != (int64_t)stt.st_mtime) { /* a new certificate: ask again */
        drop(e);
        e->mtime = (int64_t)stt.st_mtime;
        e->next_s = 0;
        e->backoff_s = 0;
    }
    if (e->expires_s && now >= e->expires_s) { /* never staple a stale one */
        drop(e);
        weir_log(WEIR_LEVEL_WARN, "ocsp: [certificates.%s]: the response expired, none stapled",
                 name);
    }
    if (now < e->next_s)
        return;
    char err[512] = "";
    int64_t expires = 0;
    int rc = fetch(e, path, chain, &expires, err, sizeof(err));
    if (rc == 1) {
        e->expires_s = expires;
        e->backoff_s = 0;
        /* Halfway to nextUpdate (at most a day): a responder's
         * short-lived answers (a minute, say) are replaced before they
         * expire, never stapled stale. One with 20 s or less left is asked
         * again 5 s before its end, 5 s at the soonest; one without
         * nextUpdate is always current (asked again hourly). */
        int64_t left = expires - now;
        e->next_s = now + (!expires    ? 3600
                           : left > 20 ? (left / 2 > 86400 ? 86400 : left / 2)
                           : left > 10 ? left - 5
                                       : 5);
        weir_log(WEIR_LEVEL_INFO,
                 "ocsp: [certificates.%s]: response stapled, asking again in %lld s", name,
                 (long long)(e->next_s - now));
    } else if (rc == 0) {
        e->next_s = now + NO_OCSP_RECHECK_S; /* no responder: nothing to staple */
    } else {
        if (rc == -2)
            drop(e); /* revoked: the last good answer is not true any more */
        e->backoff_s = e->backoff_s ? e->backoff_s * 2 : BACKOFF_FIRST_S;
        if (e->backoff_s > BACKOFF_MAX_S)
            e->backoff_s = BACKOFF_MAX_S;
        e->next_s = now + e->backoff_s;
        weir_log(WEIR_LEVEL_WARN, "ocsp: [certificates.%s]: %s; %s, trying again in %u s", name,
                 err, e->has_fp ? "the last response stays" : "nothing stapled", e->backoff_s);
    }
}

static void *ocsp_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&O.stop)) {
        weir_config *cfg = weir__app_config(O.app);
        for (size_t i = 0; i < O.n; i++)
            O.v[i].seen = false;
        for (size_t i = 0; cfg && i < cfg->n_certs && !atomic_load(&O.stop); i++) {
            const weir_cfg_cert *c = &cfg->certs[i];
            const char *path = c->acme ? c->acme_cert : c->cert;
            if (path)
                look_at(path, c->acme ? NULL : c->chain, c->name);
        }
        weir__config_unref(cfg);
        size_t kept = 0;
        for (size_t i = 0; i < O.n; i++) {
            if (O.v[i].seen) {
                O.v[kept++] = O.v[i];
            } else {
                drop(&O.v[i]);
                free(O.v[i].path);
            }
        }
        O.n = kept;
        for (int t = 0; t < 10 && !atomic_load(&O.stop); t++)
            usleep(100000);
    }
    return NULL;
}

void weir__ocsp_start(weir_app *app)
{
    O.app = app;
    atomic_store(&O.stop, false);
    O.running = pthread_create(&O.thread, NULL, ocsp_main, NULL) == 0;
    if (!O.running)
        weir_log(WEIR_LEVEL_ERROR, "ocsp: cannot start: no response will be stapled");
}

void weir__ocsp_stop(void)
{
    if (!O.running)
        return;
    atomic_store(&O.stop, true);
    pthread_join(O.thread, NULL);
    O.running = false;
    for (size_t i = 0; i < O.n; i++) {
        drop(&O.v[i]);
        free(O.v[i].path);
    }
    free(O.v);
    O.v = NULL;
    O.n = 0;
}
