/*
 * proxy_app.c - the weir program's phases (see proxy_app.h).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "app/proxy_app.h"

#include <pcre2.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strings.h>

#include "app/access_log.h"
#include "app/metrics.h"
#include "app/route.h"

#define MAX_SERVERS 64

/* One per [servers.NAME]: what its service's phases need. */
typedef struct server_app {
    weir_app *app;
    size_t index;         /* of the server in the configuration it was made for */
    char name[128];       /* the [servers.NAME] it serves, looked up in each snapshot */
    weir_logger *logger;  /* NULL = no access log */
    weir_tls_server *tls; /* its listeners' TLS (kept across reloads), NULL = plain */
} server_app;

#define MAX_RETIRED 16
#define RETIRE_GRACE_MS 2000

struct weir_app {
    _Atomic(weir_config *) current;
    server_app servers[MAX_SERVERS];
    _Atomic size_t n_servers; /* grows on reloads (main thread); read anywhere */
    /* Snapshots replaced by reloads keep the app's reference for a grace
     * period: a request that loaded the pointer just before the swap takes
     * its own reference within nanoseconds, so the old snapshot must not be
     * freed under it. Main thread only (reloads run there). */
    weir_config *retired[MAX_RETIRED];
    uint64_t retired_at[MAX_RETIRED];
    size_t n_retired;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Drops the app's reference to retired snapshots past their grace period
 * (all of them with force). */
static void release_retired(weir_app *app, bool force)
{
    uint64_t now = mono_ms();
    size_t keep = 0;
    for (size_t i = 0; i < app->n_retired; i++) {
        if (force || now - app->retired_at[i] >= RETIRE_GRACE_MS) {
            weir__config_unref(app->retired[i]);
        } else {
            app->retired[keep] = app->retired[i];
            app->retired_at[keep] = app->retired_at[i];
            keep++;
        }
    }
    app->n_retired = keep;
}

static void retire(weir_app *app, weir_config *old)
{
    release_retired(app, false);
    if (app->n_retired == MAX_RETIRED) {
        /* Sixteen reloads within the grace period: the oldest is safely
         * past every request start by now in practice; drop it. */
        weir__config_unref(app->retired[0]);
        memmove(app->retired, app->retired + 1, (MAX_RETIRED - 1) * sizeof(app->retired[0]));
        memmove(app->retired_at, app->retired_at + 1,
                (MAX_RETIRED - 1) * sizeof(app->retired_at[0]));
        app->n_retired--;
    }
    app->retired[app->n_retired] = old;
    app->retired_at[app->n_retired] = mono_ms();
    app->n_retired++;
}

#define MAX_TRIED 16

typedef struct req_ctx {
    weir_config *cfg; /* pinned for the request */
    weir_cfg_server *srv;
    weir_cfg_location *loc;
    server_app *sa;
    weir_backend *backend;     /* the backend of the current attempt (a reference) */
    uint64_t tried[MAX_TRIED]; /* ids of backends that failed this request */
    size_t n_tried;
    weir_backend *next; /* chosen for a retry after a 5xx status (a reference), or NULL */
    uint64_t start_ms;  /* for retry_timeout (set only when it is) */
    bool set_sticky;    /* the response sets the sticky cookie */
    bool grpc;          /* a gRPC request on a location with grpc_idle_timeout */
} req_ctx;

static weir_phase_result answer(weir_session *s, int status, const char *text)
{
    if (status >= 500) {
        /* Every 5xx weir makes itself leaves a line to find it by. */
        weir_str id = weir_session_request_id(s), ip = weir_session_client_ip(s);
        weir_str m = weir_session_method(s), t = weir_session_target(s);
        weir_log(WEIR_LEVEL_WARN, "client %.*s: \"%.*s %.*s\": %d %s (request %.*s)", (int)ip.len,
                 ip.ptr, (int)m.len, m.ptr, (int)(t.len > 200 ? 200 : t.len), t.ptr, status, text,
                 (int)id.len, id.ptr);
    }
    char body[128];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, text);
    weir_header h = {WEIR_STR("Content-Type"), WEIR_STR("text/plain")};
    if (weir_session_respond(s, status, &h, 1, body, (size_t)n) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_ANSWERED;
}

/* The server of sa in snapshot cfg: by position when nothing moved, else
 * by name; NULL if a reload removed it (its last connections finish). */
static weir_cfg_server *find_server(weir_config *cfg, server_app *sa)
{
    if (sa->index < cfg->n_servers && strcmp(cfg->servers[sa->index].name, sa->name) == 0)
        return &cfg->servers[sa->index];
    for (size_t i = 0; i < cfg->n_servers; i++) {
        if (strcmp(cfg->servers[i].name, sa->name) == 0)
            return &cfg->servers[i];
    }
    return NULL;
}

static void *new_ctx(weir_session *s, void *app)
{
    server_app *sa = app;
    req_ctx *c = weir_session_alloc(s, sizeof(*c));
    if (!c)
        return NULL;
    memset(c, 0, sizeof(*c));
    c->sa = sa;
    c->cfg = weir__config_ref(atomic_load_explicit(&sa->app->current, memory_order_acquire));
    c->srv = find_server(c->cfg, sa);
    return c;
}

static void free_ctx(void *app, void *ctx)
{
    req_ctx *c = ctx;
    if (!c)
        return;
    if (c->backend) /* logging did not run (cannot happen) or failed early */
        weir_backend_done(c->backend, WEIR_BACKEND_NOT_RELEVANT);
    if (c->next)
        weir_backend_done(c->next, WEIR_BACKEND_NOT_RELEVANT);
    weir__config_unref(c->cfg);
}

static weir_phase_result echo(weir_session *s, req_ctx *c)
{
    char body[600];
    weir_str m = weir_session_method(s), t = weir_session_target(s);
    const char *addr = c->srv->n_addrs ? c->srv->addrs[0] : "-";
    int n = snprintf(body, sizeof(body), "echo from %s: %.*s %.*s\n", addr, (int)m.len, m.ptr,
                     (int)(t.len > 256 ? 256 : t.len), t.ptr);
    weir_header h[] = {{WEIR_STR("Content-Type"), WEIR_STR("text/plain")},
                       {WEIR_STR("X-Echo-Upstream"), {addr, strlen(addr)}}};
    if (weir_session_respond(s, 200, h, 2, body, (size_t)n) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_ANSWERED;
}

/* Applies the location's rewrite to the normalised path; the query is
 * kept. The result is normalised again by weir_session_set_target, so a
 * capture cannot climb out of the rewritten prefix. Returns WEIR_OK,
 * WEIR_ERR_NOMEM for a result over 8 KiB, or WEIR_ERR_INVAL. */
static int rewrite(weir_session *s, const weir_cfg_location *l)
{
    weir_str path = weir_session_path(s), query = weir_session_query(s);
    char out[8192];
    PCRE2_SIZE out_len = sizeof(out);
    /* UNSET_EMPTY: an optional group that did not match is "" (as nginx). */
    int rc = pcre2_substitute(l->rewrite_re, (PCRE2_SPTR)path.ptr, path.len, 0,
                              PCRE2_SUBSTITUTE_UNSET_EMPTY, weir__thread_match_data(), NULL,
                              (PCRE2_SPTR)l->rewrite_repl, PCRE2_ZERO_TERMINATED,
                              (PCRE2_UCHAR *)out, &out_len);
    if (rc == 0)
        return WEIR_OK; /* no match: path unchanged */
    if (rc == PCRE2_ERROR_NOMEMORY || (rc > 0 && out_len + 1 + query.len >= sizeof(out)))
        return WEIR_ERR_NOMEM;
    if (rc < 0)
        return WEIR_ERR_INVAL;
    weir_str target = weir_session_target(s);
    if (memchr(target.ptr, '?', target.len)) { /* "?" alone is kept too */
        out[out_len++] = '?';
        memcpy(out + out_len, query.ptr, query.len);
        out_len += query.len;
    }
    if (out_len == 0 || out[0] != '/')
        return WEIR_ERR_INVAL;
    return weir_session_set_target(s, out, out_len);
}

/* 301 to the same host and target over https (the Host's port replaced
 * by https_port, omitted when 443). */
static weir_phase_result redirect_https(weir_session *s, weir_str host, uint32_t port)
{
    if (host.len == 0 || host.len > 255)
        return answer(s, 400, "Bad Request");
    size_t hl = host.len;
    if (host.ptr[0] == '[') { /* [v6]:port */
        const char *e = memchr(host.ptr, ']', host.len);
        if (e)
            hl = (size_t)(e - host.ptr) + 1;
    } else {
        const char *colon = memchr(host.ptr, ':', host.len);
        if (colon)
            hl = (size_t)(colon - host.ptr);
    }
    weir_str target = weir_session_target(s);
    size_t cap = hl + target.len + 32;
    char *loc = weir_session_alloc(s, cap);
    if (!loc)
        return WEIR_PHASE_ERROR;
    int n = port == 443 ? snprintf(loc, cap, "https://%.*s", (int)hl, host.ptr)
                        : snprintf(loc, cap, "https://%.*s:%u", (int)hl, host.ptr, port);
    memcpy(loc + n, target.ptr, target.len);
    weir_header h[2] = {{WEIR_STR("Location"), {loc, (size_t)n + target.len}},
                        {WEIR_STR("Content-Type"), WEIR_STR("text/plain")}};
    static const char body[] = "301 Moved Permanently\n";
    if (weir_session_respond(s, 301, h, 2, body, sizeof(body) - 1) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_ANSWERED;
}

static weir_phase_result request_filter(weir_session *s, void *ctx)
{
    req_ctx *c = ctx;
    if (!c)
        return WEIR_PHASE_ERROR;
    if (!c->srv)
        return answer(s, 503, "Service Unavailable"); /* server removed by a reload */
    weir_str host = weir_headers_get(weir_session_req_headers(s), "host");
    if (c->srv->redirect_https)
        return redirect_https(s, host, c->srv->https_port);
    c->loc = weir__router_match(c->srv->router, host, weir_session_path(s));
    if (!c->loc)
        return answer(s, 404, "Not Found");
    if (c->loc->echo)
        return echo(s, c);
    if (c->loc->has_max_body)
        weir_session_set_body_limit(s, c->loc->client_max_body_size);
    if (c->loc->upstream && c->loc->upstream->retry_timeout_ms)
        c->start_ms = mono_ms();
    if (c->loc->grpc_idle_timeout_ms) {
        weir_str ct = weir_headers_get(weir_session_req_headers(s), "content-type");
        c->grpc = ct.len >= 16 && strncasecmp(ct.ptr, "application/grpc", 16) == 0;
        if (c->grpc) /* a stream may be quiet for long: not the HTTP limits */
            weir_session_set_client_timeout(s, c->loc->grpc_idle_timeout_ms);
    }
    if (c->loc->request_buffer_bytes) {
        /* Streams (gRPC) must flow as they come; everything else is read
         * first, so a slow client holds no backend connection. */
        weir_str ct = weir_headers_get(weir_session_req_headers(s), "content-type");
        if (!(ct.len >= 16 && strncasecmp(ct.ptr, "application/grpc", 16) == 0)) {
            weir_session_buffer_body(s, (size_t)c->loc->request_buffer_bytes);
            if (c->loc->request_buffer_file_bytes)
                weir_session_buffer_to_file(s, c->loc->request_buffer_file_bytes,
                                            c->cfg->basic.temp_dir);
        }
    }
    if (c->loc->rewrite_re) {
        int rc = rewrite(s, c->loc);
        weir_str id = weir_session_request_id(s);
        if (rc == WEIR_ERR_NOMEM) {
            weir_log(WEIR_LEVEL_WARN, "location %s: rewritten target over 8 KiB (request %.*s)",
                     c->loc->name, (int)id.len, id.ptr);
            return answer(s, 414, "URI Too Long");
        }
        if (rc != WEIR_OK) {
            /* The captures come from the client's path: its request. */
            weir_log(WEIR_LEVEL_WARN,
                     "location %s: the rewritten target is not a safe path (request %.*s)",
                     c->loc->name, (int)id.len, id.ptr);
            return answer(s, 400, "Bad Request");
        }
    }
    return WEIR_PHASE_CONTINUE;
}

/* Finds "name=value" in a Cookie header; returns the value or an empty str. */
static weir_str cookie_value(weir_headers *h, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < weir_headers_count(h); i++) {
        weir_header f = weir_headers_at(h, i);
        if (f.name.len != 6 || strncasecmp(f.name.ptr, "cookie", 6) != 0)
            continue;
        const char *p = f.value.ptr, *end = p + f.value.len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *eq = memchr(p, '=', (size_t)(end - p));
            const char *semi = memchr(p, ';', (size_t)(end - p));
            if (!semi)
                semi = end;
            if (eq && eq < semi && (size_t)(eq - p) == nl && memcmp(p, name, nl) == 0)
                return (weir_str){eq + 1, (size_t)(semi - eq - 1)};
            p = semi;
        }
    }
    return (weir_str){"", 0};
}

/* The value of query parameter `name`, or an empty str. */
static weir_str query_value(weir_str q, const char *name)
{
    size_t nl = strlen(name);
    const char *p = q.ptr, *end = q.ptr + q.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        if (!amp)
            amp = end;
        if ((size_t)(amp - p) > nl && p[nl] == '=' && memcmp(p, name, nl) == 0)
            return (weir_str){p + nl + 1, (size_t)(amp - p - nl - 1)};
        if ((size_t)(amp - p) == nl && memcmp(p, name, nl) == 0)
            return (weir_str){p + nl, 0};
        p = amp + 1;
    }
    return (weir_str){"", 0};
}

/* The consistent-hash key of the request. */
static uint64_t hash_key(weir_session *s, const weir_cfg_upstream *u)
{
    weir_str v = {"", 0};
    switch (u->hash_key) {
    case WEIR_HASH_NONE:
        return 0;
    case WEIR_HASH_IP:
        v = weir_session_client_ip(s);
        break;
    case WEIR_HASH_URI:
        v = weir_session_target(s);
        break;
    case WEIR_HASH_PATH:
        v = weir_session_path(s);
        break;
    case WEIR_HASH_HEADER:
        v = weir_headers_get(weir_session_req_headers(s), u->hash_name);
        break;
    case WEIR_HASH_COOKIE:
        v = cookie_value(weir_session_req_headers(s), u->hash_name);
        break;
    case WEIR_HASH_QUERY:
        v = query_value(weir_session_query(s), u->hash_name);
        break;
    }
    return weir_lb_hash(v.ptr ? v.ptr : "", v.ptr ? v.len : 0);
}

/* The sticky backend named by the request's cookie, if usable. */
static weir_backend *sticky_backend(weir_session *s, const weir_cfg_upstream *u)
{
    weir_str v = cookie_value(weir_session_req_headers(s), u->sticky_cookie);
    if (v.len != 16)
        return NULL;
    uint64_t id = 0;
    for (size_t i = 0; i < 16; i++) {
        char ch = v.ptr[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (d < 0)
            return NULL;
        id = id << 4 | (uint64_t)d;
    }
    return weir_upstream_find(u->lb, id);
}

/* RFC 9110 9.2.2: sending these twice does what sending them once does. */
static bool idempotent(weir_str m)
{
    static const char *const v[] = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        if (m.len == strlen(v[i]) && memcmp(m.ptr, v[i], m.len) == 0)
            return true;
    }
    return false;
}

/* The failures beyond connect and reset the library asks about: a timeout
 * or a 5xx may mean the backend did the work, so only idempotent requests
 * are sent again unless non_idempotent says otherwise (as nginx). */
static uint8_t retry_bits(weir_session *s, const weir_cfg_upstream *u)
{
    if (u->max_retries == 0 ||
        (!(u->retry_on & WEIR_CFG_RETRY_NON_IDEMPOTENT) && !idempotent(weir_session_method(s))))
        return 0;
    uint8_t r = 0;
    if (u->retry_on & WEIR_CFG_RETRY_TIMEOUT)
        r |= WEIR_RETRY_TIMEOUT;
    if (u->retry_on & WEIR_CFG_RETRY_502)
        r |= WEIR_RETRY_502;
    if (u->retry_on & WEIR_CFG_RETRY_503)
        r |= WEIR_RETRY_503;
    if (u->retry_on & WEIR_CFG_RETRY_504)
        r |= WEIR_RETRY_504;
    return r;
}

static weir_phase_result upstream_peer(weir_session *s, void *ctx, weir_peer *peer)
{
    req_ctx *c = ctx;
    const weir_cfg_location *l = c->loc;
    const weir_cfg_upstream *u = l ? l->upstream : NULL;
    if (!u || !u->lb)
        return answer(s, 503, "Service Unavailable");
    weir_backend *b = c->next; /* a retry after a 5xx status chose it already */
    c->next = NULL;
    bool from_cookie = false;
    if (!b && u->sticky_cookie && c->n_tried == 0) {
        b = sticky_backend(s, u);
        from_cookie = b != NULL;
    }
    if (!b)
        b = weir_upstream_select(u->lb, hash_key(s, u), c->tried, c->n_tried);
    /* Any backend but the cookie's (first pick or a retry) re-pins the client. */
    c->set_sticky = u->sticky_cookie && !from_cookie;
    if (!b) {
        /* Nothing usable: at once 503, or after this request's failures
         * what the last one was: 504 for a timeout, else 502. */
        if (c->n_tried && weir_session_failure(s) == WEIR_FAILURE_TIMEOUT)
            return answer(s, 504, "Gateway Timeout");
        if (c->n_tried)
            return answer(s, 502, "Bad Gateway");
        return answer(s, 503, "Service Unavailable");
    }
    c->backend = b;
    weir_backend_peer(b, peer);
    /* Location settings win over the upstream's, which win over the
     * server's defaults already in *peer. */
    if (u->connection_timeout_ms)
        peer->connect_timeout_ms = u->connection_timeout_ms;
    if (l->connect_timeout_ms)
        peer->connect_timeout_ms = l->connect_timeout_ms;
    if (u->read_timeout_ms)
        peer->read_timeout_ms = u->read_timeout_ms;
    if (l->read_timeout_ms)
        peer->read_timeout_ms = l->read_timeout_ms;
    if (u->write_timeout_ms)
        peer->write_timeout_ms = u->write_timeout_ms;
    if (l->write_timeout_ms)
        peer->write_timeout_ms = l->write_timeout_ms;
    if (u->idle_timeout_ms)
        peer->idle_timeout_ms = u->idle_timeout_ms;
    if (c->grpc)
        peer->read_timeout_ms = peer->write_timeout_ms = l->grpc_idle_timeout_ms;
    /* total_connection_timeout bounds the whole connection set-up (TCP and
     * the TLS handshake), as in Pingora. */
    if (u->total_connection_timeout_ms && u->total_connection_timeout_ms < peer->connect_timeout_ms)
        peer->connect_timeout_ms = u->total_connection_timeout_ms;
    peer->keepalive = u->keepalive;
    peer->retry_on = retry_bits(s, u);
    peer->queue_timeout_ms = u->queue_timeout_ms;
    peer->h2 = u->h2;
    peer->h2_or_h1 = u->h2_or_h1;
    if (u->tls) {
        peer->tls = true;
        peer->tls_client = u->tls_client;
        if (u->sni)
            snprintf(peer->sni, sizeof(peer->sni), "%s", u->sni);
    }
    return WEIR_PHASE_CONTINUE;
}

static bool fail_to_connect(weir_session *s, void *ctx, const weir_peer *peer, int error,
                            int attempt)
{
    req_ctx *c = ctx;
    const weir_cfg_upstream *u = c->loc ? c->loc->upstream : NULL;
    if (c->backend) {
        if (c->n_tried < MAX_TRIED)
            c->tried[c->n_tried++] = weir_backend_id(c->backend);
        weir_backend_done(c->backend, WEIR_BACKEND_FAILED);
        c->backend = NULL;
    }
    if (!u || (uint32_t)attempt > u->max_retries || c->n_tried >= MAX_TRIED)
        return false;
    weir_failure kind = weir_session_failure(s);
    uint32_t need = kind == WEIR_FAILURE_CONNECT   ? WEIR_CFG_RETRY_CONNECT
                    : kind == WEIR_FAILURE_RESET   ? WEIR_CFG_RETRY_RESET
                    : kind == WEIR_FAILURE_TIMEOUT ? WEIR_CFG_RETRY_TIMEOUT
                    : kind == WEIR_FAILURE_STATUS
                        ? WEIR_CFG_RETRY_502 | WEIR_CFG_RETRY_503 | WEIR_CFG_RETRY_504
                        : 0;
    if (!(u->retry_on & need))
        return false;
    /* A reset after the body went out may come after the backend acted on
     * it: sent again only if doing so twice is harmless. */
    if (kind == WEIR_FAILURE_RESET && weir_session_body_sent(s) &&
        !(u->retry_on & WEIR_CFG_RETRY_NON_IDEMPOTENT) && !idempotent(weir_session_method(s)))
        return false;
    if (u->retry_timeout_ms && mono_ms() - c->start_ms >= u->retry_timeout_ms)
        return false;
    if (kind == WEIR_FAILURE_STATUS) {
        /* The backend's answer is dropped only if another backend takes
         * the request; else the client gets that answer. */
        c->next = weir_upstream_select(u->lb, hash_key(s, u), c->tried, c->n_tried);
        return c->next != NULL;
    }
    /* upstream_peer picks another backend, each at most once. */
    return true;
}

static void connected_to_upstream(weir_session *s, void *ctx, const weir_peer *peer, bool reused)
{
    req_ctx *c = ctx;
    if (c && c->backend)
        weir_backend_note_connection(c->backend, reused);
}

static void apply_headers(weir_headers *h, const weir_cfg_location *l, bool request)
{
    const weir_cfg_headers *rm = request ? &l->proxy_remove : &l->resp_remove;
    const weir_cfg_headers *set = request ? &l->proxy_set : &l->resp_set;
    const weir_cfg_headers *add = request ? &l->proxy_add : &l->resp_add;
    for (size_t i = 0; i < rm->n; i++)
        weir_headers_remove(h, rm->v[i].name);
    for (size_t i = 0; i < set->n; i++)
        weir_headers_set(h, set->v[i].name, set->v[i].value);
    for (size_t i = 0; i < add->n; i++)
        weir_headers_add(h, add->v[i].name, add->v[i].value);
}

static weir_phase_result upstream_request_filter(weir_session *s, void *ctx)
{
    req_ctx *c = ctx;
    if (c->loc)
        apply_headers(weir_session_req_headers(s), c->loc, true);
    return WEIR_PHASE_CONTINUE;
}

static weir_phase_result response_filter(weir_session *s, void *ctx)
{
    req_ctx *c = ctx;
    weir_headers *h = weir_session_resp_headers(s);
    if (c && c->loc && h && !c->loc->echo)
        apply_headers(h, c->loc, false);
    if (c && c->set_sticky && c->backend && c->loc && h) {
        char cookie[256];
        snprintf(cookie, sizeof(cookie), "%s=%016llx; Path=/; HttpOnly",
                 c->loc->upstream->sticky_cookie, (unsigned long long)weir_backend_id(c->backend));
        weir_headers_add(h, "Set-Cookie", cookie);
    }
    return WEIR_PHASE_CONTINUE;
}

static void logging(weir_session *s, void *ctx, const weir_session_stats *st)
{
    req_ctx *c = ctx;
    if (c && c->backend) {
        /* Passive health: 5xx answers and upstream errors count as failures;
         * a client that left says nothing about the backend. */
        bool upstream_fault = st->termination[0] == 'S' || st->termination[0] == 's';
        weir_backend_outcome o = st->client_aborted                    ? WEIR_BACKEND_NOT_RELEVANT
                                 : st->status >= 500 || upstream_fault ? WEIR_BACKEND_FAILED
                                                                       : WEIR_BACKEND_OK;
        weir_backend_done(c->backend, o);
        c->backend = NULL;
    }
    if (c && c->srv)
        weir__metrics_request(s, c->srv, c->loc, st);
    if (!c || !c->srv || !c->srv->access_log || !c->sa->logger)
        return;
    char line[4096];
    size_t n = weir__access_log_render(c->srv->access_log, s, st, c->loc ? c->loc->name : NULL,
                                       line, sizeof(line));
    weir_logger_write(c->sa->logger, line, n);
}

const weir_proxy_ops weir__app_ops = {
    .new_ctx = new_ctx,
    .free_ctx = free_ctx,
    .request_filter = request_filter,
    .upstream_peer = upstream_peer,
    .fail_to_connect = fail_to_connect,
    .connected_to_upstream = connected_to_upstream,
    .upstream_request_filter = upstream_request_filter,
    .response_filter = response_filter,
    .logging = logging,
};

/* Upstreams with a health check, for the server's control thread. */
static size_t checked_upstreams(weir_config *cfg, weir_upstream **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_upstreams && n < max; i++) {
        if (cfg->upstreams[i].lb && cfg->upstreams[i].hc.kind != WEIR_HEALTH_NONE)
            out[n++] = cfg->upstreams[i].lb;
    }
    return n;
}

/* Same servers, in the same order, on the same addresses and log files:
 * what a reload can take without touching listeners. */
static void reload_error(weir_cfg_errors *errs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static const weir_cfg_server *server_named(const weir_config *c, const char *name)
{
    for (size_t i = 0; i < c->n_servers; i++) {
        if (strcmp(c->servers[i].name, name) == 0)
            return &c->servers[i];
    }
    return NULL;
}

static bool has_addr(const weir_cfg_server *s, const char *addr)
{
    for (size_t i = 0; s && i < s->n_addrs; i++) {
        if (strcmp(s->addrs[i], addr) == 0)
            return true;
    }
    return false;
}

/* The key of the first server setting that differs (these are fixed for
 * a listener's life), or NULL. Field by field: a memcmp would also compare
 * padding. */
static const char *opts_change(const weir_proxy_options *x, const weir_proxy_options *y)
{
#define SAME(field, key)                                                                           \
    if (x->field != y->field)                                                                      \
    return key
    SAME(client_header_timeout_ms, "client_header_timeout");
    SAME(client_body_timeout_ms, "client_body_timeout");
    SAME(keepalive_timeout_ms, "keepalive_timeout");
    SAME(send_timeout_ms, "send_timeout");
    SAME(tunnel_idle_timeout_ms, "tunnel_idle_timeout");
    SAME(max_header_bytes, "max_header_size");
    SAME(max_headers, "max_headers");
    SAME(max_body_bytes, "max_body_size");
    SAME(max_uri_bytes, "max_uri_size");
    SAME(keep_slashes, "merge_slashes");
    SAME(underscores_in_headers, "underscores_in_headers");
    SAME(tls_handshake_timeout_ms, "tls_handshake_timeout");
    SAME(h2c, "h2c");
    SAME(h2_max_concurrent_streams, "h2_max_concurrent_streams");
    SAME(n_trusted_proxies, "trusted_proxies");
#undef SAME
    for (uint32_t i = 0; i < x->n_trusted_proxies; i++) {
        const weir_cidr *a = &x->trusted_proxies[i], *b = &y->trusted_proxies[i];
        if (a->family != b->family || a->prefix_len != b->prefix_len ||
            memcmp(a->addr, b->addr, sizeof(a->addr)) != 0)
            return "trusted_proxies";
    }
    return NULL;
}

/* What a reload cannot take while running (listeners can come and go;
 * these cannot): NULL if nothing. The text names the server and key. */
static const char *unsupported_change(const weir_config *a, const weir_config *b, char *buf,
                                      size_t len)
{
    for (size_t i = 0; i < b->n_servers; i++) {
        const weir_cfg_server *y = &b->servers[i], *x = server_named(a, y->name);
        if (!x)
            continue;
        const char *fx = x->access_log ? (x->access_log_file ? x->access_log_file : "-") : "";
        const char *fy = y->access_log ? (y->access_log_file ? y->access_log_file : "-") : "";
        const char *key = strcmp(fx, fy) != 0               ? "access_log or access_log_file"
                          : opts_change(&x->opts, &y->opts) ? opts_change(&x->opts, &y->opts)
                          : (x->tls.n_certs > 0) != (y->tls.n_certs > 0)
                              ? "certificates (TLS on or off)"
                              : NULL;
        if (key) {
            snprintf(buf, len, "'%s' of [servers.%s] changed", key, y->name);
            return buf;
        }
    }
    const char *ax = a->admin.addr ? a->admin.addr : "", *ay = b->admin.addr ? b->admin.addr : "";
    if (strcmp(ax, ay) != 0)
        return "the [admin] address changed";
    return NULL;
}

/* Makes or updates sa's TLS settings from y's (a server without
 * certificates stays plain). */
static int server_app_tls(server_app *sa, const weir_cfg_server *y)
{
    if (y->tls.n_certs == 0)
        return WEIR_OK;
    weir_tls_server_spec spec;
    if (weir__cfg_tls_spec(&y->tls, &spec) != WEIR_OK)
        return WEIR_ERR_NOMEM;
    char err[512];
    int rc = WEIR_OK;
    if (!sa->tls) {
        sa->tls = weir_tls_server_new(&spec, err, sizeof(err));
        rc = sa->tls ? WEIR_OK : WEIR_ERR_INVAL;
    } else {
        rc = weir_tls_server_update(sa->tls, &spec, err, sizeof(err));
    }
    weir__cfg_tls_spec_free(&spec);
    if (rc != WEIR_OK)
        weir_log(WEIR_LEVEL_ERROR, "[servers.%s]: TLS: %s", y->name, err);
    return rc;
}

/* The options a server's service runs with: the configured ones with the
 * server_app's TLS. */
static weir_proxy_options service_opts(const server_app *sa, const weir_cfg_server *y)
{
    weir_proxy_options o = y->opts;
    o.tls = sa->tls;
    return o;
}

/* The server_app of [servers.NAME], made (with its logger) if new. */
static server_app *server_app_for(weir_app *app, const weir_cfg_server *y, size_t index)
{
    for (size_t i = 0; i < app->n_servers; i++) {
        if (strcmp(app->servers[i].name, y->name) == 0)
            return &app->servers[i];
    }
    if (app->n_servers == MAX_SERVERS)
        return NULL;
    server_app *sa = &app->servers[atomic_load(&app->n_servers)];
    memset(sa, 0, sizeof(*sa));
    sa->app = app;
    sa->index = index;
    snprintf(sa->name, sizeof(sa->name), "%s", y->name);
    if (y->access_log) {
        sa->logger = weir_logger_open(y->access_log_file ? y->access_log_file : "-");
        if (!sa->logger)
            return NULL;
    }
    if (server_app_tls(sa, y) != WEIR_OK) {
        weir_logger_close(sa->logger);
        sa->logger = NULL;
        return NULL;
    }
    app->n_servers++;
    return sa;
}

/*
 * Brings the listeners from old's servers to nc's: new addresses are bound
 * first (a failure undoes them and fails the reload), then dropped ones
 * stop accepting (their connections finish). Main thread.
 */
static int apply_listeners(weir_app *app, weir_server *srv, const weir_config *old,
                           const weir_config *nc, weir_cfg_errors *errs_out)
{
    /* An address that changes server (a rename) is released first so the
     * new server can take it; the others are dropped after the adds. */
    for (size_t i = 0; i < old->n_servers; i++) {
        const weir_cfg_server *x = &old->servers[i], *y = server_named(nc, x->name);
        for (size_t k = 0; k < x->n_addrs; k++) {
            if (has_addr(y, x->addrs[k]))
                continue;
            for (size_t j = 0; j < nc->n_servers; j++) {
                if (has_addr(&nc->servers[j], x->addrs[k]))
                    weir_server_remove_listen(srv, x->addrs[k]);
            }
        }
    }
    const char *added[1024];
    size_t n_added = 0;
    for (size_t i = 0; i < nc->n_servers; i++) {
        const weir_cfg_server *y = &nc->servers[i], *x = server_named(old, y->name);
        const char *addrs[64];
        size_t n = 0;
        for (size_t k = 0; k < y->n_addrs && n < 64; k++) {
            if (!has_addr(x, y->addrs[k]))
                addrs[n++] = y->addrs[k];
        }
        if (n == 0)
            continue;
        server_app *sa = server_app_for(app, y, i);
        weir_proxy_options o = sa ? service_opts(sa, y) : y->opts;
        int rc = sa ? weir_server_add_proxy(srv, addrs, n, &weir__app_ops, sa, &o) : WEIR_ERR_NOMEM;
        if (rc != WEIR_OK) {
            reload_error(errs_out,
                         "reload failed: cannot listen on the new addresses of "
                         "[servers.%s] (see the log)",
                         y->name);
            for (size_t k = 0; k < n_added; k++)
                weir_server_remove_listen(srv, added[k]);
            /* Give renamed addresses back to their old servers. */
            for (size_t m = 0; m < old->n_servers; m++) {
                const weir_cfg_server *ox = &old->servers[m];
                server_app *osa = server_app_for(app, ox, m);
                for (size_t k = 0; osa && k < ox->n_addrs; k++) {
                    const char *one[1] = {ox->addrs[k]};
                    weir_proxy_options oo = service_opts(osa, ox);
                    if (!has_addr(server_named(nc, ox->name), ox->addrs[k]))
                        weir_server_add_proxy(srv, one, 1, &weir__app_ops, osa, &oo);
                }
            }
            return WEIR_ERR_INVAL;
        }
        for (size_t k = 0; k < n && n_added < 1024; k++)
            added[n_added++] = addrs[k];
    }
    for (size_t i = 0; i < old->n_servers; i++) {
        const weir_cfg_server *x = &old->servers[i], *y = server_named(nc, x->name);
        for (size_t k = 0; k < x->n_addrs; k++) {
            if (has_addr(y, x->addrs[k]))
                continue;
            bool moved = false; /* released above and listened on again by its new server */
            for (size_t j = 0; j < nc->n_servers && !moved; j++)
                moved = has_addr(&nc->servers[j], x->addrs[k]);
            if (!moved)
                weir_server_remove_listen(srv, x->addrs[k]);
        }
    }
    return WEIR_OK;
}

/* Logs msg and, when errs is given, appends it there too. */
static void reload_error(weir_cfg_errors *errs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void reload_error(weir_cfg_errors *errs, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    weir_log(WEIR_LEVEL_ERROR, "%s", msg);
    if (!errs)
        return;
    char *copy = strdup(msg);
    char **nv = copy ? realloc(errs->v, (errs->n + 1) * sizeof(*nv)) : NULL;
    if (!nv) {
        free(copy);
        return;
    }
    errs->v = nv;
    errs->v[errs->n++] = copy;
}

int weir__app_reload_errs(weir_app *app, const char *path, weir_server *srv,
                          weir_cfg_errors *errs_out)
{
    weir_cfg_errors errs = {0};
    weir_config *nc = weir__config_load_file(path, &errs);
    if (!nc) {
        for (size_t i = 0; i < errs.n; i++)
            reload_error(errs_out, "%s", errs.v[i]);
        weir_log(WEIR_LEVEL_ERROR, "reload failed (%zu errors): the running configuration stays",
                 errs.n);
        weir__cfg_errors_free(&errs);
        weir__metrics_reload(false);
        return WEIR_ERR_INVAL;
    }
    weir_config *old = atomic_load(&app->current);
    char why_buf[256];
    const char *why = unsupported_change(old, nc, why_buf, sizeof(why_buf));
    if (why) {
        reload_error(errs_out,
                     "reload of %s refused: %s; that needs a restart or a binary upgrade "
                     "(the running configuration stays)",
                     path, why);
        weir__config_unref(nc);
        weir__metrics_reload(false);
        return WEIR_ERR_INVAL;
    }
    weir_upstream *ups[1024];
    size_t n = checked_upstreams(nc, ups, 1024);
    if (weir_server_set_upstreams(srv, ups, n) != WEIR_OK) {
        reload_error(errs_out, "reload failed: cannot restart the health checks");
        weir__config_unref(nc);
        weir__metrics_reload(false);
        return WEIR_ERR_INVAL;
    }
    /* New requests pin the new snapshot; requests in flight keep the old
     * one alive until they end. Listeners change after the swap, so a
     * connection on a new address finds its server. */
    atomic_store_explicit(&app->current, nc, memory_order_release);
    if (apply_listeners(app, srv, old, nc, errs_out) != WEIR_OK) {
        atomic_store_explicit(&app->current, old, memory_order_release);
        weir_upstream *old_ups[1024];
        size_t n_old = checked_upstreams(old, old_ups, 1024);
        weir_server_set_upstreams(srv, old_ups, n_old);
        retire(app, nc); /* a request may have pinned it meanwhile */
        weir__metrics_reload(false);
        return WEIR_ERR_INVAL;
    }
    /* Certificates and TLS settings of the servers that stay. */
    for (size_t i = 0; i < nc->n_servers; i++) {
        for (size_t k = 0; k < app->n_servers; k++) {
            server_app *sa = &app->servers[k];
            if (sa->tls && strcmp(sa->name, nc->servers[i].name) == 0 &&
                server_app_tls(sa, &nc->servers[i]) != WEIR_OK)
                reload_error(errs_out, "[servers.%s]: new TLS settings not applied (see the log)",
                             sa->name);
        }
    }
    retire(app, old);
    /* Long-lived HTTP/2 connections move on to the new configuration's
     * (GOAWAY: streams in flight finish, new ones use new connections). */
    weir_server_renew_connections(srv);
    weir__metrics_reload(true);
    weir_log(WEIR_LEVEL_INFO, "configuration %s reloaded", path);
    return WEIR_OK;
}

int weir__app_reload(weir_app *app, const char *path, weir_server *srv)
{
    return weir__app_reload_errs(app, path, srv, NULL);
}

weir_config *weir__app_config(weir_app *app)
{
    /* As new_ctx: a replaced snapshot keeps the app's reference for a grace
     * period (retire), so loading then referencing is safe. */
    return weir__config_ref(atomic_load_explicit(&app->current, memory_order_acquire));
}

uint64_t weir__app_log_dropped(weir_app *app)
{
    uint64_t n = 0;
    for (size_t i = 0; i < app->n_servers; i++) {
        if (app->servers[i].logger)
            n += weir_logger_dropped(app->servers[i].logger);
    }
    return n;
}

void weir__app_reopen_logs(weir_app *app)
{
    for (size_t i = 0; i < app->n_servers; i++)
        weir_logger_reopen(app->servers[i].logger);
}

weir_app *weir__app_new(weir_config *cfg, weir_server *srv)
{
    weir_app *app = calloc(1, sizeof(*app));
    if (!app) {
        weir__config_unref(cfg);
        return NULL;
    }
    atomic_store(&app->current, cfg);
    if (cfg->n_servers > MAX_SERVERS) {
        weir_log(WEIR_LEVEL_ERROR, "%s: at most %d servers", cfg->file, MAX_SERVERS);
        goto fail;
    }
    weir_upstream *ups[1024];
    size_t n_ups = checked_upstreams(cfg, ups, 1024);
    if (weir_server_set_upstreams(srv, ups, n_ups) != WEIR_OK)
        goto fail;
    for (size_t i = 0; i < cfg->n_servers; i++) {
        weir_cfg_server *cs = &cfg->servers[i];
        server_app *sa = &app->servers[atomic_fetch_add(&app->n_servers, 1)];
        sa->app = app;
        sa->index = i;
        snprintf(sa->name, sizeof(sa->name), "%s", cs->name);
        if (cs->access_log) {
            sa->logger = weir_logger_open(cs->access_log_file ? cs->access_log_file : "-");
            if (!sa->logger)
                goto fail;
        }
        if (server_app_tls(sa, cs) != WEIR_OK)
            goto fail;
        weir_proxy_options o = service_opts(sa, cs);
        int rc = weir_server_add_proxy(srv, (const char *const *)cs->addrs, cs->n_addrs,
                                       &weir__app_ops, sa, &o);
        if (rc != WEIR_OK) {
            weir_log(WEIR_LEVEL_ERROR, "[servers.%s]: cannot set up its listeners", cs->name);
            goto fail;
        }
    }
    return app;
fail:
    weir__app_free(app);
    return NULL;
}

void weir__app_free(weir_app *app)
{
    if (!app)
        return;
    for (size_t i = 0; i < app->n_servers; i++) {
        weir_logger_close(app->servers[i].logger);
        weir_tls_server_free(app->servers[i].tls);
    }
    release_retired(app, true);
    weir__config_unref(atomic_load(&app->current));
    free(app);
}
