/*
 * ui.c - serves the admin web UI's files (ui.h). They hold no data (every
 * figure comes from the API, with the token the page keeps in the
 * browser's session storage), so they need no token: the login page must
 * load without one.
 */
#include <string.h>

#include "app/admin/ui.h"

static const weir_ui_asset *find(weir_str path)
{
    for (size_t i = 0; i < weir__ui_n_assets; i++) {
        const char *p = weir__ui_assets[i].path;
        if (strlen(p) == path.len && memcmp(p, path.ptr, path.len) == 0)
            return &weir__ui_assets[i];
    }
    return NULL;
}

static const char *type_of(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".json", "application/json"},
        {".woff2", "font/woff2"},
    };
    size_t n = strlen(path);
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        size_t e = strlen(types[i].ext);
        if (n > e && strcmp(path + n - e, types[i].ext) == 0)
            return types[i].type;
    }
    return "application/octet-stream";
}

bool weir__admin_ui(weir_session *s, weir_phase_result *rc)
{
    weir_str path = weir_session_path(s), m = weir_session_method(s);
    if ((path.len >= 4 && memcmp(path.ptr, "/api", 4) == 0 &&
         (path.len == 4 || path.ptr[4] == '/')) ||
        (path.len == 8 && memcmp(path.ptr, "/metrics", 8) == 0))
        return false;
    weir_header h[WEIR_ADMIN_N_SECURITY_HEADERS + 3] = {WEIR_ADMIN_SECURITY_HEADERS};
    size_t n = WEIR_ADMIN_N_SECURITY_HEADERS;
    static const char text[] = "text/plain; charset=utf-8";
    h[n++] = (weir_header){WEIR_STR("Content-Type"), WEIR_STR(text)};
    bool get = m.len == 3 && memcmp(m.ptr, "GET", 3) == 0;
    if (!get && !(m.len == 4 && memcmp(m.ptr, "HEAD", 4) == 0)) {
        h[n++] = (weir_header){WEIR_STR("Allow"), WEIR_STR("GET, HEAD")};
        *rc = weir_session_respond(s, 405, h, n, "method not allowed\n", 19) == WEIR_OK
                  ? WEIR_PHASE_ANSWERED
                  : WEIR_PHASE_ERROR;
        return true;
    }
    /* The page is index.html; its routes are in the URL's fragment. */
    const weir_ui_asset *a = find(path.len == 1 ? WEIR_STR("/index.html") : path);
    if (!a) {
        static const char none[] = "no such file\n", unbuilt[] =
                                                         "the web UI was not built into this "
                                                         "weir (make ui)\n";
        const char *body = weir__ui_n_assets ? none : unbuilt;
        *rc = weir_session_respond(s, 404, h, n, body, strlen(body)) == WEIR_OK
                  ? WEIR_PHASE_ANSWERED
                  : WEIR_PHASE_ERROR;
        return true;
    }
    const char *type = type_of(a->path);
    h[n - 1] = (weir_header){WEIR_STR("Content-Type"), {type, strlen(type)}};
    /* Vite names the assets by their content: kept for a year; the page
     * itself is asked again each time, so a new build shows at once. */
    bool hashed = strncmp(a->path, "/assets/", 8) == 0;
    h[n++] = (weir_header){WEIR_STR("Cache-Control"),
                           hashed ? WEIR_STR("public, max-age=31536000, immutable")
                                  : WEIR_STR("no-cache")};
    *rc = weir_session_respond(s, 200, h, n, a->data, a->len) == WEIR_OK ? WEIR_PHASE_ANSWERED
                                                                         : WEIR_PHASE_ERROR;
    return true;
}
