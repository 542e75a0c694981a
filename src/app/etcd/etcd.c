/*
 * etcd.c - etcd's v3 JSON gateway over libcurl (see etcd.h).
 *
 * Every call is a POST of a JSON body to one endpoint; int64 fields come
 * back as JSON strings (the gateway's protobuf mapping) and fields at
 * their zero value are left out, so a missing "succeeded" is false and a
 * missing "kvs" is none. A call that cannot reach an endpoint, or that a
 * member answers "unavailable" (no leader, stopping), moves on to the
 * next endpoint; one that etcd refuses on purpose does not.
 */
#include "app/etcd/etcd.h"

#include "app/http_body.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RESPONSE_MAX (64u << 20) /* a range of a whole prefix of configuration */
#define GRPC_UNAVAILABLE 14
#define GRPC_UNAUTHENTICATED 16

struct weir_etcd {
    char **endpoints;
    size_t n_endpoints, current;
    char *user, *password, *cacert, *cert, *key;
    char *token; /* from /v3/auth/authenticate, or NULL */
    uint32_t timeout_ms;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

weir_etcd *weir__etcd_new(const weir_etcd_options *o, char *err, size_t err_len)
{
    pthread_once(&curl_once, curl_init);
    if (o->n_endpoints == 0) {
        snprintf(err, err_len, "no etcd endpoint");
        return NULL;
    }
    weir_etcd *e = calloc(1, sizeof(*e));
    if (!e)
        goto oom;
    e->endpoints = calloc(o->n_endpoints, sizeof(char *));
    if (!e->endpoints)
        goto oom;
    for (size_t i = 0; i < o->n_endpoints; i++) {
        e->endpoints[i] = strdup(o->endpoints[i]);
        if (!e->endpoints[i])
            goto oom;
        e->n_endpoints++;
    }
    e->user = dup_or_null(o->user);
    e->password = dup_or_null(o->password);
    e->cacert = dup_or_null(o->cacert);
    e->cert = dup_or_null(o->cert);
    e->key = dup_or_null(o->key);
    if ((o->user && !e->user) || (o->password && !e->password) || (o->cacert && !e->cacert) ||
        (o->cert && !e->cert) || (o->key && !e->key))
        goto oom;
    e->timeout_ms = o->timeout_ms ? o->timeout_ms : 5000;
    return e;
oom:
    weir__etcd_free(e);
    snprintf(err, err_len, "out of memory");
    return NULL;
}

void weir__etcd_free(weir_etcd *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->n_endpoints; i++)
        free(e->endpoints[i]);
    free(e->endpoints);
    free(e->user);
    if (e->password)
        explicit_bzero(e->password, strlen(e->password));
    free(e->password);
    free(e->cacert);
    free(e->cert);
    free(e->key);
    free(e->token);
    free(e);
}

/* ---- base64 and int64 fields ---- */

char *weir__etcd_b64(const void *p, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (out)
        EVP_EncodeBlock((unsigned char *)out, p, (int)len);
    return out;
}

/* Decodes a base64 string into a malloc'd NUL-terminated buffer. */
static char *unb64(const char *s, size_t *len)
{
    size_t n = strlen(s);
    if (n % 4)
        return NULL;
    char *out = malloc(n / 4 * 3 + 1);
    if (!out)
        return NULL;
    int m = n ? EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n) : 0;
    if (m < 0) {
        free(out);
        return NULL;
    }
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    if (n && s[n - 1] == '=')
        m--;
    if (n > 1 && s[n - 2] == '=')
        m--;
    out[m] = '\0';
    *len = (size_t)m;
    return out;
}

static int64_t int64_field(const json_t *o, const char *name)
{
    const json_t *v = json_object_get(o, name);
    if (json_is_string(v))
        return strtoll(json_string_value(v), NULL, 10);
    if (json_is_integer(v))
        return (int64_t)json_integer_value(v);
    return 0;
}

static void kv_free(weir_etcd_kv *kv)
{
    free(kv->key);
    free(kv->value);
}

static bool kv_parse(const json_t *o, weir_etcd_kv *kv)
{
    memset(kv, 0, sizeof(*kv));
    const char *k = json_string_value(json_object_get(o, "key"));
    const char *v = json_string_value(json_object_get(o, "value"));
    kv->key = unb64(k ? k : "", &kv->key_len);
    kv->value = unb64(v ? v : "", &kv->value_len);
    kv->create_revision = int64_field(o, "create_revision");
    kv->mod_revision = int64_field(o, "mod_revision");
    kv->lease = int64_field(o, "lease");
    if (!kv->key || !kv->value) {
        kv_free(kv);
        return false;
    }
    return true;
}

void weir__etcd_kvs_free(weir_etcd_kvs *kvs)
{
    for (size_t i = 0; i < kvs->n; i++)
        kv_free(&kvs->v[i]);
    free(kvs->v);
    kvs->v = NULL;
    kvs->n = 0;
}

/* ---- one call ---- */

/* An easy handle for POST url+path with the handle's TLS and token. */
static CURL *request(weir_etcd *e, const char *endpoint, const char *path, const char *json,
                     struct curl_slist **hdrs, weir_http_body *b, bool stream)
{
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    char url[1024];
    snprintf(url, sizeof(url), "%s%s", endpoint, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(e->timeout_ms < 2000 ? e->timeout_ms : 2000));
    if (!stream)
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)e->timeout_ms);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPIDLE, 5L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPINTVL, 2L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, weir__http_body_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
    if (e->cacert)
        curl_easy_setopt(c, CURLOPT_CAINFO, e->cacert);
    if (e->cert)
        curl_easy_setopt(c, CURLOPT_SSLCERT, e->cert);
    if (e->key)
        curl_easy_setopt(c, CURLOPT_SSLKEY, e->key);
    *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    if (e->token && *hdrs) {
        char h[600];
        snprintf(h, sizeof(h), "Authorization: %s", e->token);
        struct curl_slist *n = curl_slist_append(*hdrs, h);
        if (n)
            *hdrs = n;
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, *hdrs);
    return c;
}

/* The gateway's error object of an answer: its message and gRPC code. */
static int answer_error(const json_t *j, char *err, size_t err_len)
{
    const json_t *e = json_object_get(j, "error");
    if (!e)
        return 0;
    const char *msg = json_string_value(json_object_get(j, "message"));
    if (!msg)
        msg = json_is_string(e) ? json_string_value(e)
                                : json_string_value(json_object_get(e, "message"));
    json_int_t code = json_integer_value(json_object_get(j, "code"));
    if (!code && json_is_object(e))
        code = json_integer_value(json_object_get(e, "grpc_code"));
    snprintf(err, err_len, "%s", msg ? msg : "etcd answered an error");
    return code ? (int)code : -1;
}

static int authenticate(weir_etcd *e, const char *endpoint, char *err, size_t err_len);

/* One POST to one endpoint: 0 and *out, -1 (try another endpoint), -2 (a
 * refusal: do not). */
static int call_one(weir_etcd *e, const char *endpoint, const char *path, const char *json,
                    json_t **out, char *err, size_t err_len)
{
    weir_http_body b = {.max = RESPONSE_MAX};
    struct curl_slist *hdrs = NULL;
    CURL *c = request(e, endpoint, path, json, &hdrs, &b, false);
    if (!c) {
        snprintf(err, err_len, "out of memory");
        return -2;
    }
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);
    if (rc != CURLE_OK) {
        snprintf(err, err_len, "%s: %s", endpoint,
                 b.too_big ? "answer over 64 MiB" : curl_easy_strerror(rc));
        free(b.p);
        return -1;
    }
    json_error_t je;
    json_t *j = b.p ? json_loads(b.p, 0, &je) : NULL;
    free(b.p);
    if (!j) {
        /* Not etcd's gateway (or not this version's): another endpoint may be. */
        snprintf(err, err_len, "%s%s: HTTP %ld, not JSON", endpoint, path, status);
        return -1;
    }
    int code = answer_error(j, err, err_len);
    if (code) {
        json_decref(j);
        if (code == GRPC_UNAUTHENTICATED && e->user && e->token) {
            free(e->token);
            e->token = NULL;
        }
        return code == GRPC_UNAVAILABLE ? -1 : -2;
    }
    *out = j;
    return 0;
}

static int authenticate(weir_etcd *e, const char *endpoint, char *err, size_t err_len)
{
    json_t *req = json_pack("{s:s, s:s}", "name", e->user, "password", e->password);
    char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!text) {
        snprintf(err, err_len, "out of memory");
        return -2;
    }
    json_t *ans = NULL;
    int rc = call_one(e, endpoint, "/v3/auth/authenticate", text, &ans, err, err_len);
    explicit_bzero(text, strlen(text));
    free(text);
    if (rc != 0)
        return rc;
    const char *tok = json_string_value(json_object_get(ans, "token"));
    free(e->token);
    e->token = tok ? strdup(tok) : NULL;
    json_decref(ans);
    if (!e->token) {
        snprintf(err, err_len, "%s: authentication gave no token", endpoint);
        return -2;
    }
    return 0;
}

/* POSTs req (consumed) to path, endpoint by endpoint; *out the answer. */
static int call(weir_etcd *e, const char *path, json_t *req, json_t **out, char *err,
                size_t err_len)
{
    char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!text) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    int rc = -1;
    for (size_t k = 0; k < e->n_endpoints; k++) {
        size_t i = (e->current + k) % e->n_endpoints;
        for (int attempt = 0; attempt < 2; attempt++) {
            if (e->user && !e->token) {
                rc = authenticate(e, e->endpoints[i], err, err_len);
                if (rc != 0)
                    break;
            }
            rc = call_one(e, e->endpoints[i], path, text, out, err, err_len);
            /* A token that expired was dropped: once more with a new one. */
            if (rc != -2 || !e->user || e->token)
                break;
        }
        if (rc == 0)
            e->current = i;
        if (rc != -1)
            break;
    }
    free(text);
    return rc == 0 ? 0 : -1;
}

/* The prefix's range end: the prefix with its last byte incremented
 * (bytes 0xff dropped first), as etcd's clients compute it. */
static char *range_end_b64(const char *prefix)
{
    size_t n = strlen(prefix);
    char *end = malloc(n + 1);
    if (!end)
        return NULL;
    memcpy(end, prefix, n + 1);
    while (n && (unsigned char)end[n - 1] == 0xff)
        n--;
    char *b;
    if (n == 0) {
        b = weir__etcd_b64("\0", 1); /* every key */
    } else {
        end[n - 1] = (char)((unsigned char)end[n - 1] + 1);
        b = weir__etcd_b64(end, n);
    }
    free(end);
    return b;
}

static int range(weir_etcd *e, const char *key, bool prefix, int64_t revision, weir_etcd_kvs *out,
                 char *err, size_t err_len)
{
    memset(out, 0, sizeof(*out));
    char *k = weir__etcd_b64(key, strlen(key));
    char *end = prefix ? range_end_b64(key) : NULL;
    json_t *req = k && (!prefix || end) ? json_pack("{s:s}", "key", k) : NULL;
    if (req && end)
        json_object_set_new(req, "range_end", json_string(end));
    if (req && revision > 0) {
        char r[24];
        snprintf(r, sizeof(r), "%" PRId64, revision);
        json_object_set_new(req, "revision", json_string(r));
    }
    free(k);
    free(end);
    json_t *ans = NULL;
    if (call(e, "/v3/kv/range", req, &ans, err, err_len) != 0)
        return strstr(err, "compacted") ? WEIR_ETCD_COMPACTED : -1;
    out->revision = int64_field(json_object_get(ans, "header"), "revision");
    const json_t *kvs = json_object_get(ans, "kvs");
    size_t n = json_array_size(kvs);
    out->v = calloc(n ? n : 1, sizeof(*out->v));
    if (!out->v) {
        json_decref(ans);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!kv_parse(json_array_get(kvs, i), &out->v[out->n])) {
            json_decref(ans);
            weir__etcd_kvs_free(out);
            snprintf(err, err_len, "etcd answered a key that is not base64");
            return -1;
        }
        out->n++;
    }
    json_decref(ans);
    return 0;
}

int weir__etcd_range(weir_etcd *e, const char *prefix, int64_t revision, weir_etcd_kvs *out,
                     char *err, size_t err_len)
{
    return range(e, prefix, true, revision, out, err, err_len);
}

int weir__etcd_get(weir_etcd *e, const char *key, weir_etcd_kvs *out, char *err, size_t err_len)
{
    return range(e, key, false, 0, out, err, err_len);
}

json_t *weir__etcd_op_put(const char *key, const char *value, size_t value_len, int64_t lease)
{
    char *k = weir__etcd_b64(key, strlen(key));
    char *v = weir__etcd_b64(value, value_len);
    json_t *put = k && v ? json_pack("{s:s, s:s}", "key", k, "value", v) : NULL;
    if (put && lease) {
        char l[24];
        snprintf(l, sizeof(l), "%" PRId64, lease);
        json_object_set_new(put, "lease", json_string(l));
    }
    free(k);
    free(v);
    return put ? json_pack("{s:o}", "request_put", put) : NULL;
}

json_t *weir__etcd_op_delete(const char *key, bool prefix)
{
    char *k = weir__etcd_b64(key, strlen(key));
    char *end = prefix ? range_end_b64(key) : NULL;
    json_t *del = k && (!prefix || end) ? json_pack("{s:s}", "key", k) : NULL;
    if (del && end)
        json_object_set_new(del, "range_end", json_string(end));
    free(k);
    free(end);
    return del ? json_pack("{s:o}", "request_delete_range", del) : NULL;
}

json_t *weir__etcd_cmp_mod(const char *key, int64_t mod_revision)
{
    char *k = weir__etcd_b64(key, strlen(key));
    char r[24];
    snprintf(r, sizeof(r), "%" PRId64, mod_revision);
    json_t *c = k ? json_pack("{s:s, s:s, s:s, s:s}", "key", k, "target", "MOD", "result", "EQUAL",
                              "mod_revision", r)
                  : NULL;
    free(k);
    return c;
}

json_t *weir__etcd_cmp_unchanged_since(const char *key, bool prefix, int64_t revision)
{
    char *k = weir__etcd_b64(key, strlen(key));
    char *end = prefix ? range_end_b64(key) : NULL;
    char r[24];
    snprintf(r, sizeof(r), "%" PRId64, revision + 1);
    json_t *c = k && (!prefix || end) ? json_pack("{s:s, s:s, s:s, s:s}", "key", k, "target", "MOD",
                                                  "result", "LESS", "mod_revision", r)
                                      : NULL;
    if (c && end)
        json_object_set_new(c, "range_end", json_string(end));
    free(k);
    free(end);
    return c;
}

json_t *weir__etcd_cmp_create(const char *key, int64_t create_revision)
{
    char *k = weir__etcd_b64(key, strlen(key));
    char r[24];
    snprintf(r, sizeof(r), "%" PRId64, create_revision);
    json_t *c = k ? json_pack("{s:s, s:s, s:s, s:s}", "key", k, "target", "CREATE", "result",
                              "EQUAL", "create_revision", r)
                  : NULL;
    free(k);
    return c;
}

int weir__etcd_txn(weir_etcd *e, json_t *compare, json_t *ops, int64_t *revision, char *err,
                   size_t err_len)
{
    json_t *req = ops ? json_pack("{s:o}", "success", ops) : NULL;
    if (req && compare)
        json_object_set_new(req, "compare", compare);
    else
        json_decref(compare);
    if (!req) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    json_t *ans = NULL;
    if (call(e, "/v3/kv/txn", req, &ans, err, err_len) != 0)
        return -1;
    bool ok = json_is_true(json_object_get(ans, "succeeded"));
    if (revision)
        *revision = int64_field(json_object_get(ans, "header"), "revision");
    json_decref(ans);
    if (!ok) {
        snprintf(err, err_len, "the key changed meanwhile");
        return WEIR_ETCD_FAILED;
    }
    return 0;
}

int weir__etcd_put_if(weir_etcd *e, const char *key, const char *value, size_t value_len,
                      int64_t mod_revision, int64_t lease, int64_t *revision, char *err,
                      size_t err_len)
{
    json_t *op = weir__etcd_op_put(key, value, value_len, lease);
    json_t *cmp =
        mod_revision >= 0 ? json_pack("[o]", weir__etcd_cmp_mod(key, mod_revision)) : NULL;
    return weir__etcd_txn(e, cmp, op ? json_pack("[o]", op) : NULL, revision, err, err_len);
}

int weir__etcd_delete_if(weir_etcd *e, const char *key, bool prefix, int64_t mod_revision,
                         char *err, size_t err_len)
{
    json_t *op = weir__etcd_op_delete(key, prefix);
    json_t *cmp = !prefix && mod_revision >= 0
                      ? json_pack("[o]", weir__etcd_cmp_mod(key, mod_revision))
                      : NULL;
    return weir__etcd_txn(e, cmp, op ? json_pack("[o]", op) : NULL, NULL, err, err_len);
}

/* ---- leases ---- */

static json_t *id_request(int64_t id)
{
    char s[24];
    snprintf(s, sizeof(s), "%" PRId64, id);
    return json_pack("{s:s}", "ID", s);
}

int weir__etcd_lease_grant(weir_etcd *e, int64_t ttl_s, int64_t *id, char *err, size_t err_len)
{
    char t[24];
    snprintf(t, sizeof(t), "%" PRId64, ttl_s);
    json_t *ans = NULL;
    if (call(e, "/v3/lease/grant", json_pack("{s:s}", "TTL", t), &ans, err, err_len) != 0)
        return -1;
    *id = int64_field(ans, "ID");
    json_decref(ans);
    if (*id == 0) {
        snprintf(err, err_len, "etcd granted no lease");
        return -1;
    }
    return 0;
}

int weir__etcd_lease_keepalive(weir_etcd *e, int64_t id, int64_t *ttl_s, char *err, size_t err_len)
{
    json_t *ans = NULL;
    if (call(e, "/v3/lease/keepalive", id_request(id), &ans, err, err_len) != 0)
        return -1;
    /* The gateway streams: one answer, under "result". */
    const json_t *r = json_object_get(ans, "result");
    *ttl_s = int64_field(r ? r : ans, "TTL");
    json_decref(ans);
    return 0;
}

int weir__etcd_lease_revoke(weir_etcd *e, int64_t id, char *err, size_t err_len)
{
    json_t *ans = NULL;
    if (call(e, "/v3/lease/revoke", id_request(id), &ans, err, err_len) != 0)
        return -1;
    json_decref(ans);
    return 0;
}

/* ---- watch ---- */

typedef struct watch_state {
    weir_http_body b;
    size_t used; /* bytes of b handled */
    weir_etcd_watch_cb cb;
    void (*created)(void *arg);
    void *arg;
    int rc; /* set when the stream says it ends */
    int64_t compact_revision;
    char *err;
    size_t err_len;
    bool stop_cb;
    bool is_created;      /* etcd confirmed the watch */
    bool unauthenticated; /* the token expired: authenticate again */
} watch_state;

/* One JSON line of the stream. Returns false to end the watch. */
static bool watch_line(watch_state *w, const char *line, size_t len)
{
    json_error_t je;
    json_t *j = json_loadb(line, len, 0, &je);
    if (!j) {
        snprintf(w->err, w->err_len, "etcd watch: an answer that is not JSON");
        w->rc = -1;
        return false;
    }
    int code = answer_error(j, w->err, w->err_len);
    if (code) {
        json_decref(j);
        w->unauthenticated = code == GRPC_UNAUTHENTICATED;
        w->rc = -1;
        return false;
    }
    const json_t *r = json_object_get(j, "result");
    int64_t rev = int64_field(json_object_get(r, "header"), "revision");
    if (json_is_true(json_object_get(r, "created"))) {
        w->is_created = true;
        if (w->created)
            w->created(w->arg);
    }
    int64_t compact = int64_field(r, "compact_revision");
    if (compact || json_is_true(json_object_get(r, "canceled"))) {
        w->compact_revision = compact;
        snprintf(w->err, w->err_len, "etcd watch canceled%s",
                 compact ? ": revision compacted" : "");
        w->rc = compact ? WEIR_ETCD_COMPACTED : -1;
        json_decref(j);
        return false;
    }
    const json_t *evs = json_object_get(r, "events");
    size_t n = json_array_size(evs);
    if (n) {
        weir_etcd_event *ev = calloc(n, sizeof(*ev));
        size_t k = 0;
        for (; ev && k < n; k++) {
            const json_t *x = json_array_get(evs, k);
            ev[k].deleted =
                strcmp(json_string_value(json_object_get(x, "type")) ?: "", "DELETE") == 0;
            if (!kv_parse(json_object_get(x, "kv"), &ev[k].kv))
                break;
        }
        bool go_on = ev && k == n && w->cb(w->arg, ev, n, rev) == 0;
        for (size_t i = 0; ev && i < k; i++)
            kv_free(&ev[i].kv);
        free(ev);
        if (!go_on) {
            if (!ev || k < n) {
                snprintf(w->err, w->err_len, "etcd watch: a change that cannot be read");
                w->rc = -1;
            } else {
                w->stop_cb = true;
            }
            json_decref(j);
            return false;
        }
    }
    json_decref(j);
    return true;
}

static size_t on_watch_data(char *p, size_t size, size_t n, void *arg)
{
    watch_state *w = arg;
    size_t got = weir__http_body_write(p, size, n, &w->b);
    if (got != size * n)
        return 0;
    for (;;) {
        char *nl = memchr(w->b.p + w->used, '\n', w->b.len - w->used);
        if (!nl)
            break;
        size_t len = (size_t)(nl - (w->b.p + w->used));
        if (len && !watch_line(w, w->b.p + w->used, len))
            return 0;
        w->used += len + 1;
    }
    /* Keep only the partial line. */
    if (w->used) {
        memmove(w->b.p, w->b.p + w->used, w->b.len - w->used);
        w->b.len -= w->used;
        w->used = 0;
    }
    return got;
}

int weir__etcd_watch(weir_etcd *e, const char *prefix, int64_t start_revision,
                     weir_etcd_watch_cb cb, void (*created)(void *arg), void *arg,
                     const _Atomic bool *stop, int64_t *compact_revision, char *err, size_t err_len)
{
    char *k = weir__etcd_b64(prefix, strlen(prefix));
    char *end = range_end_b64(prefix);
    char rev[24];
    snprintf(rev, sizeof(rev), "%" PRId64, start_revision);
    json_t *req = k && end ? json_pack("{s:{s:s, s:s, s:s}}", "create_request", "key", k,
                                       "range_end", end, "start_revision", rev)
                           : NULL;
    free(k);
    free(end);
    char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!text) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    /* A token for the stream, like any call (the range before ensured one
     * unless etcd restarted; a refusal then ends this watch). */
    if (e->user && !e->token && authenticate(e, e->endpoints[e->current], err, err_len) != 0) {
        e->current = (e->current + 1) % e->n_endpoints;
        free(text);
        return -1;
    }
    watch_state w = {.b = {.max = RESPONSE_MAX},
                     .cb = cb,
                     .created = created,
                     .arg = arg,
                     .err = err,
                     .err_len = err_len};
    struct curl_slist *hdrs = NULL;
    CURL *c = request(e, e->endpoints[e->current], "/v3/watch", text, &hdrs, &w.b, true);
    CURLM *m = curl_multi_init();
    int rc = -1;
    if (!c || !m) {
        snprintf(err, err_len, "out of memory");
        goto out;
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_watch_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &w);
    curl_multi_add_handle(m, c);
    /* etcd confirms a watch at once: an endpoint that has not within the
     * timeout is not etcd, or is stuck; the next one is tried. */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool timed_out = false;
    for (;;) {
        int running = 0;
        curl_multi_perform(m, &running);
        if (!running)
            break;
        if (atomic_load(stop)) {
            rc = 0;
            goto out;
        }
        if (!w.is_created) {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            int64_t ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
            if (ms > (int64_t)e->timeout_ms) {
                timed_out = true;
                break;
            }
        }
        curl_multi_poll(m, NULL, 0, 200, NULL);
    }
    CURLMsg *msg;
    int left;
    CURLcode res = CURLE_OK;
    while ((msg = curl_multi_info_read(m, &left)))
        if (msg->msg == CURLMSG_DONE)
            res = msg->data.result;
    if (timed_out) {
        snprintf(err, err_len, "%s: no answer to the watch within %u ms", e->endpoints[e->current],
                 e->timeout_ms);
        rc = -1;
    } else if (w.rc) {
        rc = w.rc;
        if (compact_revision)
            *compact_revision = w.compact_revision;
        if (w.unauthenticated && e->token) {
            free(e->token);
            e->token = NULL;
        }
    } else if (w.stop_cb) {
        rc = 0;
    } else {
        snprintf(err, err_len, "%s: watch ended: %s", e->endpoints[e->current],
                 res == CURLE_OK ? "the stream closed" : curl_easy_strerror(res));
        rc = -1;
    }
    /* After a failure, another member next time (a compaction is no
     * failure of this one). */
    if (rc == -1)
        e->current = (e->current + 1) % e->n_endpoints;
out:
    if (m && c)
        curl_multi_remove_handle(m, c);
    if (c)
        curl_easy_cleanup(c);
    if (m)
        curl_multi_cleanup(m);
    curl_slist_free_all(hdrs);
    free(w.b.p);
    free(text);
    return rc;
}
