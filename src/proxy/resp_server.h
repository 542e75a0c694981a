/*
 * resp_server.h - RESP connections (weir/resp.h) on a worker: accepted by
 * listen.c, kept in the worker's list until they close. resp_cmds.c holds
 * the commands the library answers itself and the reply writers.
 */
#ifndef WEIR_PROXY_RESP_SERVER_H
#define WEIR_PROXY_RESP_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/loop.h"
#include "net/conn.h"
#include "net/resp.h"
#include "weir/resp.h"

struct weir_service;

typedef struct weir_resp_list {
    weir_resp_conn *head;
    _Atomic uint32_t n; /* written by the owner, read by stats from any thread */
    bool draining;      /* a graceful stop: connections close once between commands */
} weir_resp_list;

struct weir_resp_conn {
    weir_conn c;
    weir_loop *loop;
    const struct weir_service *svc;
    const char *listen_text;
    weir_resp_list *list;
    weir_resp_conn *prev, *next;
    void *ctx;
    bool has_ctx;
    union {
        struct sockaddr sa;
        struct sockaddr_storage ss;
    } client;
    char ip[64];
    size_t ip_len;
    uint64_t id;
    char name[64]; /* CLIENT SETNAME's, "" for none */

    weir_resp_out *out; /* where replies go while commands run (the worker's buffer) */
    char *pend;         /* replies the socket did not take yet, or NULL */
    size_t pend_off, pend_len, pend_cap;

    weir_timer timer; /* idle timeout, a drain's deadline, or the linger */
    uint64_t last_active_ms;
    bool resp3;
    bool quit;      /* answer what came, then close (QUIT, a protocol error) */
    bool lingering; /* our side is shut: reading to the client's FIN */
    bool closed;
    bool busy; /* commands ran since the last idle call */
};

/* Starts a connection for an accepted socket (which it owns from now on,
 * even on failure). Returns 0 or -errno. */
int weir__resp_accept(weir_loop *loop, int fd, const struct sockaddr *peer, socklen_t peer_len,
                      const struct weir_service *svc, const char *listen_text,
                      weir_resp_list *list);

/* A graceful stop: idle connections close now, the others once their
 * current commands are answered (within 2 s). */
void weir__resp_list_drain(weir_resp_list *list);

/* Closes every connection at once. */
void weir__resp_list_close_all(weir_resp_list *list);

/* Frees the worker thread's reply and parser buffers (at its exit). */
void weir__resp_thread_exit(void);

/* resp_cmds.c: the commands the library answers when the service's own
 * command callback does not. false: none of them (the caller answers
 * "unknown command"). */
bool weir__resp_builtin(weir_resp_conn *c, const weir_str *argv, size_t argc);

/* The "unknown command" error, as redis-server words it. */
void weir__resp_unknown(weir_resp_conn *c, const weir_str *argv, size_t argc);

#endif
