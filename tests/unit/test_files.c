/*
 * test_files.c - the static-file building blocks (app/plugin/files.h):
 * safe open under a root (every refusal, symlinks in and out, a FIFO,
 * with and without openat2), MIME types, HTTP dates, conditional
 * requests, If-Range, Range parsing and multipart lengths, listings.
 *
 * The open and listing tests run in a tree built per test under /tmp:
 *
 *   base/root/          the document root
 *     file.txt index.html "a b&<>\"'.txt" "bad\xff\xfe.txt" "ctl\x01.txt"
 *     .hidden  sub/inner.txt  sub/.hidden  fifo
 *     link_in -> file.txt            dir_link_in -> sub
 *     link_out -> /etc/passwd        dir_link_out -> ../outside
 *   base/outside/x
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/plugin/files.h"

#define NAME_SPECIAL "a b&<>\"'.txt"
#define NAME_BAD_UTF8 "bad\xff\xfe.txt"
#define NAME_CTL "ctl\x01.txt"

static char base[64];
static int root_fd = -1;

static void write_file(const char *rel, const char *content)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", base, rel);
    FILE *f = fopen(p, "w");
    cr_assert(f, "%s: %s", p, strerror(errno));
    fputs(content, f);
    fclose(f);
}

static void in_base(char *out, size_t cap, const char *rel)
{
    snprintf(out, cap, "%s/%s", base, rel);
}

static void make_tree(void)
{
    strcpy(base, "/tmp/weir-files-XXXXXX");
    cr_assert(mkdtemp(base));
    char p[256];
    const char *dirs[] = {"root", "root/sub", "outside"};
    for (size_t i = 0; i < 3; i++) {
        in_base(p, sizeof(p), dirs[i]);
        cr_assert_eq(mkdir(p, 0755), 0);
    }
    write_file("root/file.txt", "0123456789");
    write_file("root/index.html", "<p>hi</p>");
    write_file("root/" NAME_SPECIAL, "special");
    write_file("root/" NAME_BAD_UTF8, "bad");
    write_file("root/" NAME_CTL, "ctl");
    write_file("root/.hidden", "secret");
    write_file("root/sub/inner.txt", "inner");
    write_file("root/sub/.hidden", "secret");
    write_file("outside/x", "outside");
    in_base(p, sizeof(p), "root/fifo");
    cr_assert_eq(mkfifo(p, 0644), 0);
    const struct {
        const char *target, *link;
    } links[] = {
        {"file.txt", "root/link_in"},
        {"sub", "root/dir_link_in"},
        {"/etc/passwd", "root/link_out"},
        {"../outside", "root/dir_link_out"},
    };
    for (size_t i = 0; i < 4; i++) {
        in_base(p, sizeof(p), links[i].link);
        cr_assert_eq(symlink(links[i].target, p), 0);
    }
    in_base(p, sizeof(p), "root");
    root_fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    cr_assert(root_fd >= 0);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p);
}

static void remove_tree(void)
{
    if (root_fd >= 0)
        close(root_fd);
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(files_open, .init = make_tree, .fini = remove_tree);
TestSuite(files_index, .init = make_tree, .fini = remove_tree);

/* The result of opening path; the fd is closed, *st filled when 0. */
static int try_open(const char *path, bool hidden, bool follow, struct stat *st)
{
    weir_files_opts o = {.hidden = hidden, .follow_symlinks = follow};
    struct stat tmp;
    int fd = -1;
    /* An exact-size copy: a read past len is ASan's to see. */
    size_t len = strlen(path);
    char *copy = malloc(len ? len : 1);
    memcpy(copy, path, len);
    int rc = weir__files_open(root_fd, copy, len, &o, &fd, st ? st : &tmp);
    free(copy);
    if (rc == 0) {
        cr_expect(fd >= 0);
        cr_expect(fcntl(fd, F_GETFD) & FD_CLOEXEC, "%s: no FD_CLOEXEC", path);
        close(fd);
    } else {
        cr_expect_eq(fd, -1, "%s: fd set on failure", path);
    }
    return rc;
}

typedef struct open_case {
    const char *path;
    int want; /* 0, -ENOENT or -EACCES */
} open_case;

static void run_cases(const open_case *c, size_t n, bool hidden, bool follow)
{
    for (size_t i = 0; i < n; i++) {
        int rc = try_open(c[i].path, hidden, follow, NULL);
        cr_expect_eq(rc, c[i].want, "%s (hidden %d, follow %d): %d (%s), want %d", c[i].path,
                     hidden, follow, rc, rc < 0 ? strerror(-rc) : "ok", c[i].want);
    }
}

/* Refused whatever the options: the text cannot name a file of ours. */
static const open_case textual[] = {
    {"/%2e%2e/etc/passwd", -ENOENT},
    {"/%2E%2E/x", -ENOENT},
    {"/sub/%2e%2e/%2e%2e/etc/passwd", -ENOENT},
    {"/%2e", -ENOENT},
    {"/sub/%2E/inner.txt", -ENOENT},
    {"/a%2Fb", -ENOENT},
    {"/a%2fb", -ENOENT},
    {"/a%5Cb", -ENOENT},
    {"/a%5cb", -ENOENT},
    {"/a\\b", -ENOENT},
    {"/%00", -ENOENT},
    {"/file.txt%00.html", -ENOENT},
    {"/x%2", -ENOENT},
    {"/x%", -ENOENT},
    {"/x%zz", -ENOENT},
    {"/x%G0", -ENOENT},
    {"", -ENOENT},
    {"file.txt", -ENOENT},
    {"/fifo", -EACCES},
    {"/nope", -ENOENT},
    {"/file.txt/", -ENOENT},
    {"/sub/nope/x", -ENOENT},
};

Test(files_open, serves_files_and_directories)
{
    struct stat st;
    cr_assert_eq(try_open("/file.txt", false, false, &st), 0);
    cr_expect(S_ISREG(st.st_mode) && st.st_size == 10);
    cr_assert_eq(try_open("/", false, false, &st), 0);
    cr_expect(S_ISDIR(st.st_mode));
    cr_assert_eq(try_open("/sub", false, false, &st), 0);
    cr_expect(S_ISDIR(st.st_mode));
    cr_assert_eq(try_open("/sub/", false, false, &st), 0);
    cr_expect(S_ISDIR(st.st_mode));
    cr_expect_eq(try_open("//sub//inner.txt", false, false, &st), 0);
    cr_expect_eq(try_open("/sub/inner.txt", false, false, &st), 0);
    cr_expect(S_ISREG(st.st_mode) && st.st_size == 5);
    cr_expect_eq(try_open("/a%20b%26%3C%3E%22%27.txt", false, false, &st), 0);
    cr_expect_eq(st.st_size, 7);
    cr_expect_eq(try_open("/bad%FF%fe.txt", false, false, NULL), 0);
    cr_expect_eq(try_open("/%66ile.txt", false, false, NULL), 0, "unreserved escapes decode");
}

Test(files_open, refusals_without_symlinks_out)
{
    run_cases(textual, sizeof(textual) / sizeof(textual[0]), false, false);
    static const open_case c[] = {
        {"/.hidden", -EACCES},
        {"/sub/.hidden", -EACCES},
        {"/%2Ehidden", -EACCES},
        {"/.nope", -EACCES},
        {"/link_in", 0},
        {"/dir_link_in/inner.txt", 0},
        {"/link_out", -EACCES},
        {"/dir_link_out/x", -EACCES},
        {"/dir_link_out", -EACCES},
    };
    run_cases(c, sizeof(c) / sizeof(c[0]), false, false);
}

Test(files_open, hidden_allowed)
{
    run_cases(textual, sizeof(textual) / sizeof(textual[0]), true, false);
    static const open_case c[] = {
        {"/.hidden", 0},
        {"/sub/.hidden", 0},
        {"/%2Ehidden", 0},
        {"/.nope", -ENOENT},
    };
    run_cases(c, sizeof(c) / sizeof(c[0]), true, false);
}

Test(files_open, follow_symlinks_anywhere)
{
    run_cases(textual, sizeof(textual) / sizeof(textual[0]), false, true);
    static const open_case c[] = {
        {"/.hidden", -EACCES},  {"/link_in", 0},      {"/link_out", 0},
        {"/dir_link_out/x", 0}, {"/dir_link_out", 0},
    };
    run_cases(c, sizeof(c) / sizeof(c[0]), false, true);
}

Test(files_open, without_openat2_symlinks_are_refused)
{
    weir__files_force_no_openat2(true);
    run_cases(textual, sizeof(textual) / sizeof(textual[0]), false, false);
    static const open_case c[] = {
        {"/file.txt", 0},
        {"/", 0},
        {"/sub/", 0},
        {"//sub//inner.txt", 0},
        {"/.hidden", -EACCES},
        {"/link_in", -EACCES},
        {"/dir_link_in/inner.txt", -EACCES},
        {"/link_out", -EACCES},
        {"/dir_link_out/x", -EACCES},
    };
    run_cases(c, sizeof(c) / sizeof(c[0]), false, false);
    static const open_case f[] = {
        {"/link_in", 0},
        {"/link_out", 0},
        {"/dir_link_out/x", 0},
    };
    run_cases(f, sizeof(f) / sizeof(f[0]), false, true);
    weir__files_force_no_openat2(false);
}

Test(files_open, fifo_never_blocks, .timeout = 5)
{
    /* No writer: an open for reading without O_NONBLOCK would hang. */
    for (int follow = 0; follow < 2; follow++) {
        cr_expect_eq(try_open("/fifo", false, follow, NULL), -EACCES);
        weir__files_force_no_openat2(true);
        cr_expect_eq(try_open("/fifo", false, follow, NULL), -EACCES);
        weir__files_force_no_openat2(false);
    }
}

Test(files_open, path_length_limit)
{
    char *p = malloc(PATH_MAX + 2);
    p[0] = '/';
    memset(p + 1, 'a', PATH_MAX + 1);
    weir_files_opts o = {0};
    int fd = -1;
    struct stat st;
    cr_expect_eq(weir__files_open(root_fd, p, PATH_MAX + 1, &o, &fd, &st), -ENOENT);
    /* Within PATH_MAX, but a component past NAME_MAX: the kernel's
     * ENAMETOOLONG is a 404 too. */
    cr_expect_eq(weir__files_open(root_fd, p, PATH_MAX, &o, &fd, &st), -ENOENT);
    free(p);
}

/* ---- MIME types ---- */

static const char *mime(const weir_mime *m, const char *name)
{
    return weir__mime_type(m, name, strlen(name));
}

Test(files_mime, builtin_table)
{
    weir_mime *m = weir__mime_load(NULL);
    cr_assert(m);
    for (int pass = 0; pass < 2; pass++) {
        const weir_mime *t = pass ? NULL : m; /* NULL: the built-in table too */
        cr_expect_str_eq(mime(t, "a.TXT"), "text/plain");
        cr_expect_str_eq(mime(t, "index.html"), "text/html");
        cr_expect_str_eq(mime(t, "archive.tar.gz"), "application/gzip");
        cr_expect_str_eq(mime(t, "app.MJS"), "text/javascript");
        cr_expect_str_eq(mime(t, "font.woff2"), "font/woff2");
        cr_expect_str_eq(mime(t, "noext"), "application/octet-stream");
        cr_expect_str_eq(mime(t, ".bashrc"), "application/octet-stream");
        cr_expect_str_eq(mime(t, "file."), "application/octet-stream");
        cr_expect_str_eq(mime(t, "dir.d/noext"), "application/octet-stream");
        cr_expect_str_eq(mime(t, "/static/x.css"), "text/css");
        cr_expect_str_eq(mime(t, "x.unknownext"), "application/octet-stream");
        cr_expect_str_eq(mime(t, ""), "application/octet-stream");
    }
    weir__mime_free(m);
    weir__mime_free(NULL);
    m = weir__mime_load("/nonexistent/mime.types");
    cr_assert(m, "an unreadable file gives the built-in table");
    cr_expect_str_eq(mime(m, "x.png"), "image/png");
    weir__mime_free(m);
}

Test(files_mime, file_wins_and_builtin_fills_gaps)
{
    char path[] = "/tmp/weir-mime-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    static const char text[] = "# a comment line\n"
                               "text/x-custom\t\tcst CUS\n"
                               "application/x-over txt # txt is ours now\n"
                               "not-a-type foo\n"
                               "   image/x-indented   ind\n"
                               "text/x-first dup\n"
                               "text/x-second dup\n"
                               "text/x-empty\n"
                               "\n"
                               "bad\x01/type ctl\n";
    cr_assert_eq(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
    close(fd);
    weir_mime *m = weir__mime_load(path);
    unlink(path);
    cr_assert(m);
    cr_expect_str_eq(mime(m, "a.cst"), "text/x-custom");
    cr_expect_str_eq(mime(m, "a.cus"), "text/x-custom");
    cr_expect_str_eq(mime(m, "a.TXT"), "application/x-over");
    cr_expect_str_eq(mime(m, "a.html"), "text/html");
    cr_expect_str_eq(mime(m, "a.foo"), "application/octet-stream");
    cr_expect_str_eq(mime(m, "x.ind"), "image/x-indented");
    cr_expect_str_eq(mime(m, "x.dup"), "text/x-first");
    cr_expect_str_eq(mime(m, "x.ctl"), "application/octet-stream");
    weir__mime_free(m);
}

Test(files_mime, system_table)
{
    weir_mime *m = weir__mime_load("/etc/mime.types");
    cr_assert(m);
    cr_expect_str_eq(mime(m, "x.png"), "image/png");
    cr_expect_str_eq(mime(m, "x.PDF"), "application/pdf");
    cr_expect_str_eq(mime(m, "x.woff2"), "font/woff2");
    cr_expect_str_eq(mime(m, ".bashrc"), "application/octet-stream");
    weir__mime_free(m);
}

/* ---- dates ---- */

static bool parse_date(const char *s, time_t *t)
{
    size_t n = strlen(s);
    char *copy = malloc(n ? n : 1);
    memcpy(copy, s, n);
    bool ok = weir_http_date_parse((weir_str){copy, n}, t);
    free(copy);
    return ok;
}

Test(files_date, formats)
{
    char out[30];
    cr_expect_eq(weir_http_date(784111777, out), 29);
    cr_expect_str_eq(out, "Sun, 06 Nov 1994 08:49:37 GMT");
    cr_expect_eq(weir_http_date(0, out), 29);
    cr_expect_str_eq(out, "Thu, 01 Jan 1970 00:00:00 GMT");
    cr_expect_eq(weir_http_date(951782400, out), 29);
    cr_expect_str_eq(out, "Tue, 29 Feb 2000 00:00:00 GMT");
    cr_expect_eq(weir_http_date(-1, out), 29);
    cr_expect_str_eq(out, "Wed, 31 Dec 1969 23:59:59 GMT");
    cr_expect_eq(weir_http_date((time_t)253402300800, out), 0, "year 10000");
    cr_expect_str_eq(out, "");
}

Test(files_date, three_forms)
{
    static const char *const forms[] = {
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
        "  Sun, 06 Nov 1994 08:49:37 GMT\t",
    };
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        time_t t = 0;
        cr_expect(parse_date(forms[i], &t), "%s refused", forms[i]);
        cr_expect_eq(t, 784111777, "%s -> %ld", forms[i], (long)t);
    }
    time_t t;
    cr_expect(parse_date("Wed Nov 16 08:49:37 1994", &t) && t == 784111777 + 10 * 86400);
    cr_expect(parse_date("Thu, 29 Feb 2024 00:00:00 GMT", &t) && t == 1709164800);
    cr_expect(parse_date("Wednesday, 01-Jan-20 00:00:00 GMT", &t) && t == 1577836800,
              "two-digit years near now are this century");
    cr_expect(parse_date("Sat, 31 Dec 2016 23:59:60 GMT", &t) && t == 1483228800,
              "a leap second counts as the next second");
    /* The slice ends before the garbage. */
    static const char longer[] = "Sun, 06 Nov 1994 08:49:37 GMTxyz";
    cr_expect(weir_http_date_parse((weir_str){longer, 29}, &t) && t == 784111777);
    cr_expect(!weir_http_date_parse((weir_str){longer, 28}, &t));
    cr_expect(!weir_http_date_parse(WEIR_STR_NULL, &t));
}

Test(files_date, refused)
{
    static const char *const bad[] = {
        "",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37 gmt",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "sun, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun, 31 Nov 1994 08:49:37 GMT",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 29 Feb 1995 08:49:37 GMT",
        "Sun, 29 Feb 1900 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT x",
        "Sun, 06 Nov 1994 08:49 GMT",
        "Sun,06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 8:49:37 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun, 06-Nov-94 08:49:37 GMT",
        "Sunday, 06 Nov 1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",
        "Sun Nov  6 08:49:37 94",
        "Sun Nov  6 08:49:37 1994 GMT",
        "784111777",
        "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",
        "Sun, +6 Nov 1994 08:49:37 GMT",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        time_t t;
        cr_expect(!parse_date(bad[i], &t), "'%s' accepted", bad[i]);
    }
}

Test(files_date, round_trip)
{
    /* A spread of times from 1900 to 9999, and each second of a day. */
    for (int64_t t = -2208988800; t < 253402300799; t += 7777777) {
        char out[30];
        cr_assert_eq(weir_http_date((time_t)t, out), 29);
        time_t back;
        cr_assert(parse_date(out, &back), "%s refused", out);
        cr_assert_eq((int64_t)back, t, "%s -> %ld, want %ld", out, (long)back, (long)t);
    }
    for (time_t t = 86400 * 10000; t < 86400 * 10001; t += 37) {
        char out[30];
        time_t back;
        weir_http_date(t, out);
        cr_assert(parse_date(out, &back) && back == t);
    }
}

/* ---- validators and conditionals ---- */

Test(files_cond, etag_as_nginx)
{
    struct stat st = {0};
    st.st_mtim.tv_sec = 0x5f5e1000;
    st.st_size = 0x1a2b;
    char out[48];
    cr_expect_eq(weir__files_etag(&st, out), strlen("\"5f5e1000-1a2b\""));
    cr_expect_str_eq(out, "\"5f5e1000-1a2b\"");
    st.st_mtim.tv_sec = 0;
    st.st_size = 0;
    weir__files_etag(&st, out);
    cr_expect_str_eq(out, "\"0-0\"");
}

#define T0 ((time_t)1000000000)

static weir_str S(const char *s)
{
    return s ? (weir_str){s, strlen(s)} : WEIR_STR_NULL;
}

typedef struct cond_case {
    const char *im, *ius, *inm, *ims; /* NULL: absent */
    bool get;
    const char *etag;
    int want;
    const char *why;
} cond_case;

Test(files_cond, rfc9110_precedence)
{
    char same[30], older[30], newer[30];
    weir_http_date(T0, same);
    weir_http_date(T0 - 1, older);
    weir_http_date(T0 + 1, newer);
    const char *E = "\"abc\"";
    const cond_case c[] = {
        {NULL, NULL, NULL, NULL, true, E, 200, "no conditions"},
        /* 1. If-Match, strong */
        {"\"abc\"", NULL, NULL, NULL, true, E, 200, "If-Match matches"},
        {"\"xyz\"", NULL, NULL, NULL, true, E, 412, "If-Match fails"},
        {"*", NULL, NULL, NULL, false, E, 200, "If-Match *"},
        {"*", NULL, NULL, NULL, true, NULL, 200, "If-Match * without an etag"},
        {"W/\"abc\"", NULL, NULL, NULL, true, E, 412, "If-Match is strong: W/ never matches"},
        {"\"abc\"", NULL, NULL, NULL, true, "W/\"abc\"", 412, "a weak etag fails If-Match"},
        {" \"x\" ,\t\"abc\" ", NULL, NULL, NULL, true, E, 200, "If-Match list with spaces"},
        {"\"x\", , \"abc\"", NULL, NULL, NULL, true, E, 200, "empty list element"},
        {"abc", NULL, NULL, NULL, true, E, 412, "malformed If-Match fails"},
        {"\"abc\"", NULL, NULL, NULL, true, NULL, 412, "no etag: only * matches"},
        {"\"x\" \"abc\"", NULL, NULL, NULL, true, E, 412, "a list needs commas"},
        /* 2. If-Unmodified-Since, only without If-Match */
        {NULL, same, NULL, NULL, true, E, 200, "IUS at mtime"},
        {NULL, newer, NULL, NULL, true, E, 200, "IUS after mtime"},
        {NULL, older, NULL, NULL, true, E, 412, "IUS before mtime"},
        {NULL, "garbage", NULL, NULL, true, E, 200, "invalid IUS ignored"},
        {"\"abc\"", older, NULL, NULL, true, E, 200, "IUS ignored beside If-Match"},
        /* 3. If-None-Match, weak */
        {NULL, NULL, "\"abc\"", NULL, true, E, 304, "INM matches"},
        {NULL, NULL, "\"abc\"", NULL, false, E, 412, "INM matches, not GET/HEAD"},
        {NULL, NULL, "W/\"abc\"", NULL, true, E, 304, "INM is weak"},
        {NULL, NULL, "\"abc\"", NULL, true, "W/\"abc\"", 304, "INM weak etag"},
        {NULL, NULL, "*", NULL, true, E, 304, "INM *"},
        {NULL, NULL, "*", NULL, false, E, 412, "INM *, PUT"},
        {NULL, NULL, "\"xyz\"", NULL, true, E, 200, "INM no match"},
        {NULL, NULL, "\"x\",W/\"abc\"", NULL, true, E, 304, "INM list"},
        {NULL, NULL, "abc", NULL, true, E, 200, "malformed INM passes"},
        {NULL, NULL, "\"abc", NULL, true, E, 200, "unterminated tag"},
        {NULL, NULL, "\"xyz\"", same, true, E, 200, "IMS ignored beside INM"},
        /* 4. If-Modified-Since, GET/HEAD only */
        {NULL, NULL, NULL, same, true, E, 304, "IMS at mtime"},
        {NULL, NULL, NULL, newer, true, E, 304, "IMS after mtime"},
        {NULL, NULL, NULL, older, true, E, 200, "IMS before mtime"},
        {NULL, NULL, NULL, same, false, E, 200, "IMS ignored for POST"},
        {NULL, NULL, NULL, "yesterday", true, E, 200, "invalid IMS ignored"},
        /* the order between them */
        {"\"xyz\"", NULL, "\"abc\"", NULL, true, E, 412, "If-Match before INM"},
        {NULL, older, "\"abc\"", NULL, true, E, 412, "IUS before INM"},
        {NULL, older, NULL, same, true, E, 412, "IUS before IMS"},
        {"\"abc\"", NULL, "\"abc\"", NULL, true, E, 304, "If-Match passes, INM matches"},
    };
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        int got = weir__files_conditional(S(c[i].im), S(c[i].ius), S(c[i].inm), S(c[i].ims),
                                          c[i].get, S(c[i].etag), T0);
        cr_expect_eq(got, c[i].want, "%s: %d, want %d", c[i].why, got, c[i].want);
    }
}

Test(files_cond, if_range)
{
    char same[30], older[30], newer[30];
    weir_http_date(T0, same);
    weir_http_date(T0 - 1, older);
    weir_http_date(T0 + 1, newer);
    weir_str E = WEIR_STR("\"abc\"");
    cr_expect(weir__files_if_range(WEIR_STR_NULL, E, T0));
    cr_expect(weir__files_if_range(WEIR_STR("\"abc\""), E, T0));
    cr_expect(weir__files_if_range(WEIR_STR(" \"abc\" "), E, T0));
    cr_expect(!weir__files_if_range(WEIR_STR("\"xyz\""), E, T0));
    cr_expect(!weir__files_if_range(WEIR_STR("W/\"abc\""), E, T0), "weak never matches");
    cr_expect(!weir__files_if_range(WEIR_STR("\"abc\""), WEIR_STR("W/\"abc\""), T0));
    cr_expect(!weir__files_if_range(WEIR_STR("\"abc\", \"x\""), E, T0), "not a list");
    cr_expect(!weir__files_if_range(WEIR_STR("\"abc\""), WEIR_STR_NULL, T0));
    cr_expect(weir__files_if_range(S(same), E, T0));
    cr_expect(!weir__files_if_range(S(older), E, T0), "a date must equal mtime");
    cr_expect(!weir__files_if_range(S(newer), E, T0), "a date must equal mtime");
    cr_expect(!weir__files_if_range(WEIR_STR("garbage"), E, T0));
    cr_expect(!weir__files_if_range(WEIR_STR(""), E, T0));
}

/* ---- ranges ---- */

typedef struct range_case {
    const char *v;
    uint64_t size;
    int want;
    size_t n;
    weir_range r[3];
} range_case;

#define NONE WEIR_RANGE_NONE
#define OK WEIR_RANGE_OK
#define UNSAT WEIR_RANGE_UNSATISFIABLE

static void run_ranges(const range_case *c, size_t count, size_t max)
{
    for (size_t i = 0; i < count; i++) {
        weir_range out[32];
        size_t n = 99;
        size_t len = strlen(c[i].v);
        char *copy = malloc(len ? len : 1);
        memcpy(copy, c[i].v, len);
        int got = weir__range_parse((weir_str){copy, len}, c[i].size, out, max, &n);
        free(copy);
        cr_expect_eq(got, c[i].want, "'%s' size %llu: %d, want %d", c[i].v,
                     (unsigned long long)c[i].size, got, c[i].want);
        if (got != OK) {
            cr_expect_eq(n, 0, "'%s': n %zu", c[i].v, n);
            continue;
        }
        cr_expect_eq(n, c[i].n, "'%s': %zu ranges, want %zu", c[i].v, n, c[i].n);
        for (size_t k = 0; k < n && k < c[i].n && k < 3; k++) {
            cr_expect(out[k].start == c[i].r[k].start && out[k].len == c[i].r[k].len,
                      "'%s' range %zu: %llu+%llu, want %llu+%llu", c[i].v, k,
                      (unsigned long long)out[k].start, (unsigned long long)out[k].len,
                      (unsigned long long)c[i].r[k].start, (unsigned long long)c[i].r[k].len);
        }
    }
}

Test(files_range, forms)
{
    static const range_case c[] = {
        {"bytes=0-0", 100, OK, 1, {{0, 1}}},
        {"bytes=-1", 100, OK, 1, {{99, 1}}},
        {"bytes=5-", 100, OK, 1, {{5, 95}}},
        {"bytes=0-99", 100, OK, 1, {{0, 100}}},
        {"bytes=50-150", 100, OK, 1, {{50, 50}}},
        {"bytes=-200", 100, OK, 1, {{0, 100}}},
        {"bytes=99-", 100, OK, 1, {{99, 1}}},
        {"bytes=0-18446744073709551615", 100, OK, 1, {{0, 100}}},
        {"BYTES=0-1", 100, OK, 1, {{0, 2}}},
        {"bytes=0-1,3-4", 100, OK, 2, {{0, 2}, {3, 2}}},
        {"bytes=0-1, 3-4", 100, OK, 2, {{0, 2}, {3, 2}}},
        {"bytes=0-1 , 3-4", 100, OK, 2, {{0, 2}, {3, 2}}},
        {"bytes=0-1,\t3-4", 100, OK, 2, {{0, 2}, {3, 2}}},
        {"bytes=,0-1", 100, OK, 1, {{0, 2}}},
        {"bytes=0-1,,3-4,", 100, OK, 2, {{0, 2}, {3, 2}}},
        {" bytes=0-1 ", 100, OK, 1, {{0, 2}}},
        {"bytes=50-59,0-9", 100, OK, 2, {{50, 10}, {0, 10}}},
        {"bytes=200-300,0-0", 100, OK, 1, {{0, 1}}},
        {"bytes=0-1,-1", 100, OK, 2, {{0, 2}, {99, 1}}},
        {"bytes=0-", 1, OK, 1, {{0, 1}}},
        {"bytes=-5", 3, OK, 1, {{0, 3}}},
        {"bytes=1000-", 100, UNSAT, 0, {{0}}},
        {"bytes=100-100", 100, UNSAT, 0, {{0}}},
        {"bytes=-0", 100, UNSAT, 0, {{0}}},
        {"bytes=100-,200-", 100, UNSAT, 0, {{0}}},
        {"bytes=0-1", 0, UNSAT, 0, {{0}}},
        {"bytes=-5", 0, UNSAT, 0, {{0}}},
        {"bytes=0-", 0, UNSAT, 0, {{0}}},
        {"bytes=0-99999999999999999999999", 100, NONE, 0, {{0}}},
        {"bytes=18446744073709551616-", 100, NONE, 0, {{0}}},
        {"bytes=-99999999999999999999999", 100, NONE, 0, {{0}}},
        {"bytes=10-5", 100, NONE, 0, {{0}}},
        {"bytes=", 100, NONE, 0, {{0}}},
        {"bytes=,", 100, NONE, 0, {{0}}},
        {"bytes", 100, NONE, 0, {{0}}},
        {"items=0-1", 100, NONE, 0, {{0}}},
        {"bytes = 0-1", 100, NONE, 0, {{0}}},
        {"bytes =0-1", 100, NONE, 0, {{0}}},
        {"bytes= 0-1", 100, NONE, 0, {{0}}},
        {"bytes=0 -1", 100, NONE, 0, {{0}}},
        {"bytes=0- 1", 100, NONE, 0, {{0}}},
        {"bytes=0-1 3-4", 100, NONE, 0, {{0}}},
        {"bytes=0-1;", 100, NONE, 0, {{0}}},
        {"bytes=a-b", 100, NONE, 0, {{0}}},
        {"bytes=--1", 100, NONE, 0, {{0}}},
        {"bytes=1-2-3", 100, NONE, 0, {{0}}},
        {"bytes=-", 100, NONE, 0, {{0}}},
        {"bytes=+1-2", 100, NONE, 0, {{0}}},
        {"bytes=0x10-", 100, NONE, 0, {{0}}},
        {"bytes=0-1,garbage", 100, NONE, 0, {{0}}},
        {"bytes=1000-,x", 100, NONE, 0, {{0}}},
        {"", 100, NONE, 0, {{0}}},
    };
    run_ranges(c, sizeof(c) / sizeof(c[0]), 16);
    size_t n = 7;
    weir_range r[1];
    cr_expect_eq(weir__range_parse(WEIR_STR_NULL, 100, r, 1, &n), NONE);
    cr_expect_eq(n, 0);
}

Test(files_range, dos_rule)
{
    static const range_case c[] = {
        /* overlapping */
        {"bytes=0-5,3-8", 100, NONE, 0, {{0}}},
        {"bytes=0-,0-", 100, NONE, 0, {{0}}},
        {"bytes=-10,90-", 100, NONE, 0, {{0}}},
        {"bytes=0-4,5-9", 100, OK, 2, {{0, 5}, {5, 5}}},
        /* two small ranges in any order are fine */
        {"bytes=400-499,0-0", 10000, OK, 2, {{400, 100}, {0, 1}}},
        /* three or more: ascending, and 64 bytes on average */
        {"bytes=0-99,200-299,400-499", 10000, OK, 3, {{0, 100}, {200, 100}, {400, 100}}},
        {"bytes=400-499,0-99,200-299", 10000, NONE, 0, {{0}}},
        {"bytes=0-9,20-29,40-49", 10000, NONE, 0, {{0}}},
        {"bytes=0-0,10-10,20-300", 10000, OK, 3, {{0, 1}, {10, 1}, {20, 281}}},
        /* more than max (4 here) range-specs, satisfiable or not */
        {"bytes=0-99,200-299,400-499,600-699", 10000, OK, 4, {{0, 100}, {200, 100}, {400, 100}}},
        {"bytes=0-99,200-299,400-499,600-699,800-899", 10000, NONE, 0, {{0}}},
        {"bytes=0-99,20000-,30000-,40000-,50000-", 10000, NONE, 0, {{0}}},
    };
    run_ranges(c, sizeof(c) / sizeof(c[0]), 4);
    /* CVE-2011-3192's request. */
    char v[4096] = "bytes=0-";
    for (int i = 0; i < 400; i++)
        strcat(v, ",5-");
    weir_range out[16];
    size_t n;
    cr_expect_eq(weir__range_parse((weir_str){v, strlen(v)}, 1 << 20, out, 16, &n), NONE);
}

Test(files_range, never_reads_past_the_slice)
{
    static const char v[] = "bytes=0-12345";
    weir_range out[2];
    size_t n;
    cr_assert_eq(weir__range_parse((weir_str){v, 9}, 100000, out, 2, &n), OK);
    cr_expect(n == 1 && out[0].start == 0 && out[0].len == 2);
    cr_expect_eq(weir__range_parse((weir_str){v, 8}, 100000, out, 2, &n), OK);
    cr_expect(n == 1 && out[0].start == 0 && out[0].len == 100000, "\"bytes=0-\"");
}

/* ---- multipart/byteranges ---- */

Test(files_multipart, boundary)
{
    char a[33], b[33];
    cr_assert_eq(weir__multipart_boundary(a), 32);
    cr_assert_eq(weir__multipart_boundary(b), 32);
    cr_expect_eq(strlen(a), 32);
    cr_expect_eq(strspn(a, "0123456789abcdef"), 32);
    cr_expect_str_neq(a, b);
}

Test(files_multipart, part_head_and_tail)
{
    char out[256];
    weir_range r = {10, 5};
    size_t n = weir__multipart_part_head(out, sizeof(out), "B0", "text/plain", r, 100);
    cr_expect_str_eq(out, "\r\n--B0\r\nContent-Type: text/plain\r\n"
                          "Content-Range: bytes 10-14/100\r\n\r\n");
    cr_expect_eq(n, strlen(out));
    n = weir__multipart_part_head(out, sizeof(out), "B0", NULL, r, 100);
    cr_expect_str_eq(out, "\r\n--B0\r\nContent-Range: bytes 10-14/100\r\n\r\n");
    cr_expect_eq(n, strlen(out));
    size_t full = n;
    cr_expect_eq(weir__multipart_part_head(out, 8, "B0", NULL, r, 100), full, "truncated");
    cr_expect_eq(strlen(out), 7);
    cr_expect_eq(weir__multipart_part_head(NULL, 0, "B0", NULL, r, 100), full);
    n = weir__multipart_tail(out, sizeof(out), "B0");
    cr_expect_str_eq(out, "\r\n--B0--\r\n");
    cr_expect_eq(n, 10);
}

/* Builds the body as the plugin would and checks its length. */
static void check_length(const char *ct, const weir_range *r, size_t n, uint64_t size)
{
    char boundary[33];
    weir__multipart_boundary(boundary);
    char *file = malloc(size);
    for (uint64_t i = 0; i < size; i++)
        file[i] = (char)('a' + i % 26);
    size_t cap = 1 << 16, len = 0;
    char *body = malloc(cap);
    for (size_t i = 0; i < n; i++) {
        len += weir__multipart_part_head(body + len, cap - len, boundary, ct, r[i], size);
        memcpy(body + len, file + r[i].start, r[i].len);
        len += r[i].len;
    }
    len += weir__multipart_tail(body + len, cap - len, boundary);
    cr_assert(len < cap);
    cr_expect_eq(weir__multipart_length(boundary, ct, r, n, size), len);
    /* The first part's head, then its bytes. */
    char head[256];
    size_t h = weir__multipart_part_head(head, sizeof(head), boundary, ct, r[0], size);
    cr_expect(memcmp(body, head, h) == 0 && memcmp(body + h, file + r[0].start, r[0].len) == 0);
    free(body);
    free(file);
}

Test(files_multipart, length_is_what_is_produced)
{
    weir_range r[] = {{0, 10}, {50, 10}, {99, 1}};
    check_length("text/plain", r, 3, 100);
    check_length(NULL, r, 2, 100);
    check_length("application/octet-stream", r + 2, 1, 100);
    weir_range big[] = {{0, 1}, {9999, 1}};
    check_length("text/html", big, 2, 10000);
    char b[33];
    weir__multipart_boundary(b);
    cr_expect_eq(weir__multipart_length(b, "x/y", NULL, 0, 5),
                 strlen("\r\n--") + 32 + strlen("--\r\n"));
}

/* ---- listings ---- */

/* The listing of the directory rel (under the root) shown as path. */
static char *listing_of(const char *rel, const char *path, bool json, bool hidden, size_t *len)
{
    int fd = openat(root_fd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    cr_assert(fd >= 0, "%s: %s", rel, strerror(errno));
    char *out = NULL;
    int rc = weir__autoindex(fd, path, strlen(path), json, hidden, &out, len);
    close(fd);
    cr_assert_eq(rc, 0, "autoindex: %s", strerror(-rc));
    cr_assert(out);
    cr_assert_eq(strlen(out), *len);
    return out;
}

static char *listing(const char *path, bool json, bool hidden, size_t *len)
{
    return listing_of(".", path, json, hidden, len);
}

/* Every occurrence of the names in order. */
static void expect_order(const char *text, const char *const *names, size_t n)
{
    const char *p = text;
    for (size_t i = 0; i < n; i++) {
        const char *q = strstr(p, names[i]);
        cr_expect(q, "'%s' missing or out of order", names[i]);
        if (q)
            p = q + strlen(names[i]);
    }
}

Test(files_index, html_escaping_and_order)
{
    size_t len;
    char *h = listing("/", false, false, &len);
    cr_expect(strstr(h, "<title>Index of /</title>"));
    cr_expect(!strstr(h, "href=\"../\""), "no ../ at the root");
    static const char *const order[] = {
        "href=\"dir_link_in/\">dir_link_in/</a>",
        "href=\"sub/\">sub/</a>",
        "href=\"a%20b%26%3C%3E%22%27.txt\">a b&amp;&lt;&gt;&quot;&#39;.txt</a>",
        "href=\"bad%FF%FE.txt\">bad\xef\xbf\xbd\xef\xbf\xbd.txt</a>",
        "href=\"ctl%01.txt\">ctl\xef\xbf\xbd.txt</a>",
        "href=\"file.txt\">file.txt</a>",
        "href=\"index.html\">index.html</a>",
        "href=\"link_in\">link_in</a>",
    };
    expect_order(h, order, sizeof(order) / sizeof(order[0]));
    cr_expect(!strstr(h, "link_out"), "a link out of the folder is not listed");
    cr_expect(!strstr(h, "fifo"), "a FIFO is not listed");
    cr_expect(!strstr(h, "hidden"), "hidden entries are not listed");
    cr_expect(!strstr(h, "<>"), "a raw name leaked");
    cr_expect(!strstr(h, "\xff") && !strstr(h, "\x01"));
    /* file.txt: 10 bytes; directories "-" */
    cr_expect(strstr(h, "file.txt</a></td><td>"));
    cr_expect(strstr(h, "</td><td>10</td></tr>"));
    cr_expect(strstr(h, "sub/</a></td><td>"));
    struct stat st;
    char p[256];
    in_base(p, sizeof(p), "root/file.txt");
    stat(p, &st);
    struct tm tm;
    gmtime_r(&st.st_mtim.tv_sec, &tm);
    char when[64];
    strftime(when, sizeof(when), "<td>%d-%b-%Y %H:%M</td>", &tm);
    cr_expect(strstr(h, when), "no %s", when);
    free(h);
}

Test(files_index, html_path_and_parent)
{
    size_t len;
    char *h = listing_of("sub", "/sub", false, false, &len);
    cr_expect(strstr(h, "<title>Index of /sub/</title>"), "a trailing slash is added");
    cr_expect(strstr(h, "<a href=\"../\">../</a>"));
    cr_expect(strstr(h, "href=\"inner.txt\""));
    cr_expect(!strstr(h, ".hidden"));
    free(h);
    h = listing("/<script>&\"'/", false, false, &len);
    cr_expect(strstr(h, "<title>Index of /&lt;script&gt;&amp;&quot;&#39;/</title>"));
    cr_expect(!strstr(h, "<script>"));
    free(h);
    h = listing("/caf\xc3\xa9/\xff/", false, false, &len);
    cr_expect(strstr(h, "Index of /caf\xc3\xa9/\xef\xbf\xbd/"), "UTF-8 kept, the rest replaced");
    free(h);
}

Test(files_index, hidden_listed_when_asked)
{
    size_t len;
    char *h = listing("/", false, true, &len);
    cr_expect(strstr(h, "href=\".hidden\">.hidden</a>"));
    cr_expect(!strstr(h, "href=\"./\"") && !strstr(h, "href=\"../\""));
    free(h);
}

Test(files_index, json_is_valid_and_ordered)
{
    size_t len;
    char *text = listing("/", true, false, &len);
    json_error_t err;
    json_t *a = json_loads(text, 0, &err);
    cr_assert(a, "invalid JSON: %s: %s", err.text, text);
    cr_assert(json_is_array(a));
    static const char *const names[] = {
        "dir_link_in", "sub",      "a b&<>\"'.txt", "bad\xef\xbf\xbd\xef\xbf\xbd.txt",
        NAME_CTL,      "file.txt", "index.html",    "link_in",
    };
    size_t n = sizeof(names) / sizeof(names[0]);
    cr_assert_eq(json_array_size(a), n, "%s", text);
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(a, i);
        const char *name = json_string_value(json_object_get(o, "name"));
        const char *type = json_string_value(json_object_get(o, "type"));
        const char *mtime = json_string_value(json_object_get(o, "mtime"));
        cr_assert(name && type && mtime);
        cr_expect_str_eq(name, names[i]);
        bool dir = i < 2;
        cr_expect_str_eq(type, dir ? "directory" : "file");
        cr_expect_eq(json_object_get(o, "size") != NULL, !dir, "%s: size only for files", name);
        time_t t;
        cr_expect(weir_http_date_parse((weir_str){mtime, strlen(mtime)}, &t), "%s", mtime);
        if (strcmp(name, "file.txt") == 0)
            cr_expect_eq(json_integer_value(json_object_get(o, "size")), 10);
    }
    cr_expect(strstr(text, "ctl\\u0001.txt"), "a control character is escaped");
    json_decref(a);
    free(text);
    text = listing("/", true, true, &len);
    a = json_loads(text, 0, &err);
    cr_assert(a);
    cr_expect_eq(json_array_size(a), n + 1, "with .hidden");
    json_decref(a);
    free(text);
}

Test(files_index, empty_directory_and_dir_fd_kept)
{
    char p[256];
    in_base(p, sizeof(p), "root/sub/empty");
    cr_assert_eq(mkdir(p, 0755), 0);
    int fd = open(p, O_RDONLY | O_DIRECTORY);
    char *out;
    size_t len;
    for (int round = 0; round < 2; round++) { /* the dup is rewound: the same twice */
        cr_assert_eq(weir__autoindex(fd, "/sub/empty/", 11, true, true, &out, &len), 0);
        cr_expect_str_eq(out, "[]");
        free(out);
    }
    cr_expect(fcntl(fd, F_GETFD) >= 0, "dir_fd stays open");
    close(fd);
    cr_expect_eq(weir__autoindex(-1, "/", 1, false, false, &out, &len), -EBADF);
}

Test(files_index, too_many_entries)
{
    char p[256];
    in_base(p, sizeof(p), "root/many");
    cr_assert_eq(mkdir(p, 0755), 0);
    int dfd = open(p, O_RDONLY | O_DIRECTORY);
    cr_assert(dfd >= 0);
    for (int i = 0; i <= WEIR_AUTOINDEX_MAX; i++) {
        char name[16];
        snprintf(name, sizeof(name), "%d", i);
        int fd = openat(dfd, name, O_CREAT | O_WRONLY, 0644);
        cr_assert(fd >= 0);
        close(fd);
    }
    char *out = NULL;
    size_t len;
    cr_expect_eq(weir__autoindex(dfd, "/many/", 6, false, false, &out, &len), -E2BIG);
    cr_expect_null(out);
    close(dfd);
}
