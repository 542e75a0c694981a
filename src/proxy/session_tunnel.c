/*
 * session_tunnel.c - a session after a 101: bytes both ways until either
 * side closes, with splice(2) between two plain sockets (see session.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "proxy/session-t.h"

/* Moves bytes both ways; the first side to close (or fail) ends both:
 * the other gets a FIN, not a reset, and neither connection is reused. */
void weir__session_end_splice(weir_session *s)
{
    if (!s->splicing)
        return;
    for (int d = 0; d < 2; d++) {
        close(s->pipes[d][0]);
        close(s->pipes[d][1]);
    }
    s->splicing = false;
}

/* Switches a drained tunnel between plain sockets to splice. */
static bool try_splice(weir_session *s)
{
    weir_conn *a = s->origin.conn, *b = s->up ? &s->up->conn : NULL;
    if (!a || !b || b->ssl || a->rstart != a->rend || b->rstart != b->rend ||
        !weir__conn_queue_empty(a) || !weir__conn_queue_empty(b) || s->req_pump.queued ||
        s->resp_pump.queued)
        return false;
    if (pipe2(s->pipes[0], O_NONBLOCK | O_CLOEXEC) < 0)
        return false;
    if (pipe2(s->pipes[1], O_NONBLOCK | O_CLOEXEC) < 0) {
        close(s->pipes[0][0]);
        close(s->pipes[0][1]);
        return false;
    }
    s->in_pipe[0] = s->in_pipe[1] = 0;
    s->splicing = true;
    return true;
}

/* One direction: src socket -> pipe -> dst socket. WEIR_AGAIN, WEIR_DONE
 * (src closed and all it sent went out) or -errno. */
static int splice_dir(weir_session *s, int d, weir_conn *src, weir_conn *dst, weir_exchange *x)
{
    const unsigned fl = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
    for (;;) {
        bool moved = false;
        if (s->in_pipe[d] > 0 && dst->writable) {
            ssize_t n = splice(s->pipes[d][0], NULL, dst->io.fd, NULL, s->in_pipe[d], fl);
            if (n > 0) {
                s->in_pipe[d] -= (uint32_t)n;
                dst->bytes_out += (uint64_t)n;
                moved = true;
            } else if (n < 0 && errno == EAGAIN) {
                dst->writable = false;
            } else if (n < 0 && errno != EINTR) {
                return -errno;
            }
        }
        if (s->in_pipe[d] == 0 && src->eof)
            return WEIR_DONE;
        if (s->in_pipe[d] < 65536 && src->readable) {
            ssize_t n = splice(src->io.fd, NULL, s->pipes[d][1], NULL, 65536 - s->in_pipe[d], fl);
            if (n > 0) {
                s->in_pipe[d] += (uint32_t)n;
                src->bytes_in += (uint64_t)n;
                x->bytes_in += (uint64_t)n;
                moved = true;
            } else if (n == 0) {
                src->eof = true;
                src->readable = false;
                moved = true;
            } else if (errno == EAGAIN) {
                src->readable = false;
            } else if (errno != EINTR) {
                return -errno;
            }
        }
        if (!moved)
            return WEIR_AGAIN;
    }
}

void weir__session_step_tunnel(weir_session *s)
{
    if (s->splicing) {
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
