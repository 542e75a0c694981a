/*
 * weir-lb-app.c - a load-balancing proxy on the public API (weir/weir.h),
 * for the runtime-membership integration tests (tests/integration/test_lb.py).
 *
 *     weir-lb-app LISTEN_ADDR BACKEND [BACKEND...]
 *
 * BACKEND is "ip:port" (weight 1). The backends form one weir_upstream
 * "lb" (round_robin, default breaker: 3 consecutive failures, 10 s); two
 * worker threads; SIGTERM/SIGINT stop it gracefully (handle_signals).
 *
 * Control requests, answered by request_filter itself (never proxied):
 *
 *   POST /_lb/remove?addr=IP:PORT             weir_upstream_remove
 *   POST /_lb/add?addr=IP:PORT&weight=N       weir_upstream_add (weight defaults to 1)
 *   POST /_lb/drain?addr=IP:PORT              weir_upstream_set_drain(true)
 *   POST /_lb/undrain?addr=IP:PORT            weir_upstream_set_drain(false)
 *   POST /_lb/weight?addr=IP:PORT&weight=N    weir_upstream_set_weight
 *
 *   each answers 200 "ok\n", or 400 "error: WHY\n" (missing or bad
 *   parameter, or the weir_upstream_* call failed; WHY names the error).
 *
 *   GET /_lb/info   200, one line per member, in membership order:
 *       "addr weight healthy draining breaker in_flight requests failures
 *        conns_new conns_reused\n"
 *   healthy and draining are 0/1, breaker is closed, open or half_open.
 *
 *   Any other /_lb/ request is answered 404.
 *
 * Everything else is proxied: upstream_peer selects with
 * weir_upstream_select (no usable backend left: 503 "no backend\n");
 * connected_to_upstream counts new/reused connections; fail_to_connect
 * (connect failure, or a reset before any response byte) reports FAILED and
 * retries on a backend this request has not tried yet; logging reports the
 * outcome (client aborted: NOT_RELEVANT, status >= 500: FAILED, else OK).
 * The per-request context lives in weir_session_alloc memory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weir/weir.h>

#define MAX_TRIED 16
#define MAX_INFO 256

typedef struct lb_ctx {
    weir_upstream *u;
    weir_backend *backend; /* the current attempt's backend (a reference) */
    uint64_t tried[MAX_TRIED];
    size_t n_tried;
} lb_ctx;

static bool str_is(weir_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.ptr, lit, n) == 0;
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* The percent-decoded value of query parameter `name` into out (NUL-
 * terminated). Returns false if absent, empty, malformed or too long. */
static bool query_param(weir_str q, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name), i = 0;
    while (i < q.len) {
        size_t end = i;
        while (end < q.len && q.ptr[end] != '&')
            end++;
        if (end - i > nlen && memcmp(q.ptr + i, name, nlen) == 0 && q.ptr[i + nlen] == '=') {
            size_t o = 0;
            for (size_t k = i + nlen + 1; k < end; k++) {
                char ch = q.ptr[k];
                if (ch == '%') {
                    if (k + 2 >= end)
                        return false;
                    int hi = hex_digit(q.ptr[k + 1]), lo = hex_digit(q.ptr[k + 2]);
                    if (hi < 0 || lo < 0)
                        return false;
                    ch = (char)(hi * 16 + lo);
                    k += 2;
                }
                if (o + 1 >= cap)
                    return false;
                out[o++] = ch;
            }
            out[o] = '\0';
            return o > 0;
        }
        i = end + 1;
    }
    return false;
}

static weir_phase_result reply(weir_session *s, int status, const char *body, size_t len)
{
    weir_header h = {WEIR_STR("Content-Type"), WEIR_STR("text/plain")};
    if (weir_session_respond(s, status, &h, 1, body, len) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_ANSWERED;
}

static weir_phase_result reply_text(weir_session *s, int status, const char *text)
{
    return reply(s, status, text, strlen(text));
}

static const char *error_name(int rc)
{
    switch (rc) {
    case WEIR_ERR_INVAL:
        return "invalid argument";
    case WEIR_ERR_NOMEM:
        return "out of memory";
    default:
        return "failed";
    }
}

static weir_phase_result reply_rc(weir_session *s, int rc)
{
    if (rc == WEIR_OK)
        return reply_text(s, 200, "ok\n");
    char body[128];
    int n = snprintf(body, sizeof(body), "error: %s (%d)\n", error_name(rc), rc);
    return reply(s, 400, body, (size_t)n);
}

static const char *breaker_name(weir_breaker_state st)
{
    switch (st) {
    case WEIR_BREAKER_CLOSED:
        return "closed";
    case WEIR_BREAKER_OPEN:
        return "open";
    case WEIR_BREAKER_HALF_OPEN:
        return "half_open";
    }
    return "?";
}

static weir_phase_result info(weir_session *s, weir_upstream *u)
{
    weir_backend_info *v = malloc(MAX_INFO * sizeof(*v));
    size_t cap = MAX_INFO * 200;
    char *out = malloc(cap);
    if (!v || !out) {
        free(v);
        free(out);
        return reply_text(s, 500, "error: out of memory\n");
    }
    size_t n = weir_upstream_info(u, v, MAX_INFO), len = 0;
    for (size_t i = 0; i < n && i < MAX_INFO; i++) {
        const weir_backend_info *b = &v[i];
        int k = snprintf(out + len, cap - len, "%s %u %d %d %s %llu %llu %llu %llu %llu\n", b->addr,
                         b->weight, b->healthy ? 1 : 0, b->draining ? 1 : 0,
                         breaker_name(b->breaker), (unsigned long long)b->in_flight,
                         (unsigned long long)b->requests, (unsigned long long)b->failures,
                         (unsigned long long)b->conns_new, (unsigned long long)b->conns_reused);
        if (k < 0 || (size_t)k >= cap - len)
            break;
        len += (size_t)k;
    }
    weir_phase_result r = reply(s, 200, out, len);
    free(v);
    free(out);
    return r;
}

/* A /_lb/ control request. */
static weir_phase_result control(weir_session *s, lb_ctx *c, weir_str path)
{
    weir_str method = weir_session_method(s), q = weir_session_query(s);
    weir_str op = {path.ptr + 5, path.len - 5}; /* after "/_lb/" */
    if (str_is(op, "info")) {
        if (!str_is(method, "GET"))
            return reply_text(s, 400, "error: use GET\n");
        return info(s, c->u);
    }
    bool add = str_is(op, "add"), weight = str_is(op, "weight");
    bool remove = str_is(op, "remove"), drain = str_is(op, "drain");
    bool undrain = str_is(op, "undrain");
    if (!add && !weight && !remove && !drain && !undrain)
        return reply_text(s, 404, "error: unknown control request\n");
    if (!str_is(method, "POST"))
        return reply_text(s, 400, "error: use POST\n");
    char addr[128], wbuf[32];
    if (!query_param(q, "addr", addr, sizeof(addr)))
        return reply_text(s, 400, "error: missing addr\n");
    long w = 1;
    if (query_param(q, "weight", wbuf, sizeof(wbuf))) {
        char *end;
        w = strtol(wbuf, &end, 10);
        if (*end || w < 0 || w > 1000000)
            return reply_text(s, 400, "error: bad weight\n");
    } else if (weight) {
        return reply_text(s, 400, "error: missing weight\n");
    }
    int rc;
    if (add)
        rc = weir_upstream_add(c->u, addr, (uint32_t)w);
    else if (weight)
        rc = weir_upstream_set_weight(c->u, addr, (uint32_t)w);
    else if (remove)
        rc = weir_upstream_remove(c->u, addr);
    else
        rc = weir_upstream_set_drain(c->u, addr, drain);
    return reply_rc(s, rc);
}

static void *new_ctx(weir_session *s, void *app)
{
    lb_ctx *c = weir_session_alloc(s, sizeof(*c));
    if (!c)
        return NULL;
    memset(c, 0, sizeof(*c));
    c->u = app;
    return c;
}

static void free_ctx(void *app, void *ctx)
{
    lb_ctx *c = ctx;
    (void)app;
    if (c && c->backend) { /* logging did not report it */
        weir_backend_done(c->backend, WEIR_BACKEND_NOT_RELEVANT);
        c->backend = NULL;
    }
}

static weir_phase_result request_filter(weir_session *s, void *ctx)
{
    lb_ctx *c = ctx;
    if (!c)
        return WEIR_PHASE_ERROR;
    weir_str path = weir_session_path(s);
    if (path.len >= 5 && memcmp(path.ptr, "/_lb/", 5) == 0)
        return control(s, c, path);
    return WEIR_PHASE_CONTINUE;
}

static weir_phase_result upstream_peer(weir_session *s, void *ctx, weir_peer *peer)
{
    lb_ctx *c = ctx;
    weir_backend *b = weir_upstream_select(c->u, 0, c->tried, c->n_tried);
    if (!b)
        return reply_text(s, 503, "no backend\n");
    c->backend = b;
    weir_backend_peer(b, peer);
    return WEIR_PHASE_CONTINUE;
}

static void connected_to_upstream(weir_session *s, void *ctx, const weir_peer *peer, bool reused)
{
    lb_ctx *c = ctx;
    (void)s;
    (void)peer;
    if (c && c->backend)
        weir_backend_note_connection(c->backend, reused);
}

static bool fail_to_connect(weir_session *s, void *ctx, const weir_peer *peer, int error,
                            int attempt)
{
    lb_ctx *c = ctx;
    (void)s;
    (void)peer;
    (void)error;
    (void)attempt;
    if (!c)
        return false;
    if (c->backend) {
        if (c->n_tried < MAX_TRIED)
            c->tried[c->n_tried++] = weir_backend_id(c->backend);
        weir_backend_done(c->backend, WEIR_BACKEND_FAILED);
        c->backend = NULL;
    }
    return c->n_tried < MAX_TRIED; /* upstream_peer avoids every tried backend */
}

static void logging(weir_session *s, void *ctx, const weir_session_stats *st)
{
    lb_ctx *c = ctx;
    (void)s;
    if (!c || !c->backend)
        return;
    weir_backend_outcome o = st->client_aborted  ? WEIR_BACKEND_NOT_RELEVANT
                             : st->status >= 500 ? WEIR_BACKEND_FAILED
                                                 : WEIR_BACKEND_OK;
    weir_backend_done(c->backend, o);
    c->backend = NULL;
}

static const weir_proxy_ops ops = {
    .new_ctx = new_ctx,
    .free_ctx = free_ctx,
    .request_filter = request_filter,
    .upstream_peer = upstream_peer,
    .connected_to_upstream = connected_to_upstream,
    .fail_to_connect = fail_to_connect,
    .logging = logging,
};

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s LISTEN_ADDR BACKEND [BACKEND...]\n", argv[0]);
        return 2;
    }
    weir_upstream_options uo = {
        .algo = WEIR_LB_ROUND_ROBIN, .max_fails = 3, .fail_timeout_ms = 10000};
    weir_upstream *u = weir_upstream_new("lb", &uo);
    if (!u) {
        fprintf(stderr, "%s: out of memory\n", argv[0]);
        return 1;
    }
    for (int i = 2; i < argc; i++) {
        int rc = weir_upstream_add(u, argv[i], 1);
        if (rc != WEIR_OK) {
            fprintf(stderr, "%s: cannot add backend %s: %s\n", argv[0], argv[i], error_name(rc));
            weir_upstream_free(u);
            return 2;
        }
    }
    weir_server_options opts = {.threads = 2, .handle_signals = true};
    weir_server *srv = weir_server_new(&opts);
    const char *listen[] = {argv[1]};
    if (!srv || weir_server_add_proxy(srv, listen, 1, &ops, u, NULL) != WEIR_OK) {
        fprintf(stderr, "%s: cannot listen on %s\n", argv[0], argv[1]);
        weir_server_free(srv);
        weir_upstream_free(u);
        return 1;
    }
    int rc = weir_server_run(srv);
    weir_server_free(srv);
    weir_upstream_free(u);
    return rc == WEIR_OK ? 0 : 1;
}
