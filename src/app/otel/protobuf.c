/*
 * protobuf.c - spans in the protobuf encoding of OTLP (export.h): an
 * ExportTraceServiceRequest, written field by field in one pass.
 *
 * Hand-written rather than with protobuf-c: its packer wants a message
 * struct per attribute and per value (about forty per span, each set up
 * and walked through its descriptor), on the path whose cost the export
 * is measured by; the wire format is four field types here, and the
 * tests decode the result with the protobuf library itself.
 *
 * A nested message's length comes before it. An attribute's is known
 * before it is written (its texts are ASCII, nearly always); a span's is
 * not: the writer keeps room for the length it expects (two bytes) and
 * moves the span when it came out longer or shorter. The batch's head
 * is written last, in room kept before the spans (weir__otlp_pb_room).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/otel/export.h"
#include "app/strbuf.h"
#include "weir/server.h"

/* Field numbers of opentelemetry/proto (collector/trace/v1,
 * trace/v1, common/v1, resource/v1). */
enum {
    REQ_RESOURCE_SPANS = 1,
    RS_RESOURCE = 1,
    RS_SCOPE_SPANS = 2,
    RES_ATTRIBUTES = 1,
    SS_SCOPE = 1,
    SS_SPANS = 2,
    SCOPE_NAME = 1,
    SCOPE_VERSION = 2,
    SPAN_TRACE_ID = 1,
    SPAN_SPAN_ID = 2,
    SPAN_PARENT_ID = 4,
    SPAN_NAME = 5,
    SPAN_KIND = 6,
    SPAN_START = 7,
    SPAN_END = 8,
    SPAN_ATTRIBUTES = 9,
    SPAN_EVENTS = 11,
    SPAN_STATUS = 15,
    EVENT_TIME = 1,
    EVENT_NAME = 2,
    EVENT_ATTRIBUTES = 3,
    STATUS_MESSAGE = 2,
    STATUS_CODE = 3,
    KV_KEY = 1,
    KV_VALUE = 2,
    ANY_STRING = 1,
    ANY_BOOL = 2,
    ANY_INT = 3,
};

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2 };

#define TAG(field, wt) ((uint8_t)((field) << 3 | (wt)))

/* A cursor into room reserved for one span (SPAN_MAX): writes need no
 * check. */
typedef struct pw {
    uint8_t *w;
} pw;

/* Room for any span: each text at most three times its size (a byte
 * that is not UTF-8 becomes U+FFFD), its attempts, and the fixed parts. */
#define SPAN_MAX (4 * sizeof(weir_span) + 8192)

static void put_n(pw *b, const void *s, size_t n)
{
    memcpy(b->w, s, n);
    b->w += n;
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static void put_varint(pw *b, uint64_t v)
{
    while (v >= 0x80) {
        *b->w++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *b->w++ = (uint8_t)v;
}

static void put_fixed64(pw *b, uint64_t v)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(b->w, &v, 8); /* the wire's order */
    b->w += 8;
#else
    for (int i = 0; i < 8; i++)
        *b->w++ = (uint8_t)(v >> (8 * i));
#endif
}

/* A nested message: its tag and room for a length of `guess` bytes;
 * close() writes the length and moves the message when it needs more or
 * fewer. */
typedef struct nest {
    uint8_t *len_at;
    size_t guess;
} nest;

static nest open_msg(pw *b, int field, size_t guess)
{
    *b->w++ = TAG(field, WT_LEN);
    nest n = {b->w, guess};
    b->w += guess;
    return n;
}

static void close_msg(pw *b, nest n)
{
    uint8_t *body = n.len_at + n.guess;
    size_t len = (size_t)(b->w - body), need = varint_len(len);
    if (need != n.guess) {
        memmove(n.len_at + need, body, len);
        b->w = n.len_at + need + len;
    }
    pw at = {n.len_at};
    put_varint(&at, len);
}

/* The length of s when it is all ASCII (nearly always: weir's own texts,
 * and what clients send), else SIZE_MAX. Eight bytes a step. */
static size_t ascii_len(const char *s)
{
    size_t n = strlen(s), i = 0;
    uint64_t any = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        any |= w;
    }
    for (; i < n; i++)
        any |= (unsigned char)s[i];
    return any & 0x8080808080808080ull ? SIZE_MAX : n;
}

/* A string field: protobuf's strings are UTF-8, so a byte that is not
 * (a raw path may hold any) becomes U+FFFD, as in the JSON encoding. */
static void put_str_slow(pw *b, int field, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    nest m = open_msg(b, field, varint_len(strlen(s)));
    while (*p) {
        size_t len = *p < 0x80 ? 1 : weir__otlp_utf8_len(p);
        if (len) {
            put_n(b, p, len);
            p += len;
        } else {
            put_n(b, "\xef\xbf\xbd", 3);
            p++;
        }
    }
    close_msg(b, m);
}

static void put_str(pw *b, int field, const char *s)
{
    size_t n = ascii_len(s);
    if (n == SIZE_MAX) {
        put_str_slow(b, field, s);
        return;
    }
    *b->w++ = TAG(field, WT_LEN);
    put_varint(b, n);
    put_n(b, s, n);
}

static inline __attribute__((always_inline)) void put_bytes(pw *b, int field, const uint8_t *v,
                                                            size_t n)
{
    *b->w++ = TAG(field, WT_LEN);
    *b->w++ = (uint8_t)n; /* ids: 8 or 16, constants: the copy is inlined */
    put_n(b, v, n);
}

/* A KeyValue's tag, its length (value_len: the AnyValue's, known), and
 * its key: a literal of weir's (ASCII, short). */
static inline __attribute__((always_inline)) void attr_head(pw *b, int field, const char *key,
                                                            size_t key_len, size_t value_len)
{
    size_t kv = 2 + key_len + 1 + varint_len(value_len) + value_len;
    *b->w++ = TAG(field, WT_LEN);
    put_varint(b, kv);
    *b->w++ = TAG(KV_KEY, WT_LEN);
    *b->w++ = (uint8_t)key_len;
    put_n(b, key, key_len);
    *b->w++ = TAG(KV_VALUE, WT_LEN);
    put_varint(b, value_len);
}

static inline __attribute__((always_inline)) void attr_str(pw *b, int field, const char *key,
                                                           size_t key_len, const char *v)
{
    if (!v || !*v)
        return;
    size_t n = ascii_len(v);
    if (n != SIZE_MAX) { /* every length known: written as it goes */
        attr_head(b, field, key, key_len, 1 + varint_len(n) + n);
        *b->w++ = TAG(ANY_STRING, WT_LEN);
        put_varint(b, n);
        put_n(b, v, n);
        return;
    }
    nest kv = open_msg(b, field, 1);
    *b->w++ = TAG(KV_KEY, WT_LEN);
    *b->w++ = (uint8_t)key_len;
    put_n(b, key, key_len);
    nest any = open_msg(b, KV_VALUE, 1);
    put_str_slow(b, ANY_STRING, v);
    close_msg(b, any);
    close_msg(b, kv);
}

static inline __attribute__((always_inline)) void attr_int(pw *b, int field, const char *key,
                                                           size_t key_len, int64_t v)
{
    attr_head(b, field, key, key_len, 1 + varint_len((uint64_t)v));
    *b->w++ = TAG(ANY_INT, WT_VARINT);
    put_varint(b, (uint64_t)v);
}

static inline __attribute__((always_inline)) void attr_bool(pw *b, int field, const char *key,
                                                            size_t key_len, bool v)
{
    attr_head(b, field, key, key_len, 2);
    *b->w++ = TAG(ANY_BOOL, WT_VARINT);
    *b->w++ = v ? 1 : 0;
}

#define ATTR_STR(b, k, v) attr_str(b, SPAN_ATTRIBUTES, k, sizeof(k) - 1, v)
#define ATTR_INT(b, k, v) attr_int(b, SPAN_ATTRIBUTES, k, sizeof(k) - 1, v)
#define ATTR_BOOL(b, k, v) attr_bool(b, SPAN_ATTRIBUTES, k, sizeof(k) - 1, v)

static void head(pw *b, const weir_span *s, const uint8_t span_id[8], const uint8_t *parent,
                 const char *name, int kind, int64_t start, int64_t end)
{
    put_bytes(b, SPAN_TRACE_ID, s->trace_id, 16);
    put_bytes(b, SPAN_SPAN_ID, span_id, 8);
    if (parent)
        put_bytes(b, SPAN_PARENT_ID, parent, 8);
    put_str(b, SPAN_NAME, name);
    *b->w++ = TAG(SPAN_KIND, WT_VARINT);
    *b->w++ = (uint8_t)kind;
    *b->w++ = TAG(SPAN_START, WT_I64);
    put_fixed64(b, (uint64_t)start);
    *b->w++ = TAG(SPAN_END, WT_I64);
    put_fixed64(b, (uint64_t)end);
}

static void error_status(pw *b, const char *message)
{
    nest st = open_msg(b, SPAN_STATUS, 1);
    put_str(b, STATUS_MESSAGE, message);
    *b->w++ = TAG(STATUS_CODE, WT_VARINT);
    *b->w++ = 2; /* STATUS_CODE_ERROR */
    close_msg(b, st);
}

static void server_span(pw *b, const weir_span *s)
{
    nest sp = open_msg(b, SS_SPANS, 2);
    head(b, s, s->span_id, s->has_parent ? s->parent_id : NULL, s->name, 2, s->start_ns, s->end_ns);
    ATTR_STR(b, "http.request.method", s->method);
    ATTR_STR(b, "url.path", s->path);
    ATTR_STR(b, "http.route", s->route);
    if (s->status)
        ATTR_INT(b, "http.response.status_code", s->status);
    ATTR_STR(b, "client.address", s->client);
    ATTR_STR(b, "network.protocol.name", "http");
    ATTR_STR(b, "network.protocol.version", s->protocol);
    ATTR_STR(b, "tls.protocol.version", s->tls);
    ATTR_INT(b, "http.request.size", s->request_bytes);
    ATTR_INT(b, "http.response.size", s->response_bytes);
    ATTR_STR(b, "weir.server", s->server);
    ATTR_STR(b, "weir.upstream", s->upstream);
    ATTR_STR(b, "weir.termination", s->termination);
    if (s->retries)
        ATTR_INT(b, "weir.retries", s->retries);
    ATTR_STR(b, "error.type", s->error);
    if (s->status >= 500 || (!s->status && s->error[0]))
        error_status(b, s->error[0] ? s->error : "server error");
    close_msg(b, sp);
}

static void attempt_span(pw *b, const weir_span *s, const weir_span_attempt *a, int k)
{
    nest sp = open_msg(b, SS_SPANS, 2);
    int64_t end = a->end_ns ? a->end_ns : s->end_ns;
    head(b, s, a->span_id, s->span_id, s->method, 3, a->start_ns,
         end > a->start_ns ? end : a->start_ns);
    ATTR_STR(b, "http.request.method", s->method);
    char host[sizeof(a->addr)];
    int port;
    if (weir__otlp_split_addr(a->addr, host, &port)) {
        ATTR_STR(b, "server.address", host);
        ATTR_INT(b, "server.port", port);
    }
    ATTR_STR(b, "network.peer.address", a->addr);
    if (a->status)
        ATTR_INT(b, "http.response.status_code", a->status);
    ATTR_INT(b, "weir.attempt", k + 1);
    ATTR_BOOL(b, "weir.connection.reused", a->reused);
    if (a->connect_ns >= 0)
        ATTR_INT(b, "weir.connect_time_us", a->connect_ns / 1000);
    ATTR_STR(b, "weir.upstream", s->upstream);
    ATTR_STR(b, "error.type", a->error);
    if (a->connect_ns >= 0 && !a->reused) {
        nest ev = open_msg(b, SPAN_EVENTS, 1);
        *b->w++ = TAG(EVENT_TIME, WT_I64);
        put_fixed64(b, (uint64_t)(a->start_ns + a->connect_ns));
        put_str(b, EVENT_NAME, "connected");
        attr_bool(b, EVENT_ATTRIBUTES, "weir.connection.reused",
                  sizeof("weir.connection.reused") - 1, false);
        close_msg(b, ev);
    }
    if (a->error || a->status >= 400)
        error_status(b, a->error ? a->error : "error status");
    close_msg(b, sp);
}

static void wait_span(pw *b, const weir_span *s, const weir_span_wait *w)
{
    nest sp = open_msg(b, SS_SPANS, 2);
    char name[sizeof(w->plugin) + 8];
    snprintf(name, sizeof(name), "plugin %s", w->plugin);
    head(b, s, w->span_id, s->span_id, name, 1, w->start_ns,
         w->end_ns > w->start_ns ? w->end_ns : w->start_ns);
    ATTR_STR(b, "weir.plugin", w->plugin);
    ATTR_STR(b, "weir.plugin.category", w->category);
    ATTR_STR(b, "weir.plugin.result", w->result);
    if (strcmp(w->result, "error") == 0 || strcmp(w->result, "aborted") == 0)
        error_status(b, w->result);
    close_msg(b, sp);
}

static void tls_span(pw *b, const weir_span *s)
{
    nest sp = open_msg(b, SS_SPANS, 2);
    head(b, s, s->tls_span_id, s->span_id, "tls handshake", 1, s->tls_start_ns, s->tls_end_ns);
    ATTR_STR(b, "tls.protocol.version", s->tls);
    ATTR_STR(b, "tls.cipher", s->tls_cipher);
    ATTR_BOOL(b, "tls.resumed", s->tls_resumed);
    close_msg(b, sp);
}

static void resource_attr(pw *b, const char *key, const char *v)
{
    attr_str(b, RES_ATTRIBUTES, key, strlen(key), v);
}

/* The resource and the scope, in parts (of weir__otlp_pb_room's size);
 * their two lengths in *res_len and *scope_len. */
static void resource_and_scope(uint8_t *parts, const char *service_name, size_t *res_len,
                               size_t *scope_len)
{
    pw p = {parts}, *b = &p;
    nest res = open_msg(b, RS_RESOURCE, 2);
    resource_attr(b, "service.name", service_name);
    resource_attr(b, "service.version", weir_version());
    resource_attr(b, "telemetry.sdk.name", "weir");
    close_msg(b, res);
    *res_len = (size_t)(b->w - parts);
    nest scope = open_msg(b, SS_SCOPE, 1);
    put_str(b, SCOPE_NAME, "weir");
    put_str(b, SCOPE_VERSION, weir_version());
    close_msg(b, scope);
    *scope_len = (size_t)(b->w - parts) - *res_len;
}

size_t weir__otlp_pb_room(const char *service_name)
{
    /* The resource and the scope (each text at most thrice its size as
     * UTF-8), and the two lengths around them. */
    return 3 * (strlen(service_name) + 2 * strlen(weir_version())) + 256;
}

bool weir__otlp_pb_span(weir_strbuf *out, const weir_span *s)
{
    pw p = {(uint8_t *)weir__sb_room(out, SPAN_MAX)}, *b = &p;
    if (!b->w)
        return false;
    server_span(b, s);
    for (int k = 0; k < s->n_attempts && k < WEIR_SPAN_ATTEMPTS; k++)
        attempt_span(b, s, &s->at[k], k);
    for (int k = 0; k < s->n_waits && k < WEIR_SPAN_WAITS; k++)
        wait_span(b, s, &s->waits[k]);
    if (s->tls_start_ns)
        tls_span(b, s);
    out->len = (size_t)(b->w - (uint8_t *)out->p);
    return true;
}

const char *weir__otlp_pb_finish(weir_strbuf *out, size_t room, const char *service_name,
                                 size_t *len)
{
    uint8_t *parts = malloc(room);
    if (!parts || out->oom || out->len < room) {
        free(parts);
        return NULL;
    }
    size_t res_len, scope_len;
    resource_and_scope(parts, service_name, &res_len, &scope_len);
    size_t spans_len = out->len - room;
    size_t ss_len = scope_len + spans_len;
    size_t rs_len = res_len + 1 + varint_len(ss_len) + ss_len;
    size_t head = 1 + varint_len(rs_len) + res_len + 1 + varint_len(ss_len) + scope_len;
    if (head > room) { /* not with weir__otlp_pb_room's */
        free(parts);
        return NULL;
    }
    pw p = {(uint8_t *)out->p + room - head}, *b = &p;
    *b->w++ = TAG(REQ_RESOURCE_SPANS, WT_LEN);
    put_varint(b, rs_len);
    put_n(b, parts, res_len);
    *b->w++ = TAG(RS_SCOPE_SPANS, WT_LEN);
    put_varint(b, ss_len);
    put_n(b, parts + res_len, scope_len);
    free(parts);
    *len = head + spans_len;
    return out->p + room - head;
}

char *weir__otlp_protobuf(const weir_span *const *v, size_t n, const char *service_name,
                          size_t *off, size_t *len)
{
    weir_strbuf out = {0};
    size_t room = weir__otlp_pb_room(service_name);
    bool ok = weir__sb_room(&out, room) != NULL;
    out.len = ok ? room : 0;
    for (size_t i = 0; ok && i < n; i++)
        ok = weir__otlp_pb_span(&out, v[i]);
    const char *body = ok ? weir__otlp_pb_finish(&out, room, service_name, len) : NULL;
    if (!body) {
        free(out.p);
        return NULL;
    }
    *off = (size_t)(body - out.p);
    return out.p;
}
