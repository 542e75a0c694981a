/*
 * ring.c - protocol = "resp" servers: a consistent-hash ring answering
 * over the Redis protocol (weir/resp.h). GET key answers "ip:port" of the
 * backend of the server's upstream that weir's own hash balancing would
 * send that key to (weir_upstream_owner over weir_lb_hash(key)), nil when
 * none is usable; MGET answers several; INFO tells the ring's state.
 *
 * Membership is the upstream's: its health checks, breaker, discovery,
 * the admin API and reloads change it, and every command reads the
 * running configuration. A connection pins that configuration for one
 * batch of commands (the `idle` call lets it go), not for its life.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "app/admin/metrics.h"
#include "app/app_int.h"

typedef struct ring_ctx {
    server_app *sa;
    weir_config *cfg; /* pinned for the batch, or NULL */
} ring_ctx;

static void *ring_new_ctx(weir_resp_conn *c, void *app)
{
    (void)c;
    ring_ctx *r = calloc(1, sizeof(*r));
    if (r)
        r->sa = app;
    return r;
}

static void ring_free_ctx(void *app, void *ctx)
{
    (void)app;
    ring_ctx *r = ctx;
    if (!r)
        return;
    weir__config_unref(r->cfg);
    free(r);
}

static void ring_idle(weir_resp_conn *c, void *ctx)
{
    (void)c;
    ring_ctx *r = ctx;
    if (r && r->cfg) {
        weir__config_unref(r->cfg);
        r->cfg = NULL;
    }
}

/* The server's upstream in the running configuration (pinned for the
 * batch), or NULL if a reload removed the server. */
static const weir_cfg_server *ring_server(ring_ctx *r)
{
    if (!r->cfg)
        r->cfg = weir__app_config(r->sa->app);
    return weir__app_find_server(r->cfg, r->sa);
}

static bool is(weir_str a, const char *name)
{
    size_t n = strlen(name);
    return a.len == n && strncasecmp(a.ptr, name, n) == 0;
}

/* Answers key's owner; true if there is one. */
static bool owner(weir_resp_conn *c, const weir_cfg_server *srv, weir_str key)
{
    char addr[64];
    size_t n = 0;
    if (srv && srv->upstream && srv->upstream->lb)
        n = weir_upstream_owner(srv->upstream->lb, weir_lb_hash(key.ptr, key.len), addr,
                                sizeof(addr));
    if (n)
        weir_resp_reply_bulk(c, addr, n);
    else
        weir_resp_reply_nil(c);
    return n > 0;
}

/* ---- INFO ---- */

typedef struct text {
    char *p;
    size_t len, cap;
} text;

__attribute__((format(printf, 2, 3))) static void add(text *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = t->p ? vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap) : -1;
        va_end(ap);
        if (n >= 0 && (size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap ? t->cap * 2 : 2048;
        if (n >= 0 && cap < t->len + (size_t)n + 1)
            cap = t->len + (size_t)n + 1;
        char *np = realloc(t->p, cap);
        if (!np)
            return;
        t->p = np;
        t->cap = cap;
    }
}

static const char *breaker_name(weir_breaker_state st)
{
    return st == WEIR_BREAKER_OPEN ? "open" : st == WEIR_BREAKER_HALF_OPEN ? "half_open" : "closed";
}

static void info_ring(text *t, const weir_cfg_server *srv)
{
    add(t, "# Ring\r\n");
    const weir_cfg_upstream *u = srv ? srv->upstream : NULL;
    if (!u || !u->lb) {
        add(t, "upstream:\r\nmembers:0\r\nusable:0\r\n");
        return;
    }
    weir_backend_info v[256];
    size_t n = weir_upstream_info(u->lb, v, 256);
    size_t shown = n < 256 ? n : 256, usable = 0;
    for (size_t i = 0; i < shown; i++) {
        if (weir_upstream_member(u->lb, weir_lb_hash(v[i].addr, strlen(v[i].addr))) == 1)
            usable++;
    }
    uint64_t last_ms = 0;
    uint64_t changes = weir_upstream_changes(u->lb, &last_ms);
    int64_t now = (int64_t)time(NULL);
    add(t,
        "upstream:%s\r\nalgorithm:%s\r\nmembers:%zu\r\nusable:%zu\r\nchanges:%" PRIu64
        "\r\nlast_change:%" PRIu64 "\r\nlast_change_ago_seconds:%" PRId64 "\r\n",
        u->name, u->algo == WEIR_LB_MAGLEV ? "maglev" : "ketama", n, usable, changes,
        last_ms / 1000, last_ms ? now - (int64_t)(last_ms / 1000) : -1);
    for (size_t i = 0; i < shown; i++) {
        int m = weir_upstream_member(u->lb, weir_lb_hash(v[i].addr, strlen(v[i].addr)));
        add(t, "member%zu:addr=%s,weight=%u,healthy=%d,draining=%d,breaker=%s,usable=%d\r\n", i,
            v[i].addr, v[i].weight, v[i].healthy, v[i].draining, breaker_name(v[i].breaker),
            m == 1);
    }
}

static bool wants(const weir_str *argv, size_t argc, const char *section, bool by_default)
{
    if (argc == 1)
        return by_default;
    for (size_t i = 1; i < argc; i++) {
        if (is(argv[i], section) || is(argv[i], "all") || is(argv[i], "everything") ||
            (by_default && is(argv[i], "default")))
            return true;
    }
    return false;
}

static void info(weir_resp_conn *c, ring_ctx *r, const weir_cfg_server *srv, const weir_str *argv,
                 size_t argc)
{
    text t = {0};
    if (wants(argv, argc, "server", true)) {
        add(&t,
            "# Server\r\nweir_version:%s\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\n"
            "process_id:%ld\r\nuptime_in_seconds:%" PRId64 "\r\nconfig_file:%s\r\n"
            "config_revision:%" PRIu64 "\r\nconfig_loaded:%" PRId64 "\r\n"
            "config_digest:%016" PRIx64 "\r\n\r\n",
            weir_version(), (long)getpid(), (int64_t)(time(NULL) - r->sa->app->started_at),
            r->cfg->file ? r->cfg->file : "", r->cfg->revision, r->cfg->loaded_unix,
            r->cfg->digest);
    }
    if (wants(argv, argc, "clients", true)) {
        weir_server_stats st;
        weir_server_get_stats(r->sa->app->srv, &st);
        add(&t, "# Clients\r\nconnected_clients:%" PRIu64 "\r\n\r\n", st.resp_connections);
    }
    if (wants(argv, argc, "ring", true))
        info_ring(&t, srv);
    if (t.p)
        weir_resp_reply_bulk(c, t.p, t.len);
    else if (argc > 1)
        weir_resp_reply_bulk(c, "", 0); /* no such section: as redis-server */
    else
        weir_resp_reply_error(c, "ERR out of memory");
    free(t.p);
}

static void wrong_args(weir_resp_conn *c, const char *name)
{
    char b[96];
    snprintf(b, sizeof(b), "ERR wrong number of arguments for '%s' command", name);
    weir_resp_reply_error(c, b);
}

static bool ring_command(weir_resp_conn *c, void *ctx, const weir_str *argv, size_t argc)
{
    ring_ctx *r = ctx;
    if (!r) {
        weir_resp_reply_error(c, "ERR out of memory");
        return true;
    }
    const weir_cfg_server *srv = ring_server(r);
    if (!srv && !is(argv[0], "quit")) {
        /* A reload removed this server: its clients go elsewhere. */
        weir_resp_reply_error(c, "ERR this ring server was removed from the configuration");
        weir_resp_conn_quit(c);
        return true;
    }
    uint64_t owned = 0, keys = 0;
    weir_metrics_resp_cmd m = WEIR_METRICS_RESP_OTHER;
    bool mine = true;
    if (is(argv[0], "get")) {
        m = WEIR_METRICS_RESP_GET;
        if (argc != 2) {
            wrong_args(c, "get");
        } else {
            keys = 1;
            owned = owner(c, srv, argv[1]);
        }
    } else if (is(argv[0], "mget")) {
        m = WEIR_METRICS_RESP_MGET;
        if (argc < 2) {
            wrong_args(c, "mget");
        } else {
            keys = argc - 1;
            weir_resp_reply_array(c, keys);
            for (size_t i = 1; i < argc; i++)
                owned += owner(c, srv, argv[i]);
        }
    } else if (is(argv[0], "info")) {
        m = WEIR_METRICS_RESP_INFO;
        info(c, r, srv, argv, argc);
    } else {
        mine = false; /* the library's command, or an unknown one */
    }
    weir__metrics_resp(srv, m, owned, keys - owned);
    return mine;
}

static const char *const f_ro[] = {"readonly", "fast", NULL};
static const char *const f_info[] = {"loading", "stale", NULL};

static const weir_resp_command_info ring_commands[] = {
    {"get", 2, f_ro, 1, 1, 1},
    {"mget", -2, f_ro, 1, -1, 1},
    {"info", -1, f_info, 0, 0, 0},
};

const weir_resp_ops weir__app_resp_ops = {
    .new_ctx = ring_new_ctx,
    .free_ctx = ring_free_ctx,
    .command = ring_command,
    .idle = ring_idle,
    .commands = ring_commands,
    .n_commands = sizeof(ring_commands) / sizeof(ring_commands[0]),
};
