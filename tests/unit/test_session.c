/*
 * The proxy session's state machine, driven through the stream handler
 * (what an HTTP/1 or HTTP/2 connection calls) with a fake downstream
 * exchange, against a scripted backend on loopback: what each retry path,
 * a pending phase and an abort while pending do, checked from what the
 * client side received, what the backend saw and what logging was told.
 *
 * One loop runs each test's requests in order (the next starts from the
 * previous one's logging phase); a watchdog stops a test that would hang.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
#include "http/exchange.h"
#include "http/stream.h"
#include "net/upool.h"
#include "proxy/service.h"

/* ---- a scripted backend ---- */

enum act {
    A_END = 0,    /* no more requests on this connection: close it */
    A_REPLY,      /* read a request, answer 200 "ok", keep the connection */
    A_READ_CLOSE, /* read a request, close without a byte of response */
    A_READ_RESET, /* read a request, reset the connection */
    A_HANG,       /* read a request, answer nothing until the proxy closes */
    A_REPLY_502,  /* read a request, answer 502, keep the connection */
};

#define MAX_CONNS 8
#define MAX_ACTS 8

typedef struct backend {
    int lfd;
    struct sockaddr_in addr;
    enum act script[MAX_CONNS][MAX_ACTS];
    pthread_t thread;
    _Atomic int requests; /* request heads read */
    _Atomic int conns;    /* connections accepted */
} backend;

/* Reads one request head; false at EOF or an error. */
static bool read_head(int fd)
{
    char buf[4096];
    size_t len = 0;
    while (len < sizeof(buf)) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);
        if (n <= 0)
            return false;
        len += (size_t)n;
        if (memmem(buf, len, "\r\n\r\n", 4))
            return true;
    }
    return false;
}

static void write_all(int fd, const char *s)
{
    size_t len = strlen(s);
    while (len > 0) {
        ssize_t n = write(fd, s, len);
        if (n <= 0)
            return;
        s += n;
        len -= (size_t)n;
    }
}

static void *backend_main(void *arg)
{
    backend *b = arg;
    for (int c = 0; c < MAX_CONNS && b->script[c][0] != A_END; c++) {
        int fd = accept(b->lfd, NULL, NULL);
        if (fd < 0)
            return NULL;
        b->conns++;
        bool reset = false;
        for (int i = 0; i < MAX_ACTS && b->script[c][i] != A_END; i++) {
            if (!read_head(fd))
                break;
            b->requests++;
            enum act a = b->script[c][i];
            if (a == A_REPLY)
                write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            else if (a == A_REPLY_502)
                write_all(fd, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 3\r\n\r\nbad");
            else if (a == A_HANG) {
                char x;
                while (read(fd, &x, 1) > 0)
                    ;
                break;
            } else {
                reset = a == A_READ_RESET;
                break;
            }
        }
        if (reset) {
            struct linger lg = {1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        close(fd);
    }
    return NULL;
}

static void backend_start(backend *b)
{
    b->lfd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(b->lfd, 0);
    b->addr = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    cr_assert_eq(bind(b->lfd, (struct sockaddr *)&b->addr, sizeof(b->addr)), 0);
    socklen_t len = sizeof(b->addr);
    getsockname(b->lfd, (struct sockaddr *)&b->addr, &len);
    cr_assert_eq(listen(b->lfd, 16), 0);
    cr_assert_eq(pthread_create(&b->thread, NULL, backend_main, b), 0);
}

static void backend_stop(backend *b)
{
    shutdown(b->lfd, SHUT_RDWR); /* an accept still waiting returns */
    pthread_join(b->thread, NULL);
    close(b->lfd);
}

/* A port nothing listens on. */
static struct sockaddr_in closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    socklen_t len = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return a;
}

/* ---- the fake client side ---- */

typedef struct fake_down {
    weir_exchange x;
    int status;
    char body[256];
    size_t body_len;
    bool ended;
    bool done_called;
    bool done_reuse;
} fake_down;

static int fd_read_head(weir_exchange *x, weir_msg *m)
{
    return WEIR_ERR;
}

static int fd_read_body(weir_exchange *x, weir_str *segs, size_t max, size_t *n, weir_str *tr)
{
    *n = 0;
    *tr = WEIR_STR_NULL;
    return WEIR_DONE; /* the requests here have no body */
}

static void fd_consume_body(weir_exchange *x) {}

static int fd_write_head(weir_exchange *x, const weir_msg *m)
{
    ((fake_down *)x)->status = m->status;
    return WEIR_OK;
}

static int fd_write_body(weir_exchange *x, const weir_str *segs, size_t n)
{
    fake_down *d = (fake_down *)x;
    for (size_t i = 0; i < n; i++) {
        size_t room = sizeof(d->body) - d->body_len;
        size_t take = segs[i].len < room ? segs[i].len : room;
        memcpy(d->body + d->body_len, segs[i].ptr, take);
        d->body_len += take;
    }
    return WEIR_OK;
}

static int fd_write_end(weir_exchange *x, weir_str trailers)
{
    ((fake_down *)x)->ended = true;
    return WEIR_OK;
}

static int fd_flush(weir_exchange *x)
{
    return WEIR_OK;
}

static bool fd_peer_gone(weir_exchange *x)
{
    return false;
}

static void fd_tunnel(weir_exchange *x) {}

static const weir_exchange_ops fake_down_ops = {
    .read_head = fd_read_head,
    .read_body = fd_read_body,
    .consume_body = fd_consume_body,
    .write_head = fd_write_head,
    .write_body = fd_write_body,
    .write_end = fd_write_end,
    .flush = fd_flush,
    .peer_gone = fd_peer_gone,
    .tunnel = fd_tunnel,
};

static void origin_done(void *owner, bool reuse)
{
    fake_down *d = owner;
    cr_assert_not(d->done_called, "done called twice");
    d->done_called = true;
    d->done_reuse = reuse;
}

/* ---- the application and the driver ---- */

enum mode {
    M_PROXY,       /* straight to the backend */
    M_PEND,        /* request_filter pends; a timer resumes with CONTINUE */
    M_PEND_ANSWER, /* request_filter pends; a timer answers 201 and resumes */
    M_PEND_ABORT,  /* request_filter pends; the connection aborts, then the timer resumes */
    M_BAD_RESULT,  /* request_filter returns an I/O code cast to a phase result */
    M_STREAM,      /* respond_stream: "abc" three times, waiting (AGAIN) before each */
    M_STREAM_FAIL, /* respond_stream whose producer fails after its first piece */
    M_REPLACED,    /* respond_stream, then respond(201 "app") replaces it */
    M_FILE,        /* respond_file of H.file_fd from byte 2 */
};

#define MAX_REQS 4
#define MAX_PEERS 6

typedef struct result {
    int logged; /* times the logging phase ran */
    weir_session_stats st;
    char term[3];
    int fails;                  /* fail_to_connect calls */
    int fail_errors[MAX_PEERS]; /* their `error` */
    weir_failure fail_kinds[MAX_PEERS];
    bool connected_reused[MAX_PEERS];
    int n_connected;
} result;

typedef struct harness {
    weir_loop *loop;
    weir_service svc;
    weir_proxy_ops ops;
    struct sockaddr_in peers[MAX_PEERS]; /* upstream_peer's k-th answer (the last repeats) */
    int n_peers, next_peer;
    int max_retries; /* fail_to_connect says yes up to this attempt */
    uint8_t retry_on;
    uint32_t read_timeout_ms;
    enum mode modes[MAX_REQS];
    int n_reqs, cur;
    fake_down down[MAX_REQS];
    result res[MAX_REQS];
    void *stream; /* the current request's session */
    weir_timer abort_timer, watchdog;
    bool timed_out;
    struct sockaddr_in client;
    /* generated bodies */
    int produced, prod_done, prod_complete;
    bool woken;
    int file_fd;
} harness;

static harness H;

static void start_next(void *arg);

static void *t_new_ctx(weir_session *s, void *app)
{
    return app;
}

static void resume_continue(weir_session *s, void *ctx)
{
    weir_session_resume(s, WEIR_PHASE_CONTINUE);
}

static void resume_answer(weir_session *s, void *ctx)
{
    weir_session_respond(s, 201, NULL, 0, "app", 3);
    weir_session_resume(s, WEIR_PHASE_ANSWERED);
}

static void wake_body(weir_session *s, void *ctx)
{
    weir_session_body_ready(s);
}

static int t_produce(weir_session *s, void *ctx, char *buf, size_t cap, size_t *len)
{
    harness *h = ctx;
    if (h->modes[h->cur] == M_STREAM_FAIL && h->produced == 1)
        return WEIR_ERR;
    if (!h->woken) { /* wait before each piece: a timer says when */
        h->woken = true;
        weir_session_set_timer(s, 5, wake_body);
        return WEIR_AGAIN;
    }
    h->woken = false;
    cr_assert_geq(cap, 3);
    memcpy(buf, "abc", 3);
    *len = 3;
    return ++h->produced == 3 ? WEIR_DONE : WEIR_OK;
}

static void t_produced(weir_session *s, void *ctx, bool complete)
{
    harness *h = ctx;
    h->prod_done++;
    h->prod_complete += complete;
}

static weir_phase_result t_request_filter(weir_session *s, void *ctx)
{
    harness *h = ctx;
    weir_body_producer p = {t_produce, t_produced, h, -1};
    switch (h->modes[h->cur]) {
    case M_STREAM:
    case M_STREAM_FAIL:
        h->produced = 0;
        cr_assert_eq(weir_session_respond_stream(s, 200, NULL, 0, &p), WEIR_OK);
        return WEIR_PHASE_ANSWERED;
    case M_REPLACED:
        cr_assert_eq(weir_session_respond_stream(s, 200, NULL, 0, &p), WEIR_OK);
        cr_assert_eq(weir_session_respond(s, 201, NULL, 0, "app", 3), WEIR_OK);
        return WEIR_PHASE_ANSWERED;
    case M_FILE:
        cr_assert_eq(weir_session_respond_file(s, 200, NULL, 0, h->file_fd, 2, 8), WEIR_OK);
        return WEIR_PHASE_ANSWERED;
    case M_PROXY:
        return WEIR_PHASE_CONTINUE;
    case M_PEND:
        weir_session_set_timer(s, 20, resume_continue);
        return WEIR_PHASE_PENDING;
    case M_PEND_ANSWER:
        weir_session_set_timer(s, 20, resume_answer);
        return WEIR_PHASE_PENDING;
    case M_PEND_ABORT:
        weir_session_set_timer(s, 80, resume_continue);
        return WEIR_PHASE_PENDING;
    case M_BAD_RESULT:
        return (weir_phase_result)WEIR_AGAIN;
    }
    return WEIR_PHASE_ERROR;
}

static weir_phase_result t_upstream_peer(weir_session *s, void *ctx, weir_peer *p)
{
    harness *h = ctx;
    int k = h->next_peer < h->n_peers ? h->next_peer : h->n_peers - 1;
    h->next_peer++;
    memcpy(&p->addr, &h->peers[k], sizeof(h->peers[k]));
    p->addr_len = sizeof(h->peers[k]);
    p->retry_on = h->retry_on;
    if (h->read_timeout_ms)
        p->read_timeout_ms = h->read_timeout_ms;
    return WEIR_PHASE_CONTINUE;
}

static void t_connected(weir_session *s, void *ctx, const weir_peer *p, bool reused)
{
    harness *h = ctx;
    result *r = &h->res[h->cur];
    if (r->n_connected < MAX_PEERS)
        r->connected_reused[r->n_connected++] = reused;
}

static bool t_fail_to_connect(weir_session *s, void *ctx, const weir_peer *p, int error,
                              int attempt)
{
    harness *h = ctx;
    result *r = &h->res[h->cur];
    cr_assert_eq(attempt, r->fails + 1, "attempts are counted from 1 without gaps");
    if (r->fails < MAX_PEERS) {
        r->fail_errors[r->fails] = error;
        r->fail_kinds[r->fails] = weir_session_failure(s);
    }
    r->fails++;
    return attempt <= h->max_retries;
}

static void t_logging(weir_session *s, void *ctx, const weir_session_stats *st)
{
    harness *h = ctx;
    result *r = &h->res[h->cur];
    r->logged++;
    r->st = *st;
    memcpy(r->term, st->termination, 3);
    r->st.termination[0] = 0; /* the copy above keeps it */
    r->st.upstream_addr = NULL;
    r->st.error = NULL;
    /* The session is freed once logging returns: the next request starts
     * from the loop, not from inside this one. */
    weir__loop_defer(h->loop, start_next, h);
}

static void abort_now(weir_timer *t)
{
    harness *h = weir_container_of(t, harness, abort_timer);
    weir__session_handler.stream_abort(h->stream);
}

static void watchdog(weir_timer *t)
{
    harness *h = weir_container_of(t, harness, watchdog);
    h->timed_out = true;
    weir__loop_stop(h->loop);
}

static weir_str S(const char *lit)
{
    return (weir_str){lit, strlen(lit)};
}

static void start_next(void *arg)
{
    harness *h = arg;
    if (h->cur + 1 >= h->n_reqs) {
        weir__loop_stop(h->loop);
        return;
    }
    int i = ++h->cur;
    h->next_peer = 0;
    weir_msg *req;
    h->stream = weir__session_handler.stream_new(&h->svc, h->loop, &req);
    cr_assert_not_null(h->stream);
    req->method = S("GET");
    req->target = S("/");
    req->version = 11;
    req->body = WEIR_BODY_NONE;
    weir__headers_push(&req->headers, S("Host"), S("example.test"));
    h->down[i].x.ops = &fake_down_ops;
    weir_stream_origin o = {
        .owner = &h->down[i],
        .done = origin_done,
        .peer = (const struct sockaddr *)&h->client,
        .peer_ip = S("127.0.0.1"),
    };
    if (h->modes[i] == M_PEND_ABORT)
        weir__timer_start(h->loop, &h->abort_timer, 10, abort_now);
    weir__session_handler.stream_start(h->stream, &h->down[i].x, 40, &o);
}

/* Runs h->n_reqs requests (h->modes) through the session, one after the
 * other, against h->peers. */
static void run_requests(harness *h)
{
    h->loop = weir__loop_new(0);
    cr_assert_not_null(h->loop);
    h->ops = (weir_proxy_ops){
        .new_ctx = t_new_ctx,
        .request_filter = t_request_filter,
        .upstream_peer = t_upstream_peer,
        .connected_to_upstream = t_connected,
        .fail_to_connect = t_fail_to_connect,
        .logging = t_logging,
    };
    h->svc.ops = &h->ops;
    h->svc.app = h;
    weir__proxy_options_defaults(&h->svc.opts);
    h->client = (struct sockaddr_in){
        .sin_family = AF_INET, .sin_port = htons(40000), .sin_addr.s_addr = htonl(0x7f000001)};
    h->cur = -1;
    weir__timer_start(h->loop, &h->watchdog, 5000, watchdog);
    weir__loop_defer(h->loop, start_next, h);
    weir__loop_run(h->loop);
    weir__timer_stop(h->loop, &h->watchdog);
    weir__timer_stop(h->loop, &h->abort_timer);
    weir__upool_close_all(h->loop);
    weir__loop_run_pending(h->loop);
    weir__upool_thread_exit();
    weir__loop_free(h->loop);
    cr_assert_not(h->timed_out, "the requests did not finish within 5 s");
}

static void expect_ok(const harness *h, int i)
{
    const fake_down *d = &h->down[i];
    cr_assert_eq(d->status, 200, "request %d: status %d", i, d->status);
    cr_assert(d->ended && d->body_len == 2 && memcmp(d->body, "ok", 2) == 0,
              "request %d: body '%.*s'", i, (int)d->body_len, d->body);
    cr_assert_eq(h->res[i].logged, 1);
    cr_assert_str_eq(h->res[i].term, "--", "request %d: termination %s", i, h->res[i].term);
    cr_assert(d->done_called && d->done_reuse, "request %d: the connection stays", i);
}

/* ---- tests ---- */

Test(session, proxied_request)
{
    backend b = {.script = {{A_REPLY}}};
    backend_start(&b);
    H.peers[0] = b.addr;
    H.n_peers = 1;
    H.n_reqs = 1;
    run_requests(&H);
    backend_stop(&b);
    expect_ok(&H, 0);
    cr_assert_eq(b.requests, 1);
    cr_assert_eq(H.res[0].fails, 0);
    cr_assert_eq(H.res[0].st.status, 200);
}

Test(session, stale_pooled_connection_is_retried_on_a_new_one)
{
    /* The first connection serves request 0, then closes under request 1
     * (a keep-alive race with the backend's idle timeout): request 1 goes
     * again on a new connection, without asking the application. */
    backend b = {.script = {{A_REPLY, A_READ_CLOSE}, {A_REPLY}}};
    backend_start(&b);
    H.peers[0] = b.addr;
    H.n_peers = 1;
    H.n_reqs = 2;
    run_requests(&H);
    backend_stop(&b);
    expect_ok(&H, 0);
    expect_ok(&H, 1);
    cr_assert_eq(b.conns, 2);
    cr_assert_eq(b.requests, 3);
    cr_assert_eq(H.res[1].fails, 0, "a stale connection is not the backend's failure");
    cr_assert_eq(H.res[1].n_connected, 2);
    cr_assert(H.res[1].connected_reused[0], "first from the pool");
    cr_assert_not(H.res[1].connected_reused[1], "then a new connection");
}

Test(session, stale_pooled_connection_reset_is_retried_too)
{
    backend b = {.script = {{A_REPLY, A_READ_RESET}, {A_REPLY}}};
    backend_start(&b);
    H.peers[0] = b.addr;
    H.n_peers = 1;
    H.n_reqs = 2;
    run_requests(&H);
    backend_stop(&b);
    expect_ok(&H, 1);
    cr_assert_eq(H.res[1].fails, 0);
}

Test(session, reset_before_the_response_is_retried_when_the_app_agrees)
{
    backend bad = {.script = {{A_READ_CLOSE}}};
    backend good = {.script = {{A_REPLY}}};
    backend_start(&bad);
    backend_start(&good);
    H.peers[0] = bad.addr;
    H.peers[1] = good.addr;
    H.n_peers = 2;
    H.max_retries = 2;
    H.n_reqs = 1;
    run_requests(&H);
    backend_stop(&bad);
    backend_stop(&good);
    expect_ok(&H, 0);
    cr_assert_eq(H.res[0].fails, 1);
    cr_assert_eq(H.res[0].fail_kinds[0], WEIR_FAILURE_RESET);
    cr_assert(H.res[0].fail_errors[0] < 0, "a negative errno, got %d", H.res[0].fail_errors[0]);
    cr_assert_eq(bad.requests, 1);
    cr_assert_eq(good.requests, 1);
}

Test(session, reset_before_the_response_without_a_retry_is_a_502)
{
    backend bad = {.script = {{A_READ_RESET}}};
    backend_start(&bad);
    H.peers[0] = bad.addr;
    H.n_peers = 1;
    H.max_retries = 0;
    H.n_reqs = 1;
    run_requests(&H);
    backend_stop(&bad);
    cr_assert_eq(H.down[0].status, 502);
    cr_assert_eq(H.res[0].fails, 1);
    cr_assert_str_eq(H.res[0].term, "SH", "the backend ended it waiting for the head");
    cr_assert_eq(H.res[0].logged, 1);
}

Test(session, refused_connect_goes_to_the_next_peer)
{
    backend good = {.script = {{A_REPLY}}};
    backend_start(&good);
    H.peers[0] = closed_port();
    H.peers[1] = good.addr;
    H.n_peers = 2;
    H.max_retries = 1;
    H.n_reqs = 1;
    run_requests(&H);
    backend_stop(&good);
    expect_ok(&H, 0);
    cr_assert_eq(H.res[0].fails, 1);
    cr_assert_eq(H.res[0].fail_kinds[0], WEIR_FAILURE_CONNECT);
    cr_assert_eq(H.res[0].fail_errors[0], -ECONNREFUSED);
}

Test(session, retries_stop_at_what_the_app_allows)
{
    H.peers[0] = closed_port();
    H.n_peers = 1;
    H.max_retries = 2;
    H.n_reqs = 1;
    run_requests(&H);
    cr_assert_eq(H.res[0].fails, 3, "attempts 1 and 2 retried, the 3rd not");
    cr_assert_eq(H.down[0].status, 502);
    cr_assert_str_eq(H.res[0].term, "SC");
}

Test(session, timeout_before_the_response_is_retried_when_asked)
{
    backend slow = {.script = {{A_HANG}}};
    backend good = {.script = {{A_REPLY}}};
    backend_start(&slow);
    backend_start(&good);
    H.peers[0] = slow.addr;
    H.peers[1] = good.addr;
    H.n_peers = 2;
    H.max_retries = 1;
    H.retry_on = WEIR_RETRY_TIMEOUT;
    H.read_timeout_ms = 100;
    H.n_reqs = 1;
    run_requests(&H);
    backend_stop(&slow);
    backend_stop(&good);
    expect_ok(&H, 0);
    cr_assert_eq(H.res[0].fails, 1);
    cr_assert_eq(H.res[0].fail_kinds[0], WEIR_FAILURE_TIMEOUT);
    cr_assert_eq(H.res[0].fail_errors[0], -ETIMEDOUT);
}

Test(session, timeout_without_retry_on_is_a_504)
{
    backend slow = {.script = {{A_HANG}}};
    backend_start(&slow);
    H.peers[0] = slow.addr;
    H.n_peers = 1;
    H.max_retries = 3;
    H.read_timeout_ms = 100;
    H.n_reqs = 1;
    run_requests(&H);
    backend_stop(&slow);
    cr_assert_eq(H.down[0].status, 504);
    cr_assert_eq(H.res[0].fails, 0, "a timeout is not offered for retry unless asked");
    cr_assert_str_eq(H.res[0].term, "sH");
}

Test(session, a_502_is_retried_when_asked_and_dropped)
{
    backend bad = {.script = {{A_REPLY_502}}};
    backend good = {.script = {{A_REPLY}}};
    backend_start(&bad);
    backend_start(&good);
    H.peers[0] = bad.addr;
    H.peers[1] = good.addr;
    H.n_peers = 2;
    H.max_retries = 1;
    H.retry_on = WEIR_RETRY_502;
    H.n_reqs = 1;
    run_requests(&H);
    backend_stop(&bad);
    backend_stop(&good);
    expect_ok(&H, 0);
    cr_assert_eq(H.res[0].fail_kinds[0], WEIR_FAILURE_STATUS);
    cr_assert_eq(H.res[0].fail_errors[0], 0);
}

Test(session, pending_phase_resumes_and_proxies)
{
    backend b = {.script = {{A_REPLY, A_REPLY}}};
    backend_start(&b);
    H.peers[0] = b.addr;
    H.n_peers = 1;
    H.n_reqs = 2;
    H.modes[0] = M_PEND;
    H.modes[1] = M_PEND;
    run_requests(&H);
    backend_stop(&b);
    expect_ok(&H, 0);
    expect_ok(&H, 1);
    cr_assert_eq(b.requests, 2);
    cr_assert_eq(b.conns, 1, "the second request reuses the first one's connection");
}

Test(session, pending_phase_answers_itself)
{
    H.peers[0] = closed_port();
    H.n_peers = 1;
    H.n_reqs = 1;
    H.modes[0] = M_PEND_ANSWER;
    run_requests(&H);
    cr_assert_eq(H.down[0].status, 201);
    cr_assert(H.down[0].body_len == 3 && memcmp(H.down[0].body, "app", 3) == 0);
    cr_assert_eq(H.res[0].n_connected, 0, "no backend was tried");
    cr_assert(H.down[0].done_called && H.down[0].done_reuse);
}

Test(session, abort_while_pending_ends_once_the_phase_resumes)
{
    /* The connection goes (10 ms) while request_filter pends (80 ms): the
     * session lives on until the resume, then logs once as a client abort,
     * tells the dead connection nothing and tries no backend. */
    backend b = {.script = {{A_REPLY}}};
    backend_start(&b);
    H.peers[0] = b.addr;
    H.n_peers = 1;
    H.n_reqs = 2;
    H.modes[0] = M_PEND_ABORT;
    H.modes[1] = M_PROXY;
    run_requests(&H);
    backend_stop(&b);
    cr_assert_eq(H.res[0].logged, 1);
    cr_assert(H.res[0].st.client_aborted);
    cr_assert_eq(H.res[0].st.status, 499);
    cr_assert_not(H.down[0].done_called, "the aborted connection is not called back");
    cr_assert_eq(H.res[0].n_connected, 0);
    cr_assert_eq(H.down[0].status, 0, "nothing was written to the client");
    /* The worker goes on serving. */
    expect_ok(&H, 1);
    cr_assert_eq(b.requests, 1);
}

Test(session, invalid_phase_result_fails_the_request)
{
    H.peers[0] = closed_port();
    H.n_peers = 1;
    H.n_reqs = 1;
    H.modes[0] = M_BAD_RESULT;
    run_requests(&H);
    cr_assert_eq(H.down[0].status, 500);
    cr_assert_eq(H.res[0].n_connected, 0);
    cr_assert_eq(H.res[0].logged, 1);
}

Test(session, a_streamed_body_waits_for_its_producer_and_arrives_whole)
{
    H.n_peers = 1;
    H.peers[0] = closed_port();
    H.n_reqs = 2;
    H.modes[0] = M_STREAM;
    H.modes[1] = M_STREAM;
    run_requests(&H);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(H.down[i].status, 200);
        cr_assert(H.down[i].ended && H.down[i].body_len == 9 &&
                      memcmp(H.down[i].body, "abcabcabc", 9) == 0,
                  "body '%.*s'", (int)H.down[i].body_len, H.down[i].body);
        cr_assert(H.down[i].done_called && H.down[i].done_reuse);
        cr_assert_str_eq(H.res[i].term, "--");
    }
    cr_assert_eq(H.produced, 3);
    cr_assert_eq(H.prod_done, 2, "done once per response");
    cr_assert_eq(H.prod_complete, 2);
    cr_assert_eq(H.res[0].n_connected, 0, "no backend was tried");
}

Test(session, a_failing_producer_cuts_the_response)
{
    H.n_peers = 1;
    H.peers[0] = closed_port();
    H.n_reqs = 1;
    H.modes[0] = M_STREAM_FAIL;
    run_requests(&H);
    cr_assert_eq(H.down[0].status, 200);
    cr_assert_not(H.down[0].ended, "no end of body after a failure");
    cr_assert(H.down[0].done_called && !H.down[0].done_reuse, "the connection goes");
    cr_assert_eq(H.prod_done, 1);
    cr_assert_eq(H.prod_complete, 0);
    cr_assert_str_eq(H.res[0].term, "PD");
}

Test(session, a_replaced_stream_is_released_once)
{
    H.n_peers = 1;
    H.peers[0] = closed_port();
    H.n_reqs = 1;
    H.modes[0] = M_REPLACED;
    run_requests(&H);
    cr_assert_eq(H.down[0].status, 201);
    cr_assert(H.down[0].body_len == 3 && memcmp(H.down[0].body, "app", 3) == 0);
    cr_assert_eq(H.prod_done, 1);
    cr_assert_eq(H.prod_complete, 0);
    cr_assert_eq(H.produced, 0, "the replaced producer was never asked");
}

Test(session, a_file_body_is_read_and_closed)
{
    char path[] = "/tmp/weir-test-file-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    cr_assert_eq(write(fd, "0123456789abcdef", 16), 16);
    H.file_fd = fd;
    H.n_peers = 1;
    H.peers[0] = closed_port();
    H.n_reqs = 1;
    H.modes[0] = M_FILE;
    run_requests(&H);
    cr_assert_eq(H.down[0].status, 200);
    cr_assert(H.down[0].ended && H.down[0].body_len == 8 &&
                  memcmp(H.down[0].body, "23456789", 8) == 0,
              "body '%.*s'", (int)H.down[0].body_len, H.down[0].body);
    cr_assert(fcntl(fd, F_GETFD) < 0 && errno == EBADF, "weir closed the file");
}

Test(session, respond_file_with_a_bad_status_closes_the_file)
{
    int fd = open("/dev/null", O_RDONLY);
    cr_assert_geq(fd, 0);
    cr_assert_eq(weir_session_respond_file(NULL, 42, NULL, 0, fd, 0, 0), WEIR_ERR_INVAL);
    cr_assert(fcntl(fd, F_GETFD) < 0 && errno == EBADF);
}
