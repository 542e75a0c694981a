/*
 * resp_client.h - the RESP client (weir/resp.h) on the workers: the
 * worker's hooks at its end.
 */
#ifndef WEIR_NET_RESP_CLIENT_H
#define WEIR_NET_RESP_CLIENT_H

#include "weir/resp.h"

/* The worker stops: every call in flight ends with -ESHUTDOWN (their
 * callbacks run now), and new calls are refused. */
void weir__respc_shutdown(void);

/* Frees the worker's connections' state (after its last tasks ran). */
void weir__respc_thread_exit(void);

#endif
