/*
 * weir/weir.h - everything of libweir's public API.
 */
#ifndef WEIR_WEIR_H
#define WEIR_WEIR_H

#include "weir/addr.h"
#include "weir/cache.h"
#include "weir/headers.h"
#include "weir/l4.h"
#include "weir/lb.h"
#include "weir/log.h"
#include "weir/peer.h"
#include "weir/proxy.h"
#include "weir/resp.h"
#include "weir/server.h"
#include "weir/session.h"
#include "weir/subrequest.h"
#include "weir/tls.h"
#include "weir/types.h"

#endif
