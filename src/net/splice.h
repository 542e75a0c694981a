/*
 * splice.h - moving bytes between two plain sockets with splice(2),
 * through a pipe per direction, never through user space: the tunnels of
 * HTTP/1.1 Upgrade (WebSocket) and the L4 (TCP) servers.
 *
 * Owner: the object embedding it; loop thread only. The connections'
 * readiness flags (weir_conn.readable/writable/eof) drive it and are
 * updated as splice(2) answers, as weir_conn's own reads and writes do.
 */
#ifndef WEIR_NET_SPLICE_H
#define WEIR_NET_SPLICE_H

#include <stdbool.h>
#include <stdint.h>

#include "net/conn.h"

/* Bytes a pipe holds before the reading side waits (back-pressure). */
#define WEIR_SPLICE_PIPE 65536

typedef struct weir_splice {
    bool on;
    int pipes[2][2];     /* [direction][read end, write end] */
    uint32_t in_pipe[2]; /* bytes waiting in each pipe */
} weir_splice;

/* Opens the two pipes. Returns 0, or -errno (then sp stays off). */
int weir__splice_open(weir_splice *sp);

/* Closes the pipes (what they held is dropped); a no-op when off. */
void weir__splice_close(weir_splice *sp);

/*
 * Moves what can move now in direction d (0 or 1) from src to dst, until
 * either side would block, reading at most max_in bytes from src (a rate
 * limit; what the pipe holds still goes out). The bytes read from src are
 * added to *moved (may be NULL). Returns WEIR_AGAIN, WEIR_DONE (src closed
 * and everything it sent reached dst) or -errno, with error and
 * last_errno set on the side that failed.
 */
int weir__splice_dir(weir_splice *sp, int d, weir_conn *src, weir_conn *dst, uint64_t *moved,
                     uint64_t max_in);

#endif
