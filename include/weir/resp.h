/*
 * weir/resp.h - services that answer the Redis protocol (RESP2, and RESP3
 * after HELLO 3) on the runtime's workers, as redis-server does; and (at
 * the end) a client that asks a RESP server from any phase.
 *
 * A connection reads commands (arrays of bulk strings, or inline lines as
 * a person types them into telnet) and answers each in order; a client
 * may send many before reading (pipelining). Each command goes to
 * ops->command, which writes exactly one reply with the weir_resp_reply_*
 * calls, or says it does not know the command. Those it does not know
 * the library answers itself when it can: PING, ECHO, SELECT (accepted,
 * ignored), QUIT, HELLO, COMMAND (COUNT, INFO, DOCS, LIST: enough for
 * redis-cli), CLIENT SETNAME/GETNAME/SETINFO/ID, CONFIG GET (no
 * parameters: an empty answer), RESET; the rest get
 * "-ERR unknown command".
 *
 * A malformed frame or one over a limit gets "-ERR Protocol error: ..."
 * and the connection is closed once that reply is out (as redis-server
 * does). Replies wait while the client does not read them, up to
 * max_pending_output: then no further command is read until they are
 * out, so a client that only writes holds that much memory, not more.
 */
#ifndef WEIR_RESP_H
#define WEIR_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "weir/types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weir_server weir_server;
typedef struct weir_resp_conn weir_resp_conn;

typedef enum weir_resp_type {
    WEIR_RESP_SIMPLE,  /* +OK */
    WEIR_RESP_ERROR,   /* -ERR ..., and RESP3's !blob error */
    WEIR_RESP_INTEGER, /* :1 */
    WEIR_RESP_BULK,    /* $3 abc, and RESP3's =verbatim (its "txt:" kept) */
    WEIR_RESP_NIL,     /* $-1, *-1, RESP3's _ */
    WEIR_RESP_ARRAY,   /* *, and RESP3's map, set and push */
    WEIR_RESP_OTHER,   /* RESP3's boolean, double, big number */
} weir_resp_type;

/* A reply's top level (what weir_resp_client's callback gets): its type,
 * and its text (SIMPLE, ERROR, BULK, and OTHER's line) or its integer or
 * element count. */
typedef struct weir_resp_value {
    weir_resp_type type;
    const char *p;
    size_t n;
    int64_t i;
} weir_resp_value;

/* A command for COMMAND's answers, as redis-server describes its own
 * (https://redis.io/commands/command/): arity counts the name (negative:
 * at least that many), flags such as "readonly" and "fast", and where
 * its keys are (first, last (-1: to the end), step; 0 0 0: none). */
typedef struct weir_resp_command_info {
    const char *name; /* lower case */
    int arity;
    const char *const *flags; /* NULL-terminated, or NULL */
    int first_key, last_key, key_step;
} weir_resp_command_info;

typedef struct weir_resp_ops {
    /* The per-connection context passed to every call (may return NULL),
     * and its release when the connection closes. */
    void *(*new_ctx)(weir_resp_conn *c, void *app);
    void (*free_ctx)(void *app, void *ctx);
    /*
     * One command: argv[0] is its name as the client wrote it (any case;
     * never empty of arguments: argc >= 1). Write exactly one reply and
     * return true, or return false (writing nothing) for a command it
     * does not answer. Must not pend. The arguments are valid for the
     * call only.
     */
    bool (*command)(weir_resp_conn *c, void *ctx, const weir_str *argv, size_t argc);
    /* Every command read so far is answered and no more are buffered
     * (the client is between batches): a good time to let go of what
     * was pinned for them. Optional. */
    void (*idle)(weir_resp_conn *c, void *ctx);
    /* The commands `command` answers, for COMMAND (the built-in ones are
     * added); optional. Must outlive the server. */
    const weir_resp_command_info *commands;
    size_t n_commands;
} weir_resp_ops;

/* Per-service settings; zero fields take the default in brackets. */
typedef struct weir_resp_options {
    /* No byte either way for this long: the connection is closed. 0 =
     * never (redis-server's "timeout 0"); connections are still closed
     * by a drain. */
    uint32_t idle_timeout_ms;
    uint32_t max_args;    /* arguments of one command [1024] */
    uint32_t max_bulk;    /* bytes of one argument [512 KB] */
    uint32_t max_inline;  /* bytes of an inline command's line [64 KB] */
    uint32_t max_command; /* bytes of one command, all of it [1 MB] */
    /* Unsent replies past which no further command is read [1 MB] */
    uint32_t max_pending_output;
    const char *name;    /* HELLO's "server" ["weir"] */
    const char *version; /* HELLO's "version" [weir_version()] */
} weir_resp_options;

/*
 * Listens on the addresses (TCP) for a RESP service, like
 * weir_server_add_tcp (taking over addresses another service released).
 * ops, app and the strings of opts must outlive the server.
 */
int weir_server_add_resp(weir_server *srv, const char *const *listen_addrs, size_t n_addrs,
                         const weir_resp_ops *ops, void *app, const weir_resp_options *opts);

/*
 * Replies, from ops->command (one reply per command: an array or a map
 * counts as one, with its elements written after it). RESP2 clients get
 * nil as $-1 and a map as a flat array of 2n values; RESP3 clients (after
 * HELLO 3) get _ and %n. A CR or LF in a simple string or an error is
 * written as a space. An error's text starts with its code ("ERR ...",
 * "WRONGTYPE ...").
 */
void weir_resp_reply_simple(weir_resp_conn *c, const char *s);
void weir_resp_reply_error(weir_resp_conn *c, const char *s);
void weir_resp_reply_int(weir_resp_conn *c, int64_t v);
void weir_resp_reply_bulk(weir_resp_conn *c, const void *p, size_t n);
void weir_resp_reply_nil(weir_resp_conn *c);
void weir_resp_reply_array(weir_resp_conn *c, size_t n);
void weir_resp_reply_map(weir_resp_conn *c, size_t n);

/* Whether the client asked for RESP3 (HELLO 3). */
bool weir_resp_conn_resp3(const weir_resp_conn *c);
/* The client's address, and its IP as text (valid for the connection). */
const struct sockaddr *weir_resp_conn_client_addr(const weir_resp_conn *c);
weir_str weir_resp_conn_client_ip(const weir_resp_conn *c);
/* The address of the listener that accepted it. */
const char *weir_resp_conn_listen_addr(const weir_resp_conn *c);
/* A number for the connection, unique in the process (CLIENT ID). */
uint64_t weir_resp_conn_id(const weir_resp_conn *c);
/* From ops->command: close the connection once this command's reply is
 * out, as QUIT does (no further command is read). */
void weir_resp_conn_quit(weir_resp_conn *c);

/*
 * ---- the client: commands to a RESP server from any phase ----
 *
 * A weir_resp_client names a server (redis-server, a weir ring, anything
 * that speaks RESP2) and its timeouts. Calls go over one connection per
 * worker and server address, opened at the first call, pipelined (many
 * commands in flight, answered in order) and closed once unused for
 * idle_timeout_ms: the pooling rules of upstream connections. Nothing
 * blocks the worker: the callback runs on the worker's loop when the
 * reply comes, the call times out, or the connection fails.
 *
 * After a failure (refused, reset, a connect or a reply that took too
 * long, a malformed reply) the worker's calls to that address fail at
 * once for down_ms, then the next call connects again: a dead server
 * costs a request nothing more than the check.
 */
typedef struct weir_resp_client weir_resp_client;

typedef struct weir_resp_client_options {
    const char *addr;            /* "ip:port" of the server (copied) */
    uint32_t timeout_ms;         /* from the call to its reply [50] */
    uint32_t connect_timeout_ms; /* [1000] */
    uint32_t idle_timeout_ms;    /* a worker's connection unused this long closes [60000] */
    uint32_t max_pending;        /* commands in flight on a worker's connection [1024] */
    uint32_t down_ms;            /* after a failure, calls fail at once for this long [1000] */
} weir_resp_client_options;

/* NULL with err filled on a bad address. Any thread. Free it only when no
 * call is in flight (their callbacks ran); a worker's connection outlives
 * it, for the next client of the same address. */
weir_resp_client *weir_resp_client_new(const weir_resp_client_options *o, char *err,
                                       size_t err_len);
void weir_resp_client_free(weir_resp_client *c);

/*
 * The callback of a call: error 0 with the reply in *v (its text points
 * into a buffer valid for the callback only; an error reply is a value of
 * type WEIR_RESP_ERROR, not an error), or error < 0 (-ETIMEDOUT, -ECONNREFUSED,
 * -ECONNRESET, -EPROTO for a malformed reply, -ESHUTDOWN as the worker
 * stops) with v NULL.
 */
typedef void (*weir_resp_client_cb)(void *arg, int error, const weir_resp_value *v);

/*
 * Sends argv[0..argc) on the calling worker's connection (a worker's
 * thread only: a phase, a timer). Returns WEIR_OK, and cb runs later,
 * exactly once, never inside this call; or a negative error without a
 * callback: WEIR_ERR_INVAL (not on a worker, argc 0), -EAGAIN (the
 * address is down, or max_pending calls are in flight), WEIR_ERR_NOMEM.
 */
int weir_resp_client_call(weir_resp_client *c, const weir_str *argv, size_t argc,
                          weir_resp_client_cb cb, void *arg);

#ifdef __cplusplus
}
#endif
#endif
