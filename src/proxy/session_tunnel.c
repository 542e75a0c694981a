/*
 * session_tunnel.c - a session after a 101: bytes both ways until either
 * side closes, with splice(2) between two plain sockets (see session.c).
 */
#include <stdint.h>
#include <sys/socket.h>

#include "core/log.h"
#include "net/splice.h"
#include "proxy/session-t.h"

/* Moves bytes both ways; the first side to close (or fail) ends both:
 * the other gets a FIN, not a reset, and neither connection is reused. */
void weir__session_end_splice(weir_session *s)
{
    weir__splice_close(&s->sp);
}

/* Switches a drained tunnel between plain sockets to splice. */
static bool try_splice(weir_session *s)
{
    weir_conn *a = s->origin.conn, *b = s->up ? &s->up->conn : NULL;
    if (!a || !b || b->ssl || a->rstart != a->rend || b->rstart != b->rend ||
        !weir__conn_queue_empty(a) || !weir__conn_queue_empty(b) || s->req_pump.queued ||
        s->resp_pump.queued)
        return false;
    return weir__splice_open(&s->sp) == 0;
}

/* One direction, counting what the exchange x read. */
static int splice_dir(weir_session *s, int d, weir_conn *src, weir_conn *dst, weir_exchange *x)
{
    return weir__splice_dir(&s->sp, d, src, dst, &x->bytes_in, UINT64_MAX);
}

void weir__session_step_tunnel(weir_session *s)
{
    if (s->sp.on) {
        int up =
            s->half_closed ? WEIR_DONE : splice_dir(s, 0, s->origin.conn, &s->up->conn, s->down);
        if (up == WEIR_DONE && !s->half_closed) {
            s->half_closed = true;
            shutdown(s->up->conn.io.fd, SHUT_WR);
        }
        int down = up < 0 ? up : splice_dir(s, 1, &s->up->conn, s->origin.conn, s->upex);
        if (down == WEIR_AGAIN && (up == WEIR_AGAIN || up == WEIR_DONE))
            return;
        if (up < 0 || down < 0)
            s->error = "tunnel closed on an error";
        weir__session_end_splice(s);
        s->t_up_end_us = (int64_t)weir__loop_now_us(s->loop);
        weir__session_release_upstream(s, false);
        weir__session_set_state(s, SS_FLUSH);
        return;
    }
    /* The 101 head may still be queued for the client. */
    int rc = s->down->ops->flush(s->down);
    if (rc < 0) {
        weir__session_terminate(s, 'C');
        s->client_aborted = true;
        s->error = "client closed the tunnel";
        weir__session_release_upstream(s, false);
        weir__session_set_state(s, SS_FLUSH);
        return;
    }
    int up = weir__session_pump_run(s, &s->req_pump, NULL);
    if (up == WEIR_DONE && !s->half_closed && s->up) {
        /* The client finished sending (TCP FIN, HTTP/2 END_STREAM): pass
         * the FIN on and keep relaying what the backend still sends until
         * it closes too (a half-close, RFC 8441 5). */
        s->half_closed = true;
        weir__conn_shutdown(&s->up->conn);
    }
    int down = weir__session_pump_run(s, &s->resp_pump, NULL);
    if (up == WEIR_AGAIN && down == WEIR_AGAIN) {
        if (try_splice(s))
            weir__session_step_tunnel(s); /* what arrived meanwhile */
        return;
    }
    if (up == WEIR_DONE && down == WEIR_AGAIN)
        return;
    if (up < 0 || down < 0) {
        s->error = "tunnel closed on an error";
    }
    /* Either side's close ends the tunnel: the client's side ends in
     * order (an HTTP/2 stream with END_STREAM, not a reset). */
    if (!s->resp_pump.end_queued && down != WEIR_DONE)
        s->down->ops->write_end(s->down, WEIR_STR_NULL);
    s->t_up_end_us = (int64_t)weir__loop_now_us(s->loop);
    weir__session_release_upstream(s, false);
    weir__session_set_state(s, SS_FLUSH);
}
