/*
 * session_reply.c - what weir answers itself: a request that failed gets
 * error_while_proxy's answer or weir's error page (weir__session_fail),
 * and every generated response (weir_session_respond, the error pages)
 * is shaped here, as gRPC's trailers-only form for a gRPC request.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "http/h1_parse.h"
#include "proxy/session-t.h"

/* ---- generated responses ---- */

static bool is_grpc(const weir_session *s)
{
    weir_str ct = weir_headers_get((weir_headers *)&s->req.headers, "content-type");
    return ct.len >= 16 && strncasecmp(ct.ptr, "application/grpc", 16) == 0;
}

/* The gRPC status for an HTTP error weir generates (gRPC's own mapping of
 * HTTP statuses, with the proxy's timeouts as DEADLINE_EXCEEDED). */
static int grpc_status_of(int status)
{
    switch (status) {
    case 400:
        return 13; /* INTERNAL */
    case 401:
        return 16; /* UNAUTHENTICATED */
    case 403:
        return 7; /* PERMISSION_DENIED */
    case 404:
        return 12; /* UNIMPLEMENTED */
    case 408:
    case 504:
        return 4; /* DEADLINE_EXCEEDED */
    case 413:
    case 429:
        return 8; /* RESOURCE_EXHAUSTED */
    case 502:
    case 503:
        return 14; /* UNAVAILABLE */
    default:
        return 2; /* UNKNOWN */
    }
}

/*
 * A gRPC client cannot read an HTTP error page: an error weir answers a
 * gRPC request with is HTTP 200 with no body and grpc-status and
 * grpc-message (a "trailers-only" response).
 */
static int set_generated_grpc(weir_session *s, int status, const void *text, size_t len)
{
    weir__headers_init(&s->resp.headers, &s->arena);
    s->resp.status = 200;
    s->resp.reason = WEIR_STR_NULL;
    s->resp.version = 11;
    char code[8];
    int cl = snprintf(code, sizeof(code), "%d", grpc_status_of(status));
    /* grpc-message is percent-encoded outside printable ASCII. */
    char *msg = weir__arena_alloc(&s->arena, len * 3 + 1);
    if (!msg)
        return WEIR_ERR_NOMEM;
    size_t m = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = ((const unsigned char *)text)[i];
        if (ch == '\n' && i + 1 == len)
            break;
        if (ch < 0x20 || ch > 0x7e || ch == '%')
            m += (size_t)sprintf(msg + m, "%%%02X", ch);
        else
            msg[m++] = (char)ch;
    }
    if (weir__headers_push(&s->resp.headers, WEIR_STR("Content-Type"),
                           WEIR_STR("application/grpc")) < 0 ||
        weir__headers_push(&s->resp.headers, WEIR_STR("grpc-status"),
                           (weir_str){weir__arena_dup(&s->arena, code, (size_t)cl), (size_t)cl}) <
            0 ||
        weir__headers_push(&s->resp.headers, WEIR_STR("grpc-message"), (weir_str){msg, m}) < 0)
        return WEIR_ERR_NOMEM;
    s->gen_body = WEIR_STR_NULL;
    s->resp.body = WEIR_BODY_NONE;
    s->resp.content_length = 0;
    s->generated = true;
    return WEIR_OK;
}

/* The head of a generated response whose body has `length` bytes (-1:
 * not known); text is what a gRPC client is told of an error. */
static int generated_head(weir_session *s, int status, const weir_header *headers, size_t n,
                          int64_t length, const void *text, size_t text_len)
{
    if (s->resp_started)
        return WEIR_ERR_INVAL;
    weir__gen_release(s); /* a response this one replaces */
    if (status >= 400 && is_grpc(s)) {
        bool own = false; /* the caller answers in gRPC's terms itself */
        for (size_t i = 0; i < n; i++)
            own = own || (headers[i].name.len == 12 &&
                          strncasecmp(headers[i].name.ptr, "content-type", 12) == 0 &&
                          headers[i].value.len >= 16 &&
                          strncasecmp(headers[i].value.ptr, "application/grpc", 16) == 0);
        if (!own)
            return set_generated_grpc(s, status, text, text_len);
    }
    weir__headers_init(&s->resp.headers, &s->arena);
    s->resp.status = status;
    s->resp.reason = WEIR_STR_NULL;
    s->resp.version = 11;
    for (size_t i = 0; i < n; i++) {
        char name[256], value[8192];
        if (headers[i].name.len >= sizeof(name) || headers[i].value.len >= sizeof(value))
            return WEIR_ERR_INVAL;
        memcpy(name, headers[i].name.ptr, headers[i].name.len);
        name[headers[i].name.len] = '\0';
        memcpy(value, headers[i].value.ptr, headers[i].value.len);
        value[headers[i].value.len] = '\0';
        int rc = weir_headers_add(&s->resp.headers, name, value);
        if (rc < 0)
            return rc;
    }
    if (weir_headers_get(&s->resp.headers, "server").ptr == NULL)
        weir__headers_push(&s->resp.headers, WEIR_STR("Server"), WEIR_STR("weir"));
    s->gen_body = WEIR_STR_NULL;
    bool head = s->req.method.len == 4 && memcmp(s->req.method.ptr, "HEAD", 4) == 0;
    bool no_body = head || status < 200 || status == 204 || status == 304;
    s->resp.body = no_body ? WEIR_BODY_NONE : length < 0 ? WEIR_BODY_UNKNOWN : WEIR_BODY_KNOWN;
    s->resp.content_length = length < 0 ? 0 : (uint64_t)length;
    /* A Content-Length field as a proxied response has one: a response
     * filter that changes the body's length removes it (the body then goes
     * chunked), and HEAD tells the length a GET would get. */
    if (length >= 0 && (s->resp.body == WEIR_BODY_KNOWN ||
                        (head && status >= 200 && status != 204 && status != 304))) {
        char cl[24];
        int len = snprintf(cl, sizeof(cl), "%" PRId64, length);
        weir__headers_push(&s->resp.headers, WEIR_STR("Content-Length"),
                           (weir_str){weir__arena_dup(&s->arena, cl, (size_t)len), (size_t)len});
    }
    s->generated = true;
    return WEIR_OK;
}

int weir__session_set_generated(weir_session *s, int status, const weir_header *headers, size_t n,
                                const void *body, size_t body_len)
{
    int rc = generated_head(s, status, headers, n, (int64_t)body_len, body, body_len);
    if (rc < 0 || s->resp.body != WEIR_BODY_KNOWN || !body_len)
        return rc;
    char *b = weir__arena_alloc(&s->arena, body_len);
    if (!b)
        return WEIR_ERR_NOMEM;
    memcpy(b, body, body_len);
    s->gen_body = (weir_str){b, body_len};
    s->gen.kind = GEN_MEMORY;
    return WEIR_OK;
}

int weir__session_set_generated_head(weir_session *s, int status, const weir_header *headers,
                                     size_t n, int64_t length)
{
    const char *reason = weir__h1_reason(status);
    return generated_head(s, status, headers, n, length, reason, strlen(reason));
}

int weir_session_respond(weir_session *s, int status, const weir_header *headers, size_t n_headers,
                         const void *body, size_t body_len)
{
    if (status < 100 || status > 999)
        return WEIR_ERR_INVAL;
    return weir__session_set_generated(s, status, headers, n_headers, body, body_len);
}

void weir__session_fail(weir_session *s, int status, const char *reason)
{
    const weir_proxy_ops *ops = s->svc->ops;
    weir__session_terminate(s, status == 504 ? 's' : status == 502 || status == 503 ? 'S' : 'P');
    s->failed = true;
    s->error = reason;
    char ip[64];
    memcpy(ip, s->client_ip, s->client_ip_len);
    ip[s->client_ip_len] = '\0';
    weir_str id = weir_session_request_id(s);
    weir_log_warn("client %s: \"%.*s %.*s\": %d: %s%s%s (request %.*s)", ip, (int)s->req.method.len,
                  s->req.method.ptr, (int)(s->req.target.len > 200 ? 200 : s->req.target.len),
                  s->req.target.ptr, status, reason, s->have_peer ? ", upstream " : "",
                  s->have_peer ? weir__session_up_addr(s) : "", (int)id.len, id.ptr);
    if (s->resp_started) {
        weir__session_set_state(s, SS_DONE);
        return;
    }
    if (s->cache && weir__cache_on_fail(s, status)) { /* a stale stored response answers */
        weir__session_set_state(s, SS_RESP_HEAD);
        return;
    }
    s->generated = false;
    if (ops->error_while_proxy &&
        ops->error_while_proxy(s, s->ctx, status, reason) == WEIR_PHASE_ANSWERED && s->generated) {
        weir__session_set_state(s, SS_RESP_HEAD);
        return;
    }
    char body[160];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, weir__h1_reason(status));
    weir_header h = {WEIR_STR("Content-Type"), WEIR_STR("text/plain")};
    if (weir__session_set_generated(s, status, &h, 1, body, (size_t)n) < 0) {
        weir__session_set_state(s, SS_DONE);
        return;
    }
    weir__session_set_state(s, SS_RESP_HEAD);
}
