/*
 * server.c - the server: its services, worker threads with their loops,
 * signal handling on the main thread, graceful and immediate shutdown.
 * The listening sockets are listen.c's.
 *
 * Each worker owns one listening socket per service address (SO_REUSEPORT,
 * so the kernel spreads connections) and every connection it accepts.
 * The main thread only waits for signals and hands shutdown to the workers
 * through their task queues.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/pool.h"
#include "http/h2_client.h"
#include "net/resp_client.h"
#include "net/sock.h"
#include "net/tls.h"
#include "net/upool.h"
#include "proxy/request_gate.h"
#include "proxy/server-int.h"
#include "proxy/session-t.h"
#include "proxy/subrequest.h"
#include "weir/addr.h"

typedef struct main_call {
    void (*fn)(void *arg);
    void *arg;
    struct main_call *next;
} main_call;

int weir_server_call_main(weir_server *srv, void (*fn)(void *arg), void *arg)
{
    main_call *c = malloc(sizeof(*c));
    if (!c)
        return WEIR_ERR_NOMEM;
    c->fn = fn;
    c->arg = arg;
    pthread_mutex_lock(&srv->calls_lock);
    if (!srv->running) {
        pthread_mutex_unlock(&srv->calls_lock);
        free(c);
        return WEIR_ERR_INVAL;
    }
    /* appended: calls run in order */
    main_call **pp = &srv->calls;
    while (*pp)
        pp = &(*pp)->next;
    c->next = NULL;
    *pp = c;
    pthread_mutex_unlock(&srv->calls_lock);
    uint64_t one = 1;
    ssize_t n = write(srv->wake_fd, &one, sizeof(one));
    (void)n;
    return WEIR_OK;
}

static void run_main_calls(weir_server *srv)
{
    pthread_mutex_lock(&srv->calls_lock);
    main_call *c = srv->calls;
    srv->calls = NULL;
    pthread_mutex_unlock(&srv->calls_lock);
    while (c) {
        main_call *next = c->next;
        c->fn(c->arg);
        free(c);
        c = next;
    }
}

#define MAX_UPSTREAMS 1024

typedef struct idle_entry {
    char addr[WEIR_ADDR_STRLEN];
} idle_entry;

static int by_addr(const void *a, const void *b)
{
    return strcmp(((const idle_entry *)a)->addr, ((const idle_entry *)b)->addr);
}

void weir_server_pool_idle_each(weir_pool_idle_cb cb, void *arg)
{
    struct sockaddr_storage *v;
    size_t n = weir__upool_idle_addrs(&v);
    idle_entry *e = n ? malloc(n * sizeof(*e)) : NULL;
    for (size_t i = 0; e && i < n; i++)
        weir_addr_format((const struct sockaddr *)&v[i], e[i].addr, sizeof(e[i].addr));
    free(v);
    if (!e)
        return;
    qsort(e, n, sizeof(*e), by_addr);
    for (size_t i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && strcmp(e[j].addr, e[i].addr) == 0; j++)
            ;
        cb(e[i].addr, j - i, arg);
    }
    free(e);
}

void weir_server_get_stats(weir_server *srv, weir_server_stats *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&srv->calls_lock); /* srv->workers lives while running */
    if (srv->running && srv->workers) {
        out->workers = srv->n_workers;
        for (int i = 0; i < srv->n_workers; i++) {
            out->client_connections +=
                atomic_load_explicit(&srv->workers[i].conns.n, memory_order_relaxed);
            out->client_connections_h2 +=
                atomic_load_explicit(&srv->workers[i].h2conns.n, memory_order_relaxed);
            out->tcp_sessions += atomic_load_explicit(&srv->workers[i].l4.n, memory_order_relaxed);
            out->udp_sessions += atomic_load_explicit(&srv->workers[i].udp.n, memory_order_relaxed);
            out->resp_connections +=
                atomic_load_explicit(&srv->workers[i].resp.n, memory_order_relaxed);
            out->udp_dropped +=
                atomic_load_explicit(&srv->workers[i].udp.dropped_total, memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&srv->calls_lock);
    out->pool_idle = weir__upool_idle();
    out->pool_migrations = weir__upool_migrations() + weir__h2u_migrations();
    weir__tls_stats(&out->tls);
}

int weir_server_add_upstream(weir_server *srv, weir_upstream *u)
{
    if (srv->running || srv->n_upstreams == MAX_UPSTREAMS || !u)
        return WEIR_ERR_INVAL;
    weir_upstream **nv = realloc(srv->upstreams, (srv->n_upstreams + 1) * sizeof(*nv));
    if (!nv)
        return WEIR_ERR_NOMEM;
    srv->upstreams = nv;
    srv->upstreams[srv->n_upstreams++] = u;
    return WEIR_OK;
}

const char *weir_version(void)
{
    return WEIR_VERSION;
}

int weir_set_log_level(const char *level)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(level, names[i]) == 0) {
            weir__log_set_level((enum weir_log_level)i);
            return WEIR_OK;
        }
    }
    return WEIR_ERR_INVAL;
}

void weir__proxy_options_defaults(weir_proxy_options *o)
{
#define DEF(f, v)                                                                                  \
    if (!o->f)                                                                                     \
    o->f = (v)
    DEF(client_header_timeout_ms, 10000);
    DEF(client_body_timeout_ms, 60000);
    DEF(keepalive_timeout_ms, 60000);
    DEF(send_timeout_ms, 60000);
    DEF(connect_timeout_ms, 5000);
    DEF(upstream_read_timeout_ms, 60000);
    DEF(upstream_write_timeout_ms, 60000);
    DEF(upstream_idle_timeout_ms, 60000);
    DEF(upstream_keepalive, 256);
    DEF(tunnel_idle_timeout_ms, 600000);
    DEF(max_header_bytes, 65536);
    DEF(max_headers, 100);
    DEF(max_uri_bytes, 8192);
    DEF(tls_handshake_timeout_ms, 10000);
    DEF(h2_max_concurrent_streams, 128);
    DEF(keepalive_requests, 1000);
    DEF(keepalive_time_ms, 3600000);
    DEF(h2_max_connection_age_grace_ms, 30000);
#undef DEF
    if (o->max_headers > WEIR_MAX_HEADERS)
        o->max_headers = WEIR_MAX_HEADERS;
}

void weir_proxy_options_defaults(weir_proxy_options *o)
{
    weir__proxy_options_defaults(o);
}

weir_server *weir_server_new(const weir_server_options *opts)
{
    weir_server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return NULL;
    if (opts)
        srv->opts = *opts;
    if (srv->opts.threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        srv->opts.threads = n > 0 ? (int)n : 1;
    }
    if (srv->opts.grace_period_ms == 0)
        srv->opts.grace_period_ms = 10000;
    pthread_mutex_init(&srv->calls_lock, NULL);
    pthread_mutex_init(&srv->listen_lock, NULL);
    srv->upgrade_conn = srv->upgrade_listen = -1;
    srv->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (srv->wake_fd < 0) {
        free(srv);
        return NULL;
    }
    return srv;
}

/* The aging limits of o (defaults filled in) into what connections read. */
static void set_aging(weir_h1s_config *h1, const weir_proxy_options *o)
{
    atomic_store_explicit(&h1->keepalive_requests, o->keepalive_requests, memory_order_relaxed);
    atomic_store_explicit(&h1->keepalive_time_ms, o->keepalive_time_ms, memory_order_relaxed);
    atomic_store_explicit(&h1->h2_max_age_ms, o->h2_max_connection_age_ms, memory_order_relaxed);
    atomic_store_explicit(&h1->h2_age_grace_ms, o->h2_max_connection_age_grace_ms,
                          memory_order_relaxed);
}

int weir_server_update_aging(weir_server *srv, const char *addr, const weir_proxy_options *opts)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (!opts || weir__addr_parse(addr, &ss, &len) < 0)
        return WEIR_ERR_INVAL;
    listen_addr *la = weir__srv_live_addr(srv, &ss, SOCK_STREAM);
    if (!la)
        return WEIR_ERR_INVAL;
    weir_service *svc = atomic_load_explicit(&la->svc, memory_order_acquire);
    weir_proxy_options o = *opts;
    weir__proxy_options_defaults(&o);
    set_aging(&svc->h1, &o);
    return WEIR_OK;
}

/* The next service's slot, zeroed; NULL (logged) when none is left. */
static weir_service *new_service(weir_server *srv, const char *const *listen_addrs, size_t n_addrs)
{
    if (n_addrs == 0 || n_addrs > MAX_ADDRS)
        return NULL;
    if (srv->n_services == MAX_SERVICES) {
        weir_log_error("cannot listen on %s: the server has had %d services, the most it keeps",
                       listen_addrs[0], MAX_SERVICES);
        return NULL;
    }
    weir_service *svc = &srv->services[srv->n_services];
    memset(svc, 0, sizeof(*svc));
    return svc;
}

static int attach_service(weir_server *srv, weir_service *svc, const char *const *listen_addrs,
                          size_t n_addrs);

int weir_server_add_proxy(weir_server *srv, const char *const *listen_addrs, size_t n_addrs,
                          const weir_proxy_ops *ops, void *app, const weir_proxy_options *opts)
{
    if (!ops || !ops->upstream_peer)
        return WEIR_ERR_INVAL;
    weir_service *svc = new_service(srv, listen_addrs, n_addrs);
    if (!svc)
        return WEIR_ERR_INVAL;
    svc->kind = WEIR_SERVICE_HTTP;
    svc->ops = ops;
    svc->app = app;
    if (opts)
        svc->opts = *opts;
    weir__proxy_options_defaults(&svc->opts);
    svc->h1 = (weir_h1s_config){
        .handler = &weir__session_handler,
        .svc = svc,
        .tls = svc->opts.tls,
        .handshake_timeout_ms = svc->opts.tls_handshake_timeout_ms,
        .h2c = svc->opts.h2c,
        .proxy_protocol = svc->opts.proxy_protocol,
        .h2_max_streams = svc->opts.h2_max_concurrent_streams,
        .header_timeout_ms = svc->opts.client_header_timeout_ms,
        .keepalive_timeout_ms = svc->opts.keepalive_timeout_ms,
        .max_header_bytes = svc->opts.max_header_bytes,
        .max_headers = svc->opts.max_headers,
        .max_body_bytes = svc->opts.max_body_bytes,
    };
    set_aging(&svc->h1, &svc->opts);
    if (svc->opts.passthrough_ops && svc->opts.tls) {
        /* Its ClientHellos go to a TCP service first, made with it (the
         * next slot; counted once the addresses are taken). */
        if (srv->n_services + 2 > MAX_SERVICES) {
            weir_log_error("cannot listen on %s: the server has had %d services, the most it "
                           "keeps",
                           listen_addrs[0], MAX_SERVICES);
            return WEIR_ERR_INVAL;
        }
        weir_service *pt = &srv->services[srv->n_services + 1];
        memset(pt, 0, sizeof(*pt));
        pt->kind = WEIR_SERVICE_TCP;
        pt->tcp_ops = svc->opts.passthrough_ops;
        pt->app = svc->opts.passthrough_app;
        pt->tcp = (weir_tcp_options){
            .connect_timeout_ms = svc->opts.connect_timeout_ms,
            .idle_timeout_ms = svc->opts.tunnel_idle_timeout_ms,
            .proxy_protocol = svc->opts.proxy_protocol,
            .handshake_timeout_ms = svc->opts.client_header_timeout_ms,
            .tls_handshake_timeout_ms = svc->opts.tls_handshake_timeout_ms,
            .peek_client_hello = true,
        };
        pt->fallback = svc;
        svc->passthrough = pt;
    }
    int rc = attach_service(srv, svc, listen_addrs, n_addrs);
    if (rc == WEIR_OK && svc->passthrough)
        srv->n_services++;
    return rc;
}

int weir_server_add_tcp(weir_server *srv, const char *const *listen_addrs, size_t n_addrs,
                        const weir_tcp_ops *ops, void *app, const weir_tcp_options *opts)
{
    if (!ops || !ops->upstream_peer)
        return WEIR_ERR_INVAL;
    weir_service *svc = new_service(srv, listen_addrs, n_addrs);
    if (!svc)
        return WEIR_ERR_INVAL;
    svc->kind = WEIR_SERVICE_TCP;
    svc->tcp_ops = ops;
    svc->app = app;
    if (opts)
        svc->tcp = *opts;
    weir_tcp_options *o = &svc->tcp;
    if (!o->connect_timeout_ms)
        o->connect_timeout_ms = 5000;
    if (!o->idle_timeout_ms)
        o->idle_timeout_ms = 600000;
    if (!o->handshake_timeout_ms)
        o->handshake_timeout_ms = 10000;
    if (!o->tls_handshake_timeout_ms)
        o->tls_handshake_timeout_ms = 10000;
    if (o->n_trusted_proxies > WEIR_MAX_TRUSTED_PROXIES)
        return WEIR_ERR_INVAL;
    /* What the accept checks, as for an HTTP service. */
    svc->opts.proxy_protocol = o->proxy_protocol;
    memcpy(svc->opts.trusted_proxies, o->trusted_proxies,
           o->n_trusted_proxies * sizeof(o->trusted_proxies[0]));
    svc->opts.n_trusted_proxies = o->n_trusted_proxies;
    return attach_service(srv, svc, listen_addrs, n_addrs);
}

int weir_server_add_udp(weir_server *srv, const char *const *listen_addrs, size_t n_addrs,
                        const weir_udp_ops *ops, void *app, const weir_udp_options *opts)
{
    if (!ops || !ops->upstream_peer)
        return WEIR_ERR_INVAL;
    weir_service *svc = new_service(srv, listen_addrs, n_addrs);
    if (!svc)
        return WEIR_ERR_INVAL;
    svc->kind = WEIR_SERVICE_UDP;
    svc->udp_ops = ops;
    svc->app = app;
    if (opts)
        svc->udp = *opts;
    if (!svc->udp.idle_timeout_ms)
        svc->udp.idle_timeout_ms = 30000;
    if (!svc->udp.max_sessions)
        svc->udp.max_sessions = 4096;
    return attach_service(srv, svc, listen_addrs, n_addrs);
}

int weir_server_add_resp(weir_server *srv, const char *const *listen_addrs, size_t n_addrs,
                         const weir_resp_ops *ops, void *app, const weir_resp_options *opts)
{
    if (!ops)
        return WEIR_ERR_INVAL;
    weir_service *svc = new_service(srv, listen_addrs, n_addrs);
    if (!svc)
        return WEIR_ERR_INVAL;
    svc->kind = WEIR_SERVICE_RESP;
    svc->resp_ops = ops;
    svc->app = app;
    if (opts)
        svc->resp = *opts;
    weir_resp_options *o = &svc->resp;
    if (!o->max_args)
        o->max_args = 1024;
    if (!o->max_bulk)
        o->max_bulk = 512 * 1024;
    if (!o->max_inline)
        o->max_inline = 64 * 1024;
    if (!o->max_command)
        o->max_command = 1024 * 1024;
    if (!o->max_pending_output)
        o->max_pending_output = 1024 * 1024;
    if (!o->name)
        o->name = "weir";
    if (!o->version)
        o->version = weir_version();
    if (o->max_command > 512u * 1024 * 1024 || o->max_bulk > o->max_command ||
        o->max_inline > o->max_command)
        return WEIR_ERR_INVAL;
    return attach_service(srv, svc, listen_addrs, n_addrs);
}

/*
 * Gives the service its addresses and counts it: addresses another
 * service released move here with their sockets; the others get entries
 * (and, on a running server, sockets) of their own.
 */
static int attach_service(weir_server *srv, weir_service *svc, const char *const *listen_addrs,
                          size_t n_addrs)
{
    listen_addr *moved[MAX_ADDRS];
    size_t n_moved = 0, n_new = 0;
    int type = svc->kind == WEIR_SERVICE_UDP ? SOCK_DGRAM : SOCK_STREAM;
    for (size_t i = 0; i < n_addrs; i++) {
        listen_addr *la = &srv->addrs[srv->n_addrs + n_new];
        const char *text = listen_addrs[i];
        if (type == SOCK_DGRAM && strncmp(text, "udp://", 6) == 0)
            text += 6; /* the name weir_server_remove_listen knows it by */
        if (weir__addr_parse(text, &la->ss, &la->len) < 0) {
            weir_log_error("invalid listen address '%s' (expected ip:port)", listen_addrs[i]);
            return WEIR_ERR_INVAL;
        }
        la->type = type;
        listen_addr *cur = weir__srv_live_addr(srv, &la->ss, type);
        bool twice = cur && !cur->released;
        for (size_t j = 0; j < n_moved && !twice; j++)
            twice = moved[j] == cur;
        for (size_t j = srv->n_addrs; j < srv->n_addrs + n_new && !twice; j++)
            twice =
                srv->addrs[j].type == type &&
                weir__addr_equal((struct sockaddr *)&srv->addrs[j].ss, (struct sockaddr *)&la->ss);
        if (twice) {
            weir_log_error("listen address %s given twice", listen_addrs[i]);
            return WEIR_ERR_INVAL;
        }
        if (cur) {
            moved[n_moved++] = cur;
            continue;
        }
        snprintf(la->text, sizeof(la->text), "%s", text);
        atomic_store_explicit(&la->svc, svc, memory_order_relaxed);
        la->removed = false;
        la->released = false;
        n_new++;
    }
    if (srv->running && n_new) {
        int rc = weir__srv_listen_now(srv, srv->n_addrs, n_new);
        if (rc < 0)
            return rc; /* nothing registered */
    }
    for (size_t i = 0; i < n_moved; i++) {
        moved[i]->released = false;
        /* The service is complete before a worker can see it. */
        atomic_store_explicit(&moved[i]->svc, svc, memory_order_release);
        weir_log_info("%s moved to a new service (its sockets and queued connections stay)",
                      moved[i]->text);
    }
    srv->n_addrs += n_new;
    srv->n_services++;
    return WEIR_OK;
}

int weir_server_set_upstreams(weir_server *srv, weir_upstream *const *ups, size_t n)
{
    weir_upstream **nv = malloc((n ? n : 1) * sizeof(*nv));
    if (!nv)
        return WEIR_ERR_NOMEM;
    memcpy(nv, ups, n * sizeof(*nv));
    if (srv->running) {
        /* The old runner stops first: an upstream in both sets has one
         * control thread at a time (its lookup timer lives on that loop).
         * Health verdicts and discovery schedules live in the upstreams,
         * so the gap loses nothing. */
        weir__health_stop(srv->health);
        srv->health = weir__health_start(nv, n);
        if (!srv->health) {
            srv->health = weir__health_start(srv->upstreams, srv->n_upstreams);
            free(nv);
            return WEIR_ERR_NOMEM;
        }
    }
    free(srv->upstreams);
    srv->upstreams = nv;
    srv->n_upstreams = n;
    return WEIR_OK;
}

/* ---- worker ---- */

static void drain_check(weir_timer *t)
{
    worker *w = weir_container_of(t, worker, drain_check);
    if (w->conns.n == 0 && w->h2conns.n == 0 && w->l4.n == 0 && w->udp.n == 0 && w->resp.n == 0) {
        weir__loop_stop(w->loop);
        return;
    }
    weir__h1s_list_drain(&w->conns);
    weir__h2c_list_drain(&w->h2conns);
    weir__timer_start(w->loop, &w->drain_check, 20, drain_check);
}

static void task_drain(void *arg)
{
    worker *w = arg;
    weir__srv_close_listeners(w, true);
    weir__udp_drain(&w->udp);
    weir__resp_list_drain(&w->resp);
    weir__h1s_list_drain(&w->conns);
    weir__h2c_list_drain(&w->h2conns);
    weir__upool_close_all(w->loop);
    weir__h2u_shutdown(w->loop);
    drain_check(&w->drain_check);
}

static void task_force(void *arg)
{
    worker *w = arg;
    weir__udp_close_all(&w->udp);
    weir__srv_close_listeners(w, false);
    weir__h1s_list_close_all(&w->conns);
    weir__h2c_list_close_all(&w->h2conns);
    weir__l4_list_close_all(&w->l4);
    weir__resp_list_close_all(&w->resp);
    weir__loop_stop(w->loop);
}

/* How often a worker whose pools hold more than their reserve trims them. */
#define POOL_TRIM_MS 1000

static void pool_trim(weir_timer *t)
{
    worker *w = weir_container_of(t, worker, pool_trim);
    if (weir__pool_trim())
        weir__timer_start(w->loop, &w->pool_trim, POOL_TRIM_MS, pool_trim);
}

static void pool_trim_due(void *arg)
{
    worker *w = arg;
    if (!weir__timer_armed(&w->pool_trim))
        weir__timer_start(w->loop, &w->pool_trim, POOL_TRIM_MS, pool_trim);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    weir__pool_set_trim_hook(pool_trim_due, w);
    w->rc = weir__loop_run(w->loop);
    weir__pool_set_trim_hook(NULL, NULL);
    weir__timer_stop(w->loop, &w->pool_trim);
    weir__timer_stop(w->loop, &w->drain_check);
    weir__h1s_list_close_all(&w->conns);
    weir__h2c_list_close_all(&w->h2conns);
    weir__l4_list_close_all(&w->l4);
    weir__udp_close_all(&w->udp);
    weir__resp_list_close_all(&w->resp);
    weir__cache_shutdown();
    weir__subreq_shutdown();
    weir__respc_shutdown();
    weir__upool_close_all(w->loop);
    weir__h2u_shutdown(w->loop);
    weir__loop_run_pending(w->loop);
    weir__upool_thread_exit();
    weir__h2u_thread_exit();
    weir__resp_thread_exit();
    weir__respc_thread_exit();
    weir__pool_thread_release();
    return NULL;
}

static void task_renew(void *arg)
{
    worker *w = arg;
    weir__h2c_list_goaway(&w->h2conns);
    weir__h2u_goaway_all();
}

void weir_server_renew_connections(weir_server *srv)
{
    pthread_mutex_lock(&srv->calls_lock);
    for (int i = 0; srv->running && srv->workers && i < srv->n_workers; i++) {
        if (srv->workers[i].started)
            weir__loop_post(srv->workers[i].loop, task_renew, &srv->workers[i]);
    }
    pthread_mutex_unlock(&srv->calls_lock);
}

/* ---- run / shutdown ---- */

void weir_server_shutdown(weir_server *srv, bool graceful)
{
    int want = graceful ? 1 : 2;
    int cur = atomic_load(&srv->shutdown_req);
    while (cur < want && !atomic_compare_exchange_weak(&srv->shutdown_req, &cur, want)) {
    }
    uint64_t one = 1;
    ssize_t n = write(srv->wake_fd, &one, sizeof(one));
    (void)n;
}

static void stop_workers(weir_server *srv, bool graceful)
{
    for (int i = 0; i < srv->n_workers; i++) {
        worker *w = &srv->workers[i];
        if (w->started)
            weir__loop_post(w->loop, graceful ? task_drain : task_force, w);
    }
}

/* Reads pending signals and turns them into shutdown requests. */
static void read_signals(weir_server *srv, int sfd)
{
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGQUIT) {
            weir_log_info("SIGQUIT: stopping now");
            weir_server_shutdown(srv, false);
        } else if (si.ssi_signo == SIGHUP) {
            weir_log_info("SIGHUP: reloading the configuration");
            if (srv->opts.on_reload)
                srv->opts.on_reload(srv->opts.signal_arg);
        } else if (si.ssi_signo == SIGUSR1) {
            weir_log_info("SIGUSR1: reopening log files");
            if (srv->opts.on_reopen_logs)
                srv->opts.on_reopen_logs(srv->opts.signal_arg);
        } else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            weir_log_info("%s: stopping gracefully (grace period %u ms)",
                          si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT",
                          srv->opts.grace_period_ms);
            weir_server_shutdown(srv, true);
        }
    }
}

/* Sleeps up to timeout_ms (-1: forever) or until a signal or a shutdown
 * request arrives; returns the shutdown request level (0 none, 1 graceful,
 * 2 immediate). */
static int wait_events(weir_server *srv, int timeout_ms)
{
    int sfd = srv->sig_fd;
    struct pollfd pfd[3] = {{.fd = srv->wake_fd, .events = POLLIN},
                            {.fd = sfd, .events = POLLIN},
                            {.fd = srv->upgrade_listen, .events = POLLIN}};
    int n = poll(pfd, 3, timeout_ms); /* negative fds are skipped */
    if (n > 0) {
        if (srv->upgrade_listen >= 0 && (pfd[2].revents & POLLIN) &&
            !atomic_load(&srv->shutdown_req))
            weir__srv_serve_upgrade(srv);
        if (pfd[0].revents & POLLIN) {
            uint64_t v;
            ssize_t r = read(srv->wake_fd, &v, sizeof(v));
            (void)r;
        }
        if (sfd >= 0 && (pfd[1].revents & POLLIN))
            read_signals(srv, sfd);
    }
    run_main_calls(srv);
    return atomic_load(&srv->shutdown_req);
}

/* Joins the workers as their loops end; false if they are not all done
 * within timeout_ms or an immediate stop was asked meanwhile. */
static bool workers_done(weir_server *srv, int timeout_ms)
{
    int waited = 0;
    for (;;) {
        bool all = true;
        for (int i = 0; i < srv->n_workers; i++) {
            worker *w = &srv->workers[i];
            if (!w->started)
                continue;
            if (pthread_tryjoin_np(w->thread, NULL) == 0)
                w->started = false;
            else
                all = false;
        }
        if (all)
            return true;
        if (waited >= timeout_ms)
            return false;
        if (wait_events(srv, 10) == 2)
            return false;
        waited += 10;
    }
}

int weir_server_run(weir_server *srv)
{
    int rc = 0, sfd = -1;
    pthread_mutex_lock(&srv->calls_lock);
    srv->running = true;
    pthread_mutex_unlock(&srv->calls_lock);
    signal(SIGPIPE, SIG_IGN);
    sigset_t mask, old;
    sigemptyset(&mask);
    if (srv->opts.handle_signals) {
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGQUIT);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGUSR1);
        /* Blocked before the workers start, so they inherit the mask and
         * only the signalfd sees these. */
        pthread_sigmask(SIG_BLOCK, &mask, &old);
        sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    }
    srv->sig_fd = sfd;
    if (srv->opts.access_log) {
        srv->access_log = weir__logsink_open(srv->opts.access_log);
        if (!srv->access_log) {
            rc = WEIR_ERR_INVAL;
            goto out;
        }
        for (size_t i = 0; i < srv->n_services; i++)
            srv->services[i].access_log = srv->access_log;
    }
    rc = weir__srv_check_addrs_free(srv, 0, srv->n_addrs);
    if (rc < 0)
        goto out;
    worker *ws = calloc((size_t)srv->opts.threads, sizeof(worker));
    pthread_mutex_lock(&srv->calls_lock); /* weir_server_get_stats reads them */
    srv->n_workers = srv->opts.threads;
    srv->workers = ws;
    pthread_mutex_unlock(&srv->calls_lock);
    if (!srv->workers) {
        rc = WEIR_ERR_NOMEM;
        goto out;
    }
    for (int i = 0; i < srv->n_workers; i++) {
        worker *w = &srv->workers[i];
        w->id = i;
        w->srv = srv;
        w->conns.h2 = &w->h2conns;
        w->loop = weir__loop_new(i);
        if (!w->loop) {
            rc = WEIR_ERR_NOMEM;
            goto stop;
        }
        rc = weir__srv_open_listeners(srv, w);
        if (rc < 0)
            goto stop;
    }
    for (int i = 0; i < srv->n_workers; i++) {
        worker *w = &srv->workers[i];
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            rc = -EAGAIN;
            goto stop;
        }
        w->started = true;
    }
    for (size_t i = 0; i < srv->n_addrs; i++)
        weir_log_info("listening on %s%s (%d workers)", srv->addrs[i].text,
                      srv->addrs[i].type == SOCK_DGRAM ? " (udp)" : "", srv->n_workers);
    /* Sockets the old server had that no address here uses. */
    for (size_t j = 0; j < srv->n_inherited; j++) {
        if (srv->inherited[j].fd >= 0) {
            weir_log_info("upgrade: closing %s, not in this configuration", srv->inherited[j].addr);
            close(srv->inherited[j].fd);
            srv->inherited[j].fd = -1;
        }
    }
    if (srv->upgrade_conn >= 0) {
        weir__handoff_ready(srv->upgrade_conn);
        srv->upgrade_conn = -1;
    }
    if (srv->opts.upgrade_sock) {
        srv->upgrade_listen = weir__handoff_listen(srv->opts.upgrade_sock);
        if (srv->upgrade_listen < 0)
            weir_log_error("upgrade socket %s: %s", srv->opts.upgrade_sock,
                           strerror(-srv->upgrade_listen));
    }
    if (srv->opts.on_started)
        srv->opts.on_started(srv->opts.signal_arg);
    /* The control thread: health checks off the request path. */
    srv->health = weir__health_start(srv->upstreams, srv->n_upstreams);
    if (!srv->health)
        weir_log_error("cannot start the health checker");

    int how;
    while ((how = wait_events(srv, -1)) == 0) {
    }
    if (how == 1) {
        stop_workers(srv, true);
        if (!workers_done(srv, (int)srv->opts.grace_period_ms)) {
            if (atomic_load(&srv->shutdown_req) != 2)
                weir_log_warn("grace period over: closing the remaining connections");
            stop_workers(srv, false);
        }
    } else {
        stop_workers(srv, false);
    }
stop:
    weir__health_stop(srv->health);
    srv->health = NULL;
    if (srv->upgrade_listen >= 0) {
        close(srv->upgrade_listen);
        if (srv->opts.upgrade_sock)
            unlink(srv->opts.upgrade_sock);
        srv->upgrade_listen = -1;
    }
    if (rc < 0)
        stop_workers(srv, false);
    for (int i = 0; i < srv->n_workers; i++) {
        worker *w = &srv->workers[i];
        if (w->started) {
            pthread_join(w->thread, NULL);
            w->started = false;
        }
        if (w->loop) {
            weir__srv_close_listeners(w, false);
            weir__udp_table_free(&w->udp);
            weir__loop_free(w->loop);
        }
        for (size_t k = 0; k < w->n_listeners; k++)
            free(w->listeners[k]);
        free(w->listeners);
    }
    pthread_mutex_lock(&srv->calls_lock);
    free(srv->workers);
    srv->workers = NULL;
    pthread_mutex_unlock(&srv->calls_lock);
out:
    weir__logsink_close(srv->access_log);
    srv->access_log = NULL;
    if (sfd >= 0)
        close(sfd);
    srv->sig_fd = -1;
    if (srv->opts.handle_signals)
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_mutex_lock(&srv->calls_lock);
    srv->running = false;
    pthread_mutex_unlock(&srv->calls_lock);
    run_main_calls(srv); /* callers may wait on them */
    return rc;
}

void weir_server_free(weir_server *srv)
{
    if (!srv)
        return;
    close(srv->wake_fd);
    pthread_mutex_destroy(&srv->calls_lock);
    pthread_mutex_destroy(&srv->listen_lock);
    for (size_t j = 0; j < srv->n_inherited; j++) {
        if (srv->inherited[j].fd >= 0)
            close(srv->inherited[j].fd);
    }
    free(srv->inherited);
    if (srv->upgrade_conn >= 0)
        close(srv->upgrade_conn);
    free(srv->upstreams);
    free(srv);
}
