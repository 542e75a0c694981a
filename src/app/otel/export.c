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

/* Spans encoded as they are drained, up to a batch: the POST's body but
 * for its head (protobuf) or its end (JSON). */
typedef struct batch {
    struct batch *next;
    weir_strbuf body;
    size_t spans;
    size_t room;   /* protobuf: bytes kept for the head */
    bool json;     /* the encoding it was begun in */
    bool closed;   /* sent once (a retry waits): it takes no more spans */
    char *service; /* the service name it was begun with */
    int64_t first_ms;
} batch;

/* One endpoint's batches waiting for their POST, oldest first; the last
 * one takes the spans that come. */
typedef struct pending {
    batch *head, *tail;
    size_t n_batches;
    int64_t retry_at_ms; /* backoff: not before */
    uint32_t backoff_ms;
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

static void batch_free(batch *b)
{
    free(b->body.p);
    free(b->service);
    free(b);
}

static void drop_oldest(pending *p)
{
    batch *b = p->head;
    p->head = b->next;
    if (!p->head)
        p->tail = NULL;
    p->n_batches--;
    atomic_fetch_add(&O.dropped_export, b->spans);
    batch_free(b);
}

/* The batch the next span of p goes in: the last, or a new one when that
 * is full, was sent, or is in the other encoding. At most
 * PENDING_BATCHES wait: a new one past them gives up the oldest. */
static batch *open_batch(pending *p, size_t max, bool json, const char *service, int64_t now)
{
    batch *t = p->tail;
    if (t && !t->closed && t->spans < max && t->json == json)
        return t;
    batch *b = calloc(1, sizeof(*b));
    if (!b || !(b->service = strdup(service))) {
        free(b);
        return NULL;
    }
    b->json = json;
    b->first_ms = now;
    if (json) {
        if (!weir__otlp_json_begin(&b->body, service)) {
            batch_free(b);
            return NULL;
        }
    } else {
        b->room = weir__otlp_pb_room(service);
        if (!weir__sb_room(&b->body, b->room)) {
            batch_free(b);
            return NULL;
        }
        b->body.len = b->room;
    }
    if (t)
        t->next = b;
    else
        p->head = b;
    p->tail = b;
    if (++p->n_batches > PENDING_BATCHES)
        drop_oldest(p);
    return b;
}

/* Encodes what the rings hold into the endpoints' batches (the spans
 * are read in place, and their slots given back). Returns the most one
 * ring held. */
static size_t drain(exporter *x, ring *rings, size_t max, bool json, const char *service)
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
            batch *b = p ? open_batch(p, max, json, service, now) : NULL;
            bool ok = b && (json ? weir__otlp_json_span(&b->body, s, b->spans == 0)
                                 : weir__otlp_pb_span(&b->body, s));
            if (!ok) {
                atomic_fetch_add(&O.dropped_export, 1);
                continue;
            }
            b->spans++;
        }
        atomic_store_explicit(&r->head, h, memory_order_release);
    }
    return most;
}

/* The POST's body of b: its head (protobuf) or its end (JSON) written. */
static const char *finish(batch *b, size_t *len)
{
    if (!b->json)
        return weir__otlp_pb_finish(&b->body, b->room, b->service, len);
    if (!b->closed && !weir__otlp_json_end(&b->body))
        return NULL;
    *len = b->body.len;
    return b->body.p;
}

/* Sends what is due of p: a full batch, one a newer follows, one that
 * waited flush_ms, or everything when stopping. */
static void send_due(exporter *x, size_t k, size_t max, uint32_t flush_ms, bool stopping,
                     long timeout_ms)
{
    pending *p = &x->p[k];
    int64_t now = mono_ms();
    for (batch *b; (b = p->head) && now >= p->retry_at_ms &&
                   (b->spans >= max || b->next || now - b->first_ms >= flush_ms || stopping);) {
        if (!b->spans) { /* none could be encoded into it */
            p->head = b->next;
            if (!p->head)
                p->tail = NULL;
            p->n_batches--;
            batch_free(b);
            continue;
        }
        pthread_mutex_lock(&O.mu);
        size_t nh = O.n_headers;
        char **hs = nh ? calloc(nh, sizeof(*hs)) : NULL;
        for (size_t i = 0; hs && i < nh; i++)
            hs[i] = strdup(O.headers[i]);
        pthread_mutex_unlock(&O.mu);
        size_t len = 0;
        const char *body = finish(b, &len);
        b->closed = true;
        char err[256] = "";
        if (!x->curl)
            snprintf(err, sizeof(err), "no libcurl handle");
        int rc = body && x->curl ? post(x->curl, x->ep[k], b->json, body, len, hs, hs ? nh : 0,
                                        timeout_ms, err, sizeof(err))
                                 : -1;
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
                weir_log(WEIR_LEVEL_WARN, "otlp: %s: %s; %zu batches wait, sent again with backoff",
                         x->ep[k], err, p->n_batches);
            return;
        }
        if (rc == 0) {
            atomic_fetch_add(&O.exported, b->spans);
            if (p->backoff_ms)
                weir_log(WEIR_LEVEL_INFO, "otlp: %s takes spans again", x->ep[k]);
        } else {
            atomic_fetch_add(&O.failures, 1);
            atomic_fetch_add(&O.dropped_export, b->spans);
            weir_log(WEIR_LEVEL_WARN, "otlp: %s refused %zu spans: %s", x->ep[k], b->spans,
                     body ? err : "out of memory");
        }
        p->backoff_ms = 0;
        p->head = b->next;
        if (!p->head)
            p->tail = NULL;
        p->n_batches--;
        batch_free(b);
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
        size_t max = O.batch;
        uint32_t flush_ms = O.flush_ms;
        bool json = O.json;
        ring *rings = O.rings;
        char *service = strdup(O.service_name ? O.service_name : "weir");
        pthread_mutex_unlock(&O.mu);
        bool busy = false;
        if (service) {
            /* A ring a quarter full: drained again at once, not after a
             * tick (a busy worker fills one in tens of milliseconds). */
            busy = drain(x, rings, max, json, service) >= RING / 4;
            long timeout = stopping && left < POST_TIMEOUT_MS ? (long)left : POST_TIMEOUT_MS;
            for (size_t k = 0; k < x->n; k++)
                send_due(x, k, max, flush_ms, stopping, timeout);
            free(service);
        }
        bool empty = true;
        for (size_t k = 0; k < x->n; k++)
            empty = empty && (!x->p[k].head || (stopping && x->p[k].retry_at_ms > mono_ms()));
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
    for (size_t k = 0; k < x->n; k++)
        while (x->p[k].head)
            drop_oldest(&x->p[k]);
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
