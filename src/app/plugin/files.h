/*
 * files.h - the pure building blocks of the static-file plugin (what
 * nginx's static and autoindex modules do): opening a request path safely
 * under a root, MIME types, HTTP dates, validators and conditional
 * requests, byte ranges with multipart/byteranges, directory listings.
 *
 * Nothing here knows a session or a connection: the plugin calls these with
 * the request's fields as slices and turns the answers into a response.
 * Every function may be called from any thread (no global state but the
 * cached "openat2 is missing" flag, which is atomic); a weir_mime table is
 * read-only once loaded and may be shared by every worker.
 *
 * Files: files.c (open), files_mime.c, files_http.c (dates, validators,
 * conditionals), files_range.c (ranges, multipart), files_index.c
 * (listings).
 */
#ifndef WEIR_APP_PLUGIN_FILES_H
#define WEIR_APP_PLUGIN_FILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "weir/headers.h"
#include "weir/types.h"

/* ---- opening a file under a root (files.c) ---- */

typedef struct weir_files_opts {
    bool hidden;          /* serve names starting with '.' (never "." or "..") */
    bool follow_symlinks; /* symlinks may point anywhere, not only beneath the root */
} weir_files_opts;

/*
 * Opens the file that url_path (len bytes, not NUL-terminated) names under
 * the directory root_fd, and fills *st (fstat of the opened file).
 *
 * url_path is the normalised request path: it starts with '/', has no dot
 * segments, and may hold any %XX escape (either case of hex). It is
 * percent-decoded here and refused when it could not name a file beneath
 * the root by text alone, before any system call:
 *   -ENOENT (404): not a '/' path, longer than PATH_MAX, an invalid escape,
 *           a decoded NUL, a '/' that was %2F, a backslash (raw or %5C),
 *           a "." or ".." segment once decoded (%2e%2e);
 *   -EACCES (403): a hidden segment (a name starting with '.') when
 *           !o->hidden.
 * The 404s are names no file of ours has; the 403 is a policy that holds
 * whether the file exists or not, so neither tells an attacker anything.
 *
 * Resolution (openat2(2), RESOLVE_NO_MAGICLINKS always):
 *   !o->follow_symlinks  RESOLVE_BENEATH: a symlink whose target stays
 *                        beneath the root is followed, one that leaves it
 *                        is -EACCES;
 *    o->follow_symlinks  symlinks may point anywhere, but never through a
 *                        /proc magic link (stricter than a plain openat:
 *                        /proc/self/fd/N would hand out the worker's own
 *                        files).
 * Where openat2 is missing (ENOSYS: a kernel before 5.6, or a seccomp
 * filter), the call falls back to openat: with !follow_symlinks a walk
 * component by component with O_NOFOLLOW that refuses every symlink
 * (-EACCES; stricter than RESOLVE_BENEATH, simpler than checking targets);
 * with follow_symlinks a plain openat (no magic-link check there).
 *
 * The open is O_RDONLY|O_CLOEXEC|O_NOCTTY|O_NONBLOCK, then fstat: a FIFO
 * opens without waiting for a writer and, like a socket or a device, is
 * refused (-EACCES) before anything reads it. O_NONBLOCK stays on the fd
 * (regular files and directories ignore it). A device node inside the
 * folder is opened before it is refused, as nginx would: keep them out of
 * served folders (a symlink to one outside is refused by RESOLVE_BENEATH
 * unless follow_symlinks). Kernel answers map as: ENOENT, ENOTDIR, ENAMETOOLONG -> -ENOENT;
 * EACCES, EPERM, ELOOP, EXDEV (escapes the root), ENXIO, ENODEV -> -EACCES;
 * anything else (EMFILE, ENOMEM, EIO) is returned as -errno (500).
 *
 * Returns 0 with *fd (the caller closes it) for a regular file or a
 * directory (the caller decides between index file and listing), else a
 * negative errno as above with *fd untouched.
 */
int weir__files_open(int root_fd, const char *url_path, size_t len, const weir_files_opts *o,
                     int *fd, struct stat *st);

/* Tests only: behave as if openat2 were missing (on) or probe it again
 * (off), to exercise the fallback walk. */
void weir__files_force_no_openat2(bool on);

/* The value of a hex digit (either case), or -1. */
int weir__files_hex(char c);

/* ---- MIME types (files_mime.c) ---- */

/* Extension -> media type, read-only once loaded: any thread may look up. */
typedef struct weir_mime weir_mime;

/*
 * Loads a table in /etc/mime.types format: per line a media type then
 * zero or more extensions, '#' to the end of the line a comment. Lines
 * whose type is not visible ASCII with a '/' are skipped, as are
 * extensions longer than 63 bytes; extensions are keyed lower-case, and
 * an extension listed twice keeps its first type. The built-in table
 * (html, css, js, json, png, woff2, wasm, ...) fills what the file does
 * not list: the file wins. A NULL path or an unreadable file gives the
 * built-in table alone. Returns NULL only when out of memory; the caller
 * frees the table with weir__mime_free().
 */
weir_mime *weir__mime_load(const char *path);

/*
 * The media type of a file name (len bytes; a path is fine, only the part
 * after the last '/' counts) by its last extension, case-insensitively:
 * "a.TXT" text/plain, "x.tar.gz" application/gzip. A name without a dot,
 * ending with a dot or whose only dot leads (".bashrc": a hidden file,
 * not an extension) and an unknown extension give
 * "application/octet-stream". m NULL means the built-in table. The string
 * lives as long as m (static for the built-in table).
 */
const char *weir__mime_type(const weir_mime *m, const char *name, size_t len);

/* Frees a table from weir__mime_load(); NULL is fine. */
void weir__mime_free(weir_mime *m);

/* ---- validators (files_http.c); dates: weir_http_date (weir/headers.h) ---- */

/*
 * The strong ETag of a file as nginx makes it: "\"<mtime hex>-<size
 * hex>\"", quotes included, NUL-terminated. Returns its length (at most
 * 36).
 */
size_t weir__files_etag(const struct stat *st, char out[48]);

/*
 * Evaluates the preconditions of a request in RFC 9110 13.2.2's order
 * against a representation with the given etag (a full entity-tag, quotes
 * and optional W/ included; .ptr NULL if it has none) and mtime. Absent
 * fields have .ptr NULL.
 *   1. If-Match: 412 unless "*" or a listed tag matches etag by strong
 *      comparison;
 *   2. else If-Unmodified-Since (a valid date; an invalid one is ignored):
 *      412 if mtime is later;
 *   3. If-None-Match: "*" or a tag matching by weak comparison gives 304
 *      for GET/HEAD and 412 for other methods;
 *   4. else, for GET/HEAD, If-Modified-Since (ignored when not a valid
 *      date): 304 unless mtime is later.
 * Returns 200 when the request goes on. Entity-tag lists take optional
 * whitespace around commas, empty elements and W/ prefixes; a malformed
 * element ends the list (the tags before it still count) and matches
 * nothing, so a garbled If-Match fails and a garbled If-None-Match passes.
 */
int weir__files_conditional(weir_str if_match, weir_str if_unmodified_since, weir_str if_none_match,
                            weir_str if_modified_since, bool get_or_head, weir_str etag,
                            time_t mtime);

/*
 * Whether the Range field applies given If-Range (RFC 9110 13.1.5): true
 * when If-Range is absent (.ptr NULL), is an entity-tag equal to etag by
 * strong comparison (a weak tag, on either side, never matches), or is an
 * HTTP-date exactly equal to mtime. Anything else, an invalid value
 * included, is false: serve the whole representation.
 */
bool weir__files_if_range(weir_str if_range, weir_str etag, time_t mtime);

/* ---- byte ranges (files_range.c) ---- */

/* One satisfiable range: bytes start .. start + len - 1; len >= 1. */
typedef struct weir_range {
    uint64_t start;
    uint64_t len;
} weir_range;

enum weir_range_result {
    WEIR_RANGE_NONE = 0,          /* no usable Range field: serve 200, whole */
    WEIR_RANGE_OK = 1,            /* *n ranges to serve: 206 */
    WEIR_RANGE_UNSATISFIABLE = 2, /* 416 with Content-Range: bytes * / size */
};

/* More than this many ranges, average under WEIR_RANGE_MIN_MEAN bytes, or
 * not in ascending order, are taken for a denial of service (below). */
#define WEIR_RANGE_MIN_MEAN 64

/*
 * Parses a Range field value v (RFC 9110 14.1-14.2) against a
 * representation of size bytes. The unit is "bytes", case-insensitive,
 * followed by '=' at once ("bytes = 0-1" is a syntax error); the forms are
 * "a-b", "a-" and "-suffix", separated by commas with optional spaces
 * around them; empty list elements are skipped. Ranges are clipped to the
 * size ("-suffix" longer than the file is the whole file), an
 * unsatisfiable one (start >= size, "-0", anything on an empty file) is
 * dropped, and the satisfiable ones are stored in request order in
 * out[0..*n).
 *
 * Returns:
 *   WEIR_RANGE_NONE when v is not a "bytes=" range set, has any syntax
 *     error (a bad character, "a-b" with b < a, a number past 2^64 - 1), or
 *     looks like a ranges denial of service; the field is then ignored and
 *     the whole file served, as nginx does. The DoS rule: more than max
 *     range-specs in the field (satisfiable or not), two satisfiable ranges
 *     that overlap, or three or more ranges that are not in ascending order
 *     or average under WEIR_RANGE_MIN_MEAN bytes (RFC 9110 14.2's
 *     "overlapping ranges, or many small ranges not in ascending order");
 *   WEIR_RANGE_UNSATISFIABLE when the syntax is fine but no range overlaps
 *     the file (always so when size is 0);
 *   WEIR_RANGE_OK with *n >= 1 ranges otherwise.
 * *n is 0 unless WEIR_RANGE_OK. Never reads past v.len. The overlap check
 * is quadratic in the number of ranges: keep max small (tens).
 */
int weir__range_parse(weir_str v, uint64_t size, weir_range *out, size_t max, size_t *n);

/* Writes a random multipart boundary (32 hex digits from getrandom, and a
 * NUL) into out. Returns 32, or 0 with out "" if getrandom failed. */
size_t weir__multipart_boundary(char out[33]);

/*
 * The head of one part of a multipart/byteranges body:
 * "\r\n--B\r\nContent-Type: T\r\nContent-Range: bytes a-b/size\r\n\r\n"
 * (the Content-Type line left out when content_type is NULL). Like
 * snprintf: writes at most cap bytes, NUL included (out may be NULL when
 * cap is 0), and returns the full length without the NUL, so the caller
 * sees truncation as a result >= cap.
 */
size_t weir__multipart_part_head(char *out, size_t cap, const char *boundary,
                                 const char *content_type, weir_range r, uint64_t size);

/* The closing delimiter "\r\n--B--\r\n", snprintf-like as above. */
size_t weir__multipart_tail(char *out, size_t cap, const char *boundary);

/* The exact length of the multipart/byteranges body made of the n parts
 * r[] (each head, then its bytes) and the tail: the Content-Length. */
uint64_t weir__multipart_length(const char *boundary, const char *content_type, const weir_range *r,
                                size_t n, uint64_t size);

/* ---- directory listings (files_index.c) ---- */

/* Listings stop here: a larger directory is -E2BIG. */
#define WEIR_AUTOINDEX_MAX 100000

/*
 * Renders the listing of the directory dir_fd (read through a dup, so
 * dir_fd stays the caller's and open; its offset is rewound). url_path
 * (len bytes) is the decoded path the listing is displayed under; a
 * missing trailing '/' is added. "." and ".." are never listed, names
 * starting with '.' only when hidden; entries are stat'ed following
 * symlinks, and those that are neither a regular file nor a directory
 * once followed (a FIFO, a socket, a device, a dangling link) are left out,
 * as the open would refuse them. Order: directories first, then by name,
 * bytewise.
 *
 * HTML: "Index of /path/", a "../" link unless at "/", then a table row per
 * entry: a link whose href is the name percent-encoded (all but
 * unreserved characters, so no name reads as a scheme or breaks the
 * attribute; directories with a trailing '/'), the name HTML-escaped
 * (& < > " '), the mtime as "%d-%b-%Y %H:%M" in UTC, as nginx, and the size
 * in bytes or "-" for a directory.
 * JSON (jansson): [{"name":..., "type":"file"|"directory", "size":N,
 * "mtime":"<IMF-fixdate>"}], "size" only for files, as nginx's JSON.
 *
 * Names that are not UTF-8: each byte outside a valid UTF-8 sequence is
 * shown as U+FFFD in the HTML text and the JSON name, and so are C0
 * controls and DEL in the HTML (JSON keeps them, escaped \u00XX); the href
 * always carries the exact bytes, percent-encoded, so the link works.
 *
 * Returns 0 with *out (malloc'd, NUL-terminated, the caller frees it) and
 * *out_len, -E2BIG past WEIR_AUTOINDEX_MAX entries, -ENOMEM, or the
 * -errno of a failed dup, fdopendir or readdir; *out is untouched then.
 */
int weir__autoindex(int dir_fd, const char *url_path, size_t len, bool json, bool hidden,
                    char **out, size_t *out_len);

#endif
