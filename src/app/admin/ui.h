/*
 * ui.h - the admin web UI: the front end's files (ui/dist, embedded at
 * build time by cmake/embed_ui.cmake) served by the admin listener.
 */
#ifndef WEIR_APP_ADMIN_UI_H
#define WEIR_APP_ADMIN_UI_H

#include <stdbool.h>
#include <stddef.h>

#include "weir/weir.h"

typedef struct weir_ui_asset {
    const char *path; /* "/index.html", "/assets/index-1a2b.js" */
    const unsigned char *data;
    size_t len;
} weir_ui_asset;

/* The table (a NULL path ends it); generated. */
extern const weir_ui_asset weir__ui_assets[];
extern const size_t weir__ui_n_assets;

/* The security headers of every admin answer: a strict
 * Content-Security-Policy, no framing, no sniffing, no referrer. */
#define WEIR_ADMIN_SECURITY_HEADERS                                                                \
    {WEIR_STR("Content-Security-Policy"),                                                          \
     WEIR_STR("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "    \
              "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "         \
              "frame-ancestors 'none'")},                                                          \
        {WEIR_STR("X-Frame-Options"), WEIR_STR("DENY")},                                           \
        {WEIR_STR("X-Content-Type-Options"), WEIR_STR("nosniff")},                                 \
        {WEIR_STR("Referrer-Policy"), WEIR_STR("no-referrer")},                                    \
    {                                                                                              \
        WEIR_STR("Cross-Origin-Opener-Policy"), WEIR_STR("same-origin")                            \
    }
#define WEIR_ADMIN_N_SECURITY_HEADERS 5

/* A path of the UI (anything but /api/ and /metrics): true when it
 * answered (the file, 404, or 405 for a method but GET and HEAD). */
bool weir__admin_ui(weir_session *s, weir_phase_result *rc);

#endif
