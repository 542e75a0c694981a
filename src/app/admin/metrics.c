/*
 * metrics.c - per-thread request metrics and the Prometheus rendering (see
 * metrics.h).
 */
#include "app/admin/metrics.h"

#include "app/acme/manager.h"
#include "app/admin/prom_push.h"
#include "app/otel/export.h"
#include "app/webhook.h"

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "weir/cache.h"

#define MAX_SERIES 4096 /* per thread */
#define N_BUCKETS 13

/* Latency buckets in microseconds (le labels in seconds). */
static const uint64_t bucket_us[N_BUCKETS] = {1000,    5000,     10000,     25000,   50000,
                                              100000,  250000,   500000,    1000000, 2500000,
                                              5000000, 10000000, UINT64_MAX};
static const char *const bucket_le[N_BUCKETS] = {
    "0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"};

enum kind {
    K_REQUESTS,    /* counter: server, location, method, status class */
    K_LOC_LATENCY, /* histogram: location */
    K_UP_LATENCY,  /* histogram: upstream */
    K_CONNECT,     /* histogram: upstream, new connections only */
    K_BYTES,       /* v[0] in, v[1] out: server */
    K_TERM,        /* counter: server, upstream, termination state (not "--") */
    K_TCP,         /* TCP sessions: server, status */
    K_TCP_BYTES,   /* v[0] from the client, v[1] to it: server, backend */
    K_TCP_FAILS,   /* TCP connect failures: server, backend */
    K_TCP_TERM,    /* TCP sessions that did not end normally: server, termination */
    K_UDP,         /* UDP sessions: server, status */
    K_UDP_BYTES,   /* v[0..1] bytes from/to the client, v[2..3] datagrams: server, backend */
    K_UDP_FAILS,   /* backends that refused a UDP session: server, backend */
    K_UDP_TERM,    /* UDP sessions by termination: server, termination */
    K_RESP,        /* RESP commands: server, command */
    K_RING,        /* v[0] keys a ring answered with a backend, v[1] with nil: server */
    K_ROUTER,      /* a location's router questions: location, result */
    K_BACKEND,     /* histogram: upstream, backend address */
    K_RETRY,       /* counter: upstream, cause */
};

/* Values: histogram buckets 0..12, sum (us) at 13, count at 14. */
#define V_SUM 13
#define V_COUNT 14

typedef struct series {
    const void *k1, *k2; /* the configuration objects it was counted for */
    uint32_t k3;         /* method and status classes */
    uint8_t kind;
    _Atomic bool used; /* set last (release): then the fields above are complete */
    char labels[240];  /* Prometheus label text, written once before `used` is published */
    _Atomic uint64_t v[15];
} series;

typedef struct block {
    series s[MAX_SERIES];
    _Atomic uint32_t n_used; /* published count: a scrape reads s[0..n_used) */
    uint32_t full;           /* series dropped for lack of room (owner only) */
    struct block *next;
} block;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static block *blocks;
static __thread block *mine;
static _Atomic uint64_t reloads_ok, reloads_failed;

void weir__metrics_reload(bool ok)
{
    atomic_fetch_add(ok ? &reloads_ok : &reloads_failed, 1);
}

static block *my_block(void)
{
    if (mine)
        return mine;
    mine = calloc(1, sizeof(*mine));
    if (!mine)
        return NULL;
    pthread_mutex_lock(&registry_lock);
    mine->next = blocks;
    blocks = mine;
    pthread_mutex_unlock(&registry_lock);
    return mine;
}

/* Only this thread writes its block: load + store, no read-modify-write. */
static inline void bump(_Atomic uint64_t *v, uint64_t d)
{
    atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + d,
                          memory_order_relaxed);
}

/* Label values are names from the configuration; TOML keys may hold quotes,
 * backslashes or newlines, which the text format escapes. */
static size_t label_value(char *out, size_t cap, const char *v)
{
    size_t n = 0;
    for (; *v && n + 2 < cap; v++) {
        if (*v == '"' || *v == '\\') {
            out[n++] = '\\';
            out[n++] = *v;
        } else if (*v == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else {
            out[n++] = *v;
        }
    }
    out[n] = '\0';
    return n;
}

/* A label value, escaped into buf (LABEL_CAP bytes). */
#define LABEL_CAP 128
static const char *label(char *buf, const char *v)
{
    label_value(buf, LABEL_CAP, v);
    return buf;
}

/*
 * The series of (kind, k1, k2, k3). When there is none yet, returns NULL
 * with *slot the free place for it (or NULL when the table is full): the
 * caller writes its labels with publish(), so a request pays for label
 * text only when it makes a series.
 */
static series *find(block *b, uint8_t kind, const void *k1, const void *k2, uint32_t k3,
                    series **slot)
{
    uintptr_t h = (uintptr_t)k1 * 31u + (uintptr_t)k2 * 17u + k3 * 7u + kind;
    h ^= h >> 17;
    *slot = NULL;
    for (size_t probe = 0; probe < MAX_SERIES; probe++) {
        series *s = &b->s[(h + probe) % MAX_SERIES];
        if (atomic_load_explicit(&s->used, memory_order_relaxed)) {
            if (s->kind == kind && s->k1 == k1 && s->k2 == k2 && s->k3 == k3)
                return s;
            continue;
        }
        if (atomic_load_explicit(&b->n_used, memory_order_relaxed) >= MAX_SERIES * 3 / 4) {
            b->full++;
            return NULL;
        }
        s->kind = kind;
        s->k1 = k1;
        s->k2 = k2;
        s->k3 = k3;
        *slot = s;
        return NULL;
    }
    return NULL;
}

static series *publish(block *b, series *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static series *publish(block *b, series *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->labels, sizeof(s->labels), fmt, ap);
    va_end(ap);
    /* Publish: a scrape only reads series marked used after this. */
    atomic_store_explicit(&s->used, true, memory_order_release);
    atomic_fetch_add_explicit(&b->n_used, 1, memory_order_release);
    return s;
}

/* series *var: found, or made with the labels (fmt, ...: evaluated only
 * then), or NULL (the table is full). */
#define SERIES(var, kind, k1, k2, k3, ...)                                                         \
    series *var##_slot, *var = find(b, kind, k1, k2, k3, &var##_slot);                             \
    if (!var && var##_slot)                                                                        \
    var = publish(b, var##_slot, __VA_ARGS__)

static void observe(series *s, int64_t us)
{
    if (!s || us < 0)
        return;
    for (int i = 0; i < N_BUCKETS; i++) {
        if ((uint64_t)us <= bucket_us[i]) {
            bump(&s->v[i], 1);
            break;
        }
    }
    bump(&s->v[V_SUM], (uint64_t)us);
    bump(&s->v[V_COUNT], 1);
}

static const char *method_class(weir_str m)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (m.len == strlen(known[i]) && memcmp(m.ptr, known[i], m.len) == 0)
            return known[i];
    }
    return "OTHER";
}

void weir__metrics_request(weir_session *s, const weir_cfg_server *srv,
                           const weir_cfg_location *loc, const weir_session_stats *st)
{
    block *b = my_block();
    if (!b || !srv)
        return;
    const char *method = method_class(weir_session_method(s));
    int sc = st->status >= 100 && st->status <= 599 ? st->status / 100 : 0;
    uint32_t k3 = (uint32_t)(sc * 16) + (uint32_t)(method[0] + method[1]);
    char sv[LABEL_CAP], lv[LABEL_CAP], uv[LABEL_CAP];
    const char *lname = loc ? loc->name : "";
    SERIES(r, K_REQUESTS, srv, loc, k3, "server=\"%s\",location=\"%s\",method=\"%s\",status=\"%s\"",
           label(sv, srv->name), label(lv, lname), method,
           sc ? (const char *[]){"", "1xx", "2xx", "3xx", "4xx", "5xx"}[sc] : "none");
    if (r)
        bump(&r->v[0], 1);
    SERIES(bytes, K_BYTES, srv, NULL, 0, "server=\"%s\"", label(sv, srv->name));
    if (bytes) {
        bump(&bytes->v[0], st->bytes_received);
        bump(&bytes->v[1], st->bytes_sent);
    }
    if (st->termination[0] != '-') {
        /* A 200 cut short by the backend is not a success: counted here
         * by how it ended (HAProxy's termination state). */
        const weir_cfg_upstream *tu = loc ? loc->upstream : NULL;
        uint32_t k =
            (uint32_t)(unsigned char)st->termination[0] << 8 | (unsigned char)st->termination[1];
        SERIES(t, K_TERM, srv, tu, k, "server=\"%s\",upstream=\"%s\",termination=\"%.2s\"",
               label(sv, srv->name), label(uv, tu ? tu->name : ""), st->termination);
        if (t)
            bump(&t->v[0], 1);
    }
    if (loc) {
        SERIES(ll, K_LOC_LATENCY, loc, NULL, 0, "location=\"%s\"", label(lv, lname));
        observe(ll, st->request_time_us);
    }
    const weir_cfg_upstream *u = loc ? loc->upstream : NULL;
    if (u && st->upstream_time_us >= 0) {
        SERIES(ul, K_UP_LATENCY, u, NULL, 0, "upstream=\"%s\"", label(uv, u->name));
        observe(ul, st->upstream_time_us);
        if (st->upstream_addr && st->upstream_addr[0] != '-') {
            char bv[LABEL_CAP];
            const void *bk =
                (const void *)(uintptr_t)weir_lb_hash(st->upstream_addr, strlen(st->upstream_addr));
            SERIES(bl, K_BACKEND, u, bk, 0, "upstream=\"%s\",backend=\"%s\"", label(uv, u->name),
                   label(bv, st->upstream_addr));
            observe(bl, st->upstream_time_us);
        }
        if (st->connect_time_us > 0) {
            SERIES(cl, K_CONNECT, u, NULL, 0, "upstream=\"%s\"", label(uv, u->name));
            observe(cl, st->connect_time_us);
        }
    }
}

/* A TCP or a UDP server's session (each has series of its own). */
void weir__metrics_tcp(const weir_cfg_server *srv, const char *backend, uint64_t backend_id,
                       const weir_l4_stats *st)
{
    block *b = my_block();
    if (!b || !srv)
        return;
    bool udp = srv->protocol == WEIR_CFG_UDP;
    char sv[LABEL_CAP], bv[LABEL_CAP];
    SERIES(n, udp ? K_UDP : K_TCP, srv, NULL, (uint32_t)st->status, "server=\"%s\",status=\"%d\"",
           label(sv, srv->name), st->status);
    if (n)
        bump(&n->v[0], 1);
    if (backend) {
        SERIES(by, udp ? K_UDP_BYTES : K_TCP_BYTES, srv, (const void *)(uintptr_t)backend_id, 0,
               "server=\"%s\",backend=\"%s\"", label(sv, srv->name), label(bv, backend));
        if (by) {
            bump(&by->v[0], st->bytes_received);
            bump(&by->v[1], st->bytes_sent);
            bump(&by->v[2], st->datagrams_received);
            bump(&by->v[3], st->datagrams_sent);
        }
    }
    /* TCP: the abnormal ends; UDP: every end (idle is its normal one). */
    if (udp || st->termination[0] != '-') {
        uint32_t k =
            (uint32_t)(unsigned char)st->termination[0] << 8 | (unsigned char)st->termination[1];
        SERIES(t, udp ? K_UDP_TERM : K_TCP_TERM, srv, NULL, k, "server=\"%s\",termination=\"%.2s\"",
               label(sv, srv->name), st->termination);
        if (t)
            bump(&t->v[0], 1);
    }
}

void weir__metrics_resp(const weir_cfg_server *srv, weir_metrics_resp_cmd cmd, uint64_t owned,
                        uint64_t unowned)
{
    block *b = my_block();
    if (!b || !srv)
        return;
    static const char *const names[] = {"get", "mget", "info", "other"};
    char sv[LABEL_CAP];
    SERIES(n, K_RESP, srv, NULL, (uint32_t)cmd, "server=\"%s\",command=\"%s\"",
           label(sv, srv->name), names[cmd]);
    if (n)
        bump(&n->v[0], 1);
    if (owned || unowned) {
        SERIES(r, K_RING, srv, NULL, 0, "server=\"%s\"", label(sv, srv->name));
        if (r) {
            bump(&r->v[0], owned);
            bump(&r->v[1], unowned);
        }
    }
}

void weir__metrics_router(const weir_cfg_location *loc, weir_metrics_router_result r)
{
    block *b = my_block();
    if (!b || !loc)
        return;
    static const char *const names[] = {"routed", "nil", "timeout", "error"};
    char lv[LABEL_CAP];
    SERIES(n, K_ROUTER, loc, NULL, (uint32_t)r, "location=\"%s\",result=\"%s\"",
           label(lv, loc->name), names[r]);
    if (n)
        bump(&n->v[0], 1);
}

void weir__metrics_retry(const weir_cfg_upstream *u, weir_failure cause)
{
    block *b = my_block();
    if (!b || !u)
        return;
    static const char *const names[] = {"other", "connect", "reset", "timeout", "status"};
    unsigned k = (unsigned)cause < 5 ? (unsigned)cause : 0;
    char uv[LABEL_CAP];
    SERIES(r, K_RETRY, u, NULL, k, "upstream=\"%s\",cause=\"%s\"", label(uv, u->name), names[k]);
    if (r)
        bump(&r->v[0], 1);
}

void weir__metrics_tcp_connect_failed(const weir_cfg_server *srv, const char *backend,
                                      uint64_t backend_id)
{
    block *b = my_block();
    if (!b || !srv)
        return;
    char sv[LABEL_CAP], bv[LABEL_CAP];
    SERIES(f, srv->protocol == WEIR_CFG_UDP ? K_UDP_FAILS : K_TCP_FAILS, srv,
           (const void *)(uintptr_t)backend_id, 0, "server=\"%s\",backend=\"%s\"",
           label(sv, srv->name), label(bv, backend));
    if (f)
        bump(&f->v[0], 1);
}

/* ---- rendering ---- */

typedef struct out {
    char *p;
    size_t len, cap;
    bool oom;
} out;

static void emit(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void emit(out *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p ? o->p + o->len : NULL, o->p ? o->cap - o->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0 || o->oom)
            return;
        if (o->p && o->len + (size_t)n < o->cap) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = (o->cap + (size_t)n + 1) * 2;
        char *np = realloc(o->p, cap);
        if (!np) {
            o->oom = true;
            return;
        }
        o->p = np;
        o->cap = cap;
    }
}

/* Sums of one kind over all threads, merged by label text. */
typedef struct agg {
    char labels[240];
    uint64_t v[15];
} agg;

static size_t gather(uint8_t kind, agg **out_v)
{
    agg *v = NULL;
    size_t n = 0, cap = 0;
    pthread_mutex_lock(&registry_lock);
    for (block *b = blocks; b; b = b->next) {
        if (atomic_load_explicit(&b->n_used, memory_order_acquire) == 0)
            continue;
        for (size_t i = 0; i < MAX_SERIES; i++) {
            series *s = &b->s[i];
            if (!atomic_load_explicit(&s->used, memory_order_acquire) || s->kind != kind)
                continue;
            size_t k = 0;
            while (k < n && strcmp(v[k].labels, s->labels) != 0)
                k++;
            if (k == n) {
                if (n == cap) {
                    /* cap grows only with the array: on a failed realloc
                     * the next block must not write past the old one. */
                    size_t ncap = cap ? cap * 2 : 64;
                    agg *nv = realloc(v, ncap * sizeof(*v));
                    if (!nv)
                        goto out;
                    v = nv;
                    cap = ncap;
                }
                memset(&v[n], 0, sizeof(v[n]));
                memcpy(v[n].labels, s->labels, sizeof(v[n].labels));
                n++;
            }
            for (int j = 0; j < 15; j++)
                v[k].v[j] += atomic_load_explicit(&s->v[j], memory_order_relaxed);
        }
    }
out:
    pthread_mutex_unlock(&registry_lock);
    *out_v = v;
    return n;
}

static void emit_histogram(out *o, const char *name, const char *help, uint8_t kind)
{
    agg *v;
    size_t n = gather(kind, &v);
    emit(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (size_t i = 0; i < n; i++) {
        uint64_t cum = 0;
        for (int b = 0; b < N_BUCKETS; b++) {
            cum += v[i].v[b];
            emit(o, "%s_bucket{%s,le=\"%s\"} %llu\n", name, v[i].labels, bucket_le[b],
                 (unsigned long long)cum);
        }
        emit(o, "%s_sum{%s} %.6f\n", name, v[i].labels, (double)v[i].v[V_SUM] / 1e6);
        emit(o, "%s_count{%s} %llu\n", name, v[i].labels, (unsigned long long)v[i].v[V_COUNT]);
    }
    free(v);
}

static void emit_process(out *o)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    emit(o,
         "# HELP process_cpu_seconds_total User and system CPU time.\n"
         "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.3f\n",
         cpu);
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    emit(o,
         "# HELP process_resident_memory_bytes Resident memory.\n"
         "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %ld\n",
         resident * sysconf(_SC_PAGESIZE));
    long fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        for (struct dirent *e; (e = readdir(d));)
            fds += e->d_name[0] != '.';
        closedir(d);
    }
    emit(o,
         "# HELP process_open_fds Open file descriptors.\n"
         "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n",
         fds);
}

static void emit_backends(out *o, const weir_config *cfg)
{
    static const char *const breaker[] = {"closed", "open", "half_open"};
    emit(o, "# HELP weir_backend_up Whether a backend takes requests (healthy, not ejected, "
            "not draining).\n# TYPE weir_backend_up gauge\n");
    out rest = {0};
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const weir_cfg_upstream *u = &cfg->upstreams[i];
        if (!u->lb)
            continue;
        weir_backend_info info[64];
        size_t n = weir_upstream_info(u->lb, info, 64);
        char uv[128];
        label_value(uv, sizeof(uv), u->name);
        for (size_t k = 0; k < n && k < 64; k++) {
            const weir_backend_info *b = &info[k];
            char labels[320];
            snprintf(labels, sizeof(labels), "upstream=\"%.127s\",backend=\"%.63s\"", uv, b->addr);
            emit(o, "weir_backend_up{%s} %d\n", labels,
                 b->healthy && !b->draining && b->breaker == WEIR_BREAKER_CLOSED);
            emit(&rest, "weir_backend_in_flight{%s} %llu\n", labels,
                 (unsigned long long)b->in_flight);
            emit(&rest, "weir_backend_requests_total{%s} %llu\n", labels,
                 (unsigned long long)b->requests);
            emit(&rest, "weir_backend_failures_total{%s} %llu\n", labels,
                 (unsigned long long)b->failures);
            emit(&rest, "weir_backend_breaker_state{%s,state=\"%s\"} 1\n", labels,
                 breaker[b->breaker < 3 ? b->breaker : 0]);
            emit(&rest, "weir_upstream_connections_total{%s,kind=\"new\"} %llu\n", labels,
                 (unsigned long long)b->conns_new);
            emit(&rest, "weir_upstream_connections_total{%s,kind=\"reused\"} %llu\n", labels,
                 (unsigned long long)b->conns_reused);
            emit(&rest, "weir_backend_health_changes_total{%s} %llu\n", labels,
                 (unsigned long long)b->health_changes);
        }
    }
    emit(o, "# HELP weir_backend_in_flight Requests in flight to a backend.\n"
            "# TYPE weir_backend_in_flight gauge\n"
            "# HELP weir_backend_requests_total Requests sent to a backend.\n"
            "# TYPE weir_backend_requests_total counter\n"
            "# HELP weir_backend_failures_total Failed requests (connect, reset, timeout, 5xx).\n"
            "# TYPE weir_backend_failures_total counter\n"
            "# HELP weir_backend_breaker_state Circuit breaker state of a backend.\n"
            "# TYPE weir_backend_breaker_state gauge\n"
            "# HELP weir_upstream_connections_total Upstream connections used, new or reused.\n"
            "# TYPE weir_upstream_connections_total counter\n"
            "# HELP weir_backend_health_changes_total Active health check state changes.\n"
            "# TYPE weir_backend_health_changes_total counter\n");
    if (rest.p)
        emit(o, "%s", rest.p);
    free(rest.p);
}

/* Discovery: per upstream with a lookup service. */
static void emit_discovery(out *o, const weir_config *cfg)
{
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"weir_discovery_rounds_total", "counter", "Lookups of an upstream's backends (DNS, SRV)."},
        {"weir_discovery_failures_total", "counter",
         "Lookups that failed, came back empty or in part (the last good backends stayed)."},
        {"weir_discovery_changes_total", "counter", "Backends added or removed by discovery."},
        {"weir_discovery_last_success_seconds", "gauge",
         "When a lookup last succeeded (Unix time; 0 = never)."},
    };
    bool any = false;
    for (size_t i = 0; i < cfg->n_upstreams && !any; i++)
        any = cfg->upstreams[i].lb &&
              weir_upstream_discovery_info(cfg->upstreams[i].lb, &(weir_discovery_info){0});
    for (size_t f = 0; any && f < sizeof(fam) / sizeof(fam[0]); f++) {
        emit(o, "# HELP %s %s\n# TYPE %s %s\n", fam[f].name, fam[f].help, fam[f].name, fam[f].type);
        for (size_t i = 0; i < cfg->n_upstreams; i++) {
            const weir_cfg_upstream *u = &cfg->upstreams[i];
            weir_discovery_info d;
            if (!u->lb || !weir_upstream_discovery_info(u->lb, &d))
                continue;
            char uv[128];
            label_value(uv, sizeof(uv), u->name);
            if (f == 0 || f == 1)
                emit(o, "%s{upstream=\"%s\",kind=\"%s\"} %llu\n", fam[f].name, uv, d.kind,
                     (unsigned long long)(f == 0 ? d.rounds : d.failures));
            else if (f == 2)
                emit(o,
                     "%s{upstream=\"%s\",change=\"added\"} "
                     "%llu\n%s{upstream=\"%s\",change=\"removed\"} %llu\n",
                     fam[f].name, uv, (unsigned long long)d.added, fam[f].name, uv,
                     (unsigned long long)d.removed);
            else
                emit(o, "%s{upstream=\"%s\"} %.3f\n", fam[f].name, uv,
                     (double)d.last_success_ms / 1000.0);
        }
    }
}

static void emit_caches(out *o, const weir_config *cfg)
{
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"weir_cache_lookups_total", "counter",
         "Cache lookups by result: hit (answered from the store), miss, stale (a hit past "
         "its freshness: max-stale, stale-while-revalidate, on error)."},
        {"weir_cache_revalidations_total", "counter",
         "Conditional requests sent for stored responses, and those answered 304."},
        {"weir_cache_coalesced_total", "counter", "Requests that waited for another's miss."},
        {"weir_cache_stored_total", "counter", "Responses stored."},
        {"weir_cache_invalidations_total", "counter", "Keys removed by unsafe methods and purges."},
        {"weir_cache_objects", "gauge", "Objects stored, per tier."},
        {"weir_cache_bytes", "gauge", "Bytes stored, per tier."},
        {"weir_cache_max_bytes", "gauge", "The bound of each tier."},
        {"weir_cache_evictions_total", "counter", "Objects evicted, per tier."},
        {"weir_cache_disk_errors_total", "counter",
         "Disk tier writes that failed and entries found corrupt."},
    };
    for (size_t f = 0; f < sizeof(fam) / sizeof(fam[0]); f++) {
        emit(o, "# HELP %s %s\n# TYPE %s %s\n", fam[f].name, fam[f].help, fam[f].name, fam[f].type);
        for (size_t i = 0; i < cfg->n_caches; i++) {
            const weir_cfg_cache *k = &cfg->caches[i];
            if (!k->store)
                continue;
            weir_cache_stats st;
            weir_cache_get_stats(k->store->c, &st);
            char l[160], lv[128];
            label_value(lv, sizeof(lv), k->name);
            snprintf(l, sizeof(l), "cache=\"%s\"", lv);
            unsigned long long v[][2] = {{st.hits - st.stale_served, st.misses},
                                         {st.revalidations, st.revalidated},
                                         {st.coalesced, 0},
                                         {st.stored, 0},
                                         {st.invalidations, 0},
                                         {st.mem_objects, st.disk_objects},
                                         {st.mem_bytes, st.disk_bytes},
                                         {st.mem_max_bytes, st.disk_max_bytes},
                                         {st.mem_evictions, st.disk_evictions},
                                         {st.disk_errors, 0}};
            if (f == 0)
                emit(o,
                     "%s{%s,result=\"hit\"} %llu\n%s{%s,result=\"stale\"} %llu\n"
                     "%s{%s,result=\"miss\"} %llu\n",
                     fam[f].name, l, v[0][0], fam[f].name, l, (unsigned long long)st.stale_served,
                     fam[f].name, l, v[0][1]);
            else if (f == 1)
                emit(o, "%s{%s,outcome=\"sent\"} %llu\n%s{%s,outcome=\"not_modified\"} %llu\n",
                     fam[f].name, l, v[1][0], fam[f].name, l, v[1][1]);
            else if (f >= 5 && f <= 8)
                emit(o, "%s{%s,tier=\"memory\"} %llu\n%s{%s,tier=\"disk\"} %llu\n", fam[f].name, l,
                     v[f][0], fam[f].name, l, v[f][1]);
            else
                emit(o, "%s{%s} %llu\n", fam[f].name, l, v[f][0]);
        }
    }
}

/* A counter family of one kind: `value` is v[i]. */
/* Certificate expiry (files: read at load; acme: the one served) and the
 * ACME orders. */
static void emit_certificates(out *o, const weir_config *cfg)
{
    int64_t now = (int64_t)time(NULL);
    emit(o, "# HELP weir_certificate_expiry_seconds Seconds until a certificate expires "
            "(negative: expired), by [certificates.NAME].\n"
            "# TYPE weir_certificate_expiry_seconds gauge\n");
    char lb[LABEL_CAP];
    for (size_t i = 0; cfg && i < cfg->n_certs; i++) {
        const weir_cfg_cert *c = &cfg->certs[i];
        int64_t na = weir__acme_not_after(c);
        if (na)
            emit(o, "weir_certificate_expiry_seconds{name=\"%s\"} %lld\n", label(lb, c->name),
                 (long long)(na - now));
    }
    weir_acme_manager *m = weir__acme_manager_running();
    json_t *st = m ? weir__acme_status(m) : NULL;
    emit(o, "# HELP weir_acme_orders_total ACME certificate orders by result.\n"
            "# TYPE weir_acme_orders_total counter\n");
    static const char *const results[][2] = {{"started", "orders_started"},
                                             {"succeeded", "orders_succeeded"},
                                             {"failed", "orders_failed"}};
    for (size_t i = 0; i < 3; i++)
        emit(o, "weir_acme_orders_total{result=\"%s\"} %lld\n", results[i][0],
             (long long)json_integer_value(json_object_get(st, results[i][1])));
    json_decref(st);
    uint64_t sent, failed, dropped;
    weir__webhook_counts(&sent, &failed, &dropped);
    emit(o,
         "# HELP weir_webhook_events_total Webhook events by outcome.\n"
         "# TYPE weir_webhook_events_total counter\n"
         "weir_webhook_events_total{result=\"sent\"} %llu\n"
         "weir_webhook_events_total{result=\"failed\"} %llu\n"
         "weir_webhook_events_total{result=\"dropped\"} %llu\n",
         (unsigned long long)sent, (unsigned long long)failed, (unsigned long long)dropped);
    uint64_t pushed, push_failed;
    weir__prom_push_counts(&pushed, &push_failed);
    emit(o,
         "# HELP weir_prometheus_pushes_total Pushes to the Pushgateway by result.\n"
         "# TYPE weir_prometheus_pushes_total counter\n"
         "weir_prometheus_pushes_total{result=\"ok\"} %llu\n"
         "weir_prometheus_pushes_total{result=\"failed\"} %llu\n",
         (unsigned long long)pushed, (unsigned long long)push_failed);
    weir_otlp_counts oc;
    weir__otlp_counts(&oc);
    emit(o,
         "# HELP weir_otlp_spans_total Trace spans (requests) by what became of them.\n"
         "# TYPE weir_otlp_spans_total counter\n"
         "weir_otlp_spans_total{result=\"exported\"} %llu\n"
         "weir_otlp_spans_total{result=\"dropped_queue\"} %llu\n"
         "weir_otlp_spans_total{result=\"dropped_export\"} %llu\n"
         "# HELP weir_otlp_export_failures_total Exports to the collector that failed.\n"
         "# TYPE weir_otlp_export_failures_total counter\n"
         "weir_otlp_export_failures_total %llu\n",
         (unsigned long long)oc.exported, (unsigned long long)oc.dropped_queue,
         (unsigned long long)oc.dropped_export, (unsigned long long)oc.export_failures);
}

static void emit_idle(const char *addr, uint64_t idle, void *arg)
{
    char v[LABEL_CAP];
    emit(arg, "weir_pool_idle_backend_connections{backend=\"%s\"} %llu\n", label(v, addr),
         (unsigned long long)idle);
}

static void emit_counter(out *o, const char *name, const char *help, uint8_t kind, int i)
{
    agg *v;
    size_t n = gather(kind, &v);
    emit(o, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (size_t k = 0; k < n; k++)
        emit(o, "%s{%s} %llu\n", name, v[k].labels, (unsigned long long)v[k].v[i]);
    free(v);
}

static void emit_tcp(out *o)
{
    emit_counter(o, "weir_tcp_sessions_total",
                 "TCP sessions by server and status (200 ran, 502 no backend connected, 503 none "
                 "usable).",
                 K_TCP, 0);
    emit_counter(o, "weir_tcp_received_bytes_total",
                 "Bytes TCP sessions received from clients, by server and backend (counted when "
                 "a session ends).",
                 K_TCP_BYTES, 0);
    emit_counter(o, "weir_tcp_sent_bytes_total",
                 "Bytes TCP sessions sent to clients, by server and backend (counted when a "
                 "session ends).",
                 K_TCP_BYTES, 1);
    emit_counter(o, "weir_tcp_connect_failures_total",
                 "Failed connects of TCP sessions, by server and backend.", K_TCP_FAILS, 0);
    emit_counter(o, "weir_tcp_sessions_terminated_total",
                 "TCP sessions that did not end normally, by HAProxy-style termination state.",
                 K_TCP_TERM, 0);
    emit_counter(o, "weir_udp_sessions_total",
                 "UDP sessions by server and status (200 ran, 502 every backend refused, 503 "
                 "none usable).",
                 K_UDP, 0);
    emit_counter(o, "weir_udp_received_bytes_total",
                 "Bytes of datagrams UDP sessions received from clients, by server and backend "
                 "(counted when a session ends).",
                 K_UDP_BYTES, 0);
    emit_counter(o, "weir_udp_sent_bytes_total",
                 "Bytes of datagrams UDP sessions sent to clients, by server and backend.",
                 K_UDP_BYTES, 1);
    emit_counter(o, "weir_udp_received_datagrams_total",
                 "Datagrams UDP sessions received from clients, by server and backend.",
                 K_UDP_BYTES, 2);
    emit_counter(o, "weir_udp_sent_datagrams_total",
                 "Datagrams UDP sessions sent to clients, by server and backend.", K_UDP_BYTES, 3);
    emit_counter(o, "weir_udp_refused_total",
                 "Backends that refused a UDP session (ICMP port unreachable), by server and "
                 "backend.",
                 K_UDP_FAILS, 0);
    emit_counter(o, "weir_udp_sessions_ended_total",
                 "UDP sessions by how they ended (-T the responses came, cT idle, ST/SC the "
                 "backend refused, PR no backend, KT shutdown).",
                 K_UDP_TERM, 0);
    emit_counter(o, "weir_resp_commands_total",
                 "Commands RESP (ring) servers answered, by server and command.", K_RESP, 0);
    emit_counter(o, "weir_ring_owned_keys_total",
                 "Keys a ring server answered with a backend (GET, MGET), by server.", K_RING, 0);
    emit_counter(o, "weir_router_lookups_total",
                 "Questions locations asked their router, by location and result (routed, nil, "
                 "timeout, error: down, refused, busy or a bad answer).",
                 K_ROUTER, 0);
    emit_counter(o, "weir_ring_unowned_keys_total",
                 "Keys a ring server answered with nil (no usable backend), by server.", K_RING, 1);
}

char *weir__metrics_render(const weir_config *cfg, weir_server *srv, uint64_t log_dropped,
                           size_t *len)
{
    out o = {0};
    agg *v;
    size_t n = gather(K_REQUESTS, &v);
    emit(&o, "# HELP weir_requests_total Requests by server, location, method and status "
             "class.\n# TYPE weir_requests_total counter\n");
    for (size_t i = 0; i < n; i++)
        emit(&o, "weir_requests_total{%s} %llu\n", v[i].labels, (unsigned long long)v[i].v[0]);
    free(v);
    n = gather(K_TERM, &v);
    emit(&o, "# HELP weir_requests_terminated_total Requests that did not end normally, by "
             "HAProxy-style termination state (who, when).\n"
             "# TYPE weir_requests_terminated_total counter\n");
    for (size_t i = 0; i < n; i++)
        emit(&o, "weir_requests_terminated_total{%s} %llu\n", v[i].labels,
             (unsigned long long)v[i].v[0]);
    free(v);
    n = gather(K_BYTES, &v);
    emit(&o, "# HELP weir_received_bytes_total Request bytes received from clients.\n"
             "# TYPE weir_received_bytes_total counter\n");
    for (size_t i = 0; i < n; i++)
        emit(&o, "weir_received_bytes_total{%s} %llu\n", v[i].labels,
             (unsigned long long)v[i].v[0]);
    emit(&o, "# HELP weir_sent_bytes_total Response bytes sent to clients.\n"
             "# TYPE weir_sent_bytes_total counter\n");
    for (size_t i = 0; i < n; i++)
        emit(&o, "weir_sent_bytes_total{%s} %llu\n", v[i].labels, (unsigned long long)v[i].v[1]);
    free(v);
    emit_histogram(&o, "weir_request_duration_seconds",
                   "Time from the request head to the end of the response, per location.",
                   K_LOC_LATENCY);
    emit_histogram(&o, "weir_upstream_duration_seconds",
                   "Time from connecting to the end of the upstream response, per upstream.",
                   K_UP_LATENCY);
    emit_histogram(&o, "weir_upstream_connect_seconds",
                   "TCP connect time of new upstream connections, per upstream.", K_CONNECT);
    emit_histogram(&o, "weir_backend_duration_seconds",
                   "Time from connecting to the end of the response, per backend of an "
                   "upstream (the last attempt's).",
                   K_BACKEND);
    emit_counter(&o, "weir_upstream_retries_total",
                 "Requests sent to another backend after a failed attempt, by cause.", K_RETRY, 0);
    emit_tcp(&o);
    if (cfg) {
        emit_backends(&o, cfg);
        emit_discovery(&o, cfg);
        emit_caches(&o, cfg);
    }
    if (srv) {
        weir_server_stats st;
        weir_server_get_stats(srv, &st);
        emit(&o,
             "# HELP weir_client_connections Open client connections by protocol.\n"
             "# TYPE weir_client_connections gauge\n"
             "weir_client_connections{protocol=\"http1\"} %llu\n"
             "weir_client_connections{protocol=\"http2\"} %llu\n"
             "weir_client_connections{protocol=\"tcp\"} %llu\n"
             "weir_client_connections{protocol=\"udp\"} %llu\n"
             "weir_client_connections{protocol=\"resp\"} %llu\n"
             "# HELP weir_udp_dropped_datagrams_total UDP datagrams dropped (a full socket "
             "buffer, max_sessions, no descriptor left).\n"
             "# TYPE weir_udp_dropped_datagrams_total counter\n"
             "weir_udp_dropped_datagrams_total %llu\n"
             "# HELP weir_pool_idle_connections Idle upstream connections in the shared pool.\n"
             "# TYPE weir_pool_idle_connections gauge\nweir_pool_idle_connections %llu\n"
             "# HELP weir_pool_migrations_total Idle connections taken by another worker.\n"
             "# TYPE weir_pool_migrations_total counter\nweir_pool_migrations_total %llu\n",
             (unsigned long long)st.client_connections,
             (unsigned long long)st.client_connections_h2, (unsigned long long)st.tcp_sessions,
             (unsigned long long)st.udp_sessions, (unsigned long long)st.resp_connections,
             (unsigned long long)st.udp_dropped, (unsigned long long)st.pool_idle,
             (unsigned long long)st.pool_migrations);
        emit(&o, "# HELP weir_pool_idle_backend_connections Idle upstream connections in the "
                 "shared pool, per backend.\n"
                 "# TYPE weir_pool_idle_backend_connections gauge\n");
        weir_server_pool_idle_each(emit_idle, &o);
        const weir_tls_stats *t = &st.tls;
        emit(&o,
             "# HELP weir_tls_handshakes_total TLS handshakes by side (client: with clients, "
             "upstream: with backends) and result.\n"
             "# TYPE weir_tls_handshakes_total counter\n"
             "weir_tls_handshakes_total{side=\"client\",result=\"ok\"} %llu\n"
             "weir_tls_handshakes_total{side=\"client\",result=\"failed\"} %llu\n"
             "weir_tls_handshakes_total{side=\"upstream\",result=\"ok\"} %llu\n"
             "weir_tls_handshakes_total{side=\"upstream\",result=\"failed\"} %llu\n"
             "# HELP weir_tls_resumed_total TLS handshakes that resumed a session, by side.\n"
             "# TYPE weir_tls_resumed_total counter\n"
             "weir_tls_resumed_total{side=\"client\"} %llu\n"
             "weir_tls_resumed_total{side=\"upstream\"} %llu\n",
             (unsigned long long)t->handshakes, (unsigned long long)t->failures,
             (unsigned long long)t->up_handshakes, (unsigned long long)t->up_failures,
             (unsigned long long)t->resumed, (unsigned long long)t->up_resumed);
        static const char *const le[WEIR_TLS_BUCKETS] = {
            "0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"};
        emit(&o, "# HELP weir_tls_handshake_seconds Completed TLS handshakes by duration (first "
                 "step to end, round trips included), by side.\n"
                 "# TYPE weir_tls_handshake_seconds histogram\n");
        for (int side = 0; side < 2; side++) {
            const char *sv = side ? "upstream" : "client";
            uint64_t cum = 0;
            for (int b = 0; b < WEIR_TLS_BUCKETS; b++) {
                cum += t->duration[side][b];
                emit(&o, "weir_tls_handshake_seconds_bucket{side=\"%s\",le=\"%s\"} %llu\n", sv,
                     le[b], (unsigned long long)cum);
            }
            emit(&o,
                 "weir_tls_handshake_seconds_sum{side=\"%s\"} %.6f\n"
                 "weir_tls_handshake_seconds_count{side=\"%s\"} %llu\n",
                 sv, (double)t->duration_sum_us[side] / 1e6, sv, (unsigned long long)cum);
        }
    }
    emit(&o,
         "# HELP weir_reloads_total Configuration reloads by outcome.\n"
         "# TYPE weir_reloads_total counter\n"
         "weir_reloads_total{result=\"ok\"} %llu\nweir_reloads_total{result=\"failed\"} %llu\n",
         (unsigned long long)atomic_load(&reloads_ok),
         (unsigned long long)atomic_load(&reloads_failed));
    emit(&o,
         "# HELP weir_access_log_dropped_total Access-log lines dropped (writer queue full).\n"
         "# TYPE weir_access_log_dropped_total counter\nweir_access_log_dropped_total %llu\n",
         (unsigned long long)log_dropped);
    emit_certificates(&o, cfg);
    emit_process(&o);
    if (o.oom) {
        free(o.p);
        return NULL;
    }
    *len = o.len;
    return o.p;
}
