/*
 * webhook.h - event notifications: [basic] webhook = URL gets a JSON POST
 * for each event of the kinds in webhook_notifications (all by default),
 * shaped for webhook_type ("normal", "slack", "wecom", "dingtalk").
 *
 * Emitting never blocks: events go into a bounded queue (256; more are
 * dropped and counted) that a thread of its own sends with libcurl, each
 * tried three times (1 s, then 2 s apart) before it is dropped. Backend
 * health, upstreams without a healthy backend, discovery failures and
 * certificates near their expiry are noticed by a poll of the running
 * configuration once a second on the main thread; reloads, certificates
 * obtained or failed, start and stop are emitted where they happen.
 */
#ifndef WEIR_APP_WEBHOOK_H
#define WEIR_APP_WEBHOOK_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct weir_config;
struct weir_app;
struct weir_server;

typedef enum weir_event {
    WEIR_EV_BACKEND_STATUS, /* a backend became healthy or unhealthy */
    WEIR_EV_UPSTREAM_DOWN,  /* an upstream has no healthy backend (and when it has again) */
    WEIR_EV_RELOAD,         /* a reload took */
    WEIR_EV_RELOAD_FAIL,    /* a reload was refused */
    WEIR_EV_DIFF_CONFIG,    /* the sections a reload added, removed or changed */
    WEIR_EV_CERT,           /* a certificate obtained or renewed */
    WEIR_EV_CERT_FAIL,      /* an order failed */
    WEIR_EV_CERT_EXPIRY,    /* a certificate expires within 7 days (once a day) */
    WEIR_EV_DISCOVERY_FAIL, /* a discovery lookup failed */
    WEIR_EV_START,          /* weir serves */
    WEIR_EV_STOP,           /* weir stops gracefully */
    WEIR_EV_N
} weir_event;

typedef enum weir_webhook_type {
    WEIR_WEBHOOK_NORMAL,
    WEIR_WEBHOOK_SLACK,
    WEIR_WEBHOOK_WECOM,
    WEIR_WEBHOOK_DINGTALK,
} weir_webhook_type;

/* "backend_status" ...: the event, or -1. */
int weir__event_by_name(const char *name);
/* Every event name, comma-separated (for messages). */
const char *weir__event_names(void);
/* "normal" ...: the type, or -1. */
int weir__webhook_type(const char *name);

/* Starts the sender and the poll (main thread, once srv runs); takes the
 * settings of cfg's [basic]. */
void weir__webhook_start(struct weir_app *app, struct weir_server *srv,
                         const struct weir_config *cfg);
/* The settings of a new snapshot, and its diff from old (a reload that
 * took). Main thread. */
void weir__webhook_reloaded(const struct weir_config *old, const struct weir_config *cfg);
/* Sends what is queued, for at most ms, and stops. Main thread. */
void weir__webhook_stop(uint32_t ms);

/* Queues an event when the webhook wants it: data, the event's fields as
 * a JSON object (taken over; NULL: none), and a printf message. Any
 * thread; never blocks. */
void weir__webhook_emit(weir_event ev, json_t *data, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A JSON string of s for an event's data, bytes outside valid UTF-8 as
 * U+FFFD (a path or an error may hold any); null for s NULL. */
json_t *weir__webhook_str(const char *s);

/* Events sent, failed (after the retries) and dropped (queue full). */
void weir__webhook_counts(uint64_t *sent, uint64_t *failed, uint64_t *dropped);

#endif
