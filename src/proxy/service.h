/*
 * service.h - a proxy service: the application's phases, its options with
 * defaults filled in, and the access log. Shared read-only by all workers.
 */
#ifndef WEIR_PROXY_SERVICE_H
#define WEIR_PROXY_SERVICE_H

#include "core/log.h"
#include "http/h1_server.h"
#include "weir/proxy.h"

typedef struct weir_service {
    const weir_proxy_ops *ops;
    void *app;
    weir_proxy_options opts;  /* zero fields replaced by defaults */
    weir_h1s_config h1;       /* what HTTP/1 connections of this service use */
    weir_logsink *access_log; /* NULL = off; owned by the server */
} weir_service;

/* Fills the defaults of DESIGN.md into o. */
void weir__proxy_options_defaults(weir_proxy_options *o);

/* The HTTP/1 handler that runs sessions (session.c). */
extern const weir_stream_handler weir__session_handler;

#endif
