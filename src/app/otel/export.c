/*
 * export.c - spans to an OTLP/HTTP collector (export.h).
 */
#include "app/otel/export.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/http_body.h"
#include "app/otel/trace.h"
#include "app/strbuf.h"
#include "weir/log.h"
#include "weir/server.h"

#define RING 2048 /* spans a worker may have waiting */
#define MAX_ENDPOINTS 64
#define PENDING_BATCHES 4 /* batches kept per endpoint while the collector is away */
#define BACKOFF_FIRST_MS 1000
#define BACKOFF_MAX_MS 30000
#define POST_TIMEOUT_MS 5000
#define TICK_MS 20

typedef struct ring {
    _Atomic size_t head, tail; /* consumer, producer */
    struct ring *next;
    weir_span v[RING];
} ring;

/* Spans of one endpoint waiting for their POST: a circular buffer. */
typedef struct pending {
    weir_span *v;
    size_t cap, head, n;
    int64_t retry_at_ms; /* backoff: not before */
    uint32_t backoff_ms;
    int64_t oldest_ms; /* when the first waiting span came */
} pending;

static struct {
    pthread_mutex_t mu; /* rings list, endpoints, settings, running */
    pthread_cond_t cv;
    ring *rings;
    char *endpoints[MAX_ENDPOINTS];
    size_t n_endpoints;
    char *service_name;
    char **headers;
    size_t n_headers;
    uint32_t batch, flush_ms;
    bool json;
    bool running, stopping;
    int64_t stop_deadline_ms;
    pthread_t thread;
    _Atomic uint64_t exported, dropped_queue, dropped_export, failures;
} O = {.mu = PTHREAD_MUTEX_INITIALIZER,
       .cv = PTHREAD_COND_INITIALIZER,
       .batch = 512,
       .flush_ms = 5000};

static _Thread_local ring *mine;

int64_t weir__otlp_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

const char *weir__otlp_endpoint(const char *url)
{
    size_t n = strlen(url);
    while (n && url[n - 1] == '/')
        n--;
    char *want = NULL;
    static const char tail[] = "/v1/traces";
    bool has_tail =
        n >= sizeof(tail) - 1 && strncmp(url + n - (sizeof(tail) - 1), tail, sizeof(tail) - 1) == 0;
    if (asprintf(&want, "%.*s%s", (int)n, url, has_tail ? "" : tail) < 0)
        return NULL;
    const char *out = NULL;
    pthread_mutex_lock(&O.mu);
    for (size_t i = 0; i < O.n_endpoints && !out; i++)
        if (strcmp(O.endpoints[i], want) == 0)
            out = O.endpoints[i];
    if (!out && O.n_endpoints < MAX_ENDPOINTS) {
        O.endpoints[O.n_endpoints] = want;
        out = O.endpoints[O.n_endpoints++];
        want = NULL;
    }
    pthread_mutex_unlock(&O.mu);
    free(want);
    return out;
}

void weir__otlp_configure(const weir_otlp_settings *o)
{
    pthread_mutex_lock(&O.mu);
    free(O.service_name);
    O.service_name = strdup(o->service_name ? o->service_name : "weir");
    for (size_t i = 0; i < O.n_headers; i++)
        free(O.headers[i]);
    free(O.headers);
    O.headers = o->n_headers ? calloc(o->n_headers, sizeof(*O.headers)) : NULL;
    O.n_headers = 0;
    for (size_t i = 0; O.headers && i < o->n_headers; i++)
        if ((O.headers[O.n_headers] = strdup(o->headers[i])))
            O.n_headers++;
    O.batch = o->batch_size ? o->batch_size : 512;
    O.flush_ms = o->flush_interval_ms ? o->flush_interval_ms : 5000;
    O.json = o->json;
    pthread_mutex_unlock(&O.mu);
}

/* The part of s that is set: its attempts past n_attempts are not. */
static size_t span_size(const weir_span *s)
{
    size_t n = s->n_attempts < WEIR_SPAN_ATTEMPTS ? s->n_attempts : WEIR_SPAN_ATTEMPTS;
    return offsetof(weir_span, at) + n * sizeof(s->at[0]);
}

weir_span *weir__otlp_reserve(void)
{
    ring *r = mine;
    if (!r) {
        /* A worker's first span: its ring, for the life of the process
         * (workers live as long). */
        r = calloc(1, sizeof(*r));
        if (!r) {
            atomic_fetch_add(&O.dropped_queue, 1);
            return NULL;
        }
        pthread_mutex_lock(&O.mu);
        r->next = O.rings;
        O.rings = r;
        pthread_mutex_unlock(&O.mu);
        mine = r;
    }
    size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    size_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    if (t - h >= RING) {
        atomic_fetch_add(&O.dropped_queue, 1);
        return NULL;
    }
    return &r->v[t % RING];
}

void weir__otlp_commit(void)
{
    ring *r = mine;
    size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    atomic_store_explicit(&r->tail, t + 1, memory_order_release);
}

void weir__otlp_counts(weir_otlp_counts *out)
{
    out->exported = atomic_load(&O.exported);
    out->dropped_queue = atomic_load(&O.dropped_queue);
    out->dropped_export = atomic_load(&O.dropped_export);
    out->export_failures = atomic_load(&O.failures);
}

/* ---- the JSON encoding ---- */

/* The length of the well-formed UTF-8 sequence at p (NUL-terminated),
 * or 0: no overlong forms, surrogates or code points past U+10FFFF. */
static size_t utf8_len(const unsigned char *p)
{
    unsigned c = p[0];
    if (c >= 0xc2 && c <= 0xdf)
        return (p[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        unsigned lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        return p[1] >= lo && p[1] <= hi && (p[2] & 0xc0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        return p[1] >= lo && p[1] <= hi && (p[2] & 0xc0) == 0x80 && (p[3] & 0xc0) == 0x80 ? 4 : 0;
    }
    return 0;
}

/* The encoder runs for every span: no printf (it was most of a span's
 * cost), only copies. */
/* A cursor into room reserved for one span (SPAN_MAX): writes need no
 * check. */
typedef struct jw {
    char *w;
} jw;

/* More than one span (and its attempts) can take: a text may appear
 * several times (the method in every attempt), each byte at most six
 * (\u00XX), and the fixed parts. */
#define SPAN_MAX (12 * sizeof(weir_span) + 16384)

static void put_n(jw *b, const char *s, size_t n)
{
    memcpy(b->w, s, n);
    b->w += n;
}

#define LIT(b, s) put_n(b, s, sizeof(s) - 1)

static void put_i64(jw *b, int64_t v)
{
    static const char pairs[] = "00010203040506070809101112131415161718192021222324"
                                "25262728293031323334353637383940414243444546474849"
                                "50515253545556575859606162636465666768697071727374"
                                "75767778798081828384858687888990919293949596979899";
    char t[24];
    size_t i = sizeof(t);
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    while (u >= 100) { /* two digits a division */
        size_t d = (size_t)(u % 100) * 2;
        u /= 100;
        t[--i] = pairs[d + 1];
        t[--i] = pairs[d];
    }
    if (u >= 10) {
        t[--i] = pairs[u * 2 + 1];
        t[--i] = pairs[u * 2];
    } else {
        t[--i] = (char)('0' + u);
    }
    if (v < 0)
        t[--i] = '-';
    put_n(b, t + i, sizeof(t) - i);
}

static void put_json_str(jw *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    LIT(b, "\"");
    const unsigned char *p = (const unsigned char *)s, *run = p;
    for (; *p; p++) {
        if (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\')
            continue; /* plain ASCII: copied with its run */
        put_n(b, (const char *)run, (size_t)(p - run));
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            put_n(b, e, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
            put_n(b, e, 6);
        } else {
            /* Only valid UTF-8 goes out as it is (a collector may refuse
             * the batch otherwise): other bytes become U+FFFD. */
            size_t len = utf8_len(p);
            if (len) {
                put_n(b, (const char *)p, len);
                p += len - 1;
            } else {
                LIT(b, "\\ufffd");
            }
        }
        run = p + 1;
    }
    put_n(b, (const char *)run, (size_t)(p - run));
    LIT(b, "\"");
}

/* An attribute's head, `{"key":"KEY","value":{"stringValue":` and the
 * like, is one literal made at compile time (KEY: weir's own, plain
 * ASCII). */
#define SKEY(k) "{\"key\":\"" k "\",\"value\":{\"stringValue\":"
#define IKEY(k) "{\"key\":\"" k "\",\"value\":{\"intValue\":\""
#define BKEY(k) "{\"key\":\"" k "\",\"value\":{\"boolValue\":"
#define ATTR_STR(b, f, k, v) attr_str(b, f, SKEY(k), sizeof(SKEY(k)) - 1, v)
#define ATTR_INT(b, f, k, v) attr_int(b, f, IKEY(k), sizeof(IKEY(k)) - 1, v)
#define ATTR_BOOL(b, f, k, v) attr_bool(b, f, BKEY(k), sizeof(BKEY(k)) - 1, v)

static void attr_head(jw *b, bool *first, const char *head, size_t n)
{
    if (!*first)
        LIT(b, ",");
    *first = false;
    put_n(b, head, n);
}

static void attr_str(jw *b, bool *first, const char *head, size_t n, const char *v)
{
    if (!v || !*v)
        return;
    attr_head(b, first, head, n);
    put_json_str(b, v);
    LIT(b, "}}");
}

static void attr_int(jw *b, bool *first, const char *head, size_t n, int64_t v)
{
    attr_head(b, first, head, n);
    put_i64(b, v);
    LIT(b, "\"}}");
}

static void attr_bool(jw *b, bool *first, const char *head, size_t n, bool v)
{
    attr_head(b, first, head, n);
    if (v)
        LIT(b, "true}}");
    else
        LIT(b, "false}}");
}

static void put_hex(jw *b, const uint8_t *id, size_t len)
{
    char t[33];
    weir__trace_hex(id, len, t);
    put_n(b, t, 2 * len);
}

static void ids(jw *b, const uint8_t trace_id[16], const uint8_t span_id[8], const uint8_t *parent)
{
    LIT(b, "\"traceId\":\"");
    put_hex(b, trace_id, 16);
    LIT(b, "\",\"spanId\":\"");
    put_hex(b, span_id, 8);
    LIT(b, "\"");
    if (parent) {
        LIT(b, ",\"parentSpanId\":\"");
        put_hex(b, parent, 8);
        LIT(b, "\"");
    }
}

/* `,"kind":K,"startTimeUnixNano":"S","endTimeUnixNano":"E","attributes":[` */
static void times(jw *b, int kind, int64_t start, int64_t end)
{
    if (kind == 2)
        LIT(b, ",\"kind\":2,\"startTimeUnixNano\":\"");
    else
        LIT(b, ",\"kind\":3,\"startTimeUnixNano\":\"");
    put_i64(b, start);
    LIT(b, "\",\"endTimeUnixNano\":\"");
    put_i64(b, end);
    LIT(b, "\",\"attributes\":[");
}

static void error_status(jw *b, const char *message)
{
    LIT(b, ",\"status\":{\"code\":2,\"message\":");
    put_json_str(b, message);
    LIT(b, "}");
}

static void server_span(jw *b, const weir_span *s)
{
    LIT(b, "{");
    ids(b, s->trace_id, s->span_id, s->has_parent ? s->parent_id : NULL);
    LIT(b, ",\"name\":");
    put_json_str(b, s->name);
    times(b, 2, s->start_ns, s->end_ns);
    bool f = true;
    ATTR_STR(b, &f, "http.request.method", s->method);
    ATTR_STR(b, &f, "url.path", s->path);
    ATTR_STR(b, &f, "http.route", s->route);
    if (s->status)
        ATTR_INT(b, &f, "http.response.status_code", s->status);
    ATTR_STR(b, &f, "client.address", s->client);
    ATTR_STR(b, &f, "network.protocol.name", "http");
    ATTR_STR(b, &f, "network.protocol.version", s->protocol);
    ATTR_STR(b, &f, "tls.protocol.version", s->tls);
    ATTR_INT(b, &f, "http.request.size", s->request_bytes);
    ATTR_INT(b, &f, "http.response.size", s->response_bytes);
    ATTR_STR(b, &f, "weir.server", s->server);
    ATTR_STR(b, &f, "weir.upstream", s->upstream);
    ATTR_STR(b, &f, "weir.termination", s->termination);
    if (s->retries)
        ATTR_INT(b, &f, "weir.retries", s->retries);
    ATTR_STR(b, &f, "error.type", s->error);
    LIT(b, "]");
    if (s->status >= 500 || (!s->status && s->error[0]))
        error_status(b, s->error[0] ? s->error : "server error");
    LIT(b, "}");
}

bool weir__otlp_split_addr(const char *addr, char *host, int *port)
{
    size_t n = strnlen(addr, sizeof(((weir_span_attempt *)0)->addr) - 1);
    const char *colon = memrchr(addr, ':', n);
    if (!colon || colon == addr)
        return false;
    int v = 0;
    for (const char *d = colon + 1; d < addr + n && *d >= '0' && *d <= '9' && v < 65536; d++)
        v = v * 10 + (*d - '0');
    *port = v;
    const char *h = addr;
    size_t hl = (size_t)(colon - addr);
    if (h[0] == '[' && hl > 1 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    return true;
}

static void attempt_span(jw *b, const weir_span *s, const weir_span_attempt *a, int k)
{
    LIT(b, ",{");
    ids(b, s->trace_id, a->span_id, s->span_id);
    LIT(b, ",\"name\":");
    put_json_str(b, s->method);
    int64_t end = a->end_ns ? a->end_ns : s->end_ns;
    times(b, 3, a->start_ns, end > a->start_ns ? end : a->start_ns);
    bool f = true;
    ATTR_STR(b, &f, "http.request.method", s->method);
    char host[sizeof(a->addr)];
    int port;
    if (weir__otlp_split_addr(a->addr, host, &port)) {
        ATTR_STR(b, &f, "server.address", host);
        ATTR_INT(b, &f, "server.port", port);
    }
    ATTR_STR(b, &f, "network.peer.address", a->addr);
    if (a->status)
        ATTR_INT(b, &f, "http.response.status_code", a->status);
    ATTR_INT(b, &f, "weir.attempt", k + 1);
    ATTR_BOOL(b, &f, "weir.connection.reused", a->reused);
    if (a->connect_ns >= 0)
        ATTR_INT(b, &f, "weir.connect_time_us", a->connect_ns / 1000);
    ATTR_STR(b, &f, "weir.upstream", s->upstream);
    ATTR_STR(b, &f, "error.type", a->error);
    LIT(b, "]");
    if (a->connect_ns >= 0 && !a->reused) {
        LIT(b, ",\"events\":[{\"name\":\"connected\",\"timeUnixNano\":\"");
        put_i64(b, a->start_ns + a->connect_ns);
        LIT(b, "\",\"attributes\":[{\"key\":\"weir.connection.reused\",\"value\":{"
               "\"boolValue\":false}}]}]");
    }
    if (a->error || a->status >= 400)
        error_status(b, a->error ? a->error : "error status");
    LIT(b, "}");
}

char *weir__otlp_json(const weir_span *const *v, size_t n, const char *service_name)
{
    weir_strbuf out = {0};
    size_t head = 6 * (strlen(service_name) + 2 * strlen(weir_version())) + 512;
    char *room = weir__sb_room(&out, head);
    if (!room)
        return NULL;
    jw j = {room}, *b = &j;
    LIT(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":"
           "\"service.name\",\"value\":{\"stringValue\":");
    put_json_str(b, service_name);
    LIT(b, "}},{\"key\":\"service.version\",\"value\":{\"stringValue\":");
    put_json_str(b, weir_version());
    LIT(b, "}},{\"key\":\"telemetry.sdk.name\",\"value\":{\"stringValue\":\"weir\"}}]},"
           "\"scopeSpans\":[{\"scope\":{\"name\":\"weir\",\"version\":");
    put_json_str(b, weir_version());
    LIT(b, "},\"spans\":[");
    out.len = (size_t)(b->w - out.p);
    for (size_t i = 0; i < n; i++) {
        /* Room for the worst this span can be, then plain writes. */
        if (!(b->w = weir__sb_room(&out, SPAN_MAX))) {
            free(out.p);
            return NULL;
        }
        if (i)
            LIT(b, ",");
        server_span(b, v[i]);
        for (int k = 0; k < v[i]->n_attempts && k < WEIR_SPAN_ATTEMPTS; k++)
            attempt_span(b, v[i], &v[i]->at[k], k);
        out.len = (size_t)(b->w - out.p);
    }
    weir__sb_puts(&out, "]}]}]}");
    if (out.oom) {
        free(out.p);
        return NULL;
    }
    return out.p;
}

/* ---- the exporter thread ---- */

/* POSTs body: 0 taken, 1 to retry (the collector is away, busy or
 * failing), -1 refused (it will never take it). One handle for the
 * thread: its connection to the collector stays open between exports. */
static int post(CURL *c, const char *url, bool json, const char *body, size_t len,
                char *const *headers, size_t n_headers, long timeout_ms, char *err, size_t err_len)
{
    long status =
        weir__http_send(c, "POST", url, json ? "application/json" : "application/x-protobuf", body,
                        len, (const char *const *)headers, n_headers, timeout_ms, err, err_len);
    if (status >= 200 && status <= 299)
        return 0;
    /* OTLP/HTTP: these are worth another try, other errors are not. */
    return !status || status == 429 || status == 502 || status == 503 || status == 504 ? 1 : -1;
}

typedef struct exporter {
    pending p[MAX_ENDPOINTS];
    const char *ep[MAX_ENDPOINTS]; /* p[k]'s endpoint */
    size_t n;
    size_t batch;
    const weir_span **out; /* one batch, in order */
    CURL *curl;
} exporter;

static pending *pending_of(exporter *x, const char *endpoint)
{
    for (size_t k = 0; k < x->n; k++)
        if (x->ep[k] == endpoint)
            return &x->p[k];
    if (x->n == MAX_ENDPOINTS)
        return NULL;
    x->ep[x->n] = endpoint;
    return &x->p[x->n++];
}

/* Moves what the rings hold into the pending buffers; a full buffer
 * gives up its oldest span. Returns the most one ring held. */
static size_t drain(exporter *x, ring *rings, size_t cap)
{
    int64_t now = mono_ms();
    size_t most = 0;
    for (ring *r = rings; r; r = r->next) {
        size_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
        size_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
        if (t - h > most)
            most = t - h;
        for (; h != t; h++) {
            const weir_span *s = &r->v[h % RING];
            pending *p = pending_of(x, s->endpoint);
            if (p && p->cap != cap) {
                /* The first span, or a reload changed otlp_batch_size:
                 * what waited in the old size is given up. */
                atomic_fetch_add(&O.dropped_export, p->n);
                free(p->v);
                p->v = malloc(cap * sizeof(*p->v));
                p->cap = p->v ? cap : 0;
                p->head = p->n = 0;
            }
            if (!p || !p->cap) {
                atomic_fetch_add(&O.dropped_export, 1);
                continue;
            }
            if (p->n == p->cap) {
                p->head = (p->head + 1) % p->cap;
                p->n--;
                atomic_fetch_add(&O.dropped_export, 1);
            }
            if (!p->n)
                p->oldest_ms = now;
            memcpy(&p->v[(p->head + p->n) % p->cap], s, span_size(s));
            p->n++;
        }
        atomic_store_explicit(&r->head, h, memory_order_release);
    }
    return most;
}

/* Sends what is due of p: a full batch, or what waited flush_ms, or
 * everything when stopping. */
static void send_due(exporter *x, size_t k, uint32_t flush_ms, bool stopping, long timeout_ms)
{
    pending *p = &x->p[k];
    int64_t now = mono_ms();
    while (p->n && now >= p->retry_at_ms &&
           (p->n >= x->batch || now - p->oldest_ms >= flush_ms || stopping)) {
        size_t n = p->n < x->batch ? p->n : x->batch;
        for (size_t i = 0; i < n; i++)
            x->out[i] = &p->v[(p->head + i) % p->cap];
        pthread_mutex_lock(&O.mu);
        char *service = strdup(O.service_name ? O.service_name : "weir");
        bool json = O.json;
        size_t nh = O.n_headers;
        char **hs = nh ? calloc(nh, sizeof(*hs)) : NULL;
        for (size_t i = 0; hs && i < nh; i++)
            hs[i] = strdup(O.headers[i]);
        pthread_mutex_unlock(&O.mu);
        size_t off = 0, len = 0;
        char *body = !service ? NULL
                     : json   ? weir__otlp_json(x->out, n, service)
                              : weir__otlp_protobuf(x->out, n, service, &off, &len);
        if (body && json)
            len = strlen(body);
        char err[256] = "";
        if (!x->curl)
            snprintf(err, sizeof(err), "no libcurl handle");
        int rc = body && x->curl ? post(x->curl, x->ep[k], json, body + off, len, hs, hs ? nh : 0,
                                        timeout_ms, err, sizeof(err))
                                 : -1;
        free(body);
        free(service);
        for (size_t i = 0; hs && i < nh; i++)
            free(hs[i]);
        free(hs);
        if (rc == 1) {
            atomic_fetch_add(&O.failures, 1);
            p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : BACKOFF_FIRST_MS;
            if (p->backoff_ms > BACKOFF_MAX_MS)
                p->backoff_ms = BACKOFF_MAX_MS;
            p->retry_at_ms = mono_ms() + p->backoff_ms;
            if (p->backoff_ms == BACKOFF_FIRST_MS)
                weir_log(WEIR_LEVEL_WARN, "otlp: %s: %s; %zu spans wait, sent again with backoff",
                         x->ep[k], err, p->n);
            return;
        }
        if (rc == 0) {
            atomic_fetch_add(&O.exported, n);
            if (p->backoff_ms)
                weir_log(WEIR_LEVEL_INFO, "otlp: %s takes spans again", x->ep[k]);
        } else {
            atomic_fetch_add(&O.failures, 1);
            atomic_fetch_add(&O.dropped_export, n);
            weir_log(WEIR_LEVEL_WARN, "otlp: %s refused %zu spans: %s", x->ep[k], n,
                     body ? err : "out of memory");
        }
        p->backoff_ms = 0;
        p->head = (p->head + n) % p->cap;
        p->n -= n;
        p->oldest_ms = now;
        now = mono_ms();
    }
}

static void *exporter_main(void *arg)
{
    (void)arg;
    exporter *x = calloc(1, sizeof(*x));
    if (!x)
        return NULL;
    x->curl = curl_easy_init();
    pthread_mutex_lock(&O.mu);
    for (;;) {
        bool stopping = O.stopping;
        int64_t left = O.stop_deadline_ms - mono_ms();
        if (stopping && left <= 0)
            break;
        size_t batch = O.batch;
        uint32_t flush_ms = O.flush_ms;
        ring *rings = O.rings;
        pthread_mutex_unlock(&O.mu);
        if (batch != x->batch) {
            const weir_span **out = realloc(x->out, batch * sizeof(*out));
            if (out) {
                x->out = out;
                x->batch = batch;
            }
        }
        bool busy = false;
        if (x->batch) {
            /* A ring a quarter full: drained again at once, not after a
             * tick (a busy worker fills one in tens of milliseconds). */
            busy = drain(x, rings, x->batch * PENDING_BATCHES) >= RING / 4;
            long timeout = stopping && left < POST_TIMEOUT_MS ? (long)left : POST_TIMEOUT_MS;
            for (size_t k = 0; k < x->n; k++)
                send_due(x, k, flush_ms, stopping, timeout);
        }
        bool empty = true;
        for (size_t k = 0; k < x->n; k++)
            empty = empty && (x->p[k].n == 0 || (stopping && x->p[k].retry_at_ms > mono_ms()));
        pthread_mutex_lock(&O.mu);
        if (stopping && empty) {
            bool rings_empty = true;
            for (ring *r = O.rings; r; r = r->next)
                rings_empty = rings_empty && atomic_load(&r->head) == atomic_load(&r->tail);
            if (rings_empty)
                break;
        }
        if (!O.stopping && !busy) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += TICK_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&O.cv, &O.mu, &until);
        }
    }
    pthread_mutex_unlock(&O.mu);
    for (size_t k = 0; k < x->n; k++) {
        atomic_fetch_add(&O.dropped_export, x->p[k].n);
        free(x->p[k].v);
    }
    free(x->out);
    if (x->curl)
        curl_easy_cleanup(x->curl);
    free(x);
    return NULL;
}

void weir__otlp_start(void)
{
    pthread_mutex_lock(&O.mu);
    if (!O.running) {
        O.stopping = false;
        O.running = pthread_create(&O.thread, NULL, exporter_main, NULL) == 0;
    }
    pthread_mutex_unlock(&O.mu);
}

void weir__otlp_stop(uint32_t ms)
{
    pthread_mutex_lock(&O.mu);
    bool running = O.running;
    O.stopping = true;
    O.stop_deadline_ms = mono_ms() + ms;
    pthread_cond_signal(&O.cv);
    pthread_mutex_unlock(&O.mu);
    if (running)
        pthread_join(O.thread, NULL);
    pthread_mutex_lock(&O.mu);
    O.running = false;
    pthread_mutex_unlock(&O.mu);
}
