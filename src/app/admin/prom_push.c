/*
 * prom_push.c - metrics pushed to a Pushgateway (prom_push.h).
 */
#include "app/admin/prom_push.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app/admin/metrics.h"
#include "app/app.h"
#include "app/http_body.h"
#include "weir/log.h"

#define PUSH_TIMEOUT_MS 5000

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct weir_app *app;
    char *url; /* NULL: off */
    uint32_t interval_ms;
    bool running, stopping;
    pthread_t thread;
    _Atomic uint64_t ok, failed;
} G = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

void weir__prom_push_counts(uint64_t *ok, uint64_t *failed)
{
    *ok = atomic_load(&G.ok);
    *failed = atomic_load(&G.failed);
}

static void *push_main(void *arg)
{
    (void)arg;
    bool warned = false;
    pthread_mutex_lock(&G.mu);
    while (!G.stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += G.interval_ms / 1000;
        until.tv_nsec += (long)(G.interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&G.cv, &G.mu, &until);
        if (G.stopping || !G.url)
            continue;
        char *url = strdup(G.url);
        pthread_mutex_unlock(&G.mu);
        weir_config *cfg = weir__app_config(G.app);
        size_t len = 0;
        char *text = cfg ? weir__metrics_render(cfg, weir__app_server(G.app),
                                                weir__app_log_dropped(G.app), &len)
                         : NULL;
        weir__config_unref(cfg);
        char err[256] = "out of memory";
        long st = url && text ? weir__http_send(NULL, "PUT", url,
                                                "text/plain; version=0.0.4; charset=utf-8", text,
                                                len, NULL, 0, PUSH_TIMEOUT_MS, err, sizeof(err))
                              : 0;
        bool ok = st >= 200 && st <= 299;
        atomic_fetch_add(ok ? &G.ok : &G.failed, 1);
        if (!ok && !warned)
            weir_log(WEIR_LEVEL_WARN, "prometheus_push: %s: %s; trying again every interval",
                     url ? url : "?", err);
        else if (ok && warned)
            weir_log(WEIR_LEVEL_INFO, "prometheus_push: %s takes pushes again", url);
        warned = !ok;
        free(text);
        free(url);
        pthread_mutex_lock(&G.mu);
    }
    pthread_mutex_unlock(&G.mu);
    return NULL;
}

/* The URL with a grouping key, malloc'd. */
static char *with_group(const char *url)
{
    if (strstr(url, "/metrics/job/"))
        return strdup(url);
    char host[256] = "localhost";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    size_t n = strlen(url);
    while (n && url[n - 1] == '/')
        n--;
    char *out = NULL;
    if (asprintf(&out, "%.*s/metrics/job/weir/instance/%s", (int)n, url, host) < 0)
        return NULL;
    return out;
}

void weir__prom_push_configure(struct weir_app *app)
{
    weir_config *cfg = weir__app_config(app);
    if (!cfg)
        return;
    char *url = cfg->basic.prometheus_push ? with_group(cfg->basic.prometheus_push) : NULL;
    uint32_t every = cfg->basic.prometheus_push_interval_ms;
    weir__config_unref(cfg);
    pthread_mutex_lock(&G.mu);
    free(G.url);
    G.url = url;
    G.interval_ms = every ? every : 15000;
    G.app = app;
    if (url && !G.running) {
        G.stopping = false;
        G.running = pthread_create(&G.thread, NULL, push_main, NULL) == 0;
    }
    pthread_cond_signal(&G.cv);
    pthread_mutex_unlock(&G.mu);
}

void weir__prom_push_stop(void)
{
    pthread_mutex_lock(&G.mu);
    bool running = G.running;
    G.stopping = true;
    pthread_cond_signal(&G.cv);
    pthread_mutex_unlock(&G.mu);
    if (running)
        pthread_join(G.thread, NULL);
    pthread_mutex_lock(&G.mu);
    G.running = false;
    free(G.url);
    G.url = NULL;
    pthread_mutex_unlock(&G.mu);
}
