/*
 * proxy_app.h - the weir program's phases: route each request to a
 * location of its server, apply the location's rewrite and header rules,
 * balance over the location's upstream, and write the access log.
 *
 * The running configuration is one snapshot pointer that a reload swaps;
 * each request pins the snapshot current when it starts.
 */
#ifndef WEIR_APP_PROXY_APP_H
#define WEIR_APP_PROXY_APP_H

#include "app/config/config.h"
#include "weir/weir.h"

typedef struct weir_app weir_app;

/*
 * Creates the app for cfg (takes over the reference) and registers one
 * proxy service per [servers.NAME] on srv, opening access logs. Returns
 * NULL (reason logged) on failure.
 */
weir_app *weir__app_new(weir_config *cfg, weir_server *srv);
/* Closes the access logs and drops the configuration. After the server
 * stopped. */
void weir__app_free(weir_app *app);

/*
 * Reloads the configuration from `path` (main thread, e.g. on SIGHUP): a
 * valid file whose servers keep their names, order and listen addresses
 * becomes the current snapshot at once (new requests use it, requests in
 * flight finish on theirs) and its health checks replace the old ones on
 * srv. Any error, or a change of listeners, keeps the running
 * configuration and is logged. Returns WEIR_OK or WEIR_ERR_INVAL.
 */
int weir__app_reload(weir_app *app, const char *path, weir_server *srv);
/* The same; when errs is not NULL every reason for a failure is also
 * appended to it ("FILE:LINE: message" lines; the caller frees them). */
int weir__app_reload_errs(weir_app *app, const char *path, weir_server *srv, weir_cfg_errors *errs);

/* The same with the configuration from load(arg, errs) (a snapshot, or
 * NULL with every error appended), path naming it in messages: a config
 * from etcd (app/etcd/source.h). */
typedef weir_config *(*weir_app_load_fn)(void *arg, weir_cfg_errors *errs);
int weir__app_reload_from(weir_app *app, weir_app_load_fn load, void *arg, const char *path,
                          weir_server *srv, weir_cfg_errors *errs);

/* What the last reload did (main thread). */
typedef struct weir_app_reload_info {
    int64_t started; /* Unix time the process started */
    int64_t at;      /* Unix time of the last reload; 0: none yet */
    bool ok;
    char error[512]; /* its first error ("" when ok) */
} weir_app_reload_info;
void weir__app_reload_info(const weir_app *app, weir_app_reload_info *out);

/* Builds every TLS server's settings again from the running snapshot (a
 * certificate file changed: new handshakes use it, no reload). Returns
 * how many failed (they keep what they had). Main thread. */
int weir__app_refresh_tls(weir_app *app);

/* The current snapshot, with a reference for the caller to drop
 * (weir__config_unref). Any thread. */
weir_config *weir__app_config(weir_app *app);

/* The server the app runs on (its stats). */
weir_server *weir__app_server(weir_app *app);

/* Access-log lines dropped because a writer queue was full, all servers. */
uint64_t weir__app_log_dropped(weir_app *app);

/* Reopens the access-log files (SIGUSR1, after logrotate). */
void weir__app_reopen_logs(weir_app *app);

/* The phases (exposed for tests). */
extern const weir_proxy_ops weir__app_ops;

#endif
