/*
 * handoff.h - listening-socket hand-off for zero-downtime upgrades (see
 * handoff.c for the protocol). Main thread only.
 */
#ifndef WEIR_PROXY_HANDOFF_H
#define WEIR_PROXY_HANDOFF_H

#include <stddef.h>

typedef struct weir_handoff_fd {
    char addr[64]; /* the listen address text the socket serves */
    int fd;
    long addr_ix; /* new side: index of the configured address it serves, or -1 */
} weir_handoff_fd;

/* Old side: a non-blocking listening Unix socket at path (a stale one is
 * replaced). Returns the fd or a negative error. */
int weir__handoff_listen(const char *path);

/*
 * Old side: accepts one successor on listen_fd, sends it the descriptors
 * and waits (bounded) for its READY. Returns WEIR_OK (the caller drains
 * and exits), WEIR_AGAIN (no one connected), or an error (keep serving).
 */
int weir__handoff_serve(int listen_fd, const weir_handoff_fd *fds, size_t n);

/*
 * New side: connects to path and receives the descriptors (*out, malloc'd;
 * the caller owns the fds). *conn_out stays open for weir__handoff_ready.
 * Returns WEIR_OK or a negative error (nothing received).
 */
int weir__handoff_receive(const char *path, weir_handoff_fd **out, size_t *n_out, int *conn_out);

/* New side: tells the old process the sockets are served; closes conn. */
void weir__handoff_ready(int conn);

#endif
