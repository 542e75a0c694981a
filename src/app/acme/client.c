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

#include "app/acme/jws.h"
#include "app/http_body.h"
#include "weir/server.h"

#define MAX_BODY (4u << 20)
#define NONCE_RETRIES 5

struct weir_acme {
    char *directory, *ca_file, *email;
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
    a->key = o->account_key;
    a->timeout_ms = o->timeout_ms ? o->timeout_ms : 10000;
    a->max_wait_ms = o->max_wait_ms ? o->max_wait_ms : 120000;
    if (!a->directory || (o->ca_file && !a->ca_file) || (o->email && !a->email)) {
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
        char *end;
        long s = strtol(v, &end, 10);
        r->retry_after = *end == '\0' && s >= 0 ? s : 1; /* an HTTP date: soon */
        free(v);
    }
    return len;
}

/* One exchange: GET (body NULL), HEAD (head), or POST of a JWS. */
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
        return WEIR_ACME_UNREACHABLE;
    }
    return WEIR_ACME_OK;
}

static json_t *body_json(const resp *r)
{
    json_error_t je;
    return r->b.p ? json_loadb(r->b.p, r->b.len, 0, &je) : NULL;
}

/* The problem document of an error answer as err; its kind. */
static int problem(const resp *r, const char *url, char *err, size_t err_len,
                   int64_t *retry_after_s)
{
    json_t *j = body_json(r);
    const char *type = json_string_value(json_object_get(j, "type"));
    const char *detail = json_string_value(json_object_get(j, "detail"));
    snprintf(err, err_len, "%s: HTTP %ld%s%s%s%s", url, r->status, type ? ": " : "",
             type ? type : "", detail ? ": " : "", detail ? detail : "");
    int kind = WEIR_ACME_ERR;
    if (type && strstr(type, ":rateLimited")) {
        kind = WEIR_ACME_RATE_LIMITED;
        if (retry_after_s)
            *retry_after_s = r->retry_after > 0 ? r->retry_after : 0;
    } else if (!j || r->status >= 500) {
        kind = WEIR_ACME_UNREACHABLE;
    }
    json_decref(j);
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
    json_t *j = r.status == 200 ? body_json(&r) : NULL;
    const char *nn = json_string_value(json_object_get(j, "newNonce"));
    const char *na = json_string_value(json_object_get(j, "newAccount"));
    const char *no = json_string_value(json_object_get(j, "newOrder"));
    if (nn && na && no) {
        a->new_nonce = strdup(nn);
        a->new_account = strdup(na);
        a->new_order = strdup(no);
        const char *ri = json_string_value(json_object_get(j, "renewalInfo"));
        a->renewal_info = ri ? strdup(ri) : NULL;
    }
    json_decref(j);
    if (!a->new_order) {
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
 * may still be an HTTP error: the caller reads r->status.
 */
static int post(weir_acme *a, const char *url, const char *payload, bool jwk, const char *accept,
                resp *r, char *err, size_t err_len)
{
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
        if (r->status == 400 && attempt < NONCE_RETRIES && r->b.p &&
            strstr(r->b.p, "urn:ietf:params:acme:error:badNonce")) {
            a->bad_nonces++;
            resp_free(r);
            continue;
        }
        return WEIR_ACME_OK;
    }
}

/* post() whose answer must be 2xx JSON: *out (json_decref it). */
static int post_json(weir_acme *a, const char *url, const char *payload, bool jwk, json_t **out,
                     char **location, int64_t *retry_after, char *err, size_t err_len)
{
    resp r;
    int rc = post(a, url, payload, jwk, NULL, &r, err, err_len);
    if (rc != WEIR_ACME_OK)
        return rc;
    if (r.status < 200 || r.status > 299) {
        rc = problem(&r, url, err, err_len, retry_after);
        resp_free(&r);
        return rc;
    }
    *out = body_json(&r);
    if (!*out) {
        snprintf(err, err_len, "%s: HTTP %ld: the answer is not JSON", url, r.status);
        resp_free(&r);
        return WEIR_ACME_UNREACHABLE;
    }
    if (location) {
        *location = r.location;
        r.location = NULL;
    }
    if (retry_after)
        *retry_after = r.retry_after;
    resp_free(&r);
    return WEIR_ACME_OK;
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
    json_t *acct = NULL;
    char *loc = NULL;
    int64_t ra = -1;
    int rc = post_json(a, a->new_account, payload, true, &acct, &loc, &ra, err, err_len);
    free(payload);
    if (rc == WEIR_ACME_RATE_LIMITED)
        *retry_after_s = ra > 0 ? ra : 0;
    if (rc != WEIR_ACME_OK)
        return rc;
    const char *status = json_string_value(json_object_get(acct, "status"));
    if (!loc || (status && strcmp(status, "valid") != 0)) {
        snprintf(err, err_len, "%s: the account is %s", a->new_account,
                 loc ? status : "without a Location");
        rc = WEIR_ACME_ERR;
        free(loc);
    } else {
        a->kid = loc;
    }
    json_decref(acct);
    return rc;
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Polls url (POST-as-GET) until its status is none of the pending ones;
 * *out the last object. */
static int poll_status(weir_acme *a, const char *url, const char *const *pending, json_t **out,
                       char *err, size_t err_len)
{
    int64_t deadline = now_ms() + a->max_wait_ms;
    for (;;) {
        json_t *j = NULL;
        int64_t ra = -1;
        int rc = post_json(a, url, "", false, &j, NULL, &ra, err, err_len);
        if (rc != WEIR_ACME_OK)
            return rc;
        const char *st = json_string_value(json_object_get(j, "status"));
        bool wait = false;
        for (size_t i = 0; st && pending[i]; i++)
            wait = wait || strcmp(st, pending[i]) == 0;
        if (!wait) {
            *out = j;
            return WEIR_ACME_OK;
        }
        json_decref(j);
        int64_t pause = ra > 0 ? ra * 1000 : 500;
        if (pause > 10000)
            pause = 10000;
        if (now_ms() + pause > deadline) {
            snprintf(err, err_len, "%s: still %s after %u ms", url, st, a->max_wait_ms);
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
    json_t *az = NULL;
    int rc = post_json(a, url, "", false, &az, NULL, NULL, err, err_len);
    if (rc != WEIR_ACME_OK)
        return rc;
    const char *st = json_string_value(json_object_get(az, "status"));
    const char *domain =
        json_string_value(json_object_get(json_object_get(az, "identifier"), "value"));
    if (st && strcmp(st, "valid") == 0) {
        json_decref(az);
        return WEIR_ACME_OK;
    }
    const json_t *ch = NULL, *x;
    size_t i;
    json_array_foreach(json_object_get(az, "challenges"), i, x)
    {
        const char *t = json_string_value(json_object_get(x, "type"));
        if (!ch && t && strcmp(t, ops->type) == 0)
            ch = x;
    }
    const char *token = json_string_value(json_object_get(ch, "token"));
    const char *curl_ = json_string_value(json_object_get(ch, "url"));
    if (!domain || !token || !curl_ ||
        strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                      "0123456789-_") != strlen(token)) {
        snprintf(err, err_len, "%s: no usable %s challenge for %s", url, ops->type,
                 domain ? domain : "its identifier");
        json_decref(az);
        return WEIR_ACME_ERR;
    }
    char *ka = weir__acme_key_authorization(token, a->key);
    char perr[300] = "";
    if (!ka || ops->present(ops->arg, domain, token, ka, perr, sizeof(perr)) != 0) {
        snprintf(err, err_len, "%s: cannot present the %s challenge: %s", domain, ops->type,
                 ka ? perr : "out of memory");
        free(ka);
        json_decref(az);
        return WEIR_ACME_ERR;
    }
    free(ka);
    done->domain = strdup(domain);
    done->token = strdup(token);
    char *chal_url = strdup(curl_);
    json_decref(az);
    json_t *answer = NULL;
    rc = chal_url ? post_json(a, chal_url, "{}", false, &answer, NULL, NULL, err, err_len)
                  : WEIR_ACME_ERR;
    free(chal_url);
    json_decref(answer);
    if (rc != WEIR_ACME_OK)
        return rc;
    static const char *const pending[] = {"pending", "processing", NULL};
    rc = poll_status(a, url, pending, &az, err, err_len);
    if (rc != WEIR_ACME_OK)
        return rc;
    st = json_string_value(json_object_get(az, "status"));
    if (!st || strcmp(st, "valid") != 0) {
        /* The failed challenge's error says why. */
        const char *why = NULL;
        json_array_foreach(json_object_get(az, "challenges"), i, x)
        {
            const json_t *e = json_object_get(x, "error");
            if (!why && e)
                why = json_string_value(json_object_get(e, "detail"));
        }
        snprintf(err, err_len, "%s: authorization %s: %s", done->domain, st ? st : "unknown",
                 why ? why : "no detail");
        rc = WEIR_ACME_CHALLENGE;
    }
    json_decref(az);
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
    char *payload = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    json_t *order = NULL;
    char *order_url = NULL;
    int64_t ra = -1;
    rc = payload ? post_json(a, a->new_order, payload, false, &order, &order_url, &ra, err, err_len)
                 : WEIR_ACME_ERR;
    free(payload);
    if (rc == WEIR_ACME_RATE_LIMITED)
        *retry_after_s = ra > 0 ? ra : 0;
    if (rc != WEIR_ACME_OK)
        return rc;
    presented *done =
        calloc(json_array_size(json_object_get(order, "authorizations")) + 1, sizeof(*done));
    size_t n_done = 0;
    const json_t *x;
    size_t i;
    json_array_foreach(json_object_get(order, "authorizations"), i, x)
    {
        if (rc != WEIR_ACME_OK || !done)
            break;
        const char *u = json_string_value(x);
        rc = u ? authorize(a, u, ops, &done[n_done], err, err_len) : WEIR_ACME_ERR;
        if (done[n_done].token)
            n_done++;
    }
    if (!done)
        rc = WEIR_ACME_ERR;
    char *fin = rc == WEIR_ACME_OK && json_string_value(json_object_get(order, "finalize"))
                    ? strdup(json_string_value(json_object_get(order, "finalize")))
                    : NULL;
    json_decref(order);
    order = NULL;
    if (rc == WEIR_ACME_OK && (!fin || !order_url)) {
        snprintf(err, err_len, "%s: an order without finalize URL or Location", a->new_order);
        rc = WEIR_ACME_ERR;
    }
    /* Finalize with the CSR, then wait for the certificate. */
    char *csr = rc == WEIR_ACME_OK ? weir__acme_csr(cert_key, domains, n) : NULL;
    if (rc == WEIR_ACME_OK && csr) {
        json_t *f = json_pack("{s:s}", "csr", csr);
        char *fp = f ? json_dumps(f, JSON_COMPACT) : NULL;
        json_decref(f);
        json_t *ans = NULL;
        rc = fp ? post_json(a, fin, fp, false, &ans, NULL, NULL, err, err_len) : WEIR_ACME_ERR;
        free(fp);
        json_decref(ans);
    } else if (rc == WEIR_ACME_OK) {
        snprintf(err, err_len, "cannot make the certificate request");
        rc = WEIR_ACME_ERR;
    }
    free(csr);
    free(fin);
    if (rc == WEIR_ACME_OK) {
        static const char *const pending[] = {"pending", "ready", "processing", NULL};
        rc = poll_status(a, order_url, pending, &order, err, err_len);
    }
    const char *st = order ? json_string_value(json_object_get(order, "status")) : NULL;
    const char *cert_url = order ? json_string_value(json_object_get(order, "certificate")) : NULL;
    if (rc == WEIR_ACME_OK && (!st || strcmp(st, "valid") != 0 || !cert_url)) {
        snprintf(err, err_len, "%s: the order is %s", order_url, st ? st : "without a status");
        rc = WEIR_ACME_ERR;
    }
    if (rc == WEIR_ACME_OK) {
        resp r;
        rc = post(a, cert_url, "", false, "Accept: application/pem-certificate-chain", &r, err,
                  err_len);
        if (rc == WEIR_ACME_OK && r.status == 200 && r.b.p &&
            strstr(r.b.p, "-----BEGIN CERTIFICATE-----")) {
            *chain_pem = r.b.p;
            r.b.p = NULL;
        } else if (rc == WEIR_ACME_OK) {
            rc = problem(&r, cert_url, err, err_len, NULL);
        }
        resp_free(&r);
    }
    json_decref(order);
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

/* "2026-12-06T21:00:00Z" (fractions and offsets "+00:00" allowed) as Unix time. */
static int64_t rfc3339(const char *s)
{
    struct tm tm = {0};
    const char *e = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    if (!e)
        return 0;
    if (*e == '.')
        while (*++e >= '0' && *e <= '9')
            ;
    int64_t t = (int64_t)timegm(&tm);
    if ((e[0] == '+' || e[0] == '-') && strlen(e) == 6) {
        int64_t off =
            ((e[1] - '0') * 10 + (e[2] - '0')) * 3600 + ((e[4] - '0') * 10 + (e[5] - '0')) * 60;
        t += e[0] == '+' ? -off : off;
    } else if (e[0] != 'Z' || e[1]) {
        return 0;
    }
    return t;
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
        json_t *j = r.status == 200 ? body_json(&r) : NULL;
        const json_t *w = json_object_get(j, "suggestedWindow");
        *start = rfc3339(json_string_value(json_object_get(w, "start")));
        *end = rfc3339(json_string_value(json_object_get(w, "end")));
        if (!*start || *end < *start) {
            snprintf(err, err_len, "%s: HTTP %ld: no suggested window", url, r.status);
            rc = WEIR_ACME_ERR;
        }
        json_decref(j);
    }
    resp_free(&r);
    free(url);
    return rc;
}
