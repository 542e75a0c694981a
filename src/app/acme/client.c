/*
 * client.c - the ACME v2 protocol (client.h): directory, nonces, account,
 * order, authorizations, finalization, certificate download.
 */
#include "app/acme/client.h"

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "app/acme/answer.h"
#include "app/acme/jws.h"
#include "app/http_body.h"
#include "weir/log.h"
#include "weir/server.h"

#define MAX_BODY (4u << 20)
/* A CA may refuse any nonce (RFC 8555 6.5: badNonce, retried with the
 * fresh one it sent); pebble's test mode refuses them at random. */
#define NONCE_RETRIES 10

struct weir_acme {
    char *directory, *ca_file, *email, *replaces;
    EVP_PKEY *key;
    uint32_t timeout_ms, max_wait_ms;
    char *new_nonce, *new_account, *new_order; /* from the directory */
    char *renewal_info;                        /* ARI, when the CA offers it */
    char *kid;                                 /* the account URL */
    char *nonce;                               /* the next request's */
    uint64_t bad_nonces;
};

typedef struct resp {
    long status;
    weir_http_body b; /* b.p: the body */
    char *location, *nonce, *content_type;
    int64_t retry_after; /* seconds; -1: none */
} resp;

static void resp_free(resp *r)
{
    free(r->b.p);
    free(r->location);
    free(r->nonce);
    free(r->content_type);
    memset(r, 0, sizeof(*r));
}

weir_acme *weir__acme_new(const weir_acme_options *o)
{
    weir_acme *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->directory = strdup(o->directory);
    a->ca_file = o->ca_file ? strdup(o->ca_file) : NULL;
    a->email = o->email ? strdup(o->email) : NULL;
    a->replaces = o->replaces ? strdup(o->replaces) : NULL;
    a->key = o->account_key;
    a->timeout_ms = o->timeout_ms ? o->timeout_ms : 10000;
    a->max_wait_ms = o->max_wait_ms ? o->max_wait_ms : 120000;
    if (!a->directory || (o->ca_file && !a->ca_file) || (o->email && !a->email) ||
        (o->replaces && !a->replaces)) {
        weir__acme_free(a);
        return NULL;
    }
    return a;
}

void weir__acme_free(weir_acme *a)
{
    if (!a)
        return;
    free(a->directory);
    free(a->ca_file);
    free(a->email);
    free(a->replaces);
    free(a->new_nonce);
    free(a->new_account);
    free(a->new_order);
    free(a->renewal_info);
    free(a->kid);
    free(a->nonce);
    free(a);
}

const char *weir__acme_account_url(const weir_acme *a)
{
    return a->kid;
}

uint64_t weir__acme_bad_nonces(const weir_acme *a)
{
    return a->bad_nonces;
}

/* ---- HTTP ---- */

/* The value of header line h (n bytes) when it is name's, trimmed,
 * malloc'd; else NULL. */
static char *header_value(const char *h, size_t n, const char *name)
{
    size_t nl = strlen(name);
    if (n <= nl || strncasecmp(h, name, nl) != 0 || h[nl] != ':')
        return NULL;
    const char *v = h + nl + 1, *e = h + n;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' '))
        e--;
    return strndup(v, (size_t)(e - v));
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    resp *r = arg;
    size_t len = size * n;
    char *v;
    if ((v = header_value(p, len, "Replay-Nonce"))) {
        free(r->nonce);
        r->nonce = v;
    } else if ((v = header_value(p, len, "Location"))) {
        free(r->location);
        r->location = v;
    } else if ((v = header_value(p, len, "Content-Type"))) {
        free(r->content_type);
        r->content_type = v;
    } else if ((v = header_value(p, len, "Retry-After"))) {
        r->retry_after = weir__acme_retry_after(v, strlen(v));
        free(v);
    }
    return len;
}

/* One exchange: GET (body NULL), HEAD (head), or POST of a JWS. *r is the
 * answer (resp_free it); on an error it is empty. */
static int http(weir_acme *a, const char *url, const char *body, bool head, const char *accept,
                resp *r, char *err, size_t err_len)
{
    memset(r, 0, sizeof(*r));
    r->retry_after = -1;
    r->b.max = MAX_BODY;
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(err, err_len, "out of memory");
        return WEIR_ACME_ERR;
    }
    char ua[64];
    snprintf(ua, sizeof(ua), "weir/%s", weir_version());
    struct curl_slist *h = curl_slist_append(NULL, body ? "Content-Type: application/jose+json"
                                                        : "Accept: application/json");
    if (accept && h) {
        struct curl_slist *n = curl_slist_append(h, accept);
        if (n)
            h = n;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_USERAGENT, ua);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)a->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(a->timeout_ms < 5000 ? a->timeout_ms : 5000));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, weir__http_body_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    if (a->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, a->ca_file);
    if (head)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    if (rc != CURLE_OK) {
        snprintf(err, err_len, "%s: %s", url,
                 r->b.too_big ? "an answer over 4 MiB" : curl_easy_strerror(rc));
        resp_free(r);
        return WEIR_ACME_UNREACHABLE;
    }
    return WEIR_ACME_OK;
}

/* The problem document of an error answer as err; its kind. */
static int problem(const resp *r, const char *url, char *err, size_t err_len,
                   int64_t *retry_after_s)
{
    char type[200], detail[600];
    int kind = weir__acme_problem_kind(r->status, r->b.p, r->b.len, type, sizeof(type), detail,
                                       sizeof(detail));
    snprintf(err, err_len, "%s: HTTP %ld%s%s%s%s", url, r->status, *type ? ": " : "", type,
             *detail ? ": " : "", detail);
    if (kind == WEIR_ACME_RATE_LIMITED && retry_after_s)
        *retry_after_s = r->retry_after > 0 ? r->retry_after : 0;
    return kind;
}

static int directory(weir_acme *a, char *err, size_t err_len)
{
    if (a->new_order)
        return WEIR_ACME_OK;
    resp r;
    int rc = http(a, a->directory, NULL, false, NULL, &r, err, err_len);
    if (rc != WEIR_ACME_OK)
        return rc;
    weir_acme_dir d;
    if (r.status == 200 && weir__acme_parse_directory(r.b.p, r.b.len, &d) == 0) {
        a->new_nonce = strdup(d.new_nonce);
        a->new_account = strdup(d.new_account);
        a->new_order = strdup(d.new_order);
        a->renewal_info = d.renewal_info ? strdup(d.renewal_info) : NULL;
        weir__acme_dir_free(&d);
    }
    if (!a->new_nonce || !a->new_account || !a->new_order) {
        free(a->new_nonce);
        free(a->new_account);
        free(a->new_order);
        free(a->renewal_info);
        a->new_nonce = a->new_account = a->new_order = a->renewal_info = NULL;
        snprintf(err, err_len, "%s: HTTP %ld: not an ACME directory", a->directory, r.status);
        rc = WEIR_ACME_UNREACHABLE;
    }
    resp_free(&r);
    return rc;
}

/*
 * POSTs payload (JSON text; "" = POST-as-GET) to url as a JWS, with the
 * account's kid or (new account) its jwk. A badNonce refusal is retried
 * with the nonce it brought. *r holds the answer on WEIR_ACME_OK, which
 * may still be an HTTP error: the caller reads r->status. On an error *r
 * is empty.
 */
static int post(weir_acme *a, const char *url, const char *payload, bool jwk, const char *accept,
                resp *r, char *err, size_t err_len)
{
    memset(r, 0, sizeof(*r));
    for (int attempt = 0;; attempt++) {
        if (!a->nonce) {
            resp n;
            int rc = http(a, a->new_nonce, NULL, true, NULL, &n, err, err_len);
            if (rc != WEIR_ACME_OK)
                return rc;
            a->nonce = n.nonce;
            n.nonce = NULL;
            resp_free(&n);
            if (!a->nonce) {
                snprintf(err, err_len, "%s: no Replay-Nonce", a->new_nonce);
                return WEIR_ACME_UNREACHABLE;
            }
        }
        char *jws = weir__acme_jws(a->key, jwk ? NULL : a->kid, a->nonce, url, payload);
        free(a->nonce);
        a->nonce = NULL;
        if (!jws) {
            snprintf(err, err_len, "cannot sign a request to %s", url);
            return WEIR_ACME_ERR;
        }
        int rc = http(a, url, jws, false, accept, r, err, err_len);
        free(jws);
        if (rc != WEIR_ACME_OK)
            return rc;
        a->nonce = r->nonce; /* the next request's */
        r->nonce = NULL;
        if (attempt < NONCE_RETRIES && weir__acme_is_bad_nonce(r->status, r->b.p, r->b.len)) {
            a->bad_nonces++;
            resp_free(r);
            continue;
        }
        return WEIR_ACME_OK;
    }
}

/* post() whose answer must be 2xx: *r (resp_free it); a problem
 * document is the error. */
static int post_ok(weir_acme *a, const char *url, const char *payload, bool jwk, resp *r,
                   int64_t *retry_after, char *err, size_t err_len)
{
    int rc = post(a, url, payload, jwk, NULL, r, err, err_len);
    if (rc != WEIR_ACME_OK)
        return rc;
    if (r->status < 200 || r->status > 299) {
        rc = problem(r, url, err, err_len, retry_after);
        resp_free(r);
        return rc;
    }
    if (retry_after)
        *retry_after = r->retry_after;
    return WEIR_ACME_OK;
}

/* A 2xx answer that is not the JSON object it should be. */
static int not_json(const resp *r, const char *url, char *err, size_t err_len)
{
    snprintf(err, err_len, "%s: HTTP %ld: the answer is not a JSON object", url, r->status);
    return WEIR_ACME_UNREACHABLE;
}

static int account(weir_acme *a, int64_t *retry_after_s, char *err, size_t err_len)
{
    if (a->kid)
        return WEIR_ACME_OK;
    json_t *req = json_pack("{s:b}", "termsOfServiceAgreed", 1);
    if (req && a->email) {
        char contact[600];
        snprintf(contact, sizeof(contact), "mailto:%s", a->email);
        json_object_set_new(req, "contact", json_pack("[s]", contact));
    }
    char *payload = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!payload) {
        snprintf(err, err_len, "out of memory");
        return WEIR_ACME_ERR;
    }
    resp r;
    int64_t ra = -1;
    int rc = post_ok(a, a->new_account, payload, true, &r, &ra, err, err_len);
    free(payload);
    if (rc == WEIR_ACME_RATE_LIMITED)
        *retry_after_s = ra > 0 ? ra : 0;
    if (rc != WEIR_ACME_OK)
        return rc;
    void *doc;
    const char *status;
    if (weir__acme_parse_status(r.b.p, r.b.len, &doc, &status) != 0) {
        rc = not_json(&r, a->new_account, err, err_len);
    } else if (!r.location || (status && strcmp(status, "valid") != 0)) {
        snprintf(err, err_len, "%s: the account is %s", a->new_account,
                 r.location ? status : "without a Location");
        rc = WEIR_ACME_ERR;
    } else {
        a->kid = r.location;
        r.location = NULL;
    }
    weir__acme_doc_free(doc);
    resp_free(&r);
    return rc;
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Polls url (POST-as-GET) until its status is none of the pending ones;
 * *r the last answer, a JSON object. */
static int poll_status(weir_acme *a, const char *url, const char *const *pending, resp *r,
                       char *err, size_t err_len)
{
    int64_t deadline = now_ms() + a->max_wait_ms;
    for (;;) {
        int64_t ra = -1;
        int rc = post_ok(a, url, "", false, r, &ra, err, err_len);
        if (rc != WEIR_ACME_OK)
            return rc;
        void *doc;
        const char *st;
        if (weir__acme_parse_status(r->b.p, r->b.len, &doc, &st) != 0) {
            rc = not_json(r, url, err, err_len);
            resp_free(r);
            return rc;
        }
        bool wait = false;
        for (size_t i = 0; st && pending[i]; i++)
            wait = wait || strcmp(st, pending[i]) == 0;
        char was[32];
        snprintf(was, sizeof(was), "%s", st ? st : "");
        weir__acme_doc_free(doc);
        if (!wait)
            return WEIR_ACME_OK;
        resp_free(r);
        int64_t pause = ra > 0 ? (ra < 10 ? ra : 10) * 1000 : 500;
        if (now_ms() + pause > deadline) {
            snprintf(err, err_len, "%s: still %s after %u ms", url, was, a->max_wait_ms);
            return WEIR_ACME_ERR;
        }
        usleep((useconds_t)pause * 1000);
    }
}

typedef struct presented {
    char *domain, *token;
} presented;

/* Meets one authorization: its challenge of ops->type presented, answered,
 * and the authorization polled until it is valid. */
static int authorize(weir_acme *a, const char *url, const weir_acme_challenge_ops *ops,
                     presented *done, char *err, size_t err_len)
{
    resp r;
    int rc = post_ok(a, url, "", false, &r, NULL, err, err_len);
    if (rc != WEIR_ACME_OK)
        return rc;
    weir_acme_authz z;
    if (weir__acme_parse_authz(r.b.p, r.b.len, ops->type, &z) != 0) {
        rc = not_json(&r, url, err, err_len);
        resp_free(&r);
        return rc;
    }
    resp_free(&r);
    if (z.status && strcmp(z.status, "valid") == 0) {
        weir__acme_authz_free(&z);
        return WEIR_ACME_OK;
    }
    if (!z.domain || !z.token) {
        snprintf(err, err_len, "%s: no usable %s challenge for %s", url, ops->type,
                 z.domain ? z.domain : "its identifier");
        weir__acme_authz_free(&z);
        return WEIR_ACME_ERR;
    }
    char *ka = weir__acme_key_authorization(z.token, a->key);
    char perr[300] = "";
    if (!ka || ops->present(ops->arg, z.domain, z.token, ka, perr, sizeof(perr)) != 0) {
        snprintf(err, err_len, "%s: cannot present the %s challenge: %s", z.domain, ops->type,
                 ka ? perr : "out of memory");
        free(ka);
        weir__acme_authz_free(&z);
        return WEIR_ACME_ERR;
    }
    free(ka);
    done->domain = strdup(z.domain);
    done->token = strdup(z.token);
    char *chal_url = strdup(z.url);
    weir__acme_authz_free(&z);
    rc = chal_url ? post_ok(a, chal_url, "{}", false, &r, NULL, err, err_len) : WEIR_ACME_ERR;
    free(chal_url);
    if (rc != WEIR_ACME_OK)
        return rc;
    resp_free(&r);
    static const char *const pending[] = {"pending", "processing", NULL};
    rc = poll_status(a, url, pending, &r, err, err_len);
    if (rc != WEIR_ACME_OK)
        return rc;
    if (weir__acme_parse_authz(r.b.p, r.b.len, ops->type, &z) != 0)
        rc = not_json(&r, url, err, err_len);
    else if (!z.status || strcmp(z.status, "valid") != 0) {
        /* The failed challenge's error says why. */
        snprintf(err, err_len, "%s: authorization %s: %s", done->domain ? done->domain : url,
                 z.status ? z.status : "unknown", z.why ? z.why : "no detail");
        rc = WEIR_ACME_CHALLENGE;
    }
    weir__acme_authz_free(&z);
    resp_free(&r);
    return rc;
}

/* Finalizes the order with a CSR for cert_key, waits until it is valid,
 * and downloads the chain. */
static int finalize(weir_acme *a, const char *fin, const char *order_url,
                    const char *const *domains, size_t n, EVP_PKEY *cert_key, char **chain_pem,
                    char *err, size_t err_len)
{
    char *csr = weir__acme_csr(cert_key, domains, n);
    json_t *f = csr ? json_pack("{s:s}", "csr", csr) : NULL;
    char *fp = f ? json_dumps(f, JSON_COMPACT) : NULL;
    json_decref(f);
    free(csr);
    if (!fp) {
        snprintf(err, err_len, "cannot make the certificate request");
        return WEIR_ACME_ERR;
    }
    resp r;
    int rc = post_ok(a, fin, fp, false, &r, NULL, err, err_len);
    free(fp);
    if (rc != WEIR_ACME_OK)
        return rc;
    resp_free(&r);
    static const char *const pending[] = {"pending", "ready", "processing", NULL};
    rc = poll_status(a, order_url, pending, &r, err, err_len);
    if (rc != WEIR_ACME_OK)
        return rc;
    weir_acme_order_doc o;
    bool bad;
    char *cert_url = NULL;
    if (weir__acme_parse_order(r.b.p, r.b.len, &o, &bad) != 0) {
        rc = not_json(&r, order_url, err, err_len);
    } else if (!o.status || strcmp(o.status, "valid") != 0 || !o.certificate) {
        snprintf(err, err_len, "%s: the order is %s", order_url,
                 o.status ? o.status : "without a status");
        rc = WEIR_ACME_ERR;
    } else if (!(cert_url = strdup(o.certificate))) {
        snprintf(err, err_len, "out of memory");
        rc = WEIR_ACME_ERR;
    }
    weir__acme_order_free(&o);
    resp_free(&r);
    if (rc != WEIR_ACME_OK)
        return rc;
    rc =
        post(a, cert_url, "", false, "Accept: application/pem-certificate-chain", &r, err, err_len);
    if (rc == WEIR_ACME_OK && r.status == 200 && r.b.p &&
        strstr(r.b.p, "-----BEGIN CERTIFICATE-----")) {
        *chain_pem = r.b.p;
        r.b.p = NULL;
    } else if (rc == WEIR_ACME_OK) {
        rc = problem(&r, cert_url, err, err_len, NULL);
    }
    resp_free(&r);
    free(cert_url);
    return rc;
}

int weir__acme_order(weir_acme *a, const char *const *domains, size_t n, EVP_PKEY *cert_key,
                     const weir_acme_challenge_ops *ops, char **chain_pem, int64_t *retry_after_s,
                     char *err, size_t err_len)
{
    *chain_pem = NULL;
    int64_t ra_dummy;
    if (!retry_after_s)
        retry_after_s = &ra_dummy;
    *retry_after_s = 0;
    int rc = directory(a, err, err_len);
    if (rc == WEIR_ACME_OK)
        rc = account(a, retry_after_s, err, err_len);
    if (rc != WEIR_ACME_OK)
        return rc;
    json_t *ids = json_array();
    for (size_t i = 0; ids && i < n; i++)
        json_array_append_new(ids, json_pack("{s:s, s:s}", "type", "dns", "value", domains[i]));
    json_t *req = json_pack("{s:o}", "identifiers", ids);
    /* A renewal names what it replaces where the CA knows ARI: the CA may
     * then let it past its rate limits (RFC 9773 5). */
    bool replaces = req && a->replaces && a->renewal_info;
    if (replaces)
        json_object_set_new(req, "replaces", json_string(a->replaces));
    char *payload = req ? json_dumps(req, JSON_COMPACT) : NULL;
    resp r;
    int64_t ra = -1;
    rc = payload ? post_ok(a, a->new_order, payload, false, &r, &ra, err, err_len) : WEIR_ACME_ERR;
    free(payload);
    if (replaces && rc == WEIR_ACME_ERR) {
        /* Refused for what it replaces (alreadyReplaced; or unauthorized:
         * another account of the fleet ordered that certificate; or an
         * identifier this CA did not issue): the same order, plainly. */
        weir_log(WEIR_LEVEL_INFO, "acme: %s; ordering again without \"replaces\"", err);
        json_object_del(req, "replaces");
        payload = json_dumps(req, JSON_COMPACT);
        rc = payload ? post_ok(a, a->new_order, payload, false, &r, &ra, err, err_len)
                     : WEIR_ACME_ERR;
        free(payload);
    }
    json_decref(req);
    if (rc == WEIR_ACME_RATE_LIMITED)
        *retry_after_s = ra > 0 ? ra : 0;
    if (rc != WEIR_ACME_OK)
        return rc;
    weir_acme_order_doc o;
    bool bad = false;
    if (weir__acme_parse_order(r.b.p, r.b.len, &o, &bad) != 0) {
        rc = not_json(&r, a->new_order, err, err_len);
        resp_free(&r);
        return rc;
    }
    char *order_url = r.location;
    r.location = NULL;
    resp_free(&r);
    if (bad || !o.n_authz || !o.finalize || !order_url) {
        snprintf(err, err_len, "%s: an order without %s", a->new_order,
                 !order_url    ? "a Location"
                 : !o.finalize ? "a finalize URL"
                               : "a list of authorization URLs");
        rc = WEIR_ACME_ERR;
    }
    presented *done = calloc(o.n_authz + 1, sizeof(*done));
    size_t n_done = 0;
    if (!done)
        rc = WEIR_ACME_ERR;
    for (size_t i = 0; rc == WEIR_ACME_OK && i < o.n_authz; i++) {
        rc = authorize(a, o.authz[i], ops, &done[n_done], err, err_len);
        if (done[n_done].token)
            n_done++;
    }
    char *fin = rc == WEIR_ACME_OK ? strdup(o.finalize) : NULL;
    weir__acme_order_free(&o);
    if (rc == WEIR_ACME_OK)
        rc = fin ? finalize(a, fin, order_url, domains, n, cert_key, chain_pem, err, err_len)
                 : WEIR_ACME_ERR;
    free(fin);
    free(order_url);
    for (size_t k = 0; done && k < n_done; k++) {
        ops->cleanup(ops->arg, done[k].domain, done[k].token);
        free(done[k].domain);
        free(done[k].token);
    }
    free(done);
    return rc;
}

char *weir__acme_cert_id(const char *cert_pem)
{
    BIO *b = BIO_new_mem_buf(cert_pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    const ASN1_OCTET_STRING *aki = x ? X509_get0_authority_key_id(x) : NULL;
    unsigned char *der = NULL;
    int n = x ? i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &der) : -1;
    char *out = NULL;
    /* The serial's DER content octets: past its tag and (short) length. */
    if (aki && n > 2 && der[1] < 0x80 && der[1] == n - 2) {
        char *k = weir__b64url(ASN1_STRING_get0_data(aki), (size_t)ASN1_STRING_length(aki));
        char *sn = weir__b64url(der + 2, (size_t)n - 2);
        if (k && sn && asprintf(&out, "%s.%s", k, sn) < 0)
            out = NULL;
        free(k);
        free(sn);
    }
    OPENSSL_free(der);
    X509_free(x);
    ERR_clear_error();
    return out;
}

int weir__acme_renewal_window(weir_acme *a, const char *cert_pem, int64_t *start, int64_t *end,
                              char *err, size_t err_len)
{
    int rc = directory(a, err, err_len);
    if (rc != WEIR_ACME_OK)
        return rc;
    if (!a->renewal_info)
        return 1;
    char *id = weir__acme_cert_id(cert_pem);
    char *url = NULL;
    if (!id || asprintf(&url, "%s/%s", a->renewal_info, id) < 0) {
        free(id);
        snprintf(err, err_len, "the certificate has no authority key identifier");
        return WEIR_ACME_ERR;
    }
    free(id);
    resp r;
    rc = http(a, url, NULL, false, NULL, &r, err, err_len);
    if (rc == WEIR_ACME_OK) {
        if (r.status != 200 || weir__acme_parse_window(r.b.p, r.b.len, start, end) != 0) {
            snprintf(err, err_len, "%s: HTTP %ld: no suggested window", url, r.status);
            rc = WEIR_ACME_ERR;
        }
    }
    resp_free(&r);
    free(url);
    return rc;
}
