/*
 * session_api.c - the public session API (weir/session.h): what phases
 * read and change, generated responses, resuming, timers.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "core/log.h"
#include "net/tls.h"
#include "proxy/request_gate.h"
#include "proxy/session-t.h"

/* 128 random bits as 32 hex digits: per-thread xorshift128+ seeded from
 * the kernel, so ids are unpredictable enough for tracing and cost no
 * system call per request. */
static void make_request_id(char out[32])
{
    static __thread uint64_t st[2];
    if (!st[0] && !st[1]) {
        if (getrandom(st, sizeof(st), 0) != sizeof(st)) {
            st[0] = (uint64_t)(uintptr_t)&st ^ 0x9e3779b97f4a7c15ull;
            st[1] = (uint64_t)time(NULL) | 1;
        }
    }
    static const char hex[] = "0123456789abcdef";
    for (int k = 0; k < 2; k++) {
        uint64_t x = st[0], y = st[1];
        st[0] = y;
        x ^= x << 23;
        st[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
        uint64_t v = st[1] + y;
        for (int i = 0; i < 16; i++)
            out[k * 16 + i] = hex[(v >> (60 - 4 * i)) & 15];
    }
}

weir_str weir_session_request_id(weir_session *s)
{
    if (s->request_id.ptr)
        return s->request_id;
    weir_str given = weir_headers_get(&s->req.headers, "x-request-id");
    if (given.ptr && weir__request_id_ok(given)) {
        s->request_id = given;
        return given;
    }
    char *id = weir__arena_alloc(&s->arena, 32);
    if (!id)
        return (weir_str){"-", 1};
    make_request_id(id);
    s->request_id = (weir_str){id, 32};
    return s->request_id;
}

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

int weir__session_set_generated(weir_session *s, int status, const weir_header *headers, size_t n,
                                const void *body, size_t body_len)
{
    if (s->resp_started)
        return WEIR_ERR_INVAL;
    if (status >= 400 && is_grpc(s)) {
        bool own = false; /* the caller answers in gRPC's terms itself */
        for (size_t i = 0; i < n; i++)
            own = own || (headers[i].name.len == 12 &&
                          strncasecmp(headers[i].name.ptr, "content-type", 12) == 0 &&
                          headers[i].value.len >= 16 &&
                          strncasecmp(headers[i].value.ptr, "application/grpc", 16) == 0);
        if (!own)
            return set_generated_grpc(s, status, body, body_len);
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
    char *b = NULL;
    if (body_len) {
        b = weir__arena_alloc(&s->arena, body_len);
        if (!b)
            return WEIR_ERR_NOMEM;
        memcpy(b, body, body_len);
    }
    s->gen_body = (weir_str){b, body_len};
    bool head = s->req.method.len == 4 && memcmp(s->req.method.ptr, "HEAD", 4) == 0;
    bool no_body = head || status < 200 || status == 204 || status == 304;
    s->resp.body = no_body ? WEIR_BODY_NONE : WEIR_BODY_KNOWN;
    s->resp.content_length = body_len;
    if (no_body) {
        s->gen_body.len = 0;
        if (head) {
            char cl[24];
            int len = snprintf(cl, sizeof(cl), "%zu", body_len);
            weir__headers_push(
                &s->resp.headers, WEIR_STR("Content-Length"),
                (weir_str){weir__arena_dup(&s->arena, cl, (size_t)len), (size_t)len});
        }
    }
    s->generated = true;
    return WEIR_OK;
}

/* ---- public session API ---- */

weir_str weir_session_method(const weir_session *s)
{
    return s->req.method;
}

weir_str weir_session_target(const weir_session *s)
{
    return s->req.target;
}

weir_str weir_session_path(const weir_session *s)
{
    if (s->path.ptr)
        return s->path;
    const char *q = memchr(s->req.target.ptr, '?', s->req.target.len);
    return (weir_str){s->req.target.ptr, q ? (size_t)(q - s->req.target.ptr) : s->req.target.len};
}

weir_str weir_session_query(const weir_session *s)
{
    const char *q = memchr(s->req.target.ptr, '?', s->req.target.len);
    if (!q)
        return (weir_str){s->req.target.ptr + s->req.target.len, 0};
    return (weir_str){q + 1, s->req.target.len - (size_t)(q + 1 - s->req.target.ptr)};
}

weir_str weir_session_upstream_target(const weir_session *s)
{
    return s->up_target.ptr ? s->up_target : s->req.target;
}

weir_failure weir_session_failure(const weir_session *s)
{
    return s->failure;
}

bool weir_session_body_sent(const weir_session *s)
{
    return s->req_pump.moved > 0;
}

int weir_session_http_version(const weir_session *s)
{
    return s->req.version;
}

int weir_session_set_target(weir_session *s, const char *target, size_t len)
{
    if (len == 0)
        return WEIR_ERR_INVAL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)target[i];
        if (c <= 0x20 || c == 0x7f)
            return WEIR_ERR_INVAL;
    }
    const char *why;
    weir_str norm;
    int rc = weir__gate_target(&s->arena, (weir_str){target, len}, !s->svc->opts.keep_slashes,
                               &norm, &why);
    if (rc != WEIR_OK)
        return rc;
    if (norm.ptr == target && !(norm.ptr = weir__arena_dup(&s->arena, target, len)))
        return WEIR_ERR_NOMEM;
    s->up_target = norm;
    return WEIR_OK;
}

int weir_session_read_body(weir_session *s, size_t max_bytes, weir_session_body_cb cb)
{
    if (s->body_read_used || !cb || (s->state != SS_EARLY && s->state != SS_REQUEST))
        return WEIR_ERR_INVAL;
    s->body_read_used = true;
    s->body_cb = cb;
    s->body_max = max_bytes;
    if (s->req.body == WEIR_BODY_KNOWN && s->req.content_length > max_bytes)
        s->body_max = 0; /* the first byte fails it */
    /* Reading starts on the next round, after the phase returned PENDING
     * (an absent body completes at once there). */
    s->body_reading = true;
    weir__loop_defer(s->loop, weir__session_run_task, s);
    return WEIR_OK;
}

int weir_session_buffer_body(weir_session *s, size_t max_bytes)
{
    if (s->body_read_used || (s->state != SS_EARLY && s->state != SS_REQUEST))
        return WEIR_ERR_INVAL;
    s->buf_max = max_bytes;
    return WEIR_OK;
}

int weir_session_buffer_to_file(weir_session *s, uint64_t max_bytes, const char *dir)
{
    if (s->body_read_used || (s->state != SS_EARLY && s->state != SS_REQUEST) ||
        (max_bytes && !dir))
        return WEIR_ERR_INVAL;
    s->spill_max = max_bytes;
    s->spill_dir = dir;
    return WEIR_OK;
}

int weir_session_set_body_limit(weir_session *s, uint64_t max_bytes)
{
    s->body_limit = max_bytes;
    return WEIR_OK;
}

const struct sockaddr *weir_session_client_addr(const weir_session *s)
{
    return s->client_addr;
}

weir_str weir_session_client_ip(const weir_session *s)
{
    return (weir_str){s->client_ip, s->client_ip_len};
}

weir_str weir_session_peer_ip(const weir_session *s)
{
    return (weir_str){s->peer_ip, s->peer_ip_len};
}

void weir_session_set_client_timeout(weir_session *s, uint32_t ms)
{
    s->client_idle_ms = ms;
}

bool weir_session_tls(const weir_session *s, weir_tls_info *out)
{
    SSL *ssl = s->down_ssl;
    if (!ssl) {
        memset(out, 0, sizeof(*out));
        return false;
    }
    out->version = SSL_get_version(ssl);
    out->cipher = SSL_get_cipher_name(ssl);
    out->sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    out->alpn = weir__tls_alpn(ssl);
    out->resumed = SSL_session_reused(ssl);
    X509 *peer = SSL_get0_peer_certificate(ssl);
    out->client_verified = peer && SSL_get_verify_result(ssl) == X509_V_OK;
    return true;
}

weir_headers *weir_session_req_headers(weir_session *s)
{
    return &s->req.headers;
}

weir_headers *weir_session_resp_headers(weir_session *s)
{
    return s->resp.status ? &s->resp.headers : NULL;
}

int weir_session_resp_status(const weir_session *s)
{
    return s->resp.status;
}

int weir_session_set_resp_status(weir_session *s, int status)
{
    if (status < 100 || status > 999 || s->resp_started || s->resp.status == 0)
        return WEIR_ERR_INVAL;
    s->resp.status = status;
    s->resp.reason = WEIR_STR_NULL;
    return WEIR_OK;
}

int weir_session_respond(weir_session *s, int status, const weir_header *headers, size_t n_headers,
                         const void *body, size_t body_len)
{
    if (status < 100 || status > 999)
        return WEIR_ERR_INVAL;
    return weir__session_set_generated(s, status, headers, n_headers, body, body_len);
}

static void resume_task(void *arg)
{
    weir_session *s = arg;
    if (!s->pending)
        return;
    s->pending = false;
    if (s->state == SS_DONE) {
        /* Aborted while the phase was pending. */
        if (!s->running)
            weir__session_finish(s);
        return;
    }
    s->have_result = true;
    weir__session_run(s);
}

void weir_session_resume(weir_session *s, weir_phase_result result)
{
    s->result = result;
    if (weir__loop_current() == s->loop)
        weir__loop_defer(s->loop, resume_task, s);
    else
        weir__loop_post(s->loop, resume_task, s);
}

static void user_timer_cb(weir_timer *t)
{
    weir_session *s = weir_container_of(t, weir_session, user_timer);
    s->user_cb(s, s->ctx);
}

int weir_session_set_timer(weir_session *s, uint32_t delay_ms, weir_session_timer_cb cb)
{
    s->user_cb = cb;
    weir__timer_start(s->loop, &s->user_timer, delay_ms, user_timer_cb);
    return WEIR_OK;
}

void *weir_session_alloc(weir_session *s, size_t len)
{
    return weir__arena_alloc(&s->arena, len);
}

int weir_session_worker(const weir_session *s)
{
    return weir__loop_id(s->loop);
}

void *weir_session_ctx(const weir_session *s)
{
    return s->ctx;
}
