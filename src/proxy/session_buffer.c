/*
 * session_buffer.c - request buffering: the body read into memory before
 * a backend is chosen (weir_session_buffer_body; see session.c).
 */
#include <string.h>

#include "proxy/session-t.h"

/* Buffer the body before choosing a backend (weir_session_buffer_body)?
 * Not when it cannot fit: a prefix would protect nothing. */
bool weir__session_wants_buffer(const weir_session *s)
{
    if (!s->buf_max || s->req.body == WEIR_BODY_NONE || s->req.upgrade)
        return false;
    return s->req.body != WEIR_BODY_KNOWN || s->req.content_length <= s->buf_max;
}

/*
 * BUFFER: the request body goes into memory while the client sends it, so
 * a slow client holds no backend connection (nginx's
 * proxy_request_buffering). Then PEER, with the body complete (replayed
 * to every attempt, so retries stay possible), or with the first buf_max
 * bytes of a chunked body that is longer (the rest streams).
 */
void weir__session_step_buffer(weir_session *s)
{
    weir_exchange *x = s->down;
    while (s->buf_len < s->buf_max) {
        weir_str segs[MAX_SEGS], trailers = WEIR_STR_NULL;
        size_t n = 0;
        int rc = x->ops->read_body(x, segs, MAX_SEGS, &n, &trailers);
        if (rc == WEIR_AGAIN)
            return;
        if (rc == WEIR_DONE) {
            s->buf_complete = true;
            if (trailers.len &&
                !(s->buf_trailers.ptr = weir__arena_dup(&s->arena, trailers.ptr, trailers.len))) {
                weir__session_fail(s, 503, "out of memory");
                return;
            }
            s->buf_trailers.len = trailers.len;
            s->req_pump.done = false;
            break;
        }
        if (rc < 0) {
            if (rc == WEIR_EX_E_TOO_LARGE) {
                weir__session_fail(s, 413, "request body over the limit");
            } else if (rc == WEIR_EX_E_FRAMING) {
                weir__session_fail(s, 400, "invalid request body framing");
            } else {
                weir__session_terminate(s, 'C');
                s->client_aborted = true;
                s->error = "client closed during the request body";
                weir__session_set_state(s, SS_DONE);
            }
            return;
        }
        size_t total = 0;
        for (size_t i = 0; i < n; i++)
            total += segs[i].len;
        if (s->body_limit && s->buf_len + total > s->body_limit) {
            weir__session_fail(s, 413, "request body over the limit");
            return;
        }
        if (s->buf_len + total > s->buf_cap) {
            /* Room for what came (a read may pass buf_max by one buffer). */
            size_t cap = s->buf_cap ? s->buf_cap * 2 : 4096;
            if (s->req.body == WEIR_BODY_KNOWN && cap < s->req.content_length)
                cap = (size_t)s->req.content_length;
            while (cap < s->buf_len + total)
                cap *= 2;
            char *nb = weir__arena_alloc(&s->arena, cap);
            if (!nb) {
                weir__session_fail(s, 503, "out of memory");
                return;
            }
            if (s->buf_len)
                memcpy(nb, s->buf, s->buf_len);
            s->buf = nb;
            s->buf_cap = cap;
        }
        for (size_t i = 0; i < n; i++) {
            memcpy(s->buf + s->buf_len, segs[i].ptr, segs[i].len);
            s->buf_len += segs[i].len;
        }
        x->ops->consume_body(x);
    }
    weir__session_set_state(s, SS_PEER);
}
