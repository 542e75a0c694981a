/*
 * upgrade.h - listening-socket hand-off for zero-downtime upgrades (see
 * upgrade.c for the protocol). Main thread only.
 */
#ifndef WEIR_PROXY_UPGRADE_H
#define WEIR_PROXY_UPGRADE_H

#include <stddef.h>

typedef struct weir_upgrade_fd {
    char addr[64]; /* the listen address text the socket serves */
    int fd;
    long addr_ix; /* new side: index of the configured address it serves, or -1 */
} weir_upgrade_fd;

/* Old side: a non-blocking listening Unix socket at path (a stale one is
 * replaced). Returns the fd or a negative error. */
int weir__upgrade_listen(const char *path);

/*
 * Old side: accepts one successor on listen_fd, sends it the descriptors
 * and waits (bounded) for its READY. Returns WEIR_OK (the caller drains
 * and exits), WEIR_AGAIN (no one connected), or an error (keep serving).
 */
int weir__upgrade_serve(int listen_fd, const weir_upgrade_fd *fds, size_t n);

/*
 * New side: connects to path and receives the descriptors (*out, malloc'd;
 * the caller owns the fds). *conn_out stays open for weir__upgrade_ready.
 * Returns WEIR_OK or a negative error (nothing received).
 */
int weir__upgrade_receive(const char *path, weir_upgrade_fd **out, size_t *n_out, int *conn_out);

/* New side: tells the old process the sockets are served; closes conn. */
void weir__upgrade_ready(int conn);

#endif
