/*
 * request.c - a request's trace and Server-Timing (request.h).
 */
#include "app/otel/request.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "app/otel/export.h"
#include "app/otel/trace.h"
#include "weir/cache.h"

/*
 * What a request keeps while it runs: small, so that it fits the
 * session's arena with the rest (no allocation per request). The span's
 * texts are written at the end straight into the exporter's queue
 * (weir__otlp_reserve); an attempt after the first takes room from the
 * arena then, Server-Timing's text at the response.
 */
struct weir_req_trace {
    bool tracing; /* the server exports: the trace context is weir's to carry */
    bool sampled;
    bool tp_sent; /* tp is in the upstream request (by reference) */
    bool has_parent;
    uint8_t flags;
    uint8_t n_attempts;     /* recorded: first, then more[] */
    uint8_t n_waits;        /* recorded in waits[] */
    bool waiting;           /* waits[n_waits - 1] has not ended */
    uint16_t attempts;      /* all of them, recorded or not */
    weir_span_attempt *cur; /* the attempt in progress, or NULL */
    int64_t t0_mono_ns, t0_unix_ns;
    /* The current attempt, for Server-Timing (monotonic ns; 0: not yet). */
    int64_t attempt_ns, connected_ns, head_ns;
    uint8_t trace_id[16], span_id[8], parent_id[8];
    const char *endpoint;
    int64_t tls_start_ns, tls_end_ns; /* the connection's handshake; 0: not this request's */
    weir_span_attempt first;
    weir_span_attempt *more; /* attempts 2 to WEIR_SPAN_ATTEMPTS, or NULL */
    weir_span_wait *waits;   /* WEIR_SPAN_WAITS of them from the first, or NULL */
    char tp[WEIR_TRACEPARENT_LEN + 1];
};

#define TIMING_CAP 192 /* the Server-Timing value */

static int64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Unix nanoseconds of a monotonic time of the request. */
static int64_t unix_ns(const weir_req_trace *t, int64_t mono)
{
    return t->t0_unix_ns + (mono - t->t0_mono_ns);
}

static void copy(char *dst, size_t cap, weir_str v)
{
    size_t n = v.len < cap - 1 ? v.len : cap - 1;
    memcpy(dst, v.ptr ? v.ptr : "", v.ptr ? n : 0);
    dst[v.ptr ? n : 0] = '\0';
}

/* src (NULL: "") at dst, up to end (where the NUL goes); the new end. */
static char *put(char *dst, const char *end, const char *src)
{
    while (src && *src && dst < end)
        *dst++ = *src++;
    *dst = '\0';
    return dst;
}

#define PUT(field, src) put((field), (field) + sizeof(field) - 1, (src))

void weir__trace_begin(weir_session *s, req_ctx *c)
{
    const weir_cfg_server *srv = c->srv;
    if (!srv->otlp_endpoint && !srv->server_timing)
        return;
    weir_req_trace *t = weir_session_alloc(s, sizeof(*t));
    if (!t)
        return;
    /* What is written before it is read is not cleared. */
    memset(t, 0, offsetof(weir_req_trace, trace_id));
    t->more = NULL;
    t->waits = NULL;
    c->trace = t;
    t->t0_mono_ns = mono_ns();
    t->t0_unix_ns = weir__otlp_now_ns();
    if (!srv->otlp_endpoint)
        return;
    t->tracing = true;
    weir_req_trace *sp = t;
    weir_headers *h = weir_session_req_headers(s);
    weir_str tp = weir_headers_get(h, "traceparent");
    weir_trace_ctx in;
    bool has = tp.ptr && weir__traceparent_parse(tp.ptr, tp.len, &in) == 0;
    if (has) {
        memcpy(sp->trace_id, in.trace_id, 16);
        memcpy(sp->parent_id, in.span_id, 8);
        sp->has_parent = true;
        weir_str ts = weir_headers_get(h, "tracestate");
        if (ts.ptr && !weir__tracestate_ok(ts.ptr, ts.len))
            weir_headers_remove(h, "tracestate");
    } else {
        weir__trace_new_id(sp->trace_id, 16);
        /* A new trace has no state of another's. */
        weir_headers_remove(h, "tracestate");
    }
    weir__trace_new_id(sp->span_id, 8);
    t->sampled = weir__sampler_sample(&c->cfg->basic.otlp_sampler, has ? &in : NULL, sp->trace_id);
    sp->flags = t->sampled ? 1 : 0;
    sp->endpoint = srv->otlp_endpoint;
    uint64_t hs_start, hs_took;
    t->tls_start_ns = 0;
    if (t->sampled && weir_session_tls_handshake(s, &hs_start, &hs_took)) {
        /* The loop's clock is CLOCK_MONOTONIC, as t0_mono_ns. */
        t->tls_start_ns = unix_ns(t, (int64_t)hs_start * 1000);
        t->tls_end_ns = t->tls_start_ns + (int64_t)hs_took * 1000;
    }
}

void weir__trace_plugin_wait(weir_session *s, req_ctx *c, const char *plugin, const char *category)
{
    weir_req_trace *t = c->trace;
    if (!t || !t->tracing || !t->sampled || t->waiting || t->n_waits >= WEIR_SPAN_WAITS)
        return;
    if (!t->waits && !(t->waits = weir_session_alloc(s, WEIR_SPAN_WAITS * sizeof(*t->waits))))
        return;
    weir_span_wait *w = &t->waits[t->n_waits++];
    weir__trace_new_id(w->span_id, 8);
    w->start_ns = unix_ns(t, mono_ns());
    w->end_ns = 0;
    PUT(w->plugin, plugin);
    w->category = category;
    w->result = "aborted"; /* until it ends */
    t->waiting = true;
}

void weir__trace_plugin_done(weir_session *s, req_ctx *c, weir_phase_result result)
{
    (void)s;
    weir_req_trace *t = c->trace;
    if (!t || !t->waiting)
        return;
    weir_span_wait *w = &t->waits[t->n_waits - 1];
    w->end_ns = unix_ns(t, mono_ns());
    w->result = result == WEIR_PHASE_CONTINUE   ? "continue"
                : result == WEIR_PHASE_ANSWERED ? "answered"
                                                : "error";
    t->waiting = false;
}

void weir__trace_attempt(weir_session *s, req_ctx *c)
{
    weir_req_trace *t = c->trace;
    if (!t)
        return;
    int64_t now = mono_ns();
    if (t->cur && !t->cur->end_ns)
        t->cur->end_ns = unix_ns(t, now);
    t->attempts++;
    t->attempt_ns = now;
    t->connected_ns = t->head_ns = 0;
    t->cur = NULL;
    if (!t->tracing || !t->sampled || t->n_attempts >= WEIR_SPAN_ATTEMPTS)
        return;
    if (t->n_attempts == 1 && !t->more &&
        !(t->more = weir_session_alloc(s, (WEIR_SPAN_ATTEMPTS - 1) * sizeof(*t->more))))
        return;
    weir_span_attempt *a = t->n_attempts ? &t->more[t->n_attempts - 1] : &t->first;
    t->n_attempts++;
    memset(a, 0, sizeof(*a));
    weir__trace_new_id(a->span_id, 8);
    a->start_ns = unix_ns(t, now);
    a->connect_ns = -1;
    t->cur = a;
}

void weir__trace_connected(weir_session *s, req_ctx *c, bool reused)
{
    weir_req_trace *t = c->trace;
    if (!t)
        return;
    if (!t->attempt_ns) /* a router's pick resumed without upstream_peer's note */
        weir__trace_attempt(s, c);
    int64_t now = mono_ns();
    t->connected_ns = now;
    weir_span_attempt *a = t->cur;
    if (!a)
        return;
    a->reused = reused;
    a->connect_ns = reused ? -1 : now - t->attempt_ns;
    copy(a->addr, sizeof(a->addr), weir_session_upstream_addr(s));
}

void weir__trace_failed(weir_session *s, req_ctx *c)
{
    weir_req_trace *t = c->trace;
    weir_span_attempt *a = t ? t->cur : NULL;
    if (!a)
        return;
    weir_failure f = weir_session_failure(s);
    a->error = f == WEIR_FAILURE_CONNECT   ? "connect"
               : f == WEIR_FAILURE_RESET   ? "reset"
               : f == WEIR_FAILURE_TIMEOUT ? "timeout"
               : f == WEIR_FAILURE_STATUS  ? "status"
                                           : "failed";
    a->end_ns = unix_ns(t, mono_ns());
    if (!a->addr[0])
        copy(a->addr, sizeof(a->addr), weir_session_upstream_addr(s));
    t->cur = NULL;
}

void weir__trace_upstream_request(weir_session *s, req_ctx *c)
{
    weir_req_trace *t = c->trace;
    if (!t || !t->tracing)
        return;
    /* The attempt's span is the backend's parent; past the recorded
     * attempts, the request's. The field refers to t->tp: a retry
     * rewrites it in place (same length). */
    weir__traceparent_format(t->trace_id, t->cur ? t->cur->span_id : t->span_id, t->flags, t->tp);
    if (!t->tp_sent) {
        weir_headers *h = weir_session_req_headers(s);
        weir_headers_remove(h, "traceparent"); /* the client's, if it sent one */
        t->tp_sent = weir_headers_add_ref(h, WEIR_STR("traceparent"),
                                          (weir_str){t->tp, WEIR_TRACEPARENT_LEN}) == WEIR_OK;
    }
}

void weir__trace_upstream_response(weir_session *s, req_ctx *c)
{
    weir_req_trace *t = c->trace;
    if (!t)
        return;
    t->head_ns = mono_ns();
    if (t->cur)
        t->cur->status = weir_session_resp_status(s);
}

/* The Cache-Status's verdict ("hit", "uri-miss", "stale"...) in out. */
static void cache_verdict(weir_str cs, char *out, size_t cap)
{
    out[0] = '\0';
    for (size_t i = 0; i + 1 < cs.len; i++) {
        if (cs.ptr[i] != ';')
            continue;
        size_t j = i + 1;
        while (j < cs.len && cs.ptr[j] == ' ')
            j++;
        size_t k = j;
        while (k < cs.len && cs.ptr[k] != ';')
            k++;
        weir_str item = {cs.ptr + j, k - j};
        if (item.len == 3 && memcmp(item.ptr, "hit", 3) == 0) {
            snprintf(out, cap, "hit");
            return;
        }
        if (item.len > 4 && memcmp(item.ptr, "fwd=", 4) == 0) {
            size_t n = item.len - 4 < cap - 1 ? item.len - 4 : cap - 1;
            size_t m = 0;
            for (size_t x = 0; x < n; x++) /* a token: safe in the quoted desc */
                if (item.ptr[4 + x] != '"' && item.ptr[4 + x] != '\\')
                    out[m++] = item.ptr[4 + x];
            out[m] = '\0';
            return;
        }
        i = k - 1;
    }
}

/* "NAME;dur=MS.mmm" (ns as milliseconds, three decimals) at p, up to
 * end; the new end. */
static char *timing(char *p, const char *end, const char *name, int64_t ns)
{
    char t[32];
    size_t i = sizeof(t);
    uint64_t us = ns > 0 ? (uint64_t)ns / 1000 : 0;
    for (int k = 0; k < 3; k++, us /= 10)
        t[--i] = (char)('0' + us % 10);
    t[--i] = '.';
    do {
        t[--i] = (char)('0' + us % 10);
        us /= 10;
    } while (us && i > 0);
    p = put(p, end, name);
    p = put(p, end, ";dur=");
    for (; i < sizeof(t) && p < end; i++)
        *p++ = t[i];
    *p = '\0';
    return p;
}

void weir__trace_response(weir_session *s, req_ctx *c)
{
    weir_req_trace *t = c->trace;
    if (!t || !c->srv->server_timing)
        return;
    weir_headers *h = weir_session_resp_headers(s);
    if (!h)
        return;
    char *v = weir_session_alloc(s, TIMING_CAP);
    if (!v)
        return;
    int64_t now = mono_ns();
    const char *end = v + TIMING_CAP - 1;
    char *p = v;
    if (t->attempt_ns && t->connected_ns)
        p = put(timing(p, end, "upstream-connect", t->connected_ns - t->attempt_ns), end, ", ");
    if (t->connected_ns && t->head_ns)
        p = put(timing(p, end, "upstream-response", t->head_ns - t->connected_ns), end, ", ");
    char verdict[32];
    cache_verdict(weir_session_cache_status(s), verdict, sizeof(verdict));
    if (verdict[0])
        p = put(put(put(p, end, "cache;desc=\""), end, verdict), end, "\", ");
    p = timing(p, end, "total", now - t->t0_mono_ns);
    weir_headers_add_ref(h, WEIR_STR("Server-Timing"), (weir_str){v, (size_t)(p - v)});
}

void weir__trace_end(weir_session *s, req_ctx *c, const weir_session_stats *st)
{
    weir_req_trace *t = c->trace;
    if (!t || !t->tracing || !t->sampled)
        return;
    int64_t now = mono_ns();
    if (t->cur && !t->cur->end_ns)
        t->cur->end_ns = unix_ns(t, now);
    /* Written where the exporter reads it: a full queue drops it. */
    weir_span *sp = weir__otlp_reserve();
    if (!sp)
        return;
    sp->endpoint = t->endpoint;
    memcpy(sp->trace_id, t->trace_id, 16);
    memcpy(sp->span_id, t->span_id, 8);
    memcpy(sp->parent_id, t->parent_id, 8);
    sp->has_parent = t->has_parent;
    sp->flags = t->flags;
    sp->start_ns = t->t0_unix_ns;
    sp->end_ns = unix_ns(t, now);
    sp->n_attempts = t->n_attempts;
    for (int k = 0; k < t->n_attempts; k++)
        sp->at[k] = k ? t->more[k - 1] : t->first;
    sp->n_waits = t->n_waits;
    for (int k = 0; k < t->n_waits; k++) {
        sp->waits[k] = t->waits[k];
        if (!sp->waits[k].end_ns) /* the request ended while it waited */
            sp->waits[k].end_ns = sp->end_ns;
    }
    /* The cache's wait for another request's fill of the same key. */
    uint64_t cw_start, cw_end;
    const char *how;
    if (sp->n_waits < WEIR_SPAN_WAITS &&
        weir_session_cache_lock_wait(s, &cw_start, &cw_end, &how)) {
        weir_span_wait *w = &sp->waits[sp->n_waits++];
        weir__trace_new_id(w->span_id, 8);
        w->start_ns = unix_ns(t, (int64_t)cw_start * 1000);
        w->end_ns = cw_end ? unix_ns(t, (int64_t)cw_end * 1000) : sp->end_ns;
        PUT(w->plugin, "cache");
        w->category = "cache";
        w->result = how;
    }
    copy(sp->method, sizeof(sp->method), weir_session_method(s));
    copy(sp->path, sizeof(sp->path), weir_session_path(s));
    PUT(sp->route, c->loc ? c->loc->name : "");
    char *e = PUT(sp->name, sp->method);
    if (sp->route[0])
        put(put(e, sp->name + sizeof(sp->name) - 1, " "), sp->name + sizeof(sp->name) - 1,
            sp->route);
    PUT(sp->server, c->srv->name);
    const weir_cfg_upstream *u = c->loc ? weir__app_upstream(c) : NULL;
    PUT(sp->upstream, u && t->attempts ? u->name : "");
    copy(sp->client, sizeof(sp->client), weir_session_client_ip(s));
    int hv = weir_session_http_version(s);
    PUT(sp->protocol, hv == 20 ? "2" : hv == 10 ? "1.0" : "1.1");
    weir_tls_info tls;
    sp->tls[0] = '\0';
    sp->tls_start_ns = 0;
    if (weir_session_tls(s, &tls) && tls.version) {
        PUT(sp->tls, strncmp(tls.version, "TLSv", 4) == 0 ? tls.version + 4 : tls.version);
        if (t->tls_start_ns) {
            sp->tls_start_ns = t->tls_start_ns;
            sp->tls_end_ns = t->tls_end_ns;
            weir__trace_new_id(sp->tls_span_id, 8);
            sp->tls_resumed = tls.resumed;
            PUT(sp->tls_cipher, tls.cipher);
        }
    }
    PUT(sp->error, st->error);
    memcpy(sp->termination, st->termination, 3);
    sp->status = st->status;
    sp->request_bytes = (int64_t)st->bytes_received;
    sp->response_bytes = (int64_t)st->bytes_sent;
    sp->retries = t->attempts ? (uint16_t)(t->attempts - 1) : 0;
    weir__otlp_commit();
}

void weir__trace_configure(const weir_config *cfg)
{
    const weir_cfg_basic *b = &cfg->basic;
    weir_otlp_settings o = {
        .service_name = b->otlp_service_name,
        .headers = (const char *const *)b->otlp_headers,
        .n_headers = b->n_otlp_headers,
        .batch_size = b->otlp_batch_size,
        .flush_interval_ms = b->otlp_flush_interval_ms,
        .json = b->otlp_json,
    };
    weir__otlp_configure(&o);
    for (size_t i = 0; i < cfg->n_servers; i++)
        if (cfg->servers[i].otlp_endpoint) {
            weir__otlp_start(); /* once; it stays for later reloads */
            return;
        }
}

bool weir__trace_ids(const req_ctx *c, char trace_id[33], char span_id[17])
{
    const weir_req_trace *t = c ? c->trace : NULL;
    if (!t || !t->tracing)
        return false;
    weir__trace_hex(t->trace_id, 16, trace_id);
    weir__trace_hex(t->span_id, 8, span_id);
    return true;
}
