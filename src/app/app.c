/*
 * app.c - the weir program's running configuration: snapshots and their
 * retirement, reloads, and the listeners each server's service has (see
 * app.h).
 */
#include "app/app.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/access_log.h"
#include "app/admin/metrics.h"
#include "app/admin/prom_push.h"
#include "app/app_int.h"
#include "app/otel/request.h"
#include "app/webhook.h"
#include "app/plugin/plugin.h"

uint64_t weir__app_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Drops the app's reference to retired snapshots past their grace period
 * (all of them with force). */
static void release_retired(weir_app *app, bool force)
{
    uint64_t now = weir__app_mono_ms();
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
    app->retired_at[app->n_retired] = weir__app_mono_ms();
    app->n_retired++;
}

/* Upstreams with a health check or discovery, for the control thread. */
static size_t checked_upstreams(weir_config *cfg, weir_upstream **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_upstreams && n < max; i++) {
        if (cfg->upstreams[i].lb && (cfg->upstreams[i].hc.kind != WEIR_HEALTH_NONE ||
                                     cfg->upstreams[i].discovery != WEIR_CFG_DISCOVERY_STATIC))
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
    SAME(proxy_protocol, "proxy_protocol");
#undef SAME
    for (uint32_t i = 0; i < x->n_trusted_proxies; i++) {
        const weir_cidr *a = &x->trusted_proxies[i], *b = &y->trusted_proxies[i];
        if (a->family != b->family || a->prefix_len != b->prefix_len ||
            memcmp(a->addr, b->addr, sizeof(a->addr)) != 0)
            return "trusted_proxies";
    }
    return NULL;
}

/* The same for a TCP server's settings, and the protocol itself. */
static const char *tcp_change(const weir_cfg_server *x, const weir_cfg_server *y)
{
    if (x->protocol != y->protocol)
        return "protocol";
    const weir_tcp_options *a = &x->tcp, *b = &y->tcp;
#define SAME(field, key)                                                                           \
    if (a->field != b->field)                                                                      \
    return key
    SAME(idle_timeout_ms, "idle_timeout");
    SAME(upload_rate, "upload_rate");
    SAME(download_rate, "download_rate");
    SAME(handshake_timeout_ms, "proxy_protocol_timeout");
    SAME(tls_handshake_timeout_ms, "tls_handshake_timeout");
#undef SAME
    if (x->udp.idle_timeout_ms != y->udp.idle_timeout_ms)
        return "idle_timeout";
    if (x->udp.responses != y->udp.responses)
        return "responses";
    if (x->udp.max_sessions != y->udp.max_sessions)
        return "max_sessions";
    if (x->resp.idle_timeout_ms != y->resp.idle_timeout_ms)
        return "idle_timeout";
    if (x->resp.max_command != y->resp.max_command)
        return "max_command_size";
    if ((x->n_sni_routes > 0) != (y->n_sni_routes > 0) && x->protocol == WEIR_CFG_HTTP)
        return "tls_passthrough (on or off)";
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
                          : tcp_change(x, y)                ? tcp_change(x, y)
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

/* Listens on addrs for server y, whose phases get sa: an HTTP, a TCP or a
 * UDP service. */
static int add_service(weir_server *srv, server_app *sa, const weir_cfg_server *y,
                       const char *const *addrs, size_t n)
{
    if (y->protocol == WEIR_CFG_UDP)
        return weir_server_add_udp(srv, addrs, n, &weir__app_udp_ops, sa, &y->udp);
    if (y->protocol == WEIR_CFG_RESP)
        return weir_server_add_resp(srv, addrs, n, &weir__app_resp_ops, sa, &y->resp);
    if (y->protocol != WEIR_CFG_HTTP) {
        weir_tcp_options t = y->tcp;
        t.tls = sa->tls;
        return weir_server_add_tcp(srv, addrs, n, &weir__app_tcp_ops, sa, &t);
    }
    weir_proxy_options o = service_opts(sa, y);
    if (y->n_sni_routes) { /* tls_passthrough */
        o.passthrough_ops = &weir__app_tcp_ops;
        o.passthrough_app = sa;
    }
    return weir_server_add_proxy(srv, addrs, n, &weir__app_ops, sa, &o);
}

/* The server_app of [servers.NAME], made (with its logger) if new. */
static server_app *server_app_for(weir_app *app, const weir_cfg_server *y)
{
    for (size_t i = 0; i < app->n_servers; i++) {
        if (strcmp(app->servers[i].name, y->name) == 0)
            return &app->servers[i];
    }
    if (app->n_servers == MAX_SERVERS) {
        weir_log(WEIR_LEVEL_ERROR,
                 "[servers.%s]: this process has had %d server names, the most it keeps; "
                 "an upgrade (weir -u) starts over",
                 y->name, MAX_SERVERS);
        return NULL;
    }
    server_app *sa = &app->servers[atomic_load(&app->n_servers)];
    memset(sa, 0, sizeof(*sa));
    sa->app = app;
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

/* The server of c that listens on addr, or NULL. */
static const weir_cfg_server *server_on(const weir_config *c, const char *addr)
{
    for (size_t i = 0; i < c->n_servers; i++) {
        if (has_addr(&c->servers[i], addr))
            return &c->servers[i];
    }
    return NULL;
}

/*
 * Which server each listener's requests get in nc: the one of its name;
 * else (a rename, or its address given to another server) the one that
 * now has the address of the server it served in old, so connections
 * kept alive across the reload go on. Entries from nc's count on: all
 * before nc is published; a published nc only gains entries.
 */
static void map_servers(const weir_app *app, weir_config *nc, const weir_config *old)
{
    size_t first = atomic_load_explicit(&nc->n_app_servers, memory_order_relaxed);
    size_t n_old = old ? atomic_load_explicit(&old->n_app_servers, memory_order_relaxed) : 0;
    for (size_t k = first; k < app->n_servers; k++) {
        const weir_cfg_server *y = server_named(nc, app->servers[k].name);
        if (!y && k < n_old && old->app_server[k] >= 0) {
            const weir_cfg_server *x = &old->servers[old->app_server[k]];
            y = server_named(nc, x->name);
            for (size_t i = 0; !y && i < x->n_addrs; i++)
                y = server_on(nc, x->addrs[i]);
        }
        nc->app_server[k] = y ? (int16_t)(y - nc->servers) : -1;
    }
    atomic_store_explicit(&nc->n_app_servers, app->n_servers, memory_order_release);
}

/* True if addr of old's server x goes to another server in nc (a rename
 * or a move): released, then taken over with its sockets. */
static bool addr_moves(const weir_config *nc, const weir_cfg_server *x, const char *addr)
{
    const weir_cfg_server *y = server_on(nc, addr);
    return y && strcmp(y->name, x->name) != 0;
}

/*
 * Brings the listeners from old's servers to nc's: an address that changes
 * server keeps its sockets (none of the connections queued on it is reset),
 * new addresses are bound (a failure undoes everything and fails the
 * reload), then dropped ones stop accepting (their connections finish).
 * Main thread.
 */
static int apply_listeners(weir_app *app, weir_server *srv, const weir_config *old,
                           const weir_config *nc, weir_cfg_errors *errs_out)
{
    for (size_t i = 0; i < old->n_servers; i++) {
        const weir_cfg_server *x = &old->servers[i];
        for (size_t k = 0; k < x->n_addrs; k++) {
            if (addr_moves(nc, x, x->addrs[k]))
                weir_server_release_listen(srv, x->addrs[k]);
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
        server_app *sa = server_app_for(app, y);
        int rc = sa ? add_service(srv, sa, y, addrs, n) : WEIR_ERR_NOMEM;
        if (rc != WEIR_OK) {
            reload_error(errs_out,
                         "reload failed: cannot listen on the new addresses of "
                         "[servers.%s] (see the log)",
                         y->name);
            for (size_t k = 0; k < n_added; k++) {
                if (server_on(old, added[k]))
                    weir_server_release_listen(srv, added[k]);
                else
                    weir_server_remove_listen(srv, added[k]);
            }
            /* Moved addresses go back to their old servers. */
            for (size_t m = 0; m < old->n_servers; m++) {
                const weir_cfg_server *ox = &old->servers[m];
                server_app *osa = server_app_for(app, ox);
                for (size_t k = 0; osa && k < ox->n_addrs; k++) {
                    const char *one[1] = {ox->addrs[k]};
                    if (addr_moves(nc, ox, ox->addrs[k]))
                        add_service(srv, osa, ox, one, 1);
                }
            }
            return WEIR_ERR_INVAL;
        }
        for (size_t k = 0; k < n && n_added < 1024; k++)
            added[n_added++] = addrs[k];
    }
    for (size_t i = 0; i < old->n_servers; i++) {
        const weir_cfg_server *x = &old->servers[i];
        for (size_t k = 0; k < x->n_addrs; k++) {
            if (!server_on(nc, x->addrs[k]))
                weir_server_remove_listen(srv, x->addrs[k]);
        }
    }
    return WEIR_OK;
}

/* Connection aging changes without a restart: the services of the
 * addresses that stay with their server take nc's limits (new and moved
 * addresses got new services with them already). Main thread. */
static void apply_aging(weir_server *srv, const weir_config *old, const weir_config *nc)
{
    for (size_t i = 0; i < nc->n_servers; i++) {
        const weir_cfg_server *y = &nc->servers[i], *x = server_named(old, y->name);
        for (size_t k = 0; x && k < y->n_addrs; k++) {
            if (has_addr(x, y->addrs[k]))
                weir_server_update_aging(srv, y->addrs[k], &y->opts);
        }
    }
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
    if (errs)
        weir__cfg_errors_add(errs, "%s", msg);
}

/*
 * An upstream that discovers its backends the same way as before, and whose
 * names did not resolve at this load (DNS down during the reload), starts
 * from what the running one found: a reload must not empty it.
 */
/* weir__config_discovered during a reload: the members (not draining)
 * of the running upstream of that name, if it looks for the same
 * backends. Reloads run one at a time, on the main thread. */
static const weir_config *reload_old;

static weir_lb_target *discovered_before(const char *name, const char *spec, size_t *n_out)
{
    *n_out = 0;
    for (size_t k = 0; reload_old && k < reload_old->n_upstreams; k++) {
        const weir_cfg_upstream *o = &reload_old->upstreams[k];
        if (!o->lb || !o->discovery_spec || strcmp(o->name, name) != 0 ||
            strcmp(o->discovery_spec, spec) != 0)
            continue;
        size_t n = weir_upstream_info(o->lb, NULL, 0);
        weir_backend_info *info = calloc(n ? n : 1, sizeof(*info));
        weir_lb_target *v = calloc(n ? n : 1, sizeof(*v));
        size_t m = 0;
        if (info && v) {
            /* The running upstream may have grown since it was counted:
             * never past what was allocated. */
            size_t now = weir_upstream_info(o->lb, info, n);
            n = now < n ? now : n;
            for (size_t j = 0; j < n; j++) {
                if (info[j].draining)
                    continue;
                snprintf(v[m].addr, sizeof(v[m].addr), "%s", info[j].addr);
                v[m++].weight = info[j].weight;
            }
        }
        free(info);
        if (!m) {
            free(v);
            return NULL;
        }
        *n_out = m;
        return v;
    }
    return NULL;
}

static weir_config *load_file(void *path, weir_cfg_errors *errs)
{
    return weir__config_load_file(path, errs);
}

int weir__app_reload_errs(weir_app *app, const char *path, weir_server *srv,
                          weir_cfg_errors *errs_out)
{
    return weir__app_reload_from(app, load_file, (void *)path, path, srv, errs_out);
}

static int reload_from(weir_app *app, weir_app_load_fn load, void *arg, const char *path,
                       weir_server *srv, weir_cfg_errors *errs_out);

int weir__app_reload_from(weir_app *app, weir_app_load_fn load, void *arg, const char *path,
                          weir_server *srv, weir_cfg_errors *errs_out)
{
    weir_cfg_errors mine = {0};
    weir_cfg_errors *errs = errs_out ? errs_out : &mine;
    size_t before = errs->n;
    int rc = reload_from(app, load, arg, path, srv, errs);
    app->last_reload.at = (int64_t)time(NULL);
    app->last_reload.ok = rc == WEIR_OK;
    snprintf(app->last_reload.error, sizeof(app->last_reload.error), "%s",
             rc != WEIR_OK && errs->n > before ? errs->v[before] : "");
    if (rc != WEIR_OK)
        weir__webhook_emit(WEIR_EV_RELOAD_FAIL,
                           json_pack("{s:o, s:I, s:o}", "config", weir__webhook_str(path), "errors",
                                     (json_int_t)(errs->n - before), "error",
                                     weir__webhook_str(errs->n > before ? errs->v[before] : NULL)),
                           "reload of %s refused (%zu errors)%s%s", path, errs->n - before,
                           errs->n > before ? ": " : "", errs->n > before ? errs->v[before] : "");
    weir__cfg_errors_free(&mine);
    return rc;
}

static int reload_from(weir_app *app, weir_app_load_fn load, void *arg, const char *path,
                       weir_server *srv, weir_cfg_errors *errs_out)
{
    weir_cfg_errors errs = {0};
    reload_old = atomic_load(&app->current);
    weir__config_discovered = discovered_before;
    weir_config *nc = load(arg, &errs);
    weir__config_discovered = NULL;
    reload_old = NULL;
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
    if (!weir__plugin_states(nc, old)) {
        reload_error(errs_out, "reload failed: out of memory for the plugins' state");
        weir__config_unref(nc);
        weir__metrics_reload(false);
        return WEIR_ERR_INVAL;
    }
    /* Every server's listener exists before nc is published, so the one
     * load of a request finds its server (map_servers). */
    for (size_t i = 0; i < nc->n_servers; i++) {
        if (!server_app_for(app, &nc->servers[i])) {
            reload_error(errs_out, "reload failed: cannot set up [servers.%s] (see the log)",
                         nc->servers[i].name);
            weir__config_unref(nc);
            weir__metrics_reload(false);
            return WEIR_ERR_INVAL;
        }
    }
    map_servers(app, nc, old);
    nc->revision = old->revision + 1;
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
        /* Connections the new listeners took meanwhile go on with old's
         * server of their address. */
        map_servers(app, old, nc);
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
    apply_aging(srv, old, nc);
    retire(app, old);
    /* Long-lived HTTP/2 connections move on to the new configuration's
     * (GOAWAY: streams in flight finish, new ones use new connections). */
    weir_server_renew_connections(srv);
    weir__metrics_reload(true);
    weir_log(WEIR_LEVEL_INFO, "configuration %s reloaded", path);
    weir__webhook_reloaded(old, nc);
    weir__trace_configure(nc);
    weir__prom_push_configure(app);
    return WEIR_OK;
}

int weir__app_refresh_tls(weir_app *app)
{
    weir_config *cfg = weir__app_config(app);
    int failed = 0;
    for (size_t i = 0; cfg && i < cfg->n_servers; i++) {
        for (size_t k = 0; k < atomic_load(&app->n_servers); k++) {
            server_app *sa = &app->servers[k];
            if (sa->tls && strcmp(sa->name, cfg->servers[i].name) == 0 &&
                server_app_tls(sa, &cfg->servers[i]) != WEIR_OK)
                failed++;
        }
    }
    weir__config_unref(cfg);
    return failed;
}

int weir__app_reload(weir_app *app, const char *path, weir_server *srv)
{
    return weir__app_reload_errs(app, path, srv, NULL);
}

void weir__app_reload_info(const weir_app *app, weir_app_reload_info *out)
{
    *out = app->last_reload;
    out->started = (int64_t)app->started_at;
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

weir_server *weir__app_server(weir_app *app)
{
    return app->srv;
}

weir_app *weir__app_new(weir_config *cfg, weir_server *srv)
{
    weir_app *app = calloc(1, sizeof(*app));
    if (!app) {
        weir__config_unref(cfg);
        return NULL;
    }
    atomic_store(&app->current, cfg);
    app->srv = srv;
    app->started_at = time(NULL);
    if (!weir__plugin_states(cfg, NULL)) {
        weir_log(WEIR_LEVEL_ERROR, "%s: out of memory for the plugins' state", cfg->file);
        goto fail;
    }
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
        snprintf(sa->name, sizeof(sa->name), "%s", cs->name);
        if (cs->access_log) {
            sa->logger = weir_logger_open(cs->access_log_file ? cs->access_log_file : "-");
            if (!sa->logger)
                goto fail;
        }
        if (server_app_tls(sa, cs) != WEIR_OK)
            goto fail;
        int rc = add_service(srv, sa, cs, (const char *const *)cs->addrs, cs->n_addrs);
        if (rc != WEIR_OK) {
            weir_log(WEIR_LEVEL_ERROR, "[servers.%s]: cannot set up its listeners", cs->name);
            goto fail;
        }
    }
    map_servers(app, cfg, NULL);
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
