/*
 * files_index.c - directory listings in HTML or JSON, as nginx's
 * autoindex (files.h has the contract).
 *
 * A listing shows names an attacker may have chosen (an upload
 * directory): every name is escaped for where it goes, the href
 * percent-encoded to unreserved characters only, the text HTML-escaped,
 * and bytes that are not UTF-8 replaced, because a browser guessing the
 * encoding of a page is how escaping gets undone.
 */
#include <dirent.h>
#include <sys/syscall.h>
#include <linux/openat2.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/plugin/files.h"
#include "app/strbuf.h"

typedef struct entry {
    char *name; /* owned */
    bool dir;
    uint64_t size;
    time_t mtime;
} entry;

#define REPLACEMENT "\xef\xbf\xbd" /* U+FFFD */

/* name as valid UTF-8: bytes outside a valid sequence become U+FFFD,
 * and so do C0 controls and DEL when html. */
static void put_text(weir_strbuf *b, const char *name, size_t n, bool html)
{
    const unsigned char *s = (const unsigned char *)name;
    for (size_t i = 0; i < n;) {
        size_t k = weir__utf8_len(s + i, n - i);
        if (k == 0 || (html && k == 1 && (s[i] < 0x20 || s[i] == 0x7f))) {
            weir__sb_puts(b, REPLACEMENT);
            i++;
            continue;
        }
        if (html && k == 1) {
            switch (s[i]) {
            case '&':
                weir__sb_puts(b, "&amp;");
                break;
            case '<':
                weir__sb_puts(b, "&lt;");
                break;
            case '>':
                weir__sb_puts(b, "&gt;");
                break;
            case '"':
                weir__sb_puts(b, "&quot;");
                break;
            case '\'':
                weir__sb_puts(b, "&#39;");
                break;
            default:
                weir__sb_put(b, name + i, 1);
            }
        } else {
            weir__sb_put(b, name + i, k);
        }
        i += k;
    }
}

/* Everything but unreserved characters (RFC 3986 2.3) as %XX. */
static void put_href(weir_strbuf *b, const char *name, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            weir__sb_put(b, name + i, 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            weir__sb_put(b, e, 3);
        }
    }
}

static int by_kind_then_name(const void *x, const void *y)
{
    const entry *a = x, *b = y;
    if (a->dir != b->dir)
        return a->dir ? -1 : 1;
    return strcmp(a->name, b->name); /* compares as unsigned char: bytewise */
}

static void free_entries(entry *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].name);
    free(v);
}

/* A symlink's target, if it stays beneath the directory (as an open by
 * weir__files_open would): a link out of the folder is not listed, so a
 * listing tells nothing of files outside it (their size, their time). */
static bool stat_beneath(int dir_fd, const char *name, struct stat *st)
{
    struct open_how how = {.flags = O_PATH | O_CLOEXEC,
                           .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
    long fd = syscall(SYS_openat2, dir_fd, name, &how, sizeof(how));
    if (fd < 0)
        return false; /* (without openat2: not listed either) */
    bool ok = fstat((int)fd, st) == 0;
    close((int)fd);
    return ok;
}

/* Reads the directory into *v (sorted). Returns 0 or -errno. */
static int read_entries(int dir_fd, bool hidden, entry **out, size_t *out_n)
{
    int fd = dup(dir_fd);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return -e;
    }
    rewinddir(d);
    entry *v = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            rc = -errno;
            break;
        }
        const char *name = de->d_name;
        if (name[0] == '.' && (!hidden || name[1] == '\0' || (name[1] == '.' && !name[2])))
            continue;
        struct stat st;
        if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
            (S_ISLNK(st.st_mode) && !stat_beneath(dirfd(d), name, &st)) ||
            !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)))
            continue;
        if (n == WEIR_AUTOINDEX_MAX) {
            rc = -E2BIG;
            break;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            entry *nv = realloc(v, ncap * sizeof(*v));
            if (!nv) {
                rc = -ENOMEM;
                break;
            }
            v = nv;
            cap = ncap;
        }
        v[n].name = strdup(name);
        if (!v[n].name) {
            rc = -ENOMEM;
            break;
        }
        v[n].dir = S_ISDIR(st.st_mode);
        v[n].size = (uint64_t)st.st_size;
        v[n].mtime = st.st_mtim.tv_sec;
        n++;
    }
    closedir(d);
    if (rc < 0) {
        free_entries(v, n);
        return rc;
    }
    if (n > 1)
        qsort(v, n, sizeof(*v), by_kind_then_name);
    *out = v;
    *out_n = n;
    return 0;
}

/* nginx's listing date, "%d-%b-%Y %H:%M" in UTC, without the locale. */
static void put_list_date(weir_strbuf *b, time_t t)
{
    static const char mon[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    char s[32];
    if (!gmtime_r(&t, &tm) || tm.tm_year < -1900 || tm.tm_year > 9999 - 1900) {
        weir__sb_puts(b, "-");
        return;
    }
    snprintf(s, sizeof(s), "%02d-%s-%04d %02d:%02d", tm.tm_mday, mon[tm.tm_mon], tm.tm_year + 1900,
             tm.tm_hour, tm.tm_min);
    weir__sb_puts(b, s);
}

static void render_html(weir_strbuf *b, const char *path, size_t len, const entry *v, size_t n)
{
    bool slash = len > 0 && path[len - 1] == '/';
    bool root = len == 0 || (len == 1 && path[0] == '/');
    weir_strbuf title = {0};
    if (len == 0 || path[0] != '/')
        weir__sb_puts(&title, "/");
    put_text(&title, path, len, true);
    if (!slash && !root)
        weir__sb_puts(&title, "/");
    if (title.oom) {
        b->oom = true;
        return;
    }
    weir__sb_puts(b, "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>Index of ");
    weir__sb_puts(b, title.p);
    weir__sb_puts(b, "</title></head>\n<body>\n<h1>Index of ");
    weir__sb_puts(b, title.p);
    weir__sb_puts(b, "</h1>\n<hr>\n<table>\n"
                     "<tr><th>Name</th><th>Last modified</th><th>Size</th></tr>\n");
    free(title.p);
    if (!root)
        weir__sb_puts(b, "<tr><td><a href=\"../\">../</a></td><td></td><td>-</td></tr>\n");
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(v[i].name);
        weir__sb_puts(b, "<tr><td><a href=\"");
        put_href(b, v[i].name, nl);
        if (v[i].dir)
            weir__sb_puts(b, "/");
        weir__sb_puts(b, "\">");
        put_text(b, v[i].name, nl, true);
        if (v[i].dir)
            weir__sb_puts(b, "/");
        weir__sb_puts(b, "</a></td><td>");
        put_list_date(b, v[i].mtime);
        weir__sb_puts(b, "</td><td>");
        if (v[i].dir) {
            weir__sb_puts(b, "-");
        } else {
            char s[24];
            snprintf(s, sizeof(s), "%" PRIu64, v[i].size);
            weir__sb_puts(b, s);
        }
        weir__sb_puts(b, "</td></tr>\n");
    }
    weir__sb_puts(b, "</table>\n<hr>\n</body>\n</html>\n");
}

/* The JSON text, malloc'd by jansson (free()), or NULL when out of
 * memory. */
static char *render_json(const entry *v, size_t n)
{
    json_t *a = json_array();
    char *text = NULL;
    if (!a)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        weir_strbuf name = {0};
        put_text(&name, v[i].name, strlen(v[i].name), false);
        char date[30];
        weir_http_date(v[i].mtime, date);
        json_t *o = name.oom ? NULL : json_object();
        bool ok = o && json_array_append_new(a, o) == 0;
        ok =
            ok && json_object_set_new(o, "name", json_stringn(name.p ? name.p : "", name.len)) == 0;
        ok =
            ok && json_object_set_new(o, "type", json_string(v[i].dir ? "directory" : "file")) == 0;
        if (!v[i].dir)
            ok = ok && json_object_set_new(o, "size", json_integer((json_int_t)v[i].size)) == 0;
        ok = ok && json_object_set_new(o, "mtime", json_string(date)) == 0;
        free(name.p);
        if (!ok)
            goto out;
    }
    text = json_dumps(a, JSON_COMPACT | JSON_PRESERVE_ORDER);
out:
    json_decref(a);
    return text;
}

int weir__autoindex(int dir_fd, const char *url_path, size_t len, bool json, bool hidden,
                    char **out, size_t *out_len)
{
    entry *v = NULL;
    size_t n = 0;
    int rc = read_entries(dir_fd, hidden, &v, &n);
    if (rc < 0)
        return rc;
    if (json) {
        char *text = render_json(v, n);
        free_entries(v, n);
        if (!text)
            return -ENOMEM;
        *out = text;
        *out_len = strlen(text);
        return 0;
    }
    weir_strbuf b = {0};
    render_html(&b, url_path, len, v, n);
    free_entries(v, n);
    if (b.oom || !b.p) {
        free(b.p);
        return -ENOMEM;
    }
    *out = b.p;
    *out_len = b.len;
    return 0;
}
