/*
 * main.c - the weir program.
 *
 *     weir                          run the embedded default configuration
 *     weir -c weir.toml             run a configuration file
 *     weir -t -c weir.toml          check it: every error, exit 0 or 1
 *     weir --print-default-config   show the embedded default
 *     weir --listen ADDR --upstream ADDR...   a config-less proxy
 *
 * The config-less form is turned into the equivalent TOML and loaded like
 * a file, so there is one code path. weir uses libweir only through
 * include/weir/, like any other program.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "app/admin/admin.h"
#include "app/admin/prom_push.h"
#include "app/config/config.h"
#include "app/app.h"
#include "app/convert.h"
#include "app/acme/manager.h"
#include "app/ocsp.h"
#include "app/otel/export.h"
#include "app/otel/request.h"
#include "app/webhook.h"
#include "app/etcd/cli.h"
#include "app/etcd/source.h"
#include "weir/weir.h"

#define MAX_CLI_ADDRS 64

/* Lists every option of parse_args' table (tests/integration/test_cli.py
 * checks that none is missing) and the signals server.c handles. */
static void usage(FILE *f)
{
    fprintf(f, "Usage: weir [-c FILE] [-t] [-d] [-u] [options]\n"
               "       weir --listen ADDR --upstream ADDR [--upstream ADDR...] [options]\n"
               "\n"
               "Without -c or --listen/--upstream, weir runs its embedded default (see\n"
               "--print-default-config): a proxy on 127.0.0.1:6188 round-robining over two\n"
               "built-in echo upstreams on 127.0.0.1:6101 and 127.0.0.1:6102.\n"
               "\n"
               "Configuration:\n"
               "  -c, --config FILE            run the TOML configuration in FILE\n"
               "  -c etcd://HOST:PORT[,HOST:PORT]/PREFIX[?user=U&password=P]\n"
               "                               run the configuration stored in etcd under\n"
               "                               PREFIX, watching it (etcds:// for TLS)\n"
               "      --local FILE             with etcd: this instance's own sections,\n"
               "                               in place of etcd's of the same name\n"
               "  -t, --test                   check the configuration and exit (0 = valid)\n"
               "      --print-default-config   print the embedded default configuration\n"
               "  config push FILE URL         store FILE in etcd at URL, a key per section\n"
               "  config pull URL              print the configuration stored in etcd\n"
               "  convert --from pingap PATH   print the weir configuration for a Pingap one\n"
               "                               (a TOML file or a directory of them)\n"
               "\n"
               "Process:\n"
               "  -d, --daemon                 run in the background; exit 0 once serving\n"
               "  -u, --upgrade                take the listeners over from the weir running on\n"
               "                               [basic] upgrade_sock, which then drains and exits\n"
               "\n"
               "Config-less proxy:\n"
               "  -l, --listen ADDR            listen on ip:port (repeatable)\n"
               "      --upstream ADDR          round-robin to host:port (repeatable)\n"
               "  -a, --access-log FILE|-      access log to FILE, or - for stdout\n"
               "      --header-timeout MS      client request head timeout (default 10000)\n"
               "      --body-timeout MS        client body idle timeout (default 60000)\n"
               "      --keepalive-timeout MS   idle client connection timeout (default 60000)\n"
               "      --connect-timeout MS     upstream connect timeout (default 5000)\n"
               "      --read-timeout MS        upstream read timeout (default 60000)\n"
               "      --write-timeout MS       upstream write timeout (default 60000)\n"
               "      --max-body-size BYTES    request body limit, 413 beyond (default none)\n"
               "\n"
               "Always:\n"
               "  -n, --threads N              worker threads, 0 = one per CPU (default:\n"
               "                               [basic] threads, or one per CPU)\n"
               "      --grace-period MS        SIGTERM drain limit (default 10000)\n"
               "      --log-level LEVEL        error, warn, info or debug (default info)\n"
               "  -h, --help                   this help\n"
               "  -V, --version                print the version\n"
               "\n"
               "Signals:\n"
               "  SIGTERM, SIGINT  stop gracefully: in-flight requests finish within the grace\n"
               "                   period\n"
               "  SIGQUIT          stop at once\n"
               "  SIGHUP           reload the -c file (an invalid one is logged and ignored)\n"
               "  SIGUSR1          reopen the error log and access-log files\n");
}

enum {
    OPT_GRACE = 256,
    OPT_HEADER_TIMEOUT,
    OPT_BODY_TIMEOUT,
    OPT_KEEPALIVE_TIMEOUT,
    OPT_CONNECT_TIMEOUT,
    OPT_READ_TIMEOUT,
    OPT_WRITE_TIMEOUT,
    OPT_MAX_BODY,
    OPT_LOG_LEVEL,
    OPT_PRINT_DEFAULT,
    OPT_LOCAL,
};

/* A growing string for the synthesized configuration. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_add(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *np = realloc(b->p, cap);
        if (!np)
            return;
        b->p = np;
        b->cap = cap;
    }
}

/* Appends s as a TOML basic string. */
static void sb_quote(sbuf *b, const char *s)
{
    sb_add(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            sb_add(b, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            sb_add(b, "\\u%04x", c);
        else
            sb_add(b, "%c", c);
    }
    sb_add(b, "\"");
}

static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || errno || v > max || s[0] == '-')
        return false;
    *out = v;
    return true;
}

/* "host:port" or "[v6]:port" with a numeric port 1..65535. */
static bool host_port_ok(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || !colon[1])
        return false;
    if (s[0] == '[' && colon[-1] != ']')
        return false;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    return *end == '\0' && port >= 1 && port <= 65535 && colon[1] != '-' && colon[1] != '+';
}

typedef struct cli {
    const char *config;
    const char *local; /* --local: the instance's own sections over etcd's */
    bool test;
    bool upgrade;
    bool daemon;
    const char *listen[MAX_CLI_ADDRS];
    size_t n_listen;
    const char *upstream[MAX_CLI_ADDRS];
    size_t n_upstream;
    const char *access_log;
    const char *log_level;
    int threads; /* with has_threads: 0 = one per CPU, like [basic] threads = 0 */
    bool has_threads;
    uint32_t grace_ms;
    uint64_t timeouts[7]; /* by OPT_HEADER_TIMEOUT - OPT_HEADER_TIMEOUT ... */
    uint64_t max_body;
    bool has_max_body;
} cli;

static const char *const timeout_keys[] = {
    "client_header_timeout", "client_body_timeout", "keepalive_timeout",
    "connection_timeout",    "read_timeout",        "write_timeout",
};

/* The TOML of a config-less invocation. */
static char *synthesize(const cli *c)
{
    sbuf b = {0};
    sb_add(&b, "[servers.cli]\naddr = [");
    for (size_t i = 0; i < c->n_listen; i++) {
        sb_add(&b, i ? ", " : "");
        sb_quote(&b, c->listen[i]);
    }
    sb_add(&b, "]\nlocations = [\"all\"]\n");
    if (c->access_log) {
        sb_add(&b, "access_log = \"main\"\naccess_log_file = ");
        sb_quote(&b, c->access_log);
        sb_add(&b, "\n");
    }
    for (int i = 0; i < 3; i++) {
        if (c->timeouts[i])
            sb_add(&b, "%s = \"%llums\"\n", timeout_keys[i], (unsigned long long)c->timeouts[i]);
    }
    if (c->has_max_body)
        sb_add(&b, "max_body_size = %llu\n", (unsigned long long)c->max_body);
    sb_add(&b, "\n[locations.all]\nupstream = \"cli\"\n\n[upstreams.cli]\naddrs = [");
    for (size_t i = 0; i < c->n_upstream; i++) {
        sb_add(&b, i ? ", " : "");
        sb_quote(&b, c->upstream[i]);
    }
    sb_add(&b, "]\n");
    for (int i = 3; i < 6; i++) {
        if (c->timeouts[i])
            sb_add(&b, "%s = \"%llums\"\n", timeout_keys[i], (unsigned long long)c->timeouts[i]);
    }
    return b.p;
}

static int parse_args(int argc, char **argv, cli *c)
{
    static const struct option long_opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"upgrade", no_argument, NULL, 'U'},
        {"daemon", no_argument, NULL, 'd'},
        {"print-default-config", no_argument, NULL, OPT_PRINT_DEFAULT},
        {"local", required_argument, NULL, OPT_LOCAL},
        {"listen", required_argument, NULL, 'l'},
        {"upstream", required_argument, NULL, 'p'},
        {"threads", required_argument, NULL, 'n'},
        {"access-log", required_argument, NULL, 'a'},
        {"grace-period", required_argument, NULL, OPT_GRACE},
        {"header-timeout", required_argument, NULL, OPT_HEADER_TIMEOUT},
        {"body-timeout", required_argument, NULL, OPT_BODY_TIMEOUT},
        {"keepalive-timeout", required_argument, NULL, OPT_KEEPALIVE_TIMEOUT},
        {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
        {"read-timeout", required_argument, NULL, OPT_READ_TIMEOUT},
        {"write-timeout", required_argument, NULL, OPT_WRITE_TIMEOUT},
        {"max-body-size", required_argument, NULL, OPT_MAX_BODY},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int o;
    uint64_t v;
    while ((o = getopt_long(argc, argv, "c:tl:un:a:hVd", long_opts, NULL)) != -1) {
        switch (o) {
        case 'c':
            c->config = optarg;
            break;
        case 't':
            c->test = true;
            break;
        case OPT_LOCAL:
            c->local = optarg;
            break;
        case 'u':
        case 'U':
            c->upgrade = true;
            break;
        case 'd':
            c->daemon = true;
            break;
        case OPT_PRINT_DEFAULT:
            fputs(weir__default_config, stdout);
            return 0;
        case 'l':
        case 'p':
            if ((o == 'l' ? c->n_listen : c->n_upstream) == MAX_CLI_ADDRS) {
                fprintf(stderr, "weir: at most %d addresses per option\n", MAX_CLI_ADDRS);
                return 2;
            }
            if (!host_port_ok(optarg) || strpbrk(optarg, " \t\"\\")) {
                fprintf(stderr, "weir: %s '%s': expected %s\n",
                        o == 'l' ? "--listen" : "--upstream", optarg,
                        o == 'l' ? "ip:port" : "host:port");
                return 2;
            }
            if (o == 'l')
                c->listen[c->n_listen++] = optarg;
            else
                c->upstream[c->n_upstream++] = optarg;
            break;
        case 'n':
            if (!parse_u64(optarg, 1024, &v)) {
                fprintf(stderr, "weir: --threads '%s': expected 0 (one per CPU) or 1..1024\n",
                        optarg);
                return 2;
            }
            c->threads = (int)v;
            c->has_threads = true;
            break;
        case 'a':
            c->access_log = optarg;
            break;
        case OPT_LOG_LEVEL:
            c->log_level = optarg;
            if (weir_set_log_level(optarg) != WEIR_OK) {
                fprintf(stderr, "weir: --log-level '%s': expected error, warn, info or debug\n",
                        optarg);
                return 2;
            }
            break;
        case OPT_MAX_BODY:
            if (!parse_u64(optarg, UINT64_MAX / 2, &v)) {
                fprintf(stderr, "weir: --max-body-size '%s': expected a byte count\n", optarg);
                return 2;
            }
            c->max_body = v;
            c->has_max_body = true;
            break;
        case OPT_GRACE:
        case OPT_HEADER_TIMEOUT:
        case OPT_BODY_TIMEOUT:
        case OPT_KEEPALIVE_TIMEOUT:
        case OPT_CONNECT_TIMEOUT:
        case OPT_READ_TIMEOUT:
        case OPT_WRITE_TIMEOUT:
            if (!parse_u64(optarg, 86400000, &v) || v == 0) {
                fprintf(stderr, "weir: %s '%s': expected milliseconds (1..86400000)\n",
                        argv[optind - 1], optarg);
                return 2;
            }
            if (o == OPT_GRACE)
                c->grace_ms = (uint32_t)v;
            else
                c->timeouts[o - OPT_HEADER_TIMEOUT] = v;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("weir %s\n", weir_version());
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "weir: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if ((c->n_listen == 0) != (c->n_upstream == 0)) {
        fprintf(stderr, "weir: --listen and --upstream go together\n");
        return 2;
    }
    if (c->config && c->n_listen) {
        fprintf(stderr, "weir: -c and --listen/--upstream exclude each other\n");
        return 2;
    }
    bool cli_only = c->access_log || c->has_max_body;
    for (int i = 0; i < 6; i++)
        cli_only = cli_only || c->timeouts[i];
    if (cli_only && !c->n_listen) {
        fprintf(stderr, "weir: --access-log, --max-body-size and the timeouts go with "
                        "--listen/--upstream; set them in the configuration file otherwise\n");
        return 2;
    }
    if (c->local && !(c->config && weir__is_etcd_url(c->config))) {
        fprintf(stderr, "weir: --local goes with -c etcd://...: a file configuration has no "
                        "other source to add to\n");
        return 2;
    }
    return -1; /* go on */
}

static weir_etcd_source *etcd_source;
static weir_acme_manager *acme_manager; /* certificates with acme */

static weir_config *load(const cli *c, weir_cfg_errors *errs)
{
    if (c->config && weir__is_etcd_url(c->config)) {
        weir_config *cfg = NULL;
        etcd_source = weir__etcd_source_open(c->config, c->local, &cfg, errs);
        return cfg;
    }
    if (c->config)
        return weir__config_load_file(c->config, errs);
    if (c->n_listen) {
        char *text = synthesize(c);
        if (!text)
            return NULL;
        weir_config *cfg = weir__config_load(text, strlen(text), "command line", errs);
        free(text);
        return cfg;
    }
    return weir__config_load(weir__default_config, strlen(weir__default_config), "default config",
                             errs);
}

/* [basic] settings that act on the process (before any thread starts). */
static int apply_basic(const weir_config *cfg, const cli *c)
{
    const weir_cfg_basic *b = &cfg->basic;
    /* The command line wins over the file. */
    if (b->log_level && !c->log_level)
        weir_set_log_level(b->log_level);
    if (b->error_log) {
        int fd = open(b->error_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "weir: error_log %s: %s\n", b->error_log, strerror(errno));
            return -1;
        }
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
    return 0;
}

/* What the signal hooks need. */
/* Writes our pid (after any fork, so it is the server's). */
static int write_pid_file(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "weir: pid_file %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "%ld\n", (long)getpid());
    fclose(f);
    return 0;
}

/* Removes the pid file if it is still ours: after an upgrade it names the
 * new process. */
static void remove_pid_file(const char *path)
{
    FILE *f = fopen(path, "r");
    long pid = 0;
    if (!f)
        return;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = 0;
    fclose(f);
    if (pid == (long)getpid())
        unlink(path);
}

/*
 * -d: the parent waits until the daemon serves (or fails) so that its exit
 * status tells; the daemon runs in its own session with stdio on /dev/null
 * (stderr on error_log when set). Returns the fd the daemon reports
 * readiness on, -1 in the foreground; the parent never returns.
 */
static int daemonize(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        fprintf(stderr, "weir: -d: %s\n", strerror(errno));
        exit(1);
    }
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "weir: -d: %s\n", strerror(errno));
        exit(1);
    }
    if (pid > 0) {
        close(p[1]);
        char ok = 0;
        ssize_t n;
        do {
            n = read(p[0], &ok, 1); /* EOF: the daemon died before serving */
        } while (n < 0 && errno == EINTR);
        _exit(n == 1 && ok == 1 ? 0 : 1);
    }
    close(p[0]);
    setsid();
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        close(null);
    }
    return p[1];
}

static void report_ready(int fd)
{
    char ok = 1;
    if (fd >= 0) {
        ssize_t n = write(fd, &ok, 1);
        (void)n;
        close(fd);
    }
}

typedef struct running {
    weir_app *app;
    weir_server *srv;
    const char *config_path; /* NULL: nothing to reload */
    const char *error_log;   /* NULL: stderr as started */
    int ready_fd;            /* -d: tells the waiting parent, else -1 */
} running;

static void on_started(void *arg)
{
    running *r = arg;
    if (etcd_source && r->app && weir__etcd_source_start(etcd_source, r->app, r->srv) != WEIR_OK)
        weir_log(WEIR_LEVEL_ERROR, "etcd: not watching: changes in etcd are not served");
    if (r->app) {
        weir_config *cfg = weir__app_config(r->app);
        weir__webhook_start(r->app, r->srv, cfg);
        weir__trace_configure(cfg);
        weir__config_unref(cfg);
        weir__prom_push_configure(r->app);
    }
    if (r->app)
        weir__ocsp_start(r->app);
    if (r->app && !(acme_manager = weir__acme_manager_start(r->app, r->srv, etcd_source)))
        weir_log(WEIR_LEVEL_ERROR, "acme: cannot start: no certificate will be ordered");
    report_ready(r->ready_fd);
    r->ready_fd = -1;
}

static void on_reload(void *arg)
{
    running *r = arg;
    if (!r->app)
        return;
    if (etcd_source) {
        weir__etcd_source_reload(etcd_source, NULL);
        return;
    }
    if (!r->config_path) {
        weir_log(WEIR_LEVEL_WARN, "reload: weir runs without a configuration file (-c)");
        return;
    }
    weir__app_reload(r->app, r->config_path, r->srv);
}

static void on_reopen_logs(void *arg)
{
    running *r = arg;
    if (r->error_log) {
        int fd = open(r->error_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, STDERR_FILENO);
            close(fd);
        } else {
            weir_log(WEIR_LEVEL_ERROR, "error_log %s: %s", r->error_log, strerror(errno));
        }
    }
    if (r->app)
        weir__app_reopen_logs(r->app);
}

/*
 * Every connection, tunnel and UDP session holds descriptors; the usual
 * soft limit (1024) would run out long before the defaults do (UDP
 * max_sessions alone is 4096). As HAProxy does, the soft limit goes up to
 * the hard one (at most 1M); a failure keeps the old limit.
 */
static void raise_fd_limit(void)
{
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) != 0)
        return;
    rlim_t want = r.rlim_max == RLIM_INFINITY || r.rlim_max > (1u << 20) ? (1u << 20) : r.rlim_max;
    if (r.rlim_cur < want) {
        r.rlim_cur = want;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "convert") == 0) {
        if (argc == 5 && strcmp(argv[2], "--from") == 0 && strcmp(argv[3], "pingap") == 0)
            return weir__convert_pingap(argv[4], stdout, stderr);
        fprintf(stderr, "usage: weir convert --from pingap FILE|DIR\n");
        return 2;
    }
    if (argc >= 2 && strcmp(argv[1], "config") == 0) {
        if (argc == 5 && strcmp(argv[2], "push") == 0)
            return weir__config_push(argv[3], argv[4], stdout, stderr);
        if (argc == 4 && strcmp(argv[2], "pull") == 0)
            return weir__config_pull(argv[3], stdout, stderr);
        fprintf(stderr, "usage: weir config push FILE etcd://HOST:PORT/PREFIX\n"
                        "       weir config pull etcd://HOST:PORT/PREFIX\n");
        return 2;
    }
    cli c = {0};
    int rc = parse_args(argc, argv, &c);
    if (rc >= 0)
        return rc;

    weir_cfg_errors errs = {0};
    weir_config *cfg = load(&c, &errs);
    if (!cfg) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.v[i]);
        if (errs.n == 0)
            fprintf(stderr, "weir: cannot load the configuration: out of memory\n");
        char *shown = c.config ? weir__etcd_url_masked(c.config) : NULL;
        fprintf(stderr, "weir: configuration %s has %zu error%s\n", shown ? shown : "", errs.n,
                errs.n == 1 ? "" : "s");
        free(shown);
        weir__cfg_errors_free(&errs);
        return 1;
    }
    if (c.test) {
        char *shown = c.config ? weir__etcd_url_masked(c.config) : NULL;
        printf("weir: configuration %s is valid\n", shown        ? shown
                                                    : c.n_listen ? "(command line)"
                                                                 : "(default)");
        free(shown);
        weir__config_unref(cfg);
        weir__etcd_source_free(etcd_source);
        return 0;
    }
    if (c.upgrade && !cfg->basic.upgrade_sock) {
        fprintf(stderr, "weir: -u needs [basic] upgrade_sock, the socket the running weir "
                        "offers its listeners on\n");
        weir__config_unref(cfg);
        return 2;
    }
    raise_fd_limit();
    if (apply_basic(cfg, &c) < 0) {
        weir__config_unref(cfg);
        return 1;
    }
    int ready_fd = c.daemon ? daemonize() : -1;
    if (c.daemon && !cfg->basic.error_log) {
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null >= 0) {
            dup2(null, STDERR_FILENO);
            close(null);
        }
    }
    if (cfg->basic.pid_file && write_pid_file(cfg->basic.pid_file) < 0) {
        weir__config_unref(cfg);
        return 1;
    }
    static running run_state;
    weir_server_options sopts = {
        .threads = c.has_threads ? c.threads : cfg->basic.threads, /* 0: one per CPU */
        .grace_period_ms = c.grace_ms ? c.grace_ms : cfg->basic.grace_period_ms,
        .handle_signals = true,
        .on_reload = on_reload,
        .on_reopen_logs = on_reopen_logs,
        .signal_arg = &run_state,
        .upgrade_sock = cfg->basic.upgrade_sock,
        .on_started = on_started,
    };
    weir_server *srv = weir_server_new(&sopts);
    if (!srv) {
        weir__config_unref(cfg);
        fprintf(stderr, "weir: out of memory\n");
        return 1;
    }
    /* The app takes one reference; ours keeps [basic] readable to the end. */
    weir_app *app = weir__app_new(weir__config_ref(cfg), srv);
    run_state = (running){app, srv, c.config, cfg->basic.error_log, ready_fd};
    rc = app ? WEIR_OK : WEIR_ERR_INVAL;
    /* The admin API: one more service, on its own listener. */
    weir_admin *admin = NULL;
    if (rc == WEIR_OK && cfg->admin.addr) {
        admin = weir__admin_start(app, srv, etcd_source ? NULL : c.config);
        if (!admin)
            rc = WEIR_ERR_INVAL;
        else if (etcd_source)
            weir__admin_set_etcd(admin, etcd_source);
    }
    if (rc == WEIR_OK && c.upgrade)
        rc = weir_server_take_over(srv, cfg->basic.upgrade_sock);
    if (rc == WEIR_OK)
        rc = weir_server_run(srv);
    run_state.app = NULL;
    weir__webhook_emit(WEIR_EV_STOP, NULL, "weir stopped (pid %d)", (int)getpid());
    weir__webhook_stop(2000);
    weir__otlp_stop(2000);
    weir__prom_push_stop();
    weir__acme_manager_stop(acme_manager);
    acme_manager = NULL;
    weir__ocsp_stop();
    weir__etcd_source_stop(etcd_source);
    weir__admin_free(admin);
    weir__app_free(app);
    weir_server_free(srv);
    if (cfg->basic.pid_file)
        remove_pid_file(cfg->basic.pid_file);
    weir__config_unref(cfg);
    weir__etcd_source_free(etcd_source);
    if (rc != WEIR_OK) {
        fprintf(stderr, "weir: cannot start: %s\n",
                rc == WEIR_ERR_INVAL ? "invalid setup (see above)"
                                     : strerror(rc < 0 && rc > -4096 ? -rc : EIO));
        return 1;
    }
    return 0;
}
