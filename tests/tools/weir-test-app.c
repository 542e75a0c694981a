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
    /* /stream */
    long n, piece, pause_ms, fail, made, pos;
    bool woken;
    char filtered[65536];
} ctx;

static atomic_long gen_done, gen_complete;

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
    char buf[256];
    size_t len = q.len < sizeof(buf) - 1 ? q.len : sizeof(buf) - 1;
    memcpy(buf, q.ptr, len);
    buf[len] = '\0';
    for (char *tok = strtok(buf, "&"); tok; tok = strtok(NULL, "&")) {
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
            while (j < q.len && q.ptr[j] != '&' && k + 1 < cap)
                out[k++] = q.ptr[j++];
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
};

int main(int argc, char **argv)
{
    if (argc != 3 || weir_peer_set_addr(&upstream, argv[2]) != WEIR_OK) {
        fprintf(stderr, "usage: %s LISTEN_ADDR UPSTREAM_ADDR\n", argv[0]);
        return 2;
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
    return rc == WEIR_OK ? 0 : 1;
}
