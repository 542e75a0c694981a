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
 * - anything else is proxied to UPSTREAM_ADDR; the response carries
 *   X-Phases, the phases that ran, in order.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <weir/weir.h>

typedef struct ctx {
    char phases[512];
    weir_session *s;
} ctx;

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
    if (weir_session_resp_status(s) < 300 && weir_session_path(s).len > 1)
        weir_headers_set(weir_session_resp_headers(s), "X-Phases", ((ctx *)c)->phases);
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
