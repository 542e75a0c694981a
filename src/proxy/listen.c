/*
 * listen.c - the server's listening sockets: one SO_REUSEPORT socket per
 * worker and address (so the kernel spreads connections, and a client's
 * datagrams always reach the same worker), binding them on a running
 * server, accepting connections, reading datagrams for UDP services, and
 * the sockets' side of the zero-downtime upgrade.
 *
 * An address is a socket type and an IP and port: a TCP and a UDP service
 * may both listen on "*:53". Public calls that take an address as text
 * (weir_server_remove_listen, weir_server_release_listen) name a UDP one
 * "udp://ip:port".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include "net/sock.h"
#include "proxy/request_gate.h"
#include "proxy/server-int.h"

static int add_listener(worker *w, const listen_addr *la, int fd);

static void log_listen_error(const listen_addr *la, int err)
{
    if (err == -EADDRINUSE)
        weir_log_error("listen on %s: address already in use", la->text);
    else
        weir_log_error("listen on %s: %s", la->text, strerror(-err));
}

/* Same type, family and port, and the same address or a wildcard on one
 * side: the kernel sees the two as one binding. */
static bool addrs_overlap(const listen_addr *la, const listen_addr *lb)
{
    const struct sockaddr_storage *a = &la->ss, *b = &lb->ss;
    if (la->type != lb->type || a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port &&
               (x->sin_addr.s_addr == y->sin_addr.s_addr || x->sin_addr.s_addr == INADDR_ANY ||
                y->sin_addr.s_addr == INADDR_ANY);
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port &&
           (IN6_ARE_ADDR_EQUAL(&x->sin6_addr, &y->sin6_addr) ||
            IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr) || IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr));
}

/* Whether a socket of ours still listens where la would: the probe would
 * only find it. A reload that moves an address to another server (or gives
 * it back after a failure) closes the old sockets on the workers' loops,
 * maybe not yet; "*:80" and "127.0.0.1:80" may be two servers' addresses. */
static bool own_socket_on(weir_server *srv, const listen_addr *la)
{
    bool found = false;
    pthread_mutex_lock(&srv->listen_lock);
    for (int i = 0; srv->workers && i < srv->n_workers && !found; i++) {
        worker *w = &srv->workers[i];
        for (size_t k = 0; k < w->n_listeners && !found; k++) {
            const listener *l = w->listeners[k];
            found = atomic_load(&l->live_fd) >= 0 && addrs_overlap(l->addr, la);
        }
    }
    pthread_mutex_unlock(&srv->listen_lock);
    return found;
}

/*
 * Before its first socket on an address weir checks that no other process
 * listens there (weir__listen_addr_free): SO_REUSEPORT would otherwise let
 * a second weir, or an nginx with reuseport, share the port and take part
 * of its connections. Exempt: addresses served by sockets taken over from
 * the old process (weir -u), or by a socket of our own. The check and the
 * bind are two steps; a listener appearing in between is not seen.
 */
int weir__srv_check_addrs_free(weir_server *srv, size_t first, size_t n)
{
    for (size_t i = first; i < first + n; i++) {
        const listen_addr *la = &srv->addrs[i];
        bool inherited = false;
        for (size_t j = 0; j < srv->n_inherited && !inherited; j++)
            inherited = srv->inherited[j].addr_ix == (long)i;
        if (la->removed || inherited || own_socket_on(srv, la))
            continue;
        /* Other probe errors (EACCES, EADDRNOTAVAIL) are the bind's to report. */
        int rc = weir__listen_addr_free((const struct sockaddr *)&la->ss, la->len, la->type);
        if (rc == -EADDRINUSE) {
            log_listen_error(la, rc);
            return rc;
        }
    }
    return 0;
}

typedef struct attach_task {
    worker *w;
    const listen_addr *la;
    int fd;
} attach_task;

static void attach_listener(void *arg)
{
    attach_task *t = arg;
    if (add_listener(t->w, t->la, t->fd) < 0) {
        weir_log_error("listen on %s: cannot attach to worker %d", t->la->text, t->w->id);
        close(t->fd);
    }
    free(t);
}

/*
 * A running server starts listening on addrs[first .. first+n): one
 * SO_REUSEPORT socket per worker is bound here (so a bind error fails the
 * call with nothing changed) and handed to the worker's loop.
 */
int weir__srv_listen_now(weir_server *srv, size_t first, size_t n)
{
    int nw = srv->n_workers;
    int *fds = malloc(n * (size_t)nw * sizeof(*fds));
    attach_task *tasks = calloc(n * (size_t)nw, sizeof(*tasks));
    if (!fds || !tasks) {
        free(fds);
        free(tasks);
        return WEIR_ERR_NOMEM;
    }
    size_t made = 0;
    int rc = weir__srv_check_addrs_free(srv, first, n);
    for (size_t i = 0; i < n && rc == 0; i++) {
        listen_addr *la = &srv->addrs[first + i];
        for (int k = 0; k < nw; k++) {
            int fd = weir__listen_socket((struct sockaddr *)&la->ss, la->len, la->type, true, 4096);
            if (fd < 0) {
                log_listen_error(la, fd);
                rc = fd;
                break;
            }
            fds[made] = fd;
            tasks[made] = (attach_task){&srv->workers[k], la, fd};
            made++;
        }
    }
    for (size_t j = 0; j < made; j++) {
        attach_task *t = rc == 0 ? malloc(sizeof(*t)) : NULL;
        if (t) {
            *t = tasks[j];
            if (weir__loop_post(t->w->loop, attach_listener, t) == 0)
                continue;
            free(t);
        }
        close(fds[j]);
    }
    if (rc == 0) {
        for (size_t i = 0; i < n; i++)
            weir_log_info("listening on %s%s (%d workers)", srv->addrs[first + i].text,
                          srv->addrs[first + i].type == SOCK_DGRAM ? " (udp)" : "", nw);
    }
    free(fds);
    free(tasks);
    return rc;
}

/* Stops reading l and closes its socket (a UDP one's sessions end at
 * their next reply). */
static void close_listener(worker *w, listener *l)
{
    weir__timer_stop(w->loop, &l->retry);
    if (atomic_load(&l->live_fd) >= 0)
        weir__io_del(w->loop, &l->io);
    atomic_store(&l->live_fd, -1);
    close(l->io.fd);
    l->io.fd = -1;
    l->udp.fd = -1;
}

typedef struct detach_task {
    worker *w;
    const listen_addr *la;
} detach_task;

static void detach_listener(void *arg)
{
    detach_task *t = arg;
    worker *w = t->w;
    for (size_t i = 0; i < w->n_listeners; i++) {
        listener *l = w->listeners[i];
        if (l->addr == t->la && l->io.fd >= 0)
            close_listener(w, l);
    }
    free(t);
}

/* "ip:port" (TCP) or "udp://ip:port". */
static int parse_listen_text(const char *text, struct sockaddr_storage *ss, int *type)
{
    socklen_t len;
    *type = SOCK_STREAM;
    if (strncmp(text, "udp://", 6) == 0) {
        *type = SOCK_DGRAM;
        text += 6;
    }
    return weir__addr_parse(text, ss, &len);
}

int weir_server_remove_listen(weir_server *srv, const char *addr)
{
    struct sockaddr_storage ss;
    int type;
    if (parse_listen_text(addr, &ss, &type) < 0)
        return WEIR_ERR_INVAL;
    for (size_t i = 0; i < srv->n_addrs; i++) {
        listen_addr *la = &srv->addrs[i];
        if (la->removed || la->type != type ||
            !weir__addr_equal((struct sockaddr *)&la->ss, (struct sockaddr *)&ss))
            continue;
        la->removed = true;
        la->released = false;
        for (int k = 0; srv->running && k < srv->n_workers; k++) {
            detach_task *t = malloc(sizeof(*t));
            if (!t)
                continue;
            *t = (detach_task){&srv->workers[k], la};
            if (weir__loop_post(srv->workers[k].loop, detach_listener, t) != 0)
                free(t);
        }
        weir_log_info("stopped listening on %s (its connections finish)", la->text);
        return WEIR_OK;
    }
    return WEIR_ERR_INVAL;
}

listen_addr *weir__srv_live_addr(weir_server *srv, const struct sockaddr_storage *ss, int type)
{
    for (size_t i = 0; i < srv->n_addrs; i++) {
        listen_addr *la = &srv->addrs[i];
        if (!la->removed && la->type == type &&
            weir__addr_equal((const struct sockaddr *)&la->ss, (const struct sockaddr *)ss))
            return la;
    }
    return NULL;
}

int weir_server_release_listen(weir_server *srv, const char *addr)
{
    struct sockaddr_storage ss;
    int type;
    if (parse_listen_text(addr, &ss, &type) < 0)
        return WEIR_ERR_INVAL;
    listen_addr *la = weir__srv_live_addr(srv, &ss, type);
    if (!la)
        return WEIR_ERR_INVAL;
    la->released = true;
    return WEIR_OK;
}

#define ACCEPT_PAUSE_MIN_MS 100
#define ACCEPT_PAUSE_MAX_MS 1000

static void accept_ready(listener *l);

static void resume_accept(weir_timer *t)
{
    listener *l = weir_container_of(t, listener, retry);
    l->paused = false;
    accept_ready(l);
}

/*
 * Out of descriptors (or kernel memory) the connection stays in the
 * backlog, and the listener is still readable: edge-triggered, every new
 * connection reports it again, and retrying at once spins on EMFILE with a
 * log line each time (3,864 lines in 3 s). So, as nginx does, the listener
 * stops accepting for a while (100 ms, doubling to 1 s while the shortage
 * lasts), then the timer drains the backlog: the readiness ignored
 * meanwhile is not needed again.
 */
static void pause_accept(listener *l, int err)
{
    l->pause_ms = l->pause_ms ? l->pause_ms * 2 : ACCEPT_PAUSE_MIN_MS;
    if (l->pause_ms > ACCEPT_PAUSE_MAX_MS)
        l->pause_ms = ACCEPT_PAUSE_MAX_MS;
    l->paused = true;
    weir_log_error("accept on %s: %s; not accepting for %u ms", l->addr->text, strerror(err),
                   l->pause_ms);
    weir__timer_start(l->w->loop, &l->retry, l->pause_ms, resume_accept);
}

/* A connection that failed in the backlog, or a firewall's verdict on
 * one: the next may be fine. accept(2) asks to treat these like EAGAIN and
 * retry; returning instead would leave the backlog unread until a new
 * connection makes the (edge-triggered) listener readable again. */
static bool accept_error_is_one_connections(int err)
{
    switch (err) {
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case EPERM:
    case ENETDOWN:
    case ENETUNREACH:
    case EHOSTDOWN:
    case EHOSTUNREACH:
    case ENONET:
    case ENOPROTOOPT:
    case EOPNOTSUPP:
        return true;
    default:
        return false;
    }
}

static void accept_ready(listener *l)
{
    if (l->io.fd < 0 || l->paused)
        return; /* closed meanwhile (a deferred round), or pausing */
    worker *w = l->w;
    for (int i = 0; i < 256; i++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int fd = accept4(l->io.fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == EAGAIN)
                return;
            if (accept_error_is_one_connections(err))
                continue;
            if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
                pause_accept(l, err);
                return;
            }
            weir_log_error("accept on %s: %s", l->addr->text, strerror(err));
            return;
        }
        l->pause_ms = 0;
        weir_service *svc = atomic_load_explicit(&l->addr->svc, memory_order_acquire);
        if (svc->opts.proxy_protocol &&
            !weir__cidr_match(svc->opts.trusted_proxies, svc->opts.n_trusted_proxies,
                              (struct sockaddr *)&peer)) {
            char ip[WEIR_ADDR_STRLEN];
            weir__addr_format_ip((struct sockaddr *)&peer, ip, sizeof(ip));
            weir_log_warn("client %s on %s: not a trusted proxy, and the listener expects the "
                          "PROXY protocol: closed",
                          ip, l->addr->text);
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (svc->kind == WEIR_SERVICE_RESP)
            weir__resp_accept(w->loop, fd, (struct sockaddr *)&peer, plen, svc, l->addr->text,
                              &w->resp);
        else if (svc->kind == WEIR_SERVICE_TCP)
            weir__l4_accept(w->loop, fd, (struct sockaddr *)&peer, plen, svc, l->addr->text, &w->l4,
                            NULL);
        else if (svc->passthrough)
            weir__l4_accept(w->loop, fd, (struct sockaddr *)&peer, plen, svc->passthrough,
                            l->addr->text, &w->l4, &w->conns);
        else
            weir__h1s_accept(w->loop, fd, false, (struct sockaddr *)&peer, plen, &svc->h1,
                             &w->conns);
    }
    /* Fairness: leave the rest of the backlog for the next round. */
    weir__loop_defer(w->loop, (weir_task_cb)accept_ready, l);
}

static void listener_cb(weir_io *io, uint32_t events)
{
    (void)events;
    accept_ready(weir_container_of(io, listener, io));
}

/* A UDP listener: its datagrams go to the worker's sessions. */
static void datagrams_ready(listener *l)
{
    if (atomic_load_explicit(&l->live_fd, memory_order_relaxed) < 0)
        return; /* closed, or draining, meanwhile */
    weir_service *svc = atomic_load_explicit(&l->addr->svc, memory_order_acquire);
    if (weir__udp_read(l->w->loop, &l->w->udp, &l->udp, svc))
        weir__loop_defer(l->w->loop, (weir_task_cb)datagrams_ready, l);
}

static void datagram_cb(weir_io *io, uint32_t events)
{
    (void)events;
    datagrams_ready(weir_container_of(io, listener, io));
}

void weir__srv_close_listeners(worker *w, bool keep_dgram)
{
    for (size_t i = 0; i < w->n_listeners; i++) {
        listener *l = w->listeners[i];
        if (l->io.fd < 0)
            continue;
        if (keep_dgram && l->addr->type == SOCK_DGRAM) {
            /* Unread from now on: a successor (weir -u) that holds the same
             * socket reads the datagrams; the replies of our sessions still
             * go out through it. */
            if (atomic_load(&l->live_fd) >= 0)
                weir__io_del(w->loop, &l->io);
            atomic_store(&l->live_fd, -1);
            continue;
        }
        close_listener(w, l);
    }
}

/* Index of the configured address (of its type) a socket is bound to, or -1. */
static long inherited_addr(weir_server *srv, int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int type = 0;
    socklen_t tlen = sizeof(type);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0)
        return -1;
    for (size_t i = 0; i < srv->n_addrs; i++) {
        if (srv->addrs[i].type == type &&
            weir__addr_equal((struct sockaddr *)&ss, (struct sockaddr *)&srv->addrs[i].ss))
            return (long)i;
    }
    return -1;
}

static int add_listener(worker *w, const listen_addr *la, int fd)
{
    if (w->n_listeners == w->cap_listeners) {
        size_t cap = w->cap_listeners ? w->cap_listeners * 2 : 8;
        pthread_mutex_lock(&w->srv->listen_lock);
        listener **nv = realloc(w->listeners, cap * sizeof(*nv));
        if (nv) {
            w->listeners = nv;
            w->cap_listeners = cap;
        }
        pthread_mutex_unlock(&w->srv->listen_lock);
        if (!nv)
            return WEIR_ERR_NOMEM;
    }
    listener *l = calloc(1, sizeof(*l));
    if (!l)
        return WEIR_ERR_NOMEM;
    pthread_mutex_lock(&w->srv->listen_lock);
    w->listeners[w->n_listeners++] = l;
    pthread_mutex_unlock(&w->srv->listen_lock);
    l->io.fd = fd;
    atomic_store(&l->live_fd, fd);
    l->io.cb = la->type == SOCK_DGRAM ? datagram_cb : listener_cb;
    l->w = w;
    l->addr = la;
    l->udp = (weir_udp_port){
        .fd = la->type == SOCK_DGRAM ? fd : -1,
        .pktinfo = weir__addr_is_wildcard((const struct sockaddr *)&la->ss),
        .text = la->text,
    };
    return weir__io_add(w->loop, &l->io, EPOLLIN);
}

/*
 * Worker w's listening sockets: per address, the inherited sockets whose
 * index is w's modulo the worker count (so every inherited socket, with
 * the connections queued on it, is served), or a new SO_REUSEPORT socket
 * when none falls to w.
 */
int weir__srv_open_listeners(weir_server *srv, worker *w)
{
    for (size_t i = 0; i < srv->n_addrs; i++) {
        const listen_addr *la = &srv->addrs[i];
        size_t k = 0;
        bool got = false;
        if (la->removed)
            continue;
        for (size_t j = 0; j < srv->n_inherited; j++) {
            /* The k-th socket of this address goes to worker k mod n; count
             * sockets other workers already took (fd -1) too. */
            if (srv->inherited[j].addr_ix != (long)i)
                continue;
            if (k++ % (size_t)srv->n_workers != (size_t)w->id || srv->inherited[j].fd < 0)
                continue;
            int fd = srv->inherited[j].fd;
            srv->inherited[j].fd = -1; /* the worker owns it now */
            int rc = add_listener(w, la, fd);
            if (rc < 0)
                return rc;
            got = true;
        }
        if (got)
            continue;
        int fd = weir__listen_socket((struct sockaddr *)&la->ss, la->len, la->type, true, 4096);
        if (fd < 0) {
            log_listen_error(la, fd);
            return fd;
        }
        int rc = add_listener(w, la, fd);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int weir_server_take_over(weir_server *srv, const char *upgrade_sock)
{
    int rc =
        weir__handoff_receive(upgrade_sock, &srv->inherited, &srv->n_inherited, &srv->upgrade_conn);
    if (rc < 0) {
        weir_log_error("upgrade: no running weir answered on %s: %s", upgrade_sock,
                       rc > -4096 ? strerror(-rc) : "protocol error");
        return rc;
    }
    /* Which configured address each socket serves (-1: none, closed at run). */
    for (size_t j = 0; j < srv->n_inherited; j++)
        srv->inherited[j].addr_ix = inherited_addr(srv, srv->inherited[j].fd);
    weir_log_info("upgrade: took over %zu listening sockets", srv->n_inherited);
    return WEIR_OK;
}

void weir__srv_serve_upgrade(weir_server *srv)
{
    size_t n = 0;
    pthread_mutex_lock(&srv->listen_lock);
    for (int i = 0; i < srv->n_workers; i++)
        n += srv->workers[i].n_listeners;
    weir_handoff_fd *v = calloc(n ? n : 1, sizeof(*v));
    if (!v) {
        pthread_mutex_unlock(&srv->listen_lock);
        return;
    }
    n = 0;
    /* The fds are only closed by their workers at drain, which this thread
     * starts; reading them here races with nothing. */
    for (int i = 0; i < srv->n_workers; i++) {
        worker *w = &srv->workers[i];
        for (size_t k = 0; k < w->n_listeners; k++) {
            int fd = atomic_load_explicit(&w->listeners[k]->live_fd, memory_order_relaxed);
            if (fd < 0)
                continue;
            v[n].fd = fd;
            snprintf(v[n].addr, sizeof(v[n].addr), "%s", w->listeners[k]->addr->text);
            n++;
        }
    }
    pthread_mutex_unlock(&srv->listen_lock);
    int rc = weir__handoff_serve(srv->upgrade_listen, v, n);
    free(v);
    if (rc == WEIR_OK) {
        weir_log_info("upgrade: the new process is serving; draining and exiting");
        /* Not unlinked: the path now belongs to the new process's socket. */
        close(srv->upgrade_listen);
        srv->upgrade_listen = -1;
        weir_server_shutdown(srv, true);
    }
}