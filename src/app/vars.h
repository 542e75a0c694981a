/*
 * vars.h - header values with variables, as Pingap and nginx write them:
 * "$remote_addr", "$host", "${HOME}". A value is compiled once, at load;
 * a value without a variable costs nothing at run time.
 *
 * Variables: $remote_addr (the client, as trusted_proxies decide; also
 * $client_ip), $peer_addr (the connection's address), $host, $scheme,
 * $method, $path, $uri (path and query), $query, $request_id,
 * $upstream_addr (the backend of the last attempt, "-" before one),
 * $hostname (this machine's), $http_NAME (the request header NAME, with
 * "_" for "-": $http_x_api_key), $cookie_NAME (a request cookie), and
 * ${NAME}, the environment variable NAME
 * when weir loaded the configuration. A "$" that starts none of these is
 * kept as written.
 */
#ifndef WEIR_APP_VARS_H
#define WEIR_APP_VARS_H

#include <stdbool.h>
#include <stddef.h>

#include "weir/weir.h"

typedef struct weir_tmpl weir_tmpl;

/* Compiles `text`; NULL when it has no variable (use the text as it is),
 * or on out of memory (*oom set). */
weir_tmpl *weir__tmpl_compile(const char *text, bool *oom);
void weir__tmpl_free(weir_tmpl *t);
/* The value for this request, NUL-terminated, in session memory; .ptr
 * NULL on out of memory. */
weir_str weir__tmpl_render(const weir_tmpl *t, weir_session *s);

#endif
