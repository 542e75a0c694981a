/*
 * session.h - the per-request proxy state machine (internal side). The
 * public accessors are in include/weir/session.h; the HTTP/1 connection
 * drives sessions through weir__session_handler (proxy/service.h).
 */
#ifndef WEIR_PROXY_SESSION_H
#define WEIR_PROXY_SESSION_H

#include "weir/proxy.h"
#include "weir/session.h"

#endif
