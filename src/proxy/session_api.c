/*
 * session_api.c - the public session API (weir/session.h): what phases
 * read and change, resuming, timers. Generated responses are in
 * session_reply.c, the request id in session_forward.c.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "net/tls.h"
#include "proxy/request_gate.h"
#include "proxy/session-t.h"

/* ---- public session API ---- */

weir_str weir_session_method(const weir_session *s)
{
    return s->req.method;
}

weir_str weir_session_target(const weir_session *s)
{
    return s->req.target;
}

weir_str weir_session_path(const weir_session *s)
{
    if (s->path.ptr)
        return s->path;
    const char *q = memchr(s->req.target.ptr, '?', s->req.target.len);
    return (weir_str){s->req.target.ptr, q ? (size_t)(q - s->req.target.ptr) : s->req.target.len};
}

weir_str weir_session_query(const weir_session *s)
{
    const char *q = memchr(s->req.target.ptr, '?', s->req.target.len);
    if (!q)
        return (weir_str){s->req.target.ptr + s->req.target.len, 0};
    return (weir_str){q + 1, s->req.target.len - (size_t)(q + 1 - s->req.target.ptr)};
}

weir_str weir_session_upstream_target(const weir_session *s)
{
    return s->up_target.ptr ? s->up_target : s->req.target;
}

weir_failure weir_session_failure(const weir_session *s)
{
    return s->failure;
}

bool weir_session_body_sent(const weir_session *s)
{
    return s->req_pump.moved > 0;
}

int weir_session_http_version(const weir_session *s)
{
    return s->req.version;
}

int weir_session_set_target(weir_session *s, const char *target, size_t len)
{
    if (len == 0)
        return WEIR_ERR_INVAL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)target[i];
        if (c <= 0x20 || c == 0x7f)
            return WEIR_ERR_INVAL;
    }
    const char *why;
    weir_str norm;
    int rc = weir__gate_target(&s->arena, (weir_str){target, len}, !s->svc->opts.keep_slashes,
                               &norm, &why);
    if (rc != WEIR_OK)
        return rc;
    if (norm.ptr == target && !(norm.ptr = weir__arena_dup(&s->arena, target, len)))
        return WEIR_ERR_NOMEM;
    s->up_target = norm;
    return WEIR_OK;
}

int weir_session_read_body(weir_session *s, size_t max_bytes, weir_session_body_cb cb)
{
    if (s->body_read_used || !cb || (s->state != SS_EARLY && s->state != SS_REQUEST))
        return WEIR_ERR_INVAL;
    s->body_read_used = true;
    s->body_cb = cb;
    s->body_max = max_bytes;
    if (s->req.body == WEIR_BODY_KNOWN && s->req.content_length > max_bytes)
        s->body_max = 0; /* the first byte fails it */
    /* Reading starts on the next round, after the phase returned PENDING
     * (an absent body completes at once there). */
    s->body_reading = true;
    weir__loop_defer(s->loop, weir__session_run_task, s);
    return WEIR_OK;
}

int weir_session_buffer_body(weir_session *s, size_t max_bytes)
{
    if (s->body_read_used || (s->state != SS_EARLY && s->state != SS_REQUEST))
        return WEIR_ERR_INVAL;
    s->buf_max = max_bytes;
    return WEIR_OK;
}

int weir_session_buffer_to_file(weir_session *s, uint64_t max_bytes, const char *dir)
{
    if (s->body_read_used || (s->state != SS_EARLY && s->state != SS_REQUEST) ||
        (max_bytes && !dir))
        return WEIR_ERR_INVAL;
    s->spill_max = max_bytes;
    s->spill_dir = dir;
    return WEIR_OK;
}

int weir_session_set_body_limit(weir_session *s, uint64_t max_bytes)
{
    s->body_limit = max_bytes;
    return WEIR_OK;
}

const struct sockaddr *weir_session_client_addr(const weir_session *s)
{
    return s->client_addr;
}

weir_str weir_session_client_ip(const weir_session *s)
{
    return (weir_str){s->client_ip, s->client_ip_len};
}

weir_str weir_session_upstream_addr(weir_session *s)
{
    const char *a = weir__session_up_addr(s);
    return (weir_str){a, strlen(a)};
}

weir_str weir_session_peer_ip(const weir_session *s)
{
    return (weir_str){s->peer_ip, s->peer_ip_len};
}

void weir_session_set_client_timeout(weir_session *s, uint32_t ms)
{
    s->client_idle_ms = ms;
}

bool weir_session_tls(const weir_session *s, weir_tls_info *out)
{
    return weir__tls_info(s->down_ssl, out);
}

bool weir_session_tls_handshake(const weir_session *s, uint64_t *start_us, uint64_t *took_us)
{
    if (!s->tls_hs_start_us)
        return false;
    *start_us = s->tls_hs_start_us;
    *took_us = s->tls_hs_us;
    return true;
}

weir_headers *weir_session_req_headers(weir_session *s)
{
    return &s->req.headers;
}

weir_headers *weir_session_resp_headers(weir_session *s)
{
    return s->resp.status ? &s->resp.headers : NULL;
}

int weir_session_resp_status(const weir_session *s)
{
    return s->resp.status;
}

void weir_session_skip_response_body_filter(weir_session *s)
{
    s->no_resp_body_filter = true;
}

void weir_session_skip_request_body_filter(weir_session *s)
{
    s->no_req_body_filter = true;
}

int weir_session_set_resp_status(weir_session *s, int status)
{
    if (status < 100 || status > 999 || s->resp_started || s->resp.status == 0)
        return WEIR_ERR_INVAL;
    s->resp.status = status;
    s->resp.reason = WEIR_STR_NULL;
    return WEIR_OK;
}

static void resume_task(void *arg)
{
    weir_session *s = arg;
    if (!s->pending)
        return;
    s->pending = false;
    if (s->state == SS_DONE) {
        /* Aborted while the phase was pending. */
        if (!s->running)
            weir__session_finish(s);
        return;
    }
    s->have_result = true;
    weir__session_run(s);
}

void weir_session_resume(weir_session *s, weir_phase_result result)
{
    s->result = result;
    if (weir__loop_current() == s->loop)
        weir__loop_defer(s->loop, resume_task, s);
    else
        weir__loop_post(s->loop, resume_task, s);
}

static void user_timer_cb(weir_timer *t)
{
    weir_session *s = weir_container_of(t, weir_session, user_timer);
    s->user_cb(s, s->ctx);
}

int weir_session_set_timer(weir_session *s, uint32_t delay_ms, weir_session_timer_cb cb)
{
    s->user_cb = cb;
    weir__timer_start(s->loop, &s->user_timer, delay_ms, user_timer_cb);
    return WEIR_OK;
}

bool weir_session_body_flushing(const weir_session *s)
{
    return s->body_flushing;
}

void *weir_session_alloc(weir_session *s, size_t len)
{
    return weir__arena_alloc(&s->arena, len);
}

int weir_session_worker(const weir_session *s)
{
    return weir__loop_id(s->loop);
}

void *weir_session_ctx(const weir_session *s)
{
    return s->ctx;
}
