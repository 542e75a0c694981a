/*
 * access_log.h - per-server access-log formats.
 *
 * A format is "off", "json" (one JSON object per line), a preset ("main",
 * "combined", "common", "short") or a template with {client_ip},
 * {method}, {uri} (as the client sent it), {path} (normalised),
 * {upstream_uri} (the target sent upstream, rewritten and normalised),
 * {location} (the matched location's name, "-" if none), {peer_ip} (the
 * connection's address when {client_ip} comes from a trusted proxy's
 * X-Forwarded-For), {termination} (two letters, HAProxy's termination
 * state: weir_session_stats.termination), {query}, {protocol} ("HTTP/1.1"), {request_id},
 * {status},
 * {upstream_addr}, {latency} (ms), {upstream_latency} (ms), {size} (bytes
 * sent), {when} (RFC 3339 time), {request_header:NAME},
 * {response_header:NAME}; "{{" and "}}" are literal braces. It is
 * compiled once at load into a list of parts; rendering is a walk over
 * them into a stack buffer.
 */
#ifndef WEIR_APP_ACCESS_LOG_H
#define WEIR_APP_ACCESS_LOG_H

#include <stddef.h>

#include "weir/weir.h"

typedef struct weir_access_log weir_access_log;

/* Compiles a format; NULL with a message in err for an invalid one, and
 * also NULL (err "off") for "off". */
weir_access_log *weir__access_log_compile(const char *format, char *err, size_t err_len);
void weir__access_log_free(weir_access_log *log);

/* Renders one line for the session (routed to `location`, NULL if none;
 * its trace and span ids in hex, NULL when it has none) into buf;
 * returns its length. */
size_t weir__access_log_render(const weir_access_log *log, weir_session *s,
                               const weir_session_stats *st, const char *location,
                               const char *trace_id, const char *span_id, char *buf,
                               size_t buf_len);

/* Who an L4 session's line is about. */
typedef struct weir_l4_who {
    weir_str client_ip;
    const char *listen_addr;
    const char *sni;      /* NULL or "" for none */
    const char *protocol; /* "TCP" or "UDP" */
} weir_l4_who;

/* The same for a TCP or UDP server's sessions: its own variables (nginx
 * stream's names) and presets ("basic", "main", "json"). */
weir_access_log *weir__access_log_compile_tcp(const char *format, char *err, size_t err_len);
size_t weir__access_log_render_tcp(const weir_access_log *log, const weir_l4_who *who,
                                   const weir_l4_stats *st, const char *server, char *buf,
                                   size_t buf_len);

#endif
