/*
 * splice.c - socket to pipe to socket (see splice.h).
 */
#include "net/splice.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "weir/types.h"

int weir__splice_open(weir_splice *sp)
{
    if (pipe2(sp->pipes[0], O_NONBLOCK | O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(sp->pipes[1], O_NONBLOCK | O_CLOEXEC) < 0) {
        int e = errno;
        close(sp->pipes[0][0]);
        close(sp->pipes[0][1]);
        return -e;
    }
    sp->in_pipe[0] = sp->in_pipe[1] = 0;
    sp->on = true;
    return 0;
}

void weir__splice_close(weir_splice *sp)
{
    if (!sp->on)
        return;
    for (int d = 0; d < 2; d++) {
        close(sp->pipes[d][0]);
        close(sp->pipes[d][1]);
    }
    sp->on = false;
}

/* A failed splice(2): the side it failed on is marked (error, last_errno). */
static int failed(weir_conn *c)
{
    c->error = true;
    c->last_errno = errno;
    return -errno;
}

int weir__splice_dir(weir_splice *sp, int d, weir_conn *src, weir_conn *dst, uint64_t *moved_in,
                     uint64_t max_in)
{
    const unsigned fl = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
    for (;;) {
        bool moved = false;
        if (sp->in_pipe[d] > 0 && dst->writable) {
            ssize_t n = splice(sp->pipes[d][0], NULL, dst->io.fd, NULL, sp->in_pipe[d], fl);
            if (n > 0) {
                sp->in_pipe[d] -= (uint32_t)n;
                dst->bytes_out += (uint64_t)n;
                moved = true;
            } else if (n < 0 && errno == EAGAIN) {
                dst->writable = false;
            } else if (n < 0 && errno != EINTR) {
                return failed(dst);
            }
        }
        if (sp->in_pipe[d] == 0 && src->eof)
            return WEIR_DONE;
        if (sp->in_pipe[d] < WEIR_SPLICE_PIPE && src->readable && max_in > 0) {
            size_t want = WEIR_SPLICE_PIPE - sp->in_pipe[d];
            if (want > max_in)
                want = (size_t)max_in;
            ssize_t n = splice(src->io.fd, NULL, sp->pipes[d][1], NULL, want, fl);
            if (n > 0) {
                sp->in_pipe[d] += (uint32_t)n;
                max_in -= (uint64_t)n;
                src->bytes_in += (uint64_t)n;
                if (moved_in)
                    *moved_in += (uint64_t)n;
                moved = true;
            } else if (n == 0) {
                src->eof = true;
                src->readable = false;
                moved = true;
            } else if (errno == EAGAIN) {
                /* With bytes in the pipe, EAGAIN may mean its slots are
                 * used up (each splice takes one), not that the socket is
                 * empty: it is asked again once the pipe drained. */
                if (sp->in_pipe[d] == 0)
                    src->readable = false;
            } else if (errno != EINTR) {
                return failed(src);
            }
        }
        if (!moved)
            return WEIR_AGAIN;
    }
}
