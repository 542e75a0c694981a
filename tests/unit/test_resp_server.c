/*
 * The library's RESP service (weir/resp.h) in this process: a small
 * key-value application on weir_server_add_resp, with its own commands
 * over the built-in ones, the idle call, replies of each type in RESP2
 * and RESP3, and a graceful stop with a client connected.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "weir/weir.h"

typedef struct kv {
    char key[32], val[32];
    bool set;
    _Atomic int idles, ctxs, freed;
} kv;

static void *new_ctx(weir_resp_conn *c, void *app)
{
    (void)c;
    kv *k = app;
    atomic_fetch_add(&k->ctxs, 1);
    return k;
}

static void free_ctx(void *app, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&((kv *)app)->freed, 1);
}

static void idle(weir_resp_conn *c, void *ctx)
{
    (void)c;
    atomic_fetch_add(&((kv *)ctx)->idles, 1);
}

static bool eq(weir_str a, const char *s)
{
    return a.len == strlen(s) && memcmp(a.ptr, s, a.len) == 0;
}

static bool command(weir_resp_conn *c, void *ctx, const weir_str *argv, size_t argc)
{
    kv *k = ctx;
    if (eq(argv[0], "SET") && argc == 3 && argv[1].len < 32 && argv[2].len < 32) {
        memcpy(k->key, argv[1].ptr, argv[1].len);
        k->key[argv[1].len] = '\0';
        memcpy(k->val, argv[2].ptr, argv[2].len);
        k->val[argv[2].len] = '\0';
        k->set = true;
        weir_resp_reply_simple(c, "OK");
        return true;
    }
    if (eq(argv[0], "GET") && argc == 2) {
        if (k->set && eq(argv[1], k->key))
            weir_resp_reply_bulk(c, k->val, strlen(k->val));
        else
            weir_resp_reply_nil(c);
        return true;
    }
    if (eq(argv[0], "PING")) { /* overrides the built-in one */
        weir_resp_reply_simple(c, "PONG from kv");
        return true;
    }
    if (eq(argv[0], "TYPES")) {
        weir_resp_reply_array(c, 3);
        weir_resp_reply_int(c, -42);
        weir_resp_reply_map(c, 1);
        weir_resp_reply_bulk(c, "k", 1);
        weir_resp_reply_error(c, "WRONGTYPE no\r\nline");
        weir_resp_reply_nil(c);
        return true;
    }
    return false;
}

static const weir_resp_command_info cmds[] = {{"get", 2, NULL, 1, 1, 1}, {"set", 3, NULL, 1, 1, 1}};
static const weir_resp_ops ops = {
    .new_ctx = new_ctx,
    .free_ctx = free_ctx,
    .command = command,
    .idle = idle,
    .commands = cmds,
    .n_commands = 2,
};

typedef struct fixture {
    weir_server *srv;
    pthread_t thread;
    int port;
    kv k;
} fixture;

static void *run(void *arg)
{
    weir_server_run(((fixture *)arg)->srv);
    return NULL;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static int dial(int port)
{
    for (int i = 0; i < 200; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        struct timeval tv = {5, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
            return fd;
        close(fd);
        usleep(10000);
    }
    cr_assert_fail("cannot connect to %d", port);
    return -1;
}

static void start(fixture *f)
{
    memset(f, 0, sizeof(*f));
    weir_server_options so = {.threads = 2, .grace_period_ms = 3000};
    f->srv = weir_server_new(&so);
    cr_assert(f->srv);
    f->port = free_port();
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", f->port);
    const char *addrs[] = {addr};
    weir_resp_options o = {.name = "kv", .version = "9.9"};
    cr_assert_eq(weir_server_add_resp(f->srv, addrs, 1, &ops, &f->k, &o), WEIR_OK);
    cr_assert_eq(pthread_create(&f->thread, NULL, run, f), 0);
}

static void stop(fixture *f)
{
    weir_server_shutdown(f->srv, true);
    pthread_join(f->thread, NULL);
    weir_server_free(f->srv);
}

/* Sends req, reads until want bytes came (or EOF); returns them. */
static char *ask(int fd, const char *req, size_t want)
{
    static char buf[8192];
    if (req)
        cr_assert_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    size_t n = 0;
    while (n < want) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return buf;
}

#define ASK(fd, req, want) cr_assert_str_eq(ask(fd, req, strlen(want)), want)

Test(resp_server, own_commands_over_the_builtin_ones)
{
    fixture f;
    start(&f);
    int fd = dial(f.port);
    ASK(fd, "PING\r\n", "+PONG from kv\r\n");
    ASK(fd, "*3\r\n$3\r\nSET\r\n$1\r\na\r\n$2\r\nhi\r\nGET a\r\nGET b\r\n",
        "+OK\r\n$2\r\nhi\r\n$-1\r\n");
    ASK(fd, "ECHO x\r\n", "$1\r\nx\r\n");
    ASK(fd, "COMMAND COUNT\r\n", ":11\r\n");
    ASK(fd, "COMMAND INFO set nope\r\n",
        "*2\r\n*10\r\n$3\r\nset\r\n:3\r\n*0\r\n:1\r\n:1\r\n:1\r\n*0\r\n*0\r\n*0\r\n*0\r\n$-1\r\n");
    ASK(fd, "DEL a\r\n", "-ERR unknown command 'DEL', with args beginning with: 'a' \r\n");
    /* RESP2 then RESP3 replies of every kind; a CR LF in an error is a space. */
    ASK(fd, "TYPES\r\n", "*3\r\n:-42\r\n*2\r\n$1\r\nk\r\n-WRONGTYPE no  line\r\n$-1\r\n");
    static const char hello[] = "%7\r\n$6\r\nserver\r\n$2\r\nkv\r\n$7\r\nversion\r\n$3\r\n9.9\r\n";
    const char *h = ask(fd, "HELLO 3\r\n", sizeof(hello) - 1);
    cr_assert(strncmp(h, hello, sizeof(hello) - 1) == 0, "%s", h);
    close(fd);
    fd = dial(f.port);
    ASK(fd, "HELLO 3\r\nTYPES\r\n", ""); /* skip HELLO's map: read it all below */
    usleep(200000);
    char *all = ask(fd, NULL, 1);
    cr_assert(strstr(all, "*3\r\n:-42\r\n%1\r\n$1\r\nk\r\n-WRONGTYPE no  line\r\n_\r\n"), "%s",
              all);
    close(fd);
    /* Each connection had its context, freed at its close; the idle call
     * came between batches. */
    for (int i = 0; i < 100 && atomic_load(&f.k.freed) < 2; i++)
        usleep(10000);
    cr_assert_eq(atomic_load(&f.k.ctxs), 2);
    cr_assert_eq(atomic_load(&f.k.freed), 2);
    cr_assert_geq(atomic_load(&f.k.idles), 3);
    stop(&f);
}

Test(resp_server, graceful_stop_closes_an_idle_client)
{
    fixture f;
    start(&f);
    int fd = dial(f.port);
    ASK(fd, "PING\r\n", "+PONG from kv\r\n");
    weir_server_shutdown(f.srv, true);
    char c;
    cr_assert_eq(read(fd, &c, 1), 0); /* our FIN: a clean end */
    close(fd);
    pthread_join(f.thread, NULL);
    cr_assert_eq(atomic_load(&f.k.freed), 1);
    weir_server_free(f.srv);
}

Test(resp_server, bad_options)
{
    weir_server *srv = weir_server_new(&(weir_server_options){.threads = 1});
    const char *addrs[] = {"127.0.0.1:1"};
    weir_resp_options o = {.max_command = 100, .max_bulk = 200};
    cr_assert_eq(weir_server_add_resp(srv, addrs, 1, &ops, NULL, &o), WEIR_ERR_INVAL);
    cr_assert_eq(weir_server_add_resp(srv, addrs, 1, NULL, NULL, NULL), WEIR_ERR_INVAL);
    weir_server_free(srv);
}
