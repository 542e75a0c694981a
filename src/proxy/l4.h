/*
 * l4.h - TCP sessions (weir/l4.h) on a worker: accepted by server.c,
 * kept in the worker's list until they end.
 */
#ifndef WEIR_PROXY_L4_H
#define WEIR_PROXY_L4_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/loop.h"
#include "weir/l4.h"

struct weir_service;
struct weir_h1s_list;

typedef struct weir_l4_list {
    weir_tcp_session *head;
    _Atomic uint32_t n; /* written by the owner, read by stats from any thread */
} weir_l4_list;

/* Starts a session for an accepted socket (which it owns from now on,
 * even on failure). listen_text names the listener. For TLS passthrough on
 * an HTTP listener (svc->fallback), http is the worker's list the
 * connections svc declines go to. Returns 0 or -errno. */
int weir__l4_accept(weir_loop *loop, int fd, const struct sockaddr *peer, socklen_t peer_len,
                    const struct weir_service *svc, const char *listen_text, weir_l4_list *list,
                    struct weir_h1s_list *http);

/* Ends every session of the list at once (termination 'K'). */
void weir__l4_list_close_all(weir_l4_list *list);

#endif
