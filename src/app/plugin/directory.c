/*
 * directory.c - serves the files of a folder (nginx's static, index and
 * autoindex modules; Pingap's directory plugin).
 *
 *     [plugins.site]
 *     category = "directory"
 *     path = "/var/www/site"       # the folder (must exist at load)
 *     index = "index.html"         # for a directory's URL; "" for none
 *     autoindex = true             # a listing (HTML; JSON for Accept: application/json)
 *     charset = "utf-8"            # added to the types of text files
 *     max_age = "1h"               # Cache-Control: max-age (not for text/html)
 *     private = false              # Cache-Control: private
 *     download = false             # Content-Disposition: attachment
 *     chunk_size = "64KB"          # read size when a file is not sent with sendfile
 *     headers = ["X-Served-By: weir"]
 *     follow_symlinks = false      # symlinks may lead out of the folder
 *     hidden = false               # serve and list names starting with '.'
 *     precompressed = true         # file.br / file.gz for clients that take them
 *     fallback = "/index.html"     # what a missing file gets (single page apps)
 *
 * The file is the request's path (after a location's rewrite) below
 * `path`, as nginx's root. Only GET and HEAD (405 otherwise). A directory
 * URL without its trailing slash is redirected (301) to it. ETag (nginx's
 * form) and Last-Modified go with every file; If-Match,
 * If-Unmodified-Since, If-None-Match and If-Modified-Since answer 412 or
 * 304; a single Range gives 206, several give multipart/byteranges,
 * none satisfiable 416 (with If-Range). The body goes with sendfile(2)
 * where the connection allows (weir_session_respond_file), the file open
 * only while it is sent.
 *
 * Nothing outside the folder is ever served: files.c decodes the path
 * itself and refuses encoded slashes, dot segments, NUL and backslashes,
 * and opens with RESOLVE_BENEATH, so a symlink out of the folder fails
 * (403) unless follow_symlinks. Errors are 403 or 404 with a short text,
 * never a file-system detail.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/app_int.h"
#include "app/plugin/codec.h"
#include "app/plugin/files.h"
#include "app/plugin/plugins.h"

#define MAX_RANGES 16
#define MAX_EXTRA 16

typedef struct dir_conf {
    char *path;
    int root_fd; /* O_PATH of the folder, opened at load */
    char *index; /* a plain name, or NULL */
    bool autoindex, download, private_, precompressed;
    weir_files_opts opts;
    uint32_t max_age_ms;
    bool has_max_age;
    char *charset;
    uint64_t chunk_size;
    weir_cfg_headers headers;
    char *fallback;
    weir_mime *mime;
} dir_conf;

static void dir_free(void *conf)
{
    dir_conf *d = conf;
    if (d->root_fd > 0)
        close(d->root_fd);
    free(d->path);
    free(d->index);
    free(d->charset);
    free(d->fallback);
    weir__cfg_free_headers(&d->headers);
    weir__mime_free(d->mime);
    free(d);
}

static bool dir_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    dir_conf *d = calloc(1, sizeof(*d));
    if (!d)
        return false;
    *conf = d;
    d->root_fd = -1;
    int line = weir_toml_line(t);
    bool present = false;
    d->path = weir__cfg_dup_string(ld, t, "path", section, &present);
    if (!d->path) {
        if (!present)
            weir__cfg_err_at(ld, line, "[%s] needs 'path' (the folder to serve)", section);
    } else {
        d->root_fd = open(d->path, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (d->root_fd < 0)
            weir__cfg_err_at(ld, line, "'path' in [%s]: %s is not a folder weir can open (%s)",
                             section, d->path, strerror(errno));
    }
    d->index = weir__cfg_dup_string(ld, t, "index", section, &present);
    if (!present)
        d->index = strdup("index.html");
    else if (d->index && (!d->index[0] || strchr(d->index, '/'))) {
        if (d->index[0])
            weir__cfg_err_at(ld, line, "'index' in [%s] must be a file name, without '/'", section);
        free(d->index);
        d->index = NULL;
    }
    weir__cfg_get_bool(ld, t, "autoindex", section, &d->autoindex);
    weir__cfg_get_bool(ld, t, "download", section, &d->download);
    weir__cfg_get_bool(ld, t, "private", section, &d->private_);
    weir__cfg_get_bool(ld, t, "follow_symlinks", section, &d->opts.follow_symlinks);
    weir__cfg_get_bool(ld, t, "hidden", section, &d->opts.hidden);
    d->precompressed = true;
    weir__cfg_get_bool(ld, t, "precompressed", section, &d->precompressed);
    if (weir__cfg_entry_of(t, "max_age", &(weir_toml_entry){0}))
        d->has_max_age = weir__cfg_get_duration(
            ld, t, "max_age", section, (uint64_t)3650 * 86400 * 1000, true, &d->max_age_ms);
    d->charset = weir__cfg_dup_string(ld, t, "charset", section, &present);
    if (d->charset && !weir__cfg_valid_token(d->charset))
        weir__cfg_err_at(ld, line, "'charset' in [%s] is not a token", section);
    /* Pingap's floor of 4 KB; at most what the library reads at once. */
    d->chunk_size = 0;
    if (weir__cfg_get_size(ld, t, "chunk_size", section, 1048576, &d->chunk_size) &&
        d->chunk_size < 4096)
        d->chunk_size = 4096;
    weir__cfg_load_headers(ld, t, "headers", section, true, false, &d->headers);
    if (d->headers.n > MAX_EXTRA)
        weir__cfg_err_at(ld, line, "'headers' in [%s]: at most %d", section, MAX_EXTRA);
    d->fallback = weir__cfg_dup_string(ld, t, "fallback", section, &present);
    if (d->fallback && d->fallback[0] != '/')
        weir__cfg_err_at(ld, line, "'fallback' in [%s] must start with '/'", section);
    d->mime = weir__mime_load("/etc/mime.types");
    if (!d->mime)
        return false;
    return true;
}

/* ---- answers ---- */

static weir_phase_result text(weir_session *s, int status, const char *msg)
{
    return weir__plugin_respond_text(s, status, msg, strlen(msg));
}

/* The fields every file answer carries (and a 304 repeats). */
typedef struct head {
    weir_header v[MAX_EXTRA + 12];
    size_t n;
    char etag[48], date[30], type[160], cc[64], cd[1200];
} head;

static void put(head *h, const char *name, const char *value, size_t len)
{
    if (h->n < sizeof(h->v) / sizeof(h->v[0]))
        h->v[h->n++] = (weir_header){{name, strlen(name)}, {value, len}};
}

/* The name's last segment, for MIME types and Content-Disposition. */
static weir_str base_name(weir_str path)
{
    size_t i = path.len;
    while (i > 0 && path.ptr[i - 1] != '/')
        i--;
    return (weir_str){path.ptr + i, path.len - i};
}

static void validators(const dir_conf *d, head *h, const struct stat *st, weir_str name,
                       const char *encoding)
{
    size_t el = weir__files_etag(st, h->etag);
    put(h, "ETag", h->etag, el);
    size_t dl = weir_http_date(st->st_mtime, h->date);
    put(h, "Last-Modified", h->date, dl);
    const char *type = weir__mime_type(d->mime, name.ptr, name.len);
    bool is_text = strncmp(type, "text/", 5) == 0;
    int tl = d->charset && is_text
                 ? snprintf(h->type, sizeof(h->type), "%s; charset=%s", type, d->charset)
                 : snprintf(h->type, sizeof(h->type), "%s", type);
    put(h, "Content-Type", h->type, (size_t)tl);
    if (d->has_max_age && strcmp(type, "text/html") != 0) {
        int cl = snprintf(h->cc, sizeof(h->cc), "%smax-age=%" PRIu32,
                          d->private_ ? "private, " : "", d->max_age_ms / 1000);
        put(h, "Cache-Control", h->cc, (size_t)cl);
    } else if (d->private_) {
        put(h, "Cache-Control", "private", 7);
    }
    if (encoding) {
        put(h, "Content-Encoding", encoding, strlen(encoding));
        put(h, "Vary", "Accept-Encoding", 15);
    }
    if (d->download) {
        /* The file's name (the URL's last segment decoded) as a
         * quoted-string, anything outside printable ASCII as '_', and
         * RFC 6266's filename* with the exact bytes (UTF-8) when it has
         * such characters. */
        unsigned char dec[256];
        size_t decl = 0;
        for (size_t i = 0; i < name.len && decl < sizeof(dec); i++) {
            int hi, lo;
            if (name.ptr[i] == '%' && i + 2 < name.len &&
                (hi = weir__files_hex(name.ptr[i + 1])) >= 0 &&
                (lo = weir__files_hex(name.ptr[i + 2])) >= 0) {
                dec[decl++] = (unsigned char)(hi << 4 | lo);
                i += 2;
            } else {
                dec[decl++] = (unsigned char)name.ptr[i];
            }
        }
        size_t o = (size_t)snprintf(h->cd, sizeof(h->cd), "attachment; filename=\"");
        bool plain = true;
        for (size_t i = 0; i < decl; i++) {
            bool ok = dec[i] >= 0x20 && dec[i] < 0x7f && dec[i] != '"' && dec[i] != '\\';
            plain = plain && ok;
            h->cd[o++] = ok ? (char)dec[i] : '_';
        }
        h->cd[o++] = '"';
        if (!plain) {
            static const char hexd[] = "0123456789ABCDEF";
            o += (size_t)snprintf(h->cd + o, sizeof(h->cd) - o, "; filename*=UTF-8''");
            for (size_t i = 0; i < decl; i++) {
                unsigned char ch = dec[i];
                if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || (ch && strchr("!#$&+-.^_`|~", ch))) {
                    h->cd[o++] = (char)ch;
                } else {
                    h->cd[o++] = '%';
                    h->cd[o++] = hexd[ch >> 4];
                    h->cd[o++] = hexd[ch & 15];
                }
            }
        }
        put(h, "Content-Disposition", h->cd, o);
    }
    for (size_t i = 0; i < d->headers.n; i++)
        put(h, d->headers.v[i].name, d->headers.v[i].value, strlen(d->headers.v[i].value));
}

/* multipart/byteranges, pulled part by part from the file. */
typedef struct multipart {
    int fd;
    weir_range r[MAX_RANGES];
    size_t n, i;
    uint64_t size, sent; /* of the current part's bytes */
    char boundary[33];
    const char *type;
    char framing[400]; /* a part's head or the tail, and how much of it is out */
    size_t f_len, f_off;
    bool in_body, tail;
} multipart;

static int mp_produce(weir_session *s, void *ctx, char *buf, size_t cap, size_t *len)
{
    multipart *m = ctx;
    size_t o = 0;
    while (o < cap) {
        if (m->f_off < m->f_len) { /* framing first */
            size_t k = m->f_len - m->f_off < cap - o ? m->f_len - m->f_off : cap - o;
            memcpy(buf + o, m->framing + m->f_off, k);
            m->f_off += k;
            o += k;
            continue;
        }
        if (m->tail)
            break;
        if (m->in_body && m->sent < m->r[m->i].len) {
            uint64_t left = m->r[m->i].len - m->sent;
            size_t k = left < cap - o ? (size_t)left : cap - o;
            ssize_t got = pread(m->fd, buf + o, k, (off_t)(m->r[m->i].start + m->sent));
            if (got <= 0)
                return got == 0 ? -EIO : -errno;
            m->sent += (uint64_t)got;
            o += (size_t)got;
            continue;
        }
        if (m->in_body)
            m->i++;
        m->in_body = true;
        m->sent = 0;
        m->f_off = 0;
        if (m->i == m->n) {
            m->tail = true;
            m->f_len = weir__multipart_tail(m->framing, sizeof(m->framing), m->boundary);
        } else {
            m->f_len = weir__multipart_part_head(m->framing, sizeof(m->framing), m->boundary,
                                                 m->type, m->r[m->i], m->size);
        }
    }
    *len = o;
    return m->tail && m->f_off == m->f_len ? WEIR_DONE : WEIR_OK;
}

static void mp_done(weir_session *s, void *ctx, bool complete)
{
    multipart *m = ctx;
    close(m->fd);
}

static weir_phase_result serve_ranges(const dir_conf *d, weir_session *s, head *h, int fd,
                                      const struct stat *st, const weir_range *r, size_t n)
{
    if (d->chunk_size)
        weir_session_set_body_chunk(s, (size_t)d->chunk_size);
    if (n == 1) {
        char cr[80];
        int l = snprintf(cr, sizeof(cr), "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, r[0].start,
                         r[0].start + r[0].len - 1, (uint64_t)st->st_size);
        put(h, "Content-Range", cr, (size_t)l);
        return weir_session_respond_file(s, 206, h->v, h->n, fd, r[0].start, r[0].len) == WEIR_OK
                   ? WEIR_PHASE_ANSWERED
                   : WEIR_PHASE_ERROR;
    }
    multipart *m = weir_session_alloc(s, sizeof(*m));
    if (!m) {
        close(fd);
        return WEIR_PHASE_ERROR;
    }
    memset(m, 0, sizeof(*m));
    m->fd = fd;
    memcpy(m->r, r, n * sizeof(*r));
    m->n = n;
    m->size = (uint64_t)st->st_size;
    weir__multipart_boundary(m->boundary);
    /* The part's type is the file's, without the fields' copy: h->type
     * lives on this stack frame only. */
    char *type = weir_session_alloc(s, strlen(h->type) + 1);
    if (!type) {
        close(fd);
        return WEIR_PHASE_ERROR;
    }
    strcpy(type, h->type);
    m->type = type;
    char ct[80];
    int cl = snprintf(ct, sizeof(ct), "multipart/byteranges; boundary=%s", m->boundary);
    for (size_t i = 0; i < h->n; i++) { /* the whole response's type */
        if (h->v[i].name.len == 12 && strncasecmp(h->v[i].name.ptr, "content-type", 12) == 0)
            h->v[i].value = (weir_str){ct, (size_t)cl};
    }
    weir_body_producer p = {
        mp_produce, mp_done, m,
        (int64_t)weir__multipart_length(m->boundary, m->type, m->r, m->n, m->size)};
    return weir_session_respond_stream(s, 206, h->v, h->n, &p) == WEIR_OK ? WEIR_PHASE_ANSWERED
                                                                          : WEIR_PHASE_ERROR;
}

static weir_str req_field(weir_session *s, const char *name)
{
    return weir_headers_get(weir_session_req_headers(s), name);
}

/* Answers with the regular file fd (name: for its type), owning fd. */
static weir_phase_result serve_file(const dir_conf *d, weir_session *s, int fd, struct stat *st,
                                    weir_str path, weir_str name, bool ranges)
{
    const char *encoding = NULL;
    if (d->precompressed && path.len + 4 < 4096) {
        /* A sibling file.br or file.gz the client takes, and the encoding
         * it prefers of the two. */
        weir_enc prefs[2] = {WEIR_ENC_BR, WEIR_ENC_GZIP};
        weir_str ae = weir__plugin_field(s, weir_session_req_headers(s), "accept-encoding");
        weir_enc e = weir__enc_choose(ae, prefs, 2);
        for (int k = 0; k < 2 && e != WEIR_ENC_IDENTITY; k++) {
            char alt[4096];
            int l = snprintf(alt, sizeof(alt), "%.*s%s", (int)path.len, path.ptr,
                             e == WEIR_ENC_BR ? ".br" : ".gz");
            int afd;
            struct stat ast;
            if (weir__files_open(d->root_fd, alt, (size_t)l, &d->opts, &afd, &ast) == 0) {
                if (S_ISREG(ast.st_mode)) {
                    close(fd);
                    fd = afd;
                    *st = ast;
                    encoding = weir__enc_name(e);
                    break;
                }
                close(afd);
            }
            /* the other one, if the client takes it too */
            weir_enc other = e == WEIR_ENC_BR ? WEIR_ENC_GZIP : WEIR_ENC_BR;
            e = weir__enc_q(ae, other) > 0 ? other : WEIR_ENC_IDENTITY;
        }
    }
    /* On the stack: the respond calls copy the fields (a part's type is
     * copied for the multipart producer), and the session's arena would
     * grow a block (a malloc) for these 2.5 KB on every file. */
    head hb;
    head *h = &hb;
    h->n = 0;
    validators(d, h, st, name, encoding);
    if (d->precompressed && !encoding && S_ISREG(st->st_mode))
        put(h, "Vary", "Accept-Encoding", 15);
    weir_str m = weir_session_method(s);
    weir_str etag = {h->etag, strlen(h->etag)};
    int cond = weir__files_conditional(
        req_field(s, "if-match"), req_field(s, "if-unmodified-since"),
        req_field(s, "if-none-match"), req_field(s, "if-modified-since"), true, etag, st->st_mtime);
    if (cond == 304 || cond == 412) {
        close(fd);
        if (weir_session_respond(s, cond, cond == 304 ? h->v : NULL, cond == 304 ? h->n : 0, NULL,
                                 0) != WEIR_OK)
            return WEIR_PHASE_ERROR;
        return WEIR_PHASE_ANSWERED;
    }
    uint64_t size = (uint64_t)st->st_size;
    weir_str range = req_field(s, "range");
    bool is_get = m.len == 3 && memcmp(m.ptr, "GET", 3) == 0;
    if (ranges && range.ptr && is_get &&
        weir__files_if_range(req_field(s, "if-range"), etag, st->st_mtime)) {
        weir_range r[MAX_RANGES];
        size_t n = 0;
        int rc = weir__range_parse(range, size, r, MAX_RANGES, &n);
        if (rc == WEIR_RANGE_UNSATISFIABLE) {
            close(fd);
            char cr[48];
            int l = snprintf(cr, sizeof(cr), "bytes */%" PRIu64, size);
            weir_header f[2] = {{WEIR_STR("Content-Range"), {cr, (size_t)l}},
                                {WEIR_STR("Content-Type"), WEIR_STR("text/plain")}};
            static const char msg[] = "416 Range Not Satisfiable\n";
            return weir_session_respond(s, 416, f, 2, msg, sizeof(msg) - 1) == WEIR_OK
                       ? WEIR_PHASE_ANSWERED
                       : WEIR_PHASE_ERROR;
        }
        if (rc == WEIR_RANGE_OK && n > 0)
            return serve_ranges(d, s, h, fd, st, r, n);
    }
    if (ranges)
        put(h, "Accept-Ranges", "bytes", 5);
    if (d->chunk_size)
        weir_session_set_body_chunk(s, (size_t)d->chunk_size);
    return weir_session_respond_file(s, 200, h->v, h->n, fd, 0, size) == WEIR_OK
               ? WEIR_PHASE_ANSWERED
               : WEIR_PHASE_ERROR;
}

/* A listing of the directory fd (owned). */
static weir_phase_result listing(const dir_conf *d, weir_session *s, int fd, weir_str path)
{
    weir_str accept = req_field(s, "accept");
    bool json = false;
    for (size_t i = 0; accept.ptr && i + 16 <= accept.len; i++)
        json = json || strncasecmp(accept.ptr + i, "application/json", 16) == 0;
    /* The path as the client sees it, decoded for display. */
    char shown[4096];
    size_t sl = 0;
    for (size_t i = 0; i < path.len && sl + 1 < sizeof(shown); i++) {
        int hi, lo;
        if (path.ptr[i] == '%' && i + 2 < path.len &&
            (hi = weir__files_hex(path.ptr[i + 1])) >= 0 &&
            (lo = weir__files_hex(path.ptr[i + 2])) >= 0) {
            shown[sl++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            shown[sl++] = path.ptr[i];
        }
    }
    char *out = NULL;
    size_t len = 0;
    int rc = weir__autoindex(fd, shown, sl, json, d->opts.hidden, &out, &len);
    close(fd);
    if (rc < 0)
        return text(s, rc == -E2BIG ? 403 : 500, rc == -E2BIG ? "403 Forbidden\n" : "500 Error\n");
    weir_header h[2] = {{WEIR_STR("Content-Type"), json ? WEIR_STR("application/json")
                                                        : WEIR_STR("text/html; charset=utf-8")},
                        {WEIR_STR("Cache-Control"), WEIR_STR("no-cache")}};
    rc = weir_session_respond(s, 200, h, 2, out, len);
    free(out);
    return rc == WEIR_OK ? WEIR_PHASE_ANSWERED : WEIR_PHASE_ERROR;
}

static weir_phase_result refused(weir_session *s, int err)
{
    if (err == -ENOENT || err == -ENOTDIR || err == -ENAMETOOLONG)
        return text(s, 404, "404 Not Found\n");
    if (err == -EACCES || err == -EPERM || err == -ELOOP || err == -EXDEV)
        return text(s, 403, "403 Forbidden\n");
    weir_log(WEIR_LEVEL_ERROR, "directory: cannot open a file: %s", strerror(-err));
    return text(s, 500, "500 Internal Server Error\n");
}

static weir_phase_result dir_request(weir_plugin_call *call)
{
    const dir_conf *d = call->plugin->conf;
    weir_session *s = call->s;
    if (d->root_fd < 0)
        return WEIR_PHASE_ERROR;
    weir_str m = weir_session_method(s);
    if (!(m.len == 3 && memcmp(m.ptr, "GET", 3) == 0) &&
        !(m.len == 4 && memcmp(m.ptr, "HEAD", 4) == 0)) {
        weir_header allow = {WEIR_STR("Allow"), WEIR_STR("GET, HEAD")};
        static const char msg[] = "405 Method Not Allowed\n";
        return weir_session_respond(s, 405, &allow, 1, msg, sizeof(msg) - 1) == WEIR_OK
                   ? WEIR_PHASE_ANSWERED
                   : WEIR_PHASE_ERROR;
    }
    weir_str target = weir_session_upstream_target(s);
    const char *q = memchr(target.ptr, '?', target.len);
    weir_str path = {target.ptr, q ? (size_t)(q - target.ptr) : target.len};
    /* A body plugin that may change the bytes (sub_filter): a range of
     * the file would be a range of another body than the 200's, so whole
     * files only, as nginx's range filter after sub_filter. Compression
     * leaves a 206 alone (keeps_ranges): ranges stay, of the plain file. */
    const req_ctx *rc_ = call->req;
    bool ranges = true;
    for (size_t i = 0; rc_ && rc_->loc && i < rc_->loc->chains[WEIR_CFG_CHAIN_RESPONSE_BODY].n; i++)
        ranges = ranges && rc_->loc->chains[WEIR_CFG_CHAIN_RESPONSE_BODY].v[i].p->def->keeps_ranges;
    int fd;
    struct stat st;
    int rc = weir__files_open(d->root_fd, path.ptr, path.len, &d->opts, &fd, &st);
    if (rc < 0 && (rc == -ENOENT || rc == -ENOTDIR) && d->fallback) {
        path = (weir_str){d->fallback, strlen(d->fallback)};
        rc = weir__files_open(d->root_fd, path.ptr, path.len, &d->opts, &fd, &st);
    }
    if (rc < 0)
        return refused(s, rc);
    if (!S_ISDIR(st.st_mode))
        return serve_file(d, s, fd, &st, path, base_name(path), ranges);
    if (!path.len || path.ptr[path.len - 1] != '/') {
        close(fd);
        /* nginx's answer: the directory's URL ends with a slash. The URL
         * is the client's (not a rewrite's), and never starts with "//"
         * (a browser would take that for another host). */
        weir_str cp = weir_session_path(s), cq = weir_session_query(s);
        while (cp.len > 1 && cp.ptr[0] == '/' && cp.ptr[1] == '/') {
            cp.ptr++;
            cp.len--;
        }
        char *loc = weir_session_alloc(s, cp.len + cq.len + 3);
        if (!loc)
            return WEIR_PHASE_ERROR;
        size_t ll = cp.len;
        memcpy(loc, cp.ptr, cp.len);
        loc[ll++] = '/';
        if (cq.len) {
            loc[ll++] = '?';
            memcpy(loc + ll, cq.ptr, cq.len);
            ll += cq.len;
        }
        weir_header h[2] = {{WEIR_STR("Location"), {loc, ll}},
                            {WEIR_STR("Content-Type"), WEIR_STR("text/plain")}};
        static const char msg[] = "301 Moved Permanently\n";
        return weir_session_respond(s, 301, h, 2, msg, sizeof(msg) - 1) == WEIR_OK
                   ? WEIR_PHASE_ANSWERED
                   : WEIR_PHASE_ERROR;
    }
    if (d->index) {
        char rel[300];
        int l = snprintf(rel, sizeof(rel), "/%s", d->index);
        int ifd;
        struct stat ist;
        if (weir__files_open(fd, rel, (size_t)l, &d->opts, &ifd, &ist) == 0) {
            if (S_ISREG(ist.st_mode)) {
                close(fd);
                /* Precompressed siblings of the index: its path below
                 * the folder. */
                size_t pl = path.len + (size_t)l - 1;
                char *ipath = weir_session_alloc(s, pl + 1);
                if (!ipath) {
                    close(ifd);
                    return WEIR_PHASE_ERROR;
                }
                memcpy(ipath, path.ptr, path.len);
                memcpy(ipath + path.len, rel + 1, (size_t)l - 1);
                ipath[pl] = '\0';
                weir_str ip = {ipath, pl};
                return serve_file(d, s, ifd, &ist, ip, base_name(ip), ranges);
            }
            close(ifd);
        }
    }
    if (d->autoindex)
        return listing(d, s, fd, path);
    close(fd);
    return text(s, 403, "403 Forbidden\n");
}

const weir_plugin_def weir__plugin_directory = {
    .category = "directory",
    .keys = (const weir_cfg_key[]){{"path", WEIR_CT_STRING, NULL},
                                   {"index", WEIR_CT_STRING, NULL},
                                   {"autoindex", WEIR_CT_BOOLEAN, NULL},
                                   {"charset", WEIR_CT_STRING, NULL},
                                   {"max_age", WEIR_CT_DURATION, NULL},
                                   {"private", WEIR_CT_BOOLEAN, NULL},
                                   {"download", WEIR_CT_BOOLEAN, NULL},
                                   {"chunk_size", WEIR_CT_SIZE, NULL},
                                   {"headers", WEIR_CT_STRINGS, NULL},
                                   {"follow_symlinks", WEIR_CT_BOOLEAN, NULL},
                                   {"hidden", WEIR_CT_BOOLEAN, NULL},
                                   {"precompressed", WEIR_CT_BOOLEAN, NULL},
                                   {"fallback", WEIR_CT_STRING, NULL},
                                   {NULL, 0, NULL}},
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_REQUEST,
    .parse = dir_parse,
    .free = dir_free,
    .request = dir_request,
    .answers = true,
};
