/*
 * service.h - a service: an HTTP proxy (the application's phases, its
 * options with defaults filled in, the access log), a TCP or a UDP one
 * (weir/l4.h), or a RESP one (weir/resp.h). Shared read-only by all workers.
 */
#ifndef WEIR_PROXY_SERVICE_H
#define WEIR_PROXY_SERVICE_H

#include <stdatomic.h>

#include "core/log.h"
#include "http/h1_server.h"
#include "weir/l4.h"
#include "weir/proxy.h"
#include "weir/resp.h"

typedef enum weir_service_kind {
    WEIR_SERVICE_HTTP,
    WEIR_SERVICE_TCP,
    WEIR_SERVICE_UDP,
    WEIR_SERVICE_RESP,
} weir_service_kind;

typedef struct weir_service {
    weir_service_kind kind;
    const weir_proxy_ops *ops;
    void *app;
    weir_proxy_options opts;  /* zero fields replaced by defaults */
    weir_h1s_config h1;       /* what HTTP/1 connections of this service use */
    weir_logsink *access_log; /* NULL = off; owned by the server */
    /* WEIR_SERVICE_TCP: its phases and options (defaults filled in); opts
     * then holds only proxy_protocol and trusted_proxies, for the accept. */
    const weir_tcp_ops *tcp_ops;
    weir_tcp_options tcp;
    /* WEIR_SERVICE_UDP: its phases and options (defaults filled in). */
    const weir_udp_ops *udp_ops;
    weir_udp_options udp;
    /* WEIR_SERVICE_RESP: its commands and options (defaults filled in). */
    const weir_resp_ops *resp_ops;
    weir_resp_options resp;
    _Atomic uint32_t udp_sessions; /* open, all workers: against udp.max_sessions */
    /* TLS passthrough on an HTTP service's listener: the TCP service its
     * ClientHellos go to first (passthrough_ops), and back from it the
     * HTTP service the ones it declines go to; NULL otherwise. */
    struct weir_service *passthrough, *fallback;
} weir_service;

/* Fills the defaults of DESIGN.md into o. */
void weir__proxy_options_defaults(weir_proxy_options *o);

/* The HTTP/1 handler that runs sessions (session.c). */
extern const weir_stream_handler weir__session_handler;

#endif
