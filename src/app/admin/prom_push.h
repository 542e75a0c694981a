/*
 * prom_push.h - the metrics pushed to a Prometheus Pushgateway: [basic]
 * prometheus_push = URL every prometheus_push_interval, as a PUT (the
 * group's metrics replaced), by a thread of its own with libcurl. A URL
 * without a grouping key (no "/metrics/job/") gets
 * "/metrics/job/weir/instance/HOSTNAME". A gateway that is down costs a
 * warning (once until it takes a push again) and nothing else.
 */
#ifndef WEIR_APP_PROM_PUSH_H
#define WEIR_APP_PROM_PUSH_H

#include <stdint.h>

struct weir_app;

/* Follows the running configuration's settings (at start and after each
 * reload; main thread): starts the thread when a URL is set. */
void weir__prom_push_configure(struct weir_app *app);
/* Stops the thread. Main thread. */
void weir__prom_push_stop(void);
/* Pushes that the gateway took, and that failed. */
void weir__prom_push_counts(uint64_t *ok, uint64_t *failed);

#endif
