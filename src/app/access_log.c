/*
 * access_log.c - compiling and rendering access-log templates.
 */
#include "app/access_log.h"

#include "app/fields.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

enum part_kind {
    P_TEXT,
    P_CLIENT_IP,
    P_METHOD,
    P_URI,
    P_PATH,
    P_QUERY,
    P_STATUS,
    P_UPSTREAM_ADDR,
    P_LATENCY,
    P_UPSTREAM_LATENCY,
    P_SIZE,
    P_WHEN,
    P_PROTOCOL,
    P_REQUEST_ID,
    P_UPSTREAM_URI,
    P_LOCATION,
    P_PEER_IP,
    P_TERMINATION,
    P_JSON, /* the whole line as a JSON object */
    P_REQ_HEADER,
    P_RESP_HEADER,
    /* Pingap's names */
    P_HOST,
    P_SCHEME,
    P_REFERER,
    P_USER_AGENT,
    P_WHEN_ISO,
    P_WHEN_UNIX,
    P_SIZE_HUMAN,
    P_LATENCY_HUMAN,
    P_PAYLOAD,
    P_PAYLOAD_HUMAN,
    P_COOKIE,
    P_UPSTREAM_REUSED,
    P_CONNECT_TIME,
    P_TLS_VERSION,
    P_TLS_CIPHER,
    /* TCP sessions' (weir/l4.h) */
    P_UP_BYTES_SENT,
    P_UP_BYTES_RECEIVED,
    P_SESSION_TIME,
    P_SERVER_ADDR,
    P_SERVER,
    P_ERROR,
    P_ATTEMPTS,
    P_SNI,
    P_TRACE_ID,
    P_SPAN_ID,
};

typedef struct part {
    enum part_kind kind;
    char *text; /* literal text, or the header name */
    size_t len;
} part;

struct weir_access_log {
    part *parts;
    size_t n;
    bool tcp; /* for a TCP server: rendered by weir__access_log_render_tcp */
};

static const struct {
    const char *name;
    enum part_kind kind;
} vars[] = {
    {"client_ip", P_CLIENT_IP},
    {"method", P_METHOD},
    {"uri", P_URI},
    {"path", P_PATH},
    {"query", P_QUERY},
    {"status", P_STATUS},
    {"upstream_addr", P_UPSTREAM_ADDR},
    {"latency", P_LATENCY},
    {"upstream_latency", P_UPSTREAM_LATENCY},
    {"size", P_SIZE},
    {"when", P_WHEN},
    {"protocol", P_PROTOCOL},
    {"request_id", P_REQUEST_ID},
    {"upstream_uri", P_UPSTREAM_URI},
    {"location", P_LOCATION},
    {"peer_ip", P_PEER_IP},
    {"termination", P_TERMINATION},
    {"trace_id", P_TRACE_ID},
    {"span_id", P_SPAN_ID},
    /* Pingap's names for the same, and what it has besides */
    {"remote", P_PEER_IP},
    {"proto", P_PROTOCOL},
    {"host", P_HOST},
    {"scheme", P_SCHEME},
    {"referer", P_REFERER},
    {"user_agent", P_USER_AGENT},
    {"when_utc_iso", P_WHEN_ISO},
    {"when_unix", P_WHEN_UNIX},
    {"size_human", P_SIZE_HUMAN},
    {"latency_human", P_LATENCY_HUMAN},
    {"payload_size", P_PAYLOAD},
    {"payload_size_human", P_PAYLOAD_HUMAN},
    /* {:name}: what the proxy knows of the request */
    {":location", P_LOCATION},
    {":upstream_addr", P_UPSTREAM_ADDR},
    {":upstream_address", P_UPSTREAM_ADDR},
    {":upstream_reused", P_UPSTREAM_REUSED},
    {":reused", P_UPSTREAM_REUSED},
    {":upstream_connect_time", P_CONNECT_TIME},
    {":upstream_response_time", P_UPSTREAM_LATENCY},
    {":upstream_processing_time", P_UPSTREAM_LATENCY},
    {":termination", P_TERMINATION},
    {":tls_version", P_TLS_VERSION},
    {":tls_cipher", P_TLS_CIPHER},
};

static const struct {
    const char *name;
    const char *format;
} presets[] = {
    {"main", "{client_ip} [{when}] \"{method} {uri} {protocol}\" {status} {size} {upstream_addr} "
             "{latency} {upstream_latency}"},
    {"combined", "{client_ip} - - [{when}] \"{method} {uri} {protocol}\" {status} {size} "
                 "\"{request_header:referer}\" \"{request_header:user-agent}\" "
                 "{upstream_addr} {latency} {upstream_latency}"},
    {"common", "{client_ip} - - [{when}] \"{method} {uri} {protocol}\" {status} {size}"},
    /* Pingap's */
    {"short", "{client_ip} - {method} {uri} {protocol} {status} {size} - {latency_human}"},
    {"tiny", "{method} {uri} {status} {size} - {latency_human}"},
};

/* A TCP server's variables: nginx stream's names, with the HTTP ones
 * that mean the same there. */
static const struct {
    const char *name;
    enum part_kind kind;
} tcp_vars[] = {
    {"client_ip", P_CLIENT_IP},
    {"remote_addr", P_CLIENT_IP},
    {"status", P_STATUS},
    {"upstream_addr", P_UPSTREAM_ADDR},
    {"when", P_WHEN},
    {"when_utc_iso", P_WHEN_ISO},
    {"when_unix", P_WHEN_UNIX},
    {"termination", P_TERMINATION},
    {"protocol", P_PROTOCOL},
    {"bytes_sent", P_SIZE},
    {"size", P_SIZE},
    {"size_human", P_SIZE_HUMAN},
    {"bytes_received", P_PAYLOAD},
    {"payload_size", P_PAYLOAD},
    {"payload_size_human", P_PAYLOAD_HUMAN},
    {"upstream_bytes_sent", P_UP_BYTES_SENT},
    {"upstream_bytes_received", P_UP_BYTES_RECEIVED},
    {"session_time", P_SESSION_TIME},
    {"latency", P_LATENCY},
    {"latency_human", P_LATENCY_HUMAN},
    {"upstream_connect_time", P_CONNECT_TIME},
    {":upstream_connect_time", P_CONNECT_TIME},
    {"server_addr", P_SERVER_ADDR},
    {"server", P_SERVER},
    {"error", P_ERROR},
    {"attempts", P_ATTEMPTS},
    {"sni", P_SNI},
};

static const struct {
    const char *name;
    const char *format;
} tcp_presets[] = {
    /* nginx stream's "basic", with where it went and how it ended */
    {"basic", "{client_ip} [{when}] {protocol} {status} {bytes_sent} {bytes_received} "
              "{session_time} \"{upstream_addr}\" {termination}"},
    {"main", "{client_ip} [{when}] {protocol} {status} {bytes_sent} {bytes_received} "
             "{session_time} \"{upstream_addr}\" {termination}"},
};

void weir__access_log_free(weir_access_log *log)
{
    if (!log)
        return;
    for (size_t i = 0; i < log->n; i++)
        free(log->parts[i].text);
    free(log->parts);
    free(log);
}

static int push(weir_access_log *log, enum part_kind kind, const char *text, size_t len)
{
    part *np = realloc(log->parts, (log->n + 1) * sizeof(*np));
    if (!np)
        return -1;
    log->parts = np;
    part *p = &log->parts[log->n++];
    p->kind = kind;
    p->text = NULL;
    p->len = len;
    if (text) {
        p->text = malloc(len + 1);
        if (!p->text)
            return -1;
        memcpy(p->text, text, len);
        p->text[len] = '\0';
    }
    return 0;
}

/* The variable called name[0..len) in the table of the log's kind. */
static bool push_var(weir_access_log *log, const char *name, size_t len, bool *oom)
{
    size_t n = log->tcp ? sizeof(tcp_vars) / sizeof(tcp_vars[0]) : sizeof(vars) / sizeof(vars[0]);
    for (size_t i = 0; i < n; i++) {
        const char *vn = log->tcp ? tcp_vars[i].name : vars[i].name;
        if (strlen(vn) == len && memcmp(vn, name, len) == 0) {
            *oom = push(log, log->tcp ? tcp_vars[i].kind : vars[i].kind, NULL, 0) < 0;
            return true;
        }
    }
    return false;
}

static weir_access_log *compile(const char *format, bool tcp, char *err, size_t err_len)
{
    if (strcmp(format, "off") == 0) {
        snprintf(err, err_len, "off");
        return NULL;
    }
    for (size_t i = 0; !tcp && i < sizeof(presets) / sizeof(presets[0]); i++) {
        if (strcmp(format, presets[i].name) == 0)
            format = presets[i].format;
    }
    for (size_t i = 0; tcp && i < sizeof(tcp_presets) / sizeof(tcp_presets[0]); i++) {
        if (strcmp(format, tcp_presets[i].name) == 0)
            format = tcp_presets[i].format;
    }
    weir_access_log *log = calloc(1, sizeof(*log));
    if (!log)
        goto oom;
    log->tcp = tcp;
    if (strcmp(format, "json") == 0) {
        if (push(log, P_JSON, NULL, 0) < 0)
            goto oom;
        return log;
    }
    const char *p = format;
    while (*p) {
        if (p[0] == '{' && p[1] == '{') {
            if (push(log, P_TEXT, "{", 1) < 0)
                goto oom;
            p += 2;
            continue;
        }
        if (p[0] == '}' && p[1] == '}') {
            if (push(log, P_TEXT, "}", 1) < 0)
                goto oom;
            p += 2;
            continue;
        }
        if (*p == '{') {
            const char *end = strchr(p, '}');
            if (!end) {
                snprintf(err, err_len, "unclosed '{' at offset %zu", (size_t)(p - format));
                goto fail;
            }
            const char *name = p + 1;
            size_t len = (size_t)(end - name);
            bool oom = false;
            bool found = push_var(log, name, len, &oom);
            if (oom)
                goto oom;
            /* Pingap's {>name} {<name} {~cookie} {$ENV} */
            if (!found && !tcp && len > 1 && (name[0] == '>' || name[0] == '<' || name[0] == '~')) {
                enum part_kind k = name[0] == '>'   ? P_REQ_HEADER
                                   : name[0] == '<' ? P_RESP_HEADER
                                                    : P_COOKIE;
                if (push(log, k, name + 1, len - 1) < 0)
                    goto oom;
                found = true;
            } else if (!found && len > 1 && name[0] == '$') {
                char env[128];
                if (len - 1 >= sizeof(env)) {
                    snprintf(err, err_len, "variable name too long in '{%.*s}'", (int)len, name);
                    goto fail;
                }
                memcpy(env, name + 1, len - 1);
                env[len - 1] = '\0';
                char host[256] = "";
                const char *v = strcmp(env, "hostname") == 0 ? host : getenv(env);
                if (v == host)
                    gethostname(host, sizeof(host) - 1);
                if (push(log, P_TEXT, v ? v : "", v ? strlen(v) : 0) < 0)
                    goto oom;
                found = true;
            }
            if (!found && !tcp && len > 15 && memcmp(name, "request_header:", 15) == 0) {
                if (push(log, P_REQ_HEADER, name + 15, len - 15) < 0)
                    goto oom;
                found = true;
            } else if (!found && !tcp && len > 16 && memcmp(name, "response_header:", 16) == 0) {
                if (push(log, P_RESP_HEADER, name + 16, len - 16) < 0)
                    goto oom;
                found = true;
            }
            if (!found) {
                snprintf(err, err_len, "unknown variable '{%.*s}'%s", (int)len, name,
                         tcp ? " for a TCP server (it has no request: see docs/config.md)" : "");
                goto fail;
            }
            p = end + 1;
            continue;
        }
        if (*p == '}') {
            snprintf(err, err_len, "unmatched '}' at offset %zu (write '}}' for a brace)",
                     (size_t)(p - format));
            goto fail;
        }
        const char *start = p;
        while (*p && *p != '{' && *p != '}')
            p++;
        if (push(log, P_TEXT, start, (size_t)(p - start)) < 0)
            goto oom;
    }
    return log;
oom:
    snprintf(err, err_len, "out of memory");
fail:
    weir__access_log_free(log);
    return NULL;
}

weir_access_log *weir__access_log_compile(const char *format, char *err, size_t err_len)
{
    return compile(format, false, err, err_len);
}

weir_access_log *weir__access_log_compile_tcp(const char *format, char *err, size_t err_len)
{
    return compile(format, true, err, err_len);
}

typedef struct out {
    char *buf;
    size_t len, cap;
} out;

static void put(out *o, const char *s, size_t len)
{
    if (o->len + len >= o->cap)
        len = o->cap - 1 - o->len;
    memcpy(o->buf + o->len, s, len);
    o->len += len;
}

/* A value from the request or response: '"', '\\', control characters
 * and non-ASCII bytes become \xHH (as nginx does), so a client cannot
 * forge fields or lines in the log. */
static void put_str(out *o, weir_str s)
{
    static const char hex[] = "0123456789ABCDEF";
    if (!s.ptr || !s.len) {
        put(o, "-", 1);
        return;
    }
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
            char esc[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            put(o, esc, 4);
        } else {
            put(o, (const char *)&s.ptr[i], 1);
        }
    }
}

/* A JSON string value (quotes included): escapes per RFC 8259; bytes
 * >= 0x80 are passed as they are (headers are mostly ASCII; invalid UTF-8
 * is the client's). */
static void put_json_str(out *o, weir_str s)
{
    static const char hex[] = "0123456789abcdef";
    put(o, "\"", 1);
    for (size_t i = 0; s.ptr && i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(o, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(o, e, 6);
        } else {
            put(o, (const char *)&s.ptr[i], 1);
        }
    }
    put(o, "\"", 1);
}

#define PUT_LIT(o, lit) put((o), (lit), sizeof(lit) - 1)

/* fmt is a literal of at most 40 characters around one number. */
static void put_fmt(out *o, const char *fmt, double v)
{
    char tmp[96];
    int n = snprintf(tmp, sizeof(tmp), fmt, v);
    if (n > 0)
        put(o, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* 1.5KB, 12.3MB (as Pingap writes sizes). */
static void put_human_size(out *o, uint64_t n)
{
    if (n < 1000)
        put_fmt(o, "%.0fB", (double)n);
    else if (n < 1000 * 1000)
        put_fmt(o, "%.1fKB", (double)n / 1000.0);
    else if (n < 1000ull * 1000 * 1000)
        put_fmt(o, "%.1fMB", (double)n / 1e6);
    else
        put_fmt(o, "%.1fGB", (double)n / 1e9);
}

/* 850us, 12ms, 1.5s. */
static void put_human_time(out *o, int64_t us)
{
    if (us < 0)
        put(o, "-", 1);
    else if (us < 1000)
        put_fmt(o, "%.0fus", (double)us);
    else if (us < 1000000)
        put_fmt(o, "%.0fms", (double)us / 1000.0);
    else
        put_fmt(o, "%.1fs", (double)us / 1e6);
}

/* The time now: P_WHEN (2026-12-01T10:00:00Z), P_WHEN_ISO (with
 * milliseconds) or P_WHEN_UNIX (milliseconds since the epoch). */
static void put_time(out *o, enum part_kind kind)
{
    struct timespec ts;
    struct tm tm;
    char tmp[64];
    clock_gettime(CLOCK_REALTIME, &ts);
    if (kind == P_WHEN_UNIX) {
        put_fmt(o, "%.0f", (double)ts.tv_sec * 1000.0 + (double)(ts.tv_nsec / 1000000));
        return;
    }
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(tmp, sizeof(tmp), "%Y-%m-%dT%H:%M:%S", &tm);
    if (kind == P_WHEN_ISO)
        n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, ".%03ldZ", ts.tv_nsec / 1000000);
    else
        tmp[n++] = 'Z';
    put(o, tmp, n);
}

size_t weir__access_log_render(const weir_access_log *log, weir_session *s,
                               const weir_session_stats *st, const char *location,
                               const char *trace_id, const char *span_id, char *buf, size_t buf_len)
{
    weir_str loc = location ? (weir_str){location, strlen(location)} : WEIR_STR("-");
    out o = {buf, 0, buf_len};
    for (size_t i = 0; i < log->n; i++) {
        const part *p = &log->parts[i];
        switch (p->kind) {
        case P_TEXT:
            put(&o, p->text, p->len);
            break;
        case P_CLIENT_IP:
            put_str(&o, weir_session_client_ip(s));
            break;
        case P_METHOD:
            put_str(&o, weir_session_method(s));
            break;
        case P_URI:
            put_str(&o, weir_session_target(s));
            break;
        case P_PATH:
            put_str(&o, weir_session_path(s));
            break;
        case P_QUERY:
            put_str(&o, weir_session_query(s));
            break;
        case P_STATUS:
            put_fmt(&o, "%.0f", st->status);
            break;
        case P_UPSTREAM_ADDR:
            put(&o, st->upstream_addr, strlen(st->upstream_addr));
            break;
        case P_LATENCY:
            put_fmt(&o, "%.3f", (double)st->request_time_us / 1000.0);
            break;
        case P_UPSTREAM_LATENCY:
            if (st->upstream_time_us >= 0)
                put_fmt(&o, "%.3f", (double)st->upstream_time_us / 1000.0);
            else
                put(&o, "-", 1);
            break;
        case P_SIZE:
            put_fmt(&o, "%.0f", (double)st->bytes_sent);
            break;
        case P_WHEN:
        case P_WHEN_ISO:
        case P_WHEN_UNIX:
            put_time(&o, p->kind);
            break;
        case P_PROTOCOL: {
            int v = weir_session_http_version(s);
            if (v == 20)
                put(&o, "HTTP/2.0", 8);
            else
                put(&o, v == 10 ? "HTTP/1.0" : "HTTP/1.1", 8);
            break;
        }
        case P_REQUEST_ID:
            put_str(&o, weir_session_request_id(s));
            break;
        case P_UPSTREAM_URI:
            put_str(&o, weir_session_upstream_target(s));
            break;
        case P_LOCATION:
            put_str(&o, loc);
            break;
        case P_PEER_IP:
            put_str(&o, weir_session_peer_ip(s));
            break;
        case P_TERMINATION:
            put(&o, st->termination, 2);
            break;
        case P_TRACE_ID:
        case P_SPAN_ID: {
            const char *id = p->kind == P_TRACE_ID ? trace_id : span_id;
            put(&o, id ? id : "-", id ? strlen(id) : 1);
            break;
        }
        case P_JSON: {
            weir_headers *rq = weir_session_req_headers(s);
            int v = weir_session_http_version(s);
            PUT_LIT(&o, "{\"time\":\"");
            put_time(&o, P_WHEN);
            PUT_LIT(&o, "\"");
            PUT_LIT(&o, ",\"client_ip\":");
            put_json_str(&o, weir_session_client_ip(s));
            PUT_LIT(&o, ",\"method\":");
            put_json_str(&o, weir_session_method(s));
            PUT_LIT(&o, ",\"uri\":");
            put_json_str(&o, weir_session_target(s));
            PUT_LIT(&o, ",\"upstream_uri\":");
            put_json_str(&o, weir_session_upstream_target(s));
            PUT_LIT(&o, ",\"location\":");
            put_json_str(&o, loc);
            PUT_LIT(&o, ",\"peer_ip\":");
            put_json_str(&o, weir_session_peer_ip(s));
            PUT_LIT(&o, ",\"protocol\":");
            put_json_str(&o, v == 20   ? WEIR_STR("HTTP/2.0")
                             : v == 10 ? WEIR_STR("HTTP/1.0")
                                       : WEIR_STR("HTTP/1.1"));
            put_fmt(&o, ",\"status\":%.0f", st->status);
            put_fmt(&o, ",\"size\":%.0f", (double)st->bytes_sent);
            PUT_LIT(&o, ",\"upstream_addr\":");
            put_json_str(&o, (weir_str){st->upstream_addr, strlen(st->upstream_addr)});
            put_fmt(&o, ",\"latency_ms\":%.3f", (double)st->request_time_us / 1000.0);
            if (st->upstream_time_us >= 0)
                put_fmt(&o, ",\"upstream_latency_ms\":%.3f", (double)st->upstream_time_us / 1000.0);
            PUT_LIT(&o, ",\"request_id\":");
            put_json_str(&o, weir_session_request_id(s));
            PUT_LIT(&o, ",\"user_agent\":");
            put_json_str(&o, weir_headers_get(rq, "user-agent"));
            PUT_LIT(&o, ",\"referer\":");
            put_json_str(&o, weir_headers_get(rq, "referer"));
            PUT_LIT(&o, ",\"termination\":");
            put_json_str(&o, (weir_str){st->termination, 2});
            if (st->error) {
                PUT_LIT(&o, ",\"error\":");
                put_json_str(&o, (weir_str){st->error, strlen(st->error)});
            }
            if (trace_id && span_id) {
                PUT_LIT(&o, ",\"trace_id\":");
                put_json_str(&o, (weir_str){trace_id, strlen(trace_id)});
                PUT_LIT(&o, ",\"span_id\":");
                put_json_str(&o, (weir_str){span_id, strlen(span_id)});
            }
            PUT_LIT(&o, "}");
            break;
        }
        case P_REQ_HEADER:
            put_str(&o, weir_headers_get(weir_session_req_headers(s), p->text));
            break;
        case P_HOST:
            put_str(&o, weir_headers_get(weir_session_req_headers(s), "host"));
            break;
        case P_SCHEME: {
            weir_tls_info ti;
            if (weir_session_tls(s, &ti))
                PUT_LIT(&o, "https");
            else
                PUT_LIT(&o, "http");
            break;
        }
        case P_REFERER:
            put_str(&o, weir_headers_get(weir_session_req_headers(s), "referer"));
            break;
        case P_USER_AGENT:
            put_str(&o, weir_headers_get(weir_session_req_headers(s), "user-agent"));
            break;
        case P_SIZE_HUMAN:
            put_human_size(&o, st->bytes_sent);
            break;
        case P_PAYLOAD:
            put_fmt(&o, "%.0f", (double)st->bytes_received);
            break;
        case P_PAYLOAD_HUMAN:
            put_human_size(&o, st->bytes_received);
            break;
        case P_LATENCY_HUMAN:
            put_human_time(&o, st->request_time_us);
            break;
        case P_COOKIE:
            put_str(&o, weir__cookie(weir_session_req_headers(s), p->text));
            break;
        case P_UPSTREAM_REUSED:
            if (st->upstream_time_us < 0)
                put(&o, "-", 1);
            else if (st->connect_time_us == 0)
                PUT_LIT(&o, "true");
            else
                PUT_LIT(&o, "false");
            break;
        case P_CONNECT_TIME:
            if (st->upstream_time_us >= 0)
                put_fmt(&o, "%.3f", (double)st->connect_time_us / 1000.0);
            else
                put(&o, "-", 1);
            break;
        case P_TLS_VERSION:
        case P_TLS_CIPHER: {
            weir_tls_info ti;
            const char *v = NULL;
            if (weir_session_tls(s, &ti))
                v = p->kind == P_TLS_VERSION ? ti.version : ti.cipher;
            put_str(&o, v ? (weir_str){v, strlen(v)} : WEIR_STR_NULL);
            break;
        }
        case P_RESP_HEADER: {
            weir_headers *h = weir_session_resp_headers(s);
            put_str(&o, h ? weir_headers_get(h, p->text) : WEIR_STR_NULL);
            break;
        }
        default: /* TCP-only kinds: compile never makes them */
            break;
        }
    }
    buf[o.len] = '\0';
    return o.len;
}

/* seconds with milliseconds, as nginx's $session_time */
static void put_seconds(out *o, int64_t us)
{
    if (us < 0)
        put(o, "-", 1);
    else
        put_fmt(o, "%.3f", (double)us / 1e6);
}

static void put_tcp_json(out *o, const weir_l4_who *s, const weir_l4_stats *st, const char *server)
{
    PUT_LIT(o, "{\"time\":\"");
    put_time(o, P_WHEN);
    PUT_LIT(o, "\",\"server\":");
    put_json_str(o, (weir_str){server, strlen(server)});
    PUT_LIT(o, ",\"server_addr\":");
    put_json_str(o, (weir_str){s->listen_addr, strlen(s->listen_addr)});
    PUT_LIT(o, ",\"client_ip\":");
    put_json_str(o, s->client_ip);
    PUT_LIT(o, ",\"protocol\":");
    put_json_str(o, (weir_str){s->protocol, strlen(s->protocol)});
    put_fmt(o, ",\"status\":%.0f", st->status);
    put_fmt(o, ",\"bytes_sent\":%.0f", (double)st->bytes_sent);
    put_fmt(o, ",\"bytes_received\":%.0f", (double)st->bytes_received);
    put_fmt(o, ",\"upstream_bytes_sent\":%.0f", (double)st->upstream_bytes_sent);
    put_fmt(o, ",\"upstream_bytes_received\":%.0f", (double)st->upstream_bytes_received);
    PUT_LIT(o, ",\"upstream_addr\":");
    put_json_str(o, (weir_str){st->upstream_addr, strlen(st->upstream_addr)});
    put_fmt(o, ",\"session_time\":%.3f", (double)st->session_time_us / 1e6);
    if (st->connect_time_us >= 0)
        put_fmt(o, ",\"upstream_connect_time\":%.3f", (double)st->connect_time_us / 1e6);
    put_fmt(o, ",\"attempts\":%.0f", st->attempts);
    if (st->datagrams_received || st->datagrams_sent) {
        put_fmt(o, ",\"datagrams_received\":%.0f", (double)st->datagrams_received);
        put_fmt(o, ",\"datagrams_sent\":%.0f", (double)st->datagrams_sent);
    }
    const char *sni = s->sni;
    if (sni && sni[0]) {
        PUT_LIT(o, ",\"sni\":");
        put_json_str(o, (weir_str){sni, strlen(sni)});
    }
    PUT_LIT(o, ",\"termination\":");
    put_json_str(o, (weir_str){st->termination, 2});
    if (st->error) {
        PUT_LIT(o, ",\"error\":");
        put_json_str(o, (weir_str){st->error, strlen(st->error)});
    }
    PUT_LIT(o, "}");
}

size_t weir__access_log_render_tcp(const weir_access_log *log, const weir_l4_who *s,
                                   const weir_l4_stats *st, const char *server, char *buf,
                                   size_t buf_len)
{
    out o = {buf, 0, buf_len};
    for (size_t i = 0; i < log->n; i++) {
        const part *p = &log->parts[i];
        switch (p->kind) {
        case P_TEXT:
            put(&o, p->text, p->len);
            break;
        case P_CLIENT_IP:
            put_str(&o, s->client_ip);
            break;
        case P_STATUS:
            put_fmt(&o, "%.0f", st->status);
            break;
        case P_UPSTREAM_ADDR:
            put(&o, st->upstream_addr, strlen(st->upstream_addr));
            break;
        case P_WHEN:
        case P_WHEN_ISO:
        case P_WHEN_UNIX:
            put_time(&o, p->kind);
            break;
        case P_TERMINATION:
            put(&o, st->termination, 2);
            break;
        case P_PROTOCOL:
            put(&o, s->protocol, strlen(s->protocol));
            break;
        case P_SIZE:
            put_fmt(&o, "%.0f", (double)st->bytes_sent);
            break;
        case P_SIZE_HUMAN:
            put_human_size(&o, st->bytes_sent);
            break;
        case P_PAYLOAD:
            put_fmt(&o, "%.0f", (double)st->bytes_received);
            break;
        case P_PAYLOAD_HUMAN:
            put_human_size(&o, st->bytes_received);
            break;
        case P_UP_BYTES_SENT:
            put_fmt(&o, "%.0f", (double)st->upstream_bytes_sent);
            break;
        case P_UP_BYTES_RECEIVED:
            put_fmt(&o, "%.0f", (double)st->upstream_bytes_received);
            break;
        case P_SESSION_TIME:
            put_seconds(&o, st->session_time_us);
            break;
        case P_LATENCY:
            put_fmt(&o, "%.3f", (double)st->session_time_us / 1000.0);
            break;
        case P_LATENCY_HUMAN:
            put_human_time(&o, st->session_time_us);
            break;
        case P_CONNECT_TIME:
            put_seconds(&o, st->connect_time_us);
            break;
        case P_SERVER_ADDR:
            put(&o, s->listen_addr, strlen(s->listen_addr));
            break;
        case P_SERVER:
            put(&o, server, strlen(server));
            break;
        case P_ERROR:
            if (st->error)
                put_str(&o, (weir_str){st->error, strlen(st->error)});
            else
                put(&o, "-", 1);
            break;
        case P_ATTEMPTS:
            put_fmt(&o, "%.0f", st->attempts);
            break;
        case P_SNI: {
            const char *n = s->sni;
            if (n && n[0])
                put(&o, n, strlen(n));
            else
                put(&o, "-", 1);
            break;
        }
        case P_JSON:
            put_tcp_json(&o, s, st, server);
            break;
        default: /* HTTP-only kinds: compile_tcp never makes them */
            break;
        }
    }
    buf[o.len] = '\0';
    return o.len;
}
