/*
 * session_pump.c - moves body bytes from one side of a session to the
 * other (one pump per direction, session-t.h): reads slices from the
 * source, puts them through the body filter one at a time when there is
 * one, queues them on the destination by reference, and gives them back
 * to the source only once written. While the destination is full the
 * source is not read. The request pump replays a buffered body first.
 *
 * Owner: the session; loop thread only.
 */
#include "proxy/session-t.h"

/* The last read went out whole: give it back to the source. */
static void pump_consume(pump *p)
{
    if (!p->from_pre)
        p->src->ops->consume_body(p->src);
    p->moved += p->src_len;
    p->n_avail = p->seg_pos = 0;
    p->src_len = 0;
}

int weir__session_pump_run(weir_session *s, pump *p,
                           weir_phase_result (*filter)(weir_session *, void *, weir_str *, bool))
{
    while (!p->done) {
        if (p->queued || p->end_queued) {
            int rc = p->dst->ops->flush(p->dst);
            if (rc == WEIR_AGAIN)
                return WEIR_AGAIN;
            if (rc < 0) {
                p->err = rc;
                p->err_src = false;
                return rc;
            }
            if (p->queued) {
                p->queued = false;
                if (p->seg_pos >= p->n_avail && p->n_avail) /* (0: a pause's flush) */
                    pump_consume(p);
            }
            if (p->end_queued) {
                p->done = true;
                break;
            }
        }
        if (filter && p->seg_pos < p->n_avail) {
            /* The next segment of the last read, through the filter. */
            weir_str seg = p->segs[p->seg_pos++];
            if (filter(s, s->ctx, &seg, false) != WEIR_PHASE_CONTINUE) {
                p->err = PUMP_E_FILTER;
                p->err_src = true;
                return PUMP_E_FILTER;
            }
            if (seg.len) {
                if (p->dst->ops->write_body(p->dst, &seg, 1) < 0) {
                    p->err = WEIR_ERR_NOMEM;
                    p->err_src = false;
                    return WEIR_ERR_NOMEM;
                }
                p->queued = true;
            } else if (p->seg_pos >= p->n_avail) {
                pump_consume(p); /* the filter kept it all for later */
            }
            continue;
        }
        weir_str trailers = WEIR_STR_NULL;
        size_t n = 0;
        int rc;
        bool has_pre = p == &s->req_pump && weir__session_has_pre(s, p->pre_off);
        p->from_pre = p == &s->req_pump && (has_pre || s->buf_complete);
        if (has_pre) {
            /* The buffered body first (SS_BUFFER), then the client's. */
            rc = weir__session_pre_read(s, p->pre_off, &p->segs[0]);
            if (rc < 0) {
                p->err = rc;
                p->err_src = false;
                return rc;
            }
            p->pre_off += p->segs[0].len;
            n = 1;
        } else if (p->from_pre) {
            trailers = s->buf_trailers;
            rc = WEIR_DONE;
        } else {
            rc = p->src->ops->read_body(p->src, p->segs, MAX_SEGS, &n, &trailers);
        }
        if (rc == WEIR_AGAIN && filter && p == &s->resp_pump && !p->paused) {
            /* The source paused: a filter holding bytes back (an encoder)
             * is asked once for what it can send now, so a stream that
             * goes quiet (server-sent events) stays live. */
            p->paused = true;
            weir_str empty = WEIR_STR_NULL;
            s->body_flushing = true;
            weir_phase_result fr = filter(s, s->ctx, &empty, false);
            s->body_flushing = false;
            if (fr != WEIR_PHASE_CONTINUE) {
                p->err = PUMP_E_FILTER;
                p->err_src = true;
                return PUMP_E_FILTER;
            }
            if (empty.len) {
                if (p->dst->ops->write_body(p->dst, &empty, 1) < 0) {
                    p->err = WEIR_ERR_NOMEM;
                    return WEIR_ERR_NOMEM;
                }
                p->queued = true; /* seg_pos == n_avail == 0: nothing to consume */
                continue;
            }
        }
        if (rc == WEIR_AGAIN) {
            /* Nothing to send for now: what is queued (the head of a
             * response whose body has not begun) goes out meanwhile, so a
             * client of a stream that starts quiet has its head. */
            int fr = p->dst->ops->flush(p->dst);
            if (fr < 0 && fr != WEIR_AGAIN) {
                p->err = fr;
                p->err_src = false;
                return fr;
            }
            return WEIR_AGAIN;
        }
        p->paused = false;
        if (rc < 0) {
            p->err = rc;
            p->err_src = true;
            return rc;
        }
        if (rc == WEIR_DONE) {
            if (filter) {
                weir_str empty = WEIR_STR_NULL;
                if (filter(s, s->ctx, &empty, true) != WEIR_PHASE_CONTINUE) {
                    p->err = PUMP_E_FILTER;
                    p->err_src = true;
                    return PUMP_E_FILTER;
                }
                if (empty.len && p->dst->ops->write_body(p->dst, &empty, 1) < 0) {
                    p->err = WEIR_ERR_NOMEM;
                    return WEIR_ERR_NOMEM;
                }
            }
            p->dst->ops->write_end(p->dst, trailers);
            p->end_queued = true;
            continue;
        }
        if (p == &s->req_pump && s->body_limit) {
            uint64_t total = p->moved;
            for (size_t i = 0; i < n; i++)
                total += p->segs[i].len;
            if (total > s->body_limit) {
                p->err = WEIR_EX_E_TOO_LARGE;
                p->err_src = true;
                return p->err;
            }
        }
        p->src_len = 0;
        for (size_t i = 0; i < n; i++)
            p->src_len += p->segs[i].len;
        p->n_avail = n;
        if (p == &s->resp_pump && s->cache && !s->generated)
            weir__cache_tee(s, p->segs, n); /* a response being stored */
        if (filter) {
            p->seg_pos = 0; /* one at a time, from the top of the loop */
            continue;
        }
        p->seg_pos = n;
        if (p->dst->ops->write_body(p->dst, p->segs, n) < 0) {
            p->err = WEIR_ERR_NOMEM;
            p->err_src = false;
            return WEIR_ERR_NOMEM;
        }
        p->queued = true;
    }
    return WEIR_DONE;
}
