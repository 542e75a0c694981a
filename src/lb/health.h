/*
 * health.h - the active health checker: a control thread with its own loop
 * probing the members of upstreams that have a check (see health.c).
 */
#ifndef WEIR_LB_HEALTH_H
#define WEIR_LB_HEALTH_H

#include <stddef.h>

#include "weir/lb.h"

typedef struct weir_health_runner weir_health_runner;

/* Starts checking the upstreams that have a health check (the others are
 * ignored; no thread is started when none has one). NULL on failure. */
weir_health_runner *weir__health_start(weir_upstream *const *ups, size_t n);
/* Stops the thread and frees the runner. NULL is accepted. */
void weir__health_stop(weir_health_runner *r);

#endif
