/*
 * weir/resp.h - services that answer the Redis protocol (RESP2, and RESP3
 * after HELLO 3) on the runtime's workers, as redis-server does.
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

#ifdef __cplusplus
}
#endif
#endif
