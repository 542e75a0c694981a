/*
 * server-int.h - the server's state, shared by server.c (services, the
 * workers' lives, signals, run and shutdown) and listen.c (listening
 * sockets: binding, accepting, datagrams, the upgrade hand-off).
 */
#ifndef WEIR_PROXY_SERVER_INT_H
#define WEIR_PROXY_SERVER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "core/log.h"
#include "core/loop.h"
#include "http/h1_server.h"
#include "http/h2_server.h"
#include "lb/health.h"
#include "proxy/handoff.h"
#include "proxy/l4.h"
#include "proxy/resp_server.h"
#include "proxy/service.h"
#include "proxy/udp.h"
#include "weir/server.h"

#define MAX_SERVICES 256
#define MAX_ADDRS 16

typedef struct listen_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    int type; /* SOCK_STREAM, or SOCK_DGRAM for a UDP service: "*:53" may be both */
    char text[WEIR_ADDR_STRLEN];
    /* Whom its new connections go to; weir_server_add_proxy moves a
     * released address to another service while workers accept on it. */
    _Atomic(weir_service *) svc;
    bool removed;  /* weir_server_remove_listen: no longer listened on */
    bool released; /* weir_server_release_listen: listened on until moved or removed */
} listen_addr;

typedef struct worker worker;

typedef struct listener {
    weir_io io;
    worker *w;
    const listen_addr *addr;
    weir_timer retry;    /* resumes accepting after a pause (EMFILE/ENFILE) */
    unsigned pause_ms;   /* the last pause; doubles while the shortage lasts, 0 after an accept */
    bool paused;         /* out of descriptors: readiness is ignored until retry fires */
    _Atomic int live_fd; /* io.fd for other threads (upgrade hand-off); -1 once closed */
    weir_udp_port udp;   /* SOCK_DGRAM: what its sessions reply through */
} listener;

struct worker {
    int id;
    weir_server *srv;
    weir_loop *loop;
    pthread_t thread;
    bool started;
    listener **listeners; /* each allocated once, freed with the worker: a closed
                             one stays (fd -1) so no queued event can dangle */
    size_t n_listeners, cap_listeners;
    weir_h1s_list conns;
    weir_h2c_list h2conns;
    weir_l4_list l4;     /* TCP sessions: they run to their end on a drain */
    weir_udp_table udp;  /* UDP sessions: they end once quiet on a drain */
    weir_resp_list resp; /* RESP connections: they close between commands on a drain */
    weir_timer drain_check;
    weir_timer pool_trim; /* gives idle pooled objects back (weir__pool_trim) */
    int rc;
};

struct weir_server {
    weir_server_options opts;
    weir_service services[MAX_SERVICES];
    size_t n_services;
    listen_addr addrs[MAX_SERVICES * MAX_ADDRS];
    size_t n_addrs;
    worker *workers;
    int n_workers;
    int wake_fd;              /* eventfd: weir_server_shutdown() */
    int sig_fd;               /* signalfd while running with handle_signals, else -1 */
    _Atomic int shutdown_req; /* 0 none, 1 graceful, 2 immediate */
    weir_logsink *access_log;
    weir_upstream **upstreams; /* checked by the control thread */
    size_t n_upstreams;
    bool running;
    weir_health_runner *health;  /* main thread only */
    pthread_mutex_t calls_lock;  /* guards calls */
    pthread_mutex_t listen_lock; /* guards the workers' listener arrays */
    struct main_call *calls;     /* weir_server_call_main queue */
    /* zero-downtime upgrade */
    weir_handoff_fd *inherited; /* sockets taken over from the old server */
    size_t n_inherited;
    int upgrade_conn;   /* to the old server until READY, else -1 */
    int upgrade_listen; /* our own upgrade socket, else -1 */
};

/* ---- listen.c ---- */

/* The address's entry (of that socket type) while it is listened on, or NULL. */
listen_addr *weir__srv_live_addr(weir_server *srv, const struct sockaddr_storage *ss, int type);

/* Before the first socket on addrs[first .. first+n): that no other
 * process listens there. Returns 0 or -EADDRINUSE (logged). */
int weir__srv_check_addrs_free(weir_server *srv, size_t first, size_t n);

/* A running server starts listening on addrs[first .. first+n) on every
 * worker; a bind error fails it with nothing changed. */
int weir__srv_listen_now(weir_server *srv, size_t first, size_t n);

/* Worker w's listening sockets, before it runs: inherited ones first. */
int weir__srv_open_listeners(weir_server *srv, worker *w);

/* Stops w's listeners. With keep_dgram (a drain) UDP sockets stay open,
 * unread, so the sessions on them can still reply; else all are closed. */
void weir__srv_close_listeners(worker *w, bool keep_dgram);

/* Old side of weir -u: a successor connected to the upgrade socket. */
void weir__srv_serve_upgrade(weir_server *srv);

#endif
