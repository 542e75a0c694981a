/*
 * weir-test-app.c - exercises the phase API for the integration tests.
 *
 *     weir-test-app LISTEN_ADDR UPSTREAM_ADDR
 *
 * - GET /delayed: request_filter pends, a 100 ms session timer resumes it
 *   with an answer ("resumed after timer").
 * - GET /thread-resume: request_filter pends, another thread resumes it
 *   ("resumed from thread").
 * - X-Reject: 1: request_filter answers 403 directly.
 * - X-Bad-Result: N: request_filter returns N cast to weir_phase_result
 *   (what an int slipping through would do); the library must fail the
 *   request rather than read N as another result.
 * - POST /read-body: the body is read whole (weir_session_read_body, 64 KiB
 *   at most) and answered back as "got N bytes: BODY"; 413 over the limit.
 * - GET /stream?n=N&piece=P[&known=1][&pause=MS][&fail=K]: a body pulled
 *   from a producer (weir_session_respond_stream): N pieces of P bytes of
 *   the pattern "0123456789" repeated; known=1 gives its Content-Length;
 *   pause=MS makes the producer say WEIR_AGAIN before each piece and a
 *   session timer wake it; fail=K makes it fail after K pieces; extra=E
 *   announces E bytes more (or fewer) than it makes; chunk=C is
 *   weir_session_set_body_chunk; idle=MS is weir_session_set_client_timeout.
 * - GET /file?path=PATH[&off=O][&len=L]: the file (weir_session_respond_file).
 * - GET /gen-stats: "done D complete C fds F": producer done calls, those
 *   that were complete, and the process's open descriptors.
 * - X-Upper: 1 on /stream or /file: a response_body_filter upper-cases the
 *   body (which makes a file go through the pump, not sendfile).
 * - GET /sub?to=ADDR[&path=P][&n=K][&timeout=MS][&max=N][&method=M][&body=B]
 *   [&tls=1&ca=FILE[&sni=NAME]][&h2=1|&alpn=1][&ct=MS][&detached=1]: K
 *   sub-requests (weir_subrequest_start) to ADDR at once; the answer waits
 *   for all: for one, "status S code C reused R len L\n" and its body (the
 *   backend's X-Echo field comes back as X-Sub-Echo); for more, "ok O fail
 *   F\n" (200s and the rest). h2=1 is HTTP/2 prior knowledge (or over TLS
 *   by ALPN), alpn=1 offers h2 and http/1.1. detached=1 answers at once
 *   and lets the sub-request outlive the request; forget=1 answers at once
 *   and leaves it to be cancelled with the session.
 * - GET /sub-stats: "started S done D cancelled C detached E live L": the
 *   callbacks so far, those with status 499, the detached ones done, and
 *   sub-requests in flight on the worker that answers.
 * - /cached/...: proxied through the cache (weir/cache.h) by the cache
 *   phases: the key is "app:" and the path (no host, no query);
 *   X-Force-Miss: 1 makes cache_hit_filter validate a hit; a response with
 *   X-No-Store: 1 is not stored and X-TTL: N sets its lifetime
 *   (response_cache_filter); X-No-Stale: 1 makes should_serve_stale
 *   refuse a stale answer (stale_on_error is 60 s otherwise).
 * - GET /cache-stats: "hits H misses M stored S stale T"; PURGE /cache-purge?key=K.
 * - anything else is proxied to UPSTREAM_ADDR; the response carries
 *   X-Phases, the phases that ran, in order.
 */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <weir/weir.h>

typedef struct ctx {
    char phases[512];
    weir_session *s;
    /* /sub */
    long sub_left, sub_ok, sub_fail;
    /* /stream */
    long n, piece, pause_ms, fail, made, pos;
    bool woken;
    char filtered[65536];
} ctx;

static atomic_long gen_done, gen_complete;
static atomic_long sub_started, sub_done, sub_cancelled, sub_detached;

static weir_peer upstream;

static void note(ctx *c, const char *phase)
{
    size_t len = strlen(c->phases);
    snprintf(c->phases + len, sizeof(c->phases) - len, "%s%s", len ? "," : "", phase);
}

static bool path_is(weir_session *s, const char *p)
{
    weir_str path = weir_session_path(s);
    return path.len == strlen(p) && memcmp(path.ptr, p, path.len) == 0;
}

static void *new_ctx(weir_session *s, void *app)
{
    ctx *c = calloc(1, sizeof(*c));
    if (c)
        c->s = s;
    return c;
}

static void free_ctx(void *app, void *c)
{
    free(c);
}

static weir_phase_result early_request_filter(weir_session *s, void *c)
{
    note(c, "early_request_filter");
    return WEIR_PHASE_CONTINUE;
}

static void answer_after_timer(weir_session *s, void *c)
{
    static const char body[] = "resumed after timer\n";
    weir_session_respond(s, 200, NULL, 0, body, sizeof(body) - 1);
    weir_session_resume(s, WEIR_PHASE_ANSWERED);
}

static void *resume_thread(void *arg)
{
    /* The answer is written on the session's worker, from the response
     * prepared before pending; this thread only resumes. */
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    weir_session_resume(arg, WEIR_PHASE_ANSWERED);
    return NULL;
}

static void body_read(weir_session *s, void *c, weir_str body, int error)
{
    if (error) {
        static const char msg[] = "body too large or unreadable\n";
        weir_session_respond(s, error == WEIR_ERR_INVAL ? 413 : 400, NULL, 0, msg, sizeof(msg) - 1);
    } else {
        char head[64];
        int n = snprintf(head, sizeof(head), "got %zu bytes: ", body.len);
        char *out = weir_session_alloc(s, (size_t)n + body.len);
        memcpy(out, head, (size_t)n);
        if (body.len)
            memcpy(out + n, body.ptr, body.len);
        weir_session_respond(s, 200, NULL, 0, out, (size_t)n + body.len);
    }
    weir_session_resume(s, WEIR_PHASE_ANSWERED);
}

/* The value of query parameter `name`, as a number (def if absent). */
static long query_num(weir_session *s, const char *name, long def)
{
    weir_str q = weir_session_query(s);
    char buf[1024], *save = NULL;
    size_t len = q.len < sizeof(buf) - 1 ? q.len : sizeof(buf) - 1;
    memcpy(buf, q.ptr, len);
    buf[len] = '\0';
    /* strtok_r: the workers parse at once */
    for (char *tok = strtok_r(buf, "&", &save); tok; tok = strtok_r(NULL, "&", &save)) {
        size_t nl = strlen(name);
        if (strncmp(tok, name, nl) == 0 && tok[nl] == '=')
            return atol(tok + nl + 1);
    }
    return def;
}

static bool query_str(weir_session *s, const char *name, char *out, size_t cap)
{
    weir_str q = weir_session_query(s);
    size_t nl = strlen(name);
    for (size_t i = 0; i + nl < q.len; i++) {
        if ((i == 0 || q.ptr[i - 1] == '&') && memcmp(q.ptr + i, name, nl) == 0 &&
            q.ptr[i + nl] == '=') {
            size_t j = i + nl + 1, k = 0;
            while (j < q.len && q.ptr[j] != '&' && k + 1 < cap) {
                char hex[3] = {0};
                if (q.ptr[j] == '%' && j + 2 < q.len) { /* percent-decoded */
                    memcpy(hex, q.ptr + j + 1, 2);
                    out[k++] = (char)strtol(hex, NULL, 16);
                    j += 3;
                } else {
                    out[k++] = q.ptr[j] == '+' ? ' ' : q.ptr[j];
                    j++;
                }
            }
            out[k] = '\0';
            return true;
        }
    }
    return false;
}

static void wake_producer(weir_session *s, void *c)
{
    weir_session_body_ready(s);
}

static int produce(weir_session *s, void *arg, char *buf, size_t cap, size_t *len)
{
    ctx *c = arg;
    long total = c->n * c->piece;
    if (c->fail >= 0 && c->made == c->fail)
        return WEIR_ERR;
    if (c->pos == total) {
        *len = 0;
        return WEIR_DONE;
    }
    if (c->pause_ms > 0 && !c->woken) {
        c->woken = true;
        weir_session_set_timer(s, (uint32_t)c->pause_ms, wake_producer);
        return WEIR_AGAIN;
    }
    c->woken = false;
    /* Up to the end of the current piece, at most cap. */
    size_t n = (size_t)(c->piece - c->pos % c->piece);
    if (n > cap)
        n = cap;
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)('0' + ((c->pos + (long)i) % c->piece) % 10);
    *len = n;
    c->pos += (long)n;
    c->made++;
    return c->pos == total ? WEIR_DONE : WEIR_OK;
}

static void produced(weir_session *s, void *arg, bool complete)
{
    atomic_fetch_add(&gen_done, 1);
    if (complete)
        atomic_fetch_add(&gen_complete, 1);
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 3; /* ".", "..", and the directory's own descriptor */
}

static weir_phase_result generated(weir_session *s, ctx *c)
{
    if (path_is(s, "/gen-stats")) {
        char body[128];
        int n = snprintf(body, sizeof(body), "done %ld complete %ld fds %d\n",
                         atomic_load(&gen_done), atomic_load(&gen_complete), open_fds());
        weir_session_respond(s, 200, NULL, 0, body, (size_t)n);
        return WEIR_PHASE_ANSWERED;
    }
    if (path_is(s, "/stream")) {
        c->n = query_num(s, "n", 1);
        c->piece = query_num(s, "piece", 100);
        c->pause_ms = query_num(s, "pause", 0);
        c->fail = query_num(s, "fail", -1);
        long chunk = query_num(s, "chunk", 0), idle = query_num(s, "idle", 0);
        if (idle)
            weir_session_set_client_timeout(s, (uint32_t)idle);
        if (chunk)
            weir_session_set_body_chunk(s, (size_t)chunk);
        weir_body_producer p = {
            produce, produced, c,
            query_num(s, "known", 0) ? c->n * c->piece + query_num(s, "extra", 0) : -1};
        weir_header h = {WEIR_STR("Content-Type"), WEIR_STR("text/plain")};
        if (weir_session_respond_stream(s, 200, &h, 1, &p) != WEIR_OK)
            return WEIR_PHASE_ERROR;
        return WEIR_PHASE_ANSWERED;
    }
    if (path_is(s, "/file")) {
        char path[512];
        if (!query_str(s, "path", path, sizeof(path)))
            return WEIR_PHASE_ERROR;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            weir_session_respond(s, 404, NULL, 0, "no file\n", 8);
            return WEIR_PHASE_ANSWERED;
        }
        off_t size = lseek(fd, 0, SEEK_END);
        long off = query_num(s, "off", 0);
        long len = query_num(s, "len", (long)size - off);
        weir_header h = {WEIR_STR("Content-Type"), WEIR_STR("application/octet-stream")};
        if (weir_session_respond_file(s, 200, &h, 1, fd, (uint64_t)off, (uint64_t)len) != WEIR_OK)
            return WEIR_PHASE_ERROR;
        return WEIR_PHASE_ANSWERED;
    }
    return WEIR_PHASE_CONTINUE;
}

/* ---- /sub: sub-requests ---- */

static pthread_mutex_t tls_lock = PTHREAD_MUTEX_INITIALIZER;
static weir_tls_client *tls_clients[3]; /* http/1.1, h2, both */

static const weir_tls_client *tls_client(int kind, const char *ca)
{
    static const char *const alpn[] = {"http/1.1", "h2", "h2,http/1.1"};
    pthread_mutex_lock(&tls_lock);
    if (!tls_clients[kind]) {
        char err[256];
        weir_tls_client_spec spec = {.ca_file = ca, .alpn = alpn[kind]};
        tls_clients[kind] = weir_tls_client_new(&spec, err, sizeof(err));
        if (!tls_clients[kind])
            fprintf(stderr, "tls client: %s\n", err);
    }
    pthread_mutex_unlock(&tls_lock);
    return tls_clients[kind];
}

static void sub_counted(const weir_subrequest_result *r)
{
    atomic_fetch_add(&sub_done, 1);
    if (r->status == 499)
        atomic_fetch_add(&sub_cancelled, 1);
}

static void sub_detached_done(weir_session *s, void *arg, const weir_subrequest_result *r)
{
    sub_counted(r);
    atomic_fetch_add(&sub_detached, 1);
}

static void sub_done_cb(weir_session *s, void *arg, const weir_subrequest_result *r)
{
    ctx *c = arg;
    sub_counted(r);
    if (r->status == 200)
        c->sub_ok++;
    else
        c->sub_fail++;
    if (c->sub_left == 1 && c->sub_ok + c->sub_fail == 1) {
        /* one sub-request: its result is the answer */
        char head[160];
        int n = snprintf(head, sizeof(head), "status %d code %d reused %d len %zu\n", r->status,
                         r->error_code, r->reused, r->body.len);
        char *out = weir_session_alloc(s, (size_t)n + r->body.len);
        memcpy(out, head, (size_t)n);
        if (r->body.len)
            memcpy(out + n, r->body.ptr, r->body.len);
        const weir_str *echo = weir_subrequest_header(r, "x-echo");
        weir_header h = {WEIR_STR("X-Sub-Echo"), echo ? *echo : WEIR_STR("-")};
        weir_session_respond(s, 200, &h, 1, out, (size_t)n + r->body.len);
        weir_session_resume(s, WEIR_PHASE_ANSWERED);
        return;
    }
    if (--c->sub_left > 0)
        return;
    char body[64];
    int n = snprintf(body, sizeof(body), "ok %ld fail %ld\n", c->sub_ok, c->sub_fail);
    weir_session_respond(s, 200, NULL, 0, body, (size_t)n);
    weir_session_resume(s, WEIR_PHASE_ANSWERED);
}

static weir_phase_result sub(weir_session *s, ctx *c)
{
    char to[64], path[256] = "/", ca[512] = "", sni[128] = "", method[16] = "", body[256] = "";
    if (!query_str(s, "to", to, sizeof(to)))
        return WEIR_PHASE_ERROR;
    query_str(s, "path", path, sizeof(path));
    query_str(s, "ca", ca, sizeof(ca));
    query_str(s, "sni", sni, sizeof(sni));
    query_str(s, "method", method, sizeof(method));
    query_str(s, "body", body, sizeof(body));
    weir_peer peer = {.keepalive = 64, .connect_timeout_ms = (uint32_t)query_num(s, "ct", 0)};
    if (weir_peer_set_addr(&peer, to) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    bool h2 = query_num(s, "h2", 0), alpn = query_num(s, "alpn", 0);
    peer.h2 = h2;
    peer.h2_or_h1 = alpn;
    if (query_num(s, "tls", 0)) {
        peer.tls = true;
        snprintf(peer.sni, sizeof(peer.sni), "%s", sni);
        peer.tls_client = tls_client(alpn ? 2 : h2 ? 1 : 0, ca[0] ? ca : NULL);
    }
    weir_header fwd = {WEIR_STR("X-Echo"), weir_headers_get(weir_session_req_headers(s), "x-echo")};
    weir_subrequest_spec spec = {
        .method = {method, strlen(method)},
        .target = {path, strlen(path)},
        .headers = &fwd,
        .n_headers = fwd.value.ptr ? 1 : 0,
        .body = {body, strlen(body)},
        .max_body = (size_t)query_num(s, "max", 0),
        .timeout_ms = (uint32_t)query_num(s, "timeout", 0),
        .detached = query_num(s, "detached", 0),
    };
    if (spec.detached) {
        if (!weir_subrequest_start(s, &peer, &spec, sub_detached_done, NULL))
            return WEIR_PHASE_ERROR;
        atomic_fetch_add(&sub_started, 1);
        static const char started[] = "started\n";
        weir_session_respond(s, 200, NULL, 0, started, sizeof(started) - 1);
        return WEIR_PHASE_ANSWERED;
    }
    if (query_num(s, "forget", 0)) {
        /* Started and not waited for: cancelled when the session ends. */
        if (!weir_subrequest_start(s, &peer, &spec, sub_done_cb, c))
            return WEIR_PHASE_ERROR;
        atomic_fetch_add(&sub_started, 1);
        static const char left[] = "left\n";
        weir_session_respond(s, 200, NULL, 0, left, sizeof(left) - 1);
        return WEIR_PHASE_ANSWERED;
    }
    long n = query_num(s, "n", 1);
    c->sub_left = n;
    for (long i = 0; i < n; i++) {
        if (!weir_subrequest_start(s, &peer, &spec, sub_done_cb, c)) {
            if (i == 0)
                return WEIR_PHASE_ERROR;
            c->sub_left = i; /* those started answer */
            break;
        }
        atomic_fetch_add(&sub_started, 1);
    }
    return WEIR_PHASE_PENDING;
}

static weir_phase_result cache_admin(weir_session *s);

static weir_phase_result request_filter(weir_session *s, void *c)
{
    note(c, "request_filter");
    if (weir_headers_get(weir_session_req_headers(s), "x-reject").ptr) {
        static const char body[] = "rejected\n";
        weir_session_respond(s, 403, NULL, 0, body, sizeof(body) - 1);
        return WEIR_PHASE_ANSWERED;
    }
    weir_str bad = weir_headers_get(weir_session_req_headers(s), "x-bad-result");
    if (bad.ptr) {
        char num[16] = "";
        memcpy(num, bad.ptr, bad.len < sizeof(num) - 1 ? bad.len : sizeof(num) - 1);
        return (weir_phase_result)atoi(num);
    }
    weir_phase_result g = generated(s, c);
    if (g != WEIR_PHASE_CONTINUE)
        return g;
    if (path_is(s, "/sub"))
        return sub(s, c);
    if (path_is(s, "/cache-stats") || path_is(s, "/cache-purge"))
        return cache_admin(s);
    if (path_is(s, "/sub-stats")) {
        char body[160];
        int n = snprintf(
            body, sizeof(body), "started %ld done %ld cancelled %ld detached %ld live %zu\n",
            atomic_load(&sub_started), atomic_load(&sub_done), atomic_load(&sub_cancelled),
            atomic_load(&sub_detached), weir_subrequest_count());
        weir_session_respond(s, 200, NULL, 0, body, (size_t)n);
        return WEIR_PHASE_ANSWERED;
    }
    if (path_is(s, "/read-body")) {
        if (weir_session_read_body(s, 64 * 1024, body_read) != WEIR_OK)
            return WEIR_PHASE_ERROR;
        return WEIR_PHASE_PENDING;
    }
    if (path_is(s, "/delayed")) {
        weir_session_set_timer(s, 100, answer_after_timer);
        return WEIR_PHASE_PENDING;
    }
    if (path_is(s, "/thread-resume")) {
        static const char body[] = "resumed from thread\n";
        weir_session_respond(s, 200, NULL, 0, body, sizeof(body) - 1);
        pthread_t t;
        if (pthread_create(&t, NULL, resume_thread, s) != 0)
            return WEIR_PHASE_ERROR;
        pthread_detach(t);
        return WEIR_PHASE_PENDING;
    }
    return WEIR_PHASE_CONTINUE;
}

static weir_phase_result upstream_peer(weir_session *s, void *c, weir_peer *peer)
{
    note(c, "upstream_peer");
    memcpy(&peer->addr, &upstream.addr, sizeof(peer->addr));
    peer->addr_len = upstream.addr_len;
    return WEIR_PHASE_CONTINUE;
}

static void connected_to_upstream(weir_session *s, void *c, const weir_peer *peer, bool reused)
{
    note(c, "connected_to_upstream");
}

static weir_phase_result upstream_request_filter(weir_session *s, void *c)
{
    note(c, "upstream_request_filter");
    return WEIR_PHASE_CONTINUE;
}

static weir_phase_result upstream_response_filter(weir_session *s, void *c)
{
    note(c, "upstream_response_filter");
    return WEIR_PHASE_CONTINUE;
}

static weir_phase_result response_filter(weir_session *s, void *c)
{
    note(c, "response_filter");
    if (!weir_headers_get(weir_session_req_headers(s), "x-upper").ptr)
        weir_session_skip_response_body_filter(s);
    if (weir_session_resp_status(s) < 300 && weir_session_path(s).len > 1)
        weir_headers_set(weir_session_resp_headers(s), "X-Phases", ((ctx *)c)->phases);
    return WEIR_PHASE_CONTINUE;
}

/* X-Upper: the body upper-cased, piece by piece (into the context's
 * buffer: what a filter returns stays valid until its next call). */
static weir_phase_result response_body_filter(weir_session *s, void *arg, weir_str *chunk, bool end)
{
    ctx *c = arg;
    if (chunk->len > sizeof(c->filtered))
        return WEIR_PHASE_ERROR;
    for (size_t i = 0; i < chunk->len; i++)
        c->filtered[i] = (char)toupper((unsigned char)chunk->ptr[i]);
    chunk->ptr = c->filtered;
    return WEIR_PHASE_CONTINUE;
}

/* ---- the cache phases ---- */

static weir_cache *cache;

static bool under_cached(weir_session *s)
{
    weir_str p = weir_session_path(s);
    return p.len > 8 && memcmp(p.ptr, "/cached/", 8) == 0;
}

static weir_phase_result request_cache_filter(weir_session *s, void *c)
{
    note(c, "request_cache_filter");
    if (under_cached(s)) {
        weir_cache_settings st = {.stale_on_error = 60};
        weir_session_cache_enable(s, cache, &st);
    }
    return WEIR_PHASE_CONTINUE;
}

static size_t cache_key(weir_session *s, void *c, char *out, size_t cap)
{
    (void)c;
    weir_str p = weir_session_path(s);
    if (p.len + 4 > cap)
        return p.len + 4;
    memcpy(out, "app:", 4);
    memcpy(out + 4, p.ptr, p.len);
    return p.len + 4;
}

static bool cache_hit_filter(weir_session *s, void *c, const weir_cache_meta *m)
{
    note(c, "cache_hit_filter");
    return m->status == 200 && weir_headers_get(weir_session_req_headers(s), "x-force-miss").ptr;
}

static void response_cache_filter(weir_session *s, void *c, weir_cache_decision *d)
{
    note(c, "response_cache_filter");
    weir_headers *h = weir_session_resp_headers(s);
    if (weir_headers_get(h, "x-no-store").ptr) {
        d->store = false;
        d->reason = "app";
    }
    weir_str ttl = weir_headers_get(h, "x-ttl");
    if (ttl.ptr && ttl.len < 10) {
        char num[16];
        memcpy(num, ttl.ptr, ttl.len);
        num[ttl.len] = '\0';
        d->lifetime = atoi(num);
    }
}

static bool should_serve_stale(weir_session *s, void *c, int error, bool allowed)
{
    (void)error;
    note(c, "should_serve_stale");
    return allowed && !weir_headers_get(weir_session_req_headers(s), "x-no-stale").ptr;
}

static weir_phase_result cache_admin(weir_session *s)
{
    char body[200];
    int n;
    if (path_is(s, "/cache-stats")) {
        weir_cache_stats st;
        weir_cache_get_stats(cache, &st);
        n = snprintf(body, sizeof(body), "hits %llu misses %llu stored %llu stale %llu\n",
                     (unsigned long long)st.hits, (unsigned long long)st.misses,
                     (unsigned long long)st.stored, (unsigned long long)st.stale_served);
    } else {
        weir_str q = weir_session_query(s);
        bool ok = q.len > 4 && memcmp(q.ptr, "key=", 4) == 0 &&
                  weir_cache_purge(cache, q.ptr + 4, q.len - 4);
        n = snprintf(body, sizeof(body), "%s\n", ok ? "purged" : "none");
    }
    weir_session_respond(s, 200, NULL, 0, body, (size_t)n);
    return WEIR_PHASE_ANSWERED;
}

static const weir_proxy_ops ops = {
    .new_ctx = new_ctx,
    .free_ctx = free_ctx,
    .early_request_filter = early_request_filter,
    .request_filter = request_filter,
    .upstream_peer = upstream_peer,
    .connected_to_upstream = connected_to_upstream,
    .upstream_request_filter = upstream_request_filter,
    .upstream_response_filter = upstream_response_filter,
    .response_filter = response_filter,
    .response_body_filter = response_body_filter,
    .request_cache_filter = request_cache_filter,
    .cache_key = cache_key,
    .cache_hit_filter = cache_hit_filter,
    .response_cache_filter = response_cache_filter,
    .should_serve_stale = should_serve_stale,
};

int main(int argc, char **argv)
{
    if (argc != 3 || weir_peer_set_addr(&upstream, argv[2]) != WEIR_OK) {
        fprintf(stderr, "usage: %s LISTEN_ADDR UPSTREAM_ADDR\n", argv[0]);
        return 2;
    }
    char err[128];
    cache = weir_cache_new(&(weir_cache_options){.memory_bytes = 8 << 20}, err, sizeof(err));
    if (!cache) {
        fprintf(stderr, "%s: %s\n", argv[0], err);
        return 1;
    }
    weir_server_options opts = {.threads = 2, .handle_signals = true};
    weir_server *srv = weir_server_new(&opts);
    const char *listen[] = {argv[1]};
    if (!srv || weir_server_add_proxy(srv, listen, 1, &ops, NULL, NULL) != WEIR_OK) {
        fprintf(stderr, "%s: cannot listen on %s\n", argv[0], argv[1]);
        weir_server_free(srv);
        return 1;
    }
    int rc = weir_server_run(srv);
    weir_server_free(srv);
    weir_cache_free(cache);
    return rc == WEIR_OK ? 0 : 1;
}
