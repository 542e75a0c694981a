/*
 * request.h - one request's trace (W3C Trace Context, the OTLP span and
 * its upstream attempts) and its Server-Timing header, on servers with
 * otlp_exporter or server_timing. The phases call these; each is a no-op
 * for a request without a trace (c->trace NULL).
 *
 * Trust: a client's traceparent is continued (that is what it is for),
 * but never forwarded as it came: the upstream gets weir's own span as
 * parent, and a malformed traceparent starts a new trace (its tracestate
 * is then dropped, as the specification says).
 */
#ifndef WEIR_APP_OTEL_REQUEST_H
#define WEIR_APP_OTEL_REQUEST_H

#include <stdbool.h>

#include "app/app_int.h"
#include "weir/proxy.h"

/* early_request_filter: the trace of a request on such a server. */
void weir__trace_begin(weir_session *s, req_ctx *c);
/* A plugin's hook returned PENDING (category: static text), and the
 * request went on after it (result: the hook's last, or ERROR when the
 * wait ended otherwise). */
void weir__trace_plugin_wait(weir_session *s, req_ctx *c, const char *plugin, const char *category);
void weir__trace_plugin_done(weir_session *s, req_ctx *c, weir_phase_result result);
/* upstream_peer chose a backend: an attempt starts. */
void weir__trace_attempt(weir_session *s, req_ctx *c);
/* connected_to_upstream. */
void weir__trace_connected(weir_session *s, req_ctx *c, bool reused);
/* fail_to_connect: the attempt failed. */
void weir__trace_failed(weir_session *s, req_ctx *c);
/* upstream_request_filter: traceparent (and tracestate) for the backend. */
void weir__trace_upstream_request(weir_session *s, req_ctx *c);
/* upstream_response_filter: the attempt's answer. */
void weir__trace_upstream_response(weir_session *s, req_ctx *c);
/* response_filter: Server-Timing, when the server asks for it. */
void weir__trace_response(weir_session *s, req_ctx *c);
/* logging: the span is finished and queued when sampled. */
void weir__trace_end(weir_session *s, req_ctx *c, const weir_session_stats *st);
/* The exporter's settings from cfg ([basic] otlp_*), and its thread
 * started when a server exports. At start and after each reload; main
 * thread. */
void weir__trace_configure(const weir_config *cfg);
/* The request's trace and span ids in hex (33 and 17 bytes), or false. */
bool weir__trace_ids(const req_ctx *c, char trace_id[33], char span_id[17]);

#endif
