/*
 * Sub-requests (subrequest.c) on a loop of their own against a scripted
 * backend on loopback: the result of each path, that the callback never
 * runs inside start, that a cancel means no callback, and that a stale
 * pooled connection is replaced once.
 */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
#include "net/upool.h"
#include "proxy/subrequest.h"

enum act {
    A_END = 0,    /* close the connection */
    A_REPLY,      /* answer 200 "ok", keep the connection */
    A_READ_CLOSE, /* read the request, close without answering */
    A_HANG,       /* read the request, answer nothing until the client closes */
    A_BIG,        /* answer 200 with a 100-byte body */
    A_CHUNKED,    /* answer 200 chunked "hello" */
};

#define MAX_CONNS 4
#define MAX_ACTS 4

typedef struct backend {
    int lfd;
    struct sockaddr_in addr;
    enum act script[MAX_CONNS][MAX_ACTS];
    pthread_t thread;
    _Atomic int requests, conns;
    char last[4096];
} backend;

static bool read_head(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    while (len < cap - 1) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n <= 0)
            return false;
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, "\r\n\r\n"))
            return true;
    }
    return false;
}

static void say(int fd, const char *s)
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
        for (int i = 0; i < MAX_ACTS && b->script[c][i] != A_END; i++) {
            char buf[sizeof(b->last)];
            if (!read_head(fd, buf, sizeof(buf)))
                break;
            memcpy(b->last, buf, sizeof(buf));
            b->requests++;
            enum act a = b->script[c][i];
            if (a == A_REPLY) {
                say(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Echo: yes\r\n\r\nok");
            } else if (a == A_BIG) {
                char resp[256];
                snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n%0100d",
                         0);
                say(fd, resp);
            } else if (a == A_CHUNKED) {
                say(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n");
            } else if (a == A_HANG) {
                char x;
                while (read(fd, &x, 1) > 0)
                    ;
                break;
            } else {
                break;
            }
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
    shutdown(b->lfd, SHUT_RDWR);
    pthread_join(b->thread, NULL);
    close(b->lfd);
}

/* ---- the client side ---- */

typedef struct results {
    weir_loop *loop;
    int calls, expected;
    int status[8], code[8];
    bool reused[8];
    char body[8][128];
    char echo[8][16];
    bool inside_start;
    /* the specs to run one after the other */
    const weir_peer *peer;
    const weir_subrequest_spec *specs;
    int n_specs;
} results;

static void start_next(results *R);

static void on_result(weir_session *s, void *arg, const weir_subrequest_result *r)
{
    results *R = arg;
    cr_assert_not(R->inside_start, "the callback ran inside weir_subrequest_start");
    int i = R->calls++;
    R->status[i] = r->status;
    R->code[i] = r->error_code;
    R->reused[i] = r->reused;
    snprintf(R->body[i], sizeof(R->body[i]), "%.*s", (int)r->body.len, r->body.ptr);
    const weir_str *e = weir_subrequest_header(r, "X-ECHO");
    snprintf(R->echo[i], sizeof(R->echo[i]), "%.*s", e ? (int)e->len : 1, e ? e->ptr : "-");
    if (R->calls == R->n_specs)
        weir__loop_stop(R->loop);
    else
        start_next(R); /* from the callback: allowed */
}

static void start_next(results *R)
{
    R->inside_start = true;
    weir_subrequest *h =
        weir__subreq_start(R->loop, NULL, R->peer, &R->specs[R->calls], on_result, R);
    R->inside_start = false;
    cr_assert_not_null(h);
}

static void watchdog(weir_timer *t)
{
    cr_assert_fail("the loop did not stop: a callback is missing");
}

static weir_peer peer_of(const struct sockaddr_in *a)
{
    weir_peer p = {.addr_len = sizeof(*a), .keepalive = 8};
    memcpy(&p.addr, a, sizeof(*a));
    return p;
}

/* Runs the specs one after the other (each from the previous one's
 * callback) until the last callback ran. */
static void run_specs(results *R, const weir_peer *peer, const weir_subrequest_spec *specs, int n)
{
    R->peer = peer;
    R->specs = specs;
    R->n_specs = n;
    start_next(R);
    weir_timer dog = {0};
    weir__timer_start(R->loop, &dog, 10000, watchdog);
    weir__loop_run(R->loop);
    weir__timer_stop(R->loop, &dog);
}

static results R;

static void setup(void)
{
    memset(&R, 0, sizeof(R));
    R.loop = weir__loop_new(0);
    cr_assert_not_null(R.loop);
}

static void teardown(void)
{
    weir__subreq_shutdown();
    weir__upool_close_all(R.loop);
    weir__loop_run_pending(R.loop);
    weir__loop_free(R.loop);
    weir__upool_thread_exit();
}

TestSuite(subrequest, .init = setup, .fini = teardown);

Test(subrequest, get_then_reuse)
{
    backend b = {.script = {{A_REPLY, A_REPLY}}};
    backend_start(&b);
    weir_peer p = peer_of(&b.addr);
    weir_header h = {WEIR_STR("X-Check"), WEIR_STR("1")};
    weir_subrequest_spec spec = {.target = WEIR_STR("/auth?x=1"), .headers = &h, .n_headers = 1};
    weir_subrequest_spec two[] = {spec, spec};
    run_specs(&R, &p, two, 2);
    backend_stop(&b);
    cr_assert_eq(R.status[0], 200);
    cr_assert_eq(R.code[0], WEIR_SUBREQ_OK);
    cr_assert_str_eq(R.body[0], "ok");
    cr_assert_str_eq(R.echo[0], "yes");
    cr_assert_not(R.reused[0]);
    cr_assert(R.reused[1], "the second goes on the pooled connection");
    cr_assert_eq(b.conns, 1);
    cr_assert(strstr(b.last, "GET /auth?x=1 HTTP/1.1\r\n"), "%s", b.last);
    cr_assert(strstr(b.last, "\r\nHost: 127.0.0.1:"), "%s", b.last);
    cr_assert(strstr(b.last, "\r\nX-Check: 1\r\n"), "%s", b.last);
    cr_assert_eq(weir_subrequest_count(), 0);
}

Test(subrequest, chunked_body)
{
    backend b = {.script = {{A_CHUNKED}}};
    backend_start(&b);
    weir_peer p = peer_of(&b.addr);
    weir_subrequest_spec spec = {0};
    run_specs(&R, &p, &spec, 1);
    backend_stop(&b);
    cr_assert_eq(R.status[0], 200);
    cr_assert_str_eq(R.body[0], "hello");
}

Test(subrequest, refused_is_a_502)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    socklen_t len = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    weir_peer p = peer_of(&a);
    weir_subrequest_spec spec = {0};
    run_specs(&R, &p, &spec, 1);
    cr_assert_eq(R.status[0], 502);
    cr_assert_eq(R.code[0], WEIR_SUBREQ_CONNECT);
}

Test(subrequest, timeout_is_a_504)
{
    backend b = {.script = {{A_HANG}}};
    backend_start(&b);
    weir_peer p = peer_of(&b.addr);
    weir_subrequest_spec spec = {.timeout_ms = 100};
    run_specs(&R, &p, &spec, 1);
    backend_stop(&b); /* returns: the timeout closed the connection */
    cr_assert_eq(R.status[0], 504);
    cr_assert_eq(R.code[0], WEIR_SUBREQ_TIMEOUT);
}

Test(subrequest, body_over_the_limit)
{
    backend b = {.script = {{A_BIG}, {A_BIG}}};
    backend_start(&b);
    weir_peer p = peer_of(&b.addr);
    weir_subrequest_spec specs[] = {{.max_body = 99}, {.max_body = 100}};
    run_specs(&R, &p, specs, 2);
    backend_stop(&b);
    cr_assert_eq(R.status[0], 502);
    cr_assert_eq(R.code[0], WEIR_SUBREQ_TOO_LARGE);
    cr_assert_eq(R.status[1], 200);
    cr_assert_eq(strlen(R.body[1]), 100);
}

Test(subrequest, stale_pooled_connection_is_replaced_once)
{
    backend b = {.script = {{A_REPLY, A_READ_CLOSE}, {A_REPLY}}};
    backend_start(&b);
    weir_peer p = peer_of(&b.addr);
    weir_subrequest_spec specs[2] = {0};
    run_specs(&R, &p, specs, 2);
    backend_stop(&b);
    cr_assert_eq(R.status[1], 200, "got %d", R.status[1]);
    cr_assert_not(R.reused[1], "answered on the new connection");
    cr_assert_eq(b.conns, 2);
    cr_assert_eq(b.requests, 3);
}

static weir_subrequest *to_cancel;

static void cancel_it(weir_timer *t)
{
    cr_assert_eq(weir_subrequest_count(), 1);
    weir_subrequest_cancel(to_cancel);
    cr_assert_eq(weir_subrequest_count(), 0);
}

static void stop_loop(weir_timer *t)
{
    weir__loop_stop(R.loop);
}

Test(subrequest, cancel_means_no_callback)
{
    backend b = {.script = {{A_HANG}}};
    backend_start(&b);
    weir_peer p = peer_of(&b.addr);
    weir_subrequest_spec spec = {0};
    to_cancel = weir__subreq_start(R.loop, NULL, &p, &spec, on_result, &R);
    cr_assert_not_null(to_cancel);
    weir_timer t1 = {0}, t2 = {0};
    weir__timer_start(R.loop, &t1, 100, cancel_it); /* connected and sent by then */
    weir__timer_start(R.loop, &t2, 200, stop_loop);
    weir__loop_run(R.loop);
    backend_stop(&b); /* returns: the cancel closed the connection */
    cr_assert_eq(b.requests, 1);
    cr_assert_eq(R.calls, 0);
}

Test(subrequest, a_failure_at_start_still_calls_back_later)
{
    /* Refused at once on some systems: the result still comes from the loop. */
    weir_peer p = {.addr_len = sizeof(struct sockaddr_in)};
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(1), .sin_addr.s_addr = htonl(0x7f000001)};
    memcpy(&p.addr, &a, sizeof(a));
    weir_subrequest_spec spec = {0};
    run_specs(&R, &p, &spec, 1);
    cr_assert_eq(R.status[0], 502);
}

Test(subrequest, malformed_specs_are_refused)
{
    backend b = {.script = {{A_END}}};
    weir_peer p = peer_of(&b.addr);
    weir_subrequest_spec bad[] = {
        {.method = WEIR_STR("GE T")},         {.target = WEIR_STR("noslash")},
        {.target = WEIR_STR("/a b")},         {.target = WEIR_STR("/a\r\nX: y")},
        {.authority = WEIR_STR("h\r\nX: y")},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_null(weir__subreq_start(R.loop, NULL, &p, &bad[i], on_result, &R), "%zu", i);
    weir_header h = {WEIR_STR("X-A"), WEIR_STR("v\nX-B: 1")};
    weir_subrequest_spec with_bad_value = {.headers = &h, .n_headers = 1};
    cr_assert_null(weir__subreq_start(R.loop, NULL, &p, &with_bad_value, on_result, &R));
    weir_peer none = {0};
    weir_subrequest_spec ok = {0};
    cr_assert_null(weir__subreq_start(R.loop, NULL, &none, &ok, on_result, &R));
    cr_assert_eq(weir_subrequest_count(), 0);
}
