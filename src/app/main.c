/*
 * main.c - the weir program.
 *
 * Until the TOML configuration lands, weir runs either on its embedded
 * default (a proxy on 127.0.0.1:6188 round-robining over two built-in echo
 * upstreams on 127.0.0.1:6101 and :6102, served by the same process) or
 * as a config-less proxy from the command line:
 *
 *     weir --listen 127.0.0.1:8080 --upstream 10.0.0.1:80 --upstream 10.0.0.2:80
 *
 * It uses libweir only through include/weir/, like any other program.
 */
#include <errno.h>
#include <getopt.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weir/weir.h"

#define MAX_UPSTREAMS 64
#define MAX_LISTEN 16

/* ---- the round-robin proxy ---- */

typedef struct rr_app {
    weir_peer peers[MAX_UPSTREAMS];
    char names[MAX_UPSTREAMS][64];
    size_t n;
    _Atomic uint64_t next;
} rr_app;

typedef struct rr_ctx {
    rr_app *app;
    size_t first; /* index of the first peer tried */
} rr_ctx;

static void *rr_new_ctx(weir_session *s, void *app)
{
    rr_ctx *c = calloc(1, sizeof(*c));
    if (c)
        c->app = app;
    return c;
}

static void rr_free_ctx(void *app, void *ctx)
{
    free(ctx);
}

static int rr_upstream_peer(weir_session *s, void *ctx, weir_peer *peer)
{
    rr_ctx *c = ctx;
    if (!c)
        return WEIR_PHASE_ERROR;
    rr_app *a = c->app;
    size_t i = (size_t)(atomic_fetch_add_explicit(&a->next, 1, memory_order_relaxed) % a->n);
    /* Keep the per-request defaults (timeouts) the session filled in. */
    memcpy(&peer->addr, &a->peers[i].addr, sizeof(peer->addr));
    peer->addr_len = a->peers[i].addr_len;
    return WEIR_PHASE_CONTINUE;
}

static bool rr_fail_to_connect(weir_session *s, void *ctx, const weir_peer *peer, int error,
                               int attempt)
{
    rr_ctx *c = ctx;
    /* Try each other upstream once before giving up. */
    return c && (size_t)attempt < c->app->n;
}

static const weir_proxy_ops rr_ops = {
    .new_ctx = rr_new_ctx,
    .free_ctx = rr_free_ctx,
    .upstream_peer = rr_upstream_peer,
    .fail_to_connect = rr_fail_to_connect,
};

/* ---- the built-in echo upstream (default config) ---- */

static void *echo_new_ctx(weir_session *s, void *app)
{
    return app; /* the listen address, as a C string */
}

static int echo_request_filter(weir_session *s, void *ctx)
{
    char body[512];
    weir_str m = weir_session_method(s), t = weir_session_target(s);
    int n = snprintf(body, sizeof(body), "echo from %s: %.*s %.*s\n", (const char *)ctx,
                     (int)m.len, m.ptr, (int)(t.len > 256 ? 256 : t.len), t.ptr);
    weir_header h[] = {{WEIR_STR("Content-Type"), WEIR_STR("text/plain")},
                       {WEIR_STR("X-Echo-Upstream"), {ctx, strlen(ctx)}}};
    if (weir_session_respond(s, 200, h, 2, body, (size_t)n) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_ANSWERED;
}

static int echo_upstream_peer(weir_session *s, void *ctx, weir_peer *peer)
{
    return WEIR_PHASE_ERROR; /* never reached: request_filter answers */
}

static const weir_proxy_ops echo_ops = {
    .new_ctx = echo_new_ctx,
    .request_filter = echo_request_filter,
    .upstream_peer = echo_upstream_peer,
};

/* ---- command line ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: weir [options]\n"
            "\n"
            "Without --listen/--upstream, weir runs its embedded default: a proxy on\n"
            "127.0.0.1:6188 round-robining over two built-in echo upstreams on\n"
            "127.0.0.1:6101 and 127.0.0.1:6102.\n"
            "\n"
            "Options:\n"
            "  -l, --listen ADDR            listen on ip:port (repeatable)\n"
            "  -u, --upstream ADDR          round-robin to ip:port (repeatable)\n"
            "  -n, --threads N              worker threads (default: one per CPU)\n"
            "  -a, --access-log FILE|-      access log to FILE, or - for stdout\n"
            "      --grace-period MS        SIGTERM drain limit (default 10000)\n"
            "      --header-timeout MS      client request head timeout (default 10000)\n"
            "      --body-timeout MS        client body idle timeout (default 60000)\n"
            "      --keepalive-timeout MS   idle client connection timeout (default 60000)\n"
            "      --connect-timeout MS     upstream connect timeout (default 5000)\n"
            "      --read-timeout MS        upstream read timeout (default 60000)\n"
            "      --write-timeout MS       upstream write timeout (default 60000)\n"
            "      --max-body-size BYTES    request body limit, 413 beyond (default none)\n"
            "      --log-level LEVEL        error, warn, info (default) or debug\n"
            "  -h, --help                   this help\n"
            "  -V, --version                print the version\n"
            "\n"
            "Signals: SIGTERM/SIGINT stop gracefully (in-flight requests finish within the\n"
            "grace period), SIGQUIT stops at once.\n");
}

enum {
    OPT_GRACE = 256,
    OPT_HEADER_TIMEOUT,
    OPT_BODY_TIMEOUT,
    OPT_KEEPALIVE_TIMEOUT,
    OPT_CONNECT_TIMEOUT,
    OPT_READ_TIMEOUT,
    OPT_WRITE_TIMEOUT,
    OPT_MAX_BODY,
    OPT_LOG_LEVEL,
};

static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || errno || v > max || s[0] == '-')
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    static const struct option long_opts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"upstream", required_argument, NULL, 'u'},
        {"threads", required_argument, NULL, 'n'},
        {"access-log", required_argument, NULL, 'a'},
        {"grace-period", required_argument, NULL, OPT_GRACE},
        {"header-timeout", required_argument, NULL, OPT_HEADER_TIMEOUT},
        {"body-timeout", required_argument, NULL, OPT_BODY_TIMEOUT},
        {"keepalive-timeout", required_argument, NULL, OPT_KEEPALIVE_TIMEOUT},
        {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
        {"read-timeout", required_argument, NULL, OPT_READ_TIMEOUT},
        {"write-timeout", required_argument, NULL, OPT_WRITE_TIMEOUT},
        {"max-body-size", required_argument, NULL, OPT_MAX_BODY},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    static rr_app app;
    const char *listen[MAX_LISTEN];
    size_t n_listen = 0;
    weir_server_options sopts = {.handle_signals = true};
    weir_proxy_options popts = {0};
    int c;
    uint64_t v;

    while ((c = getopt_long(argc, argv, "l:u:n:a:hV", long_opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (n_listen == MAX_LISTEN) {
                fprintf(stderr, "weir: at most %d --listen addresses\n", MAX_LISTEN);
                return 2;
            }
            listen[n_listen++] = optarg;
            break;
        case 'u':
            if (app.n == MAX_UPSTREAMS) {
                fprintf(stderr, "weir: at most %d --upstream addresses\n", MAX_UPSTREAMS);
                return 2;
            }
            if (weir_peer_set_addr(&app.peers[app.n], optarg) != WEIR_OK) {
                fprintf(stderr, "weir: --upstream '%s': expected ip:port\n", optarg);
                return 2;
            }
            snprintf(app.names[app.n], sizeof(app.names[0]), "%s", optarg);
            app.n++;
            break;
        case 'n':
            if (!parse_u64(optarg, 1024, &v) || v == 0) {
                fprintf(stderr, "weir: --threads '%s': expected 1..1024\n", optarg);
                return 2;
            }
            sopts.threads = (int)v;
            break;
        case 'a':
            sopts.access_log = optarg;
            break;
        case OPT_LOG_LEVEL:
            if (weir_set_log_level(optarg) != WEIR_OK) {
                fprintf(stderr, "weir: --log-level '%s': expected error, warn, info or debug\n",
                        optarg);
                return 2;
            }
            break;
        case OPT_MAX_BODY:
            if (!parse_u64(optarg, UINT64_MAX, &v)) {
                fprintf(stderr, "weir: --max-body-size '%s': expected a byte count\n", optarg);
                return 2;
            }
            popts.max_body_bytes = v;
            break;
        case OPT_GRACE:
        case OPT_HEADER_TIMEOUT:
        case OPT_BODY_TIMEOUT:
        case OPT_KEEPALIVE_TIMEOUT:
        case OPT_CONNECT_TIMEOUT:
        case OPT_READ_TIMEOUT:
        case OPT_WRITE_TIMEOUT:
            if (!parse_u64(optarg, 86400000, &v) || v == 0) {
                fprintf(stderr, "weir: %s '%s': expected milliseconds (1..86400000)\n",
                        argv[optind - 1], optarg);
                return 2;
            }
            if (c == OPT_GRACE)
                sopts.grace_period_ms = (uint32_t)v;
            else if (c == OPT_HEADER_TIMEOUT)
                popts.client_header_timeout_ms = (uint32_t)v;
            else if (c == OPT_BODY_TIMEOUT)
                popts.client_body_timeout_ms = (uint32_t)v;
            else if (c == OPT_KEEPALIVE_TIMEOUT)
                popts.keepalive_timeout_ms = (uint32_t)v;
            else if (c == OPT_CONNECT_TIMEOUT)
                popts.connect_timeout_ms = (uint32_t)v;
            else if (c == OPT_READ_TIMEOUT)
                popts.upstream_read_timeout_ms = (uint32_t)v;
            else
                popts.upstream_write_timeout_ms = (uint32_t)v;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("weir %s\n", weir_version());
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "weir: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if ((n_listen == 0) != (app.n == 0)) {
        fprintf(stderr, "weir: --listen and --upstream go together\n");
        return 2;
    }

    weir_server *srv = weir_server_new(&sopts);
    if (!srv) {
        fprintf(stderr, "weir: out of memory\n");
        return 1;
    }
    int rc;
    static char echo_names[2][32] = {"127.0.0.1:6101", "127.0.0.1:6102"};
    if (n_listen == 0) {
        /* The embedded default. */
        listen[n_listen++] = "127.0.0.1:6188";
        for (int i = 0; i < 2; i++) {
            weir_peer_set_addr(&app.peers[app.n], echo_names[i]);
            snprintf(app.names[app.n], sizeof(app.names[0]), "%s", echo_names[i]);
            app.n++;
            const char *addr = echo_names[i];
            rc = weir_server_add_proxy(srv, &addr, 1, &echo_ops, echo_names[i], &popts);
            if (rc != WEIR_OK)
                goto fail;
        }
    }
    rc = weir_server_add_proxy(srv, listen, n_listen, &rr_ops, &app, &popts);
    if (rc != WEIR_OK)
        goto fail;
    rc = weir_server_run(srv);
    if (rc != WEIR_OK)
        goto fail;
    weir_server_free(srv);
    return 0;
fail:
    fprintf(stderr, "weir: cannot start: %s\n",
            rc == WEIR_ERR_INVAL ? "invalid configuration" : strerror(rc < 0 && rc > -4096 ? -rc : EIO));
    weir_server_free(srv);
    return 1;
}
