/*
 * subrequest.h - the session's and the worker's side of sub-requests
 * (weir/subrequest.h; subrequest.c).
 *
 * Loop thread only.
 */
#ifndef WEIR_PROXY_SUBREQUEST_H
#define WEIR_PROXY_SUBREQUEST_H

#include "core/loop.h"
#include "weir/subrequest.h"

/* weir_subrequest_start on loop, for session s (NULL: none, as detached). */
weir_subrequest *weir__subreq_start(weir_loop *loop, weir_session *s, const weir_peer *peer,
                                    const weir_subrequest_spec *spec, weir_subrequest_cb cb,
                                    void *arg);

/* The client of s went away: its sub-requests in flight end with 499 (the
 * callbacks come from a timer), so a phase pending on one resumes. */
void weir__subreq_client_gone(weir_session *s);
/* s ends: its sub-requests still running are cancelled, no callback. */
void weir__subreq_session_end(weir_session *s);
/* The worker stops: every sub-request left ends now (callbacks with
 * WEIR_SUBREQ_CANCELLED), before the pool and the loop go. */
void weir__subreq_shutdown(void);

#endif
