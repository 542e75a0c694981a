/*
 * udp.h - UDP sessions (weir/l4.h) on a worker: listen.c reads the
 * datagrams of a UDP listener and hands each to the worker's table, which
 * finds (or starts) the client's session.
 */
#ifndef WEIR_PROXY_UDP_H
#define WEIR_PROXY_UDP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/loop.h"
#include "weir/l4.h"

struct weir_service;

/* What a listener's sessions reply through: fd -1 once the listener is
 * closed (the sessions then end). pktinfo: a wildcard address, whose
 * datagrams carry the local address they came to (IP_PKTINFO). */
typedef struct weir_udp_port {
    int fd;
    bool pktinfo;
    const char *text; /* the listen address */
} weir_udp_port;

typedef struct weir_udp_table {
    weir_udp_session **buckets; /* chained by client address and port */
    size_t n_buckets;
    weir_udp_session *head;         /* every session, for a drain or a close */
    _Atomic uint32_t n;             /* written by the owner, read by stats from any thread */
    bool draining;                  /* sessions end after a short quiet */
    uint8_t *buf;                   /* one datagram, read or replied */
    uint64_t dropped_log_ms;        /* rate limit of the "dropped" log line */
    uint64_t dropped;               /* datagrams dropped since that line */
    _Atomic uint64_t dropped_total; /* all of them, for the stats */
    uint64_t seed;                  /* keys the hash */
} weir_udp_table;

/*
 * Reads up to a round's worth of datagrams from port (a SOCK_DGRAM
 * listener of svc) and passes each on. Returns true when more may be
 * waiting (the caller reads again later, for fairness), false once the
 * socket is empty.
 */
bool weir__udp_read(weir_loop *loop, weir_udp_table *t, weir_udp_port *port,
                    const struct weir_service *svc);

/* A drain: no new sessions come (the listeners are not read); the open
 * ones end once quiet for a while or at their idle timeout. */
void weir__udp_drain(weir_udp_table *t);

/* Ends every session at once (termination "KT"). */
void weir__udp_close_all(weir_udp_table *t);

/* Frees the table's memory (no session is left). */
void weir__udp_table_free(weir_udp_table *t);

#endif
