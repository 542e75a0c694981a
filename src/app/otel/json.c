/*
 * json.c - spans in the JSON encoding of OTLP (export.h): an
 * ExportTraceServiceRequest as text, written with copies only (no printf:
 * it was most of a span's cost).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/otel/export.h"
#include "app/otel/trace.h"
#include "app/strbuf.h"
#include "weir/server.h"

/* The length of the well-formed UTF-8 sequence at p (NUL-terminated),
 * or 0: no overlong forms, surrogates or code points past U+10FFFF. */
size_t weir__otlp_utf8_len(const unsigned char *p)
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
            size_t len = weir__otlp_utf8_len(p);
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
    else if (kind == 3)
        LIT(b, ",\"kind\":3,\"startTimeUnixNano\":\"");
    else
        LIT(b, ",\"kind\":1,\"startTimeUnixNano\":\"");
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

static void wait_span(jw *b, const weir_span *s, const weir_span_wait *w)
{
    LIT(b, ",{");
    ids(b, s->trace_id, w->span_id, s->span_id);
    LIT(b, ",\"name\":");
    char name[sizeof(w->plugin) + 8];
    snprintf(name, sizeof(name), "plugin %s", w->plugin);
    put_json_str(b, name);
    times(b, 1, w->start_ns, w->end_ns > w->start_ns ? w->end_ns : w->start_ns);
    bool f = true;
    ATTR_STR(b, &f, "weir.plugin", w->plugin);
    ATTR_STR(b, &f, "weir.plugin.category", w->category);
    ATTR_STR(b, &f, "weir.plugin.result", w->result);
    LIT(b, "]");
    if (strcmp(w->result, "error") == 0 || strcmp(w->result, "aborted") == 0)
        error_status(b, w->result);
    LIT(b, "}");
}

static void tls_span(jw *b, const weir_span *s)
{
    LIT(b, ",{");
    ids(b, s->trace_id, s->tls_span_id, s->span_id);
    LIT(b, ",\"name\":\"tls handshake\"");
    times(b, 1, s->tls_start_ns, s->tls_end_ns);
    bool f = true;
    ATTR_STR(b, &f, "tls.protocol.version", s->tls);
    ATTR_STR(b, &f, "tls.cipher", s->tls_cipher);
    ATTR_BOOL(b, &f, "tls.resumed", s->tls_resumed);
    LIT(b, "]}");
}

bool weir__otlp_json_begin(weir_strbuf *out, const char *service_name)
{
    size_t head = 6 * (strlen(service_name) + 2 * strlen(weir_version())) + 512;
    char *room = weir__sb_room(out, head);
    if (!room)
        return false;
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
    out->len = (size_t)(b->w - out->p);
    return true;
}

bool weir__otlp_json_span(weir_strbuf *out, const weir_span *s, bool first)
{
    /* Room for the worst this span can be, then plain writes. */
    jw j = {weir__sb_room(out, SPAN_MAX)}, *b = &j;
    if (!b->w)
        return false;
    if (!first)
        LIT(b, ",");
    server_span(b, s);
    for (int k = 0; k < s->n_attempts && k < WEIR_SPAN_ATTEMPTS; k++)
        attempt_span(b, s, &s->at[k], k);
    for (int k = 0; k < s->n_waits && k < WEIR_SPAN_WAITS; k++)
        wait_span(b, s, &s->waits[k]);
    if (s->tls_start_ns)
        tls_span(b, s);
    out->len = (size_t)(b->w - out->p);
    return true;
}

bool weir__otlp_json_end(weir_strbuf *out)
{
    weir__sb_puts(out, "]}]}]}");
    return !out->oom;
}

char *weir__otlp_json(const weir_span *const *v, size_t n, const char *service_name)
{
    weir_strbuf out = {0};
    bool ok = weir__otlp_json_begin(&out, service_name);
    for (size_t i = 0; ok && i < n; i++)
        ok = weir__otlp_json_span(&out, v[i], i == 0);
    if (!ok || !weir__otlp_json_end(&out)) {
        free(out.p);
        return NULL;
    }
    return out.p;
}
