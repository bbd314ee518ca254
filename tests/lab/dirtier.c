/*
 * dirtier: the lab guest's workload. It dirties guest memory at a known rate so
 * that live migration has something to converge (or not) on, and prints a
 * heartbeat line to the console so tests can prove the guest keeps running.
 *
 * Parameters come from the kernel command line (/proc/cmdline), or from argv
 * when any are given (handy to try it on the host):
 *
 *   dirty_mode=idle|loop|fresh|phases   what to do (default idle)
 *   dirty_mb=N                   working set in MiB (default 64)
 *   dirty_rate=R                 MiB/s of pages dirtied, 0 = unlimited (default 0)
 *   dirty_report=S               seconds between heartbeats (default 1)
 *   dirty_busy_s=S dirty_idle_s=S  phases: seconds of each phase (default 15 and 15)
 *
 * idle:  sleep, printing heartbeats.
 * loop:  allocate N MiB once, touch it, then walk it page by page forever,
 *        incrementing one 8-byte counter per 4 KiB page (xbzrle's best case).
 * phases: loop for dirty_busy_s seconds, then sleep for dirty_idle_s, and again (a
 *        guest with busy and quiet spells: "retry when it is idle" should win).
 * fresh: malloc 4 MiB chunks, fill each with new xorshift data, keep a ring of
 *        N MiB and free the oldest (like `stress --vm`).
 *
 * Heartbeat line: "converge-heartbeat <n> mode=<mode> dirtied_mib=<total>",
 * <n> counting up from 1.
 *
 * Build: gcc -O2 -static -Wall -Wextra -o dirtier dirtier.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAGE 4096UL
#define MIB (1024UL * 1024UL)
#define STEP (256UL * 1024UL) /* bytes dirtied between clock checks */
#define CHUNK (4UL * MIB)     /* fresh mode allocation unit */

enum mode { MODE_IDLE, MODE_LOOP, MODE_FRESH, MODE_PHASES };
static const char *const mode_names[] = { "idle", "loop", "fresh", "phases" };

struct params {
    enum mode mode;
    unsigned long mb;
    unsigned long rate;   /* MiB/s, 0 = unlimited */
    unsigned long report; /* seconds between heartbeats */
    unsigned long busy;   /* phases: seconds busy, then */
    unsigned long quiet;  /* seconds idle */
};

/* ---- time ---------------------------------------------------------------- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_for(double seconds)
{
    struct timespec ts;
    if (seconds <= 0)
        return;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- heartbeat and rate limit -------------------------------------------- */

struct heart {
    const char *mode;
    unsigned long count;
    double period;
    double next;      /* when the next heartbeat is due */
    uint64_t dirtied; /* bytes dirtied since start */
};

struct limiter {
    double rate;  /* bytes/s, 0 = unlimited */
    double start; /* start of the current accounting window */
    double done;  /* bytes dirtied in this window */
};

static void beat(struct heart *h)
{
    h->count++;
    printf("converge-heartbeat %lu mode=%s dirtied_mib=%llu\n", h->count, h->mode,
           (unsigned long long)(h->dirtied / MIB));
    fflush(stdout);
}

/* Print a heartbeat if one is due at time t. */
static void heart_check(struct heart *h, double t)
{
    if (t < h->next)
        return;
    beat(h);
    h->next += h->period;
    if (h->next < t) /* we were stopped (e.g. paused guest): no burst */
        h->next = t + h->period;
}

/* The workload is set up: first heartbeat now, start the clocks. */
static void go(struct heart *h, struct limiter *l)
{
    beat(h);
    h->next = now() + h->period;
    l->start = now();
    l->done = 0;
}

/* Account for `bytes` just dirtied; sleep while ahead of the rate. */
static void throttle(struct limiter *l, struct heart *h, uint64_t bytes)
{
    double t = now();

    h->dirtied += bytes;
    if (l->rate > 0) {
        l->done += (double)bytes;
        double ahead = l->done / l->rate - (t - l->start);
        if (ahead > 0) {
            sleep_for(ahead);
            t = now();
        } else if (ahead < -0.25) {
            /* More than 250 ms behind (guest paused, slow vCPU): restart the
             * window rather than catch up with a burst. */
            l->start = t;
            l->done = 0;
        }
    }
    heart_check(h, t);
}

/* ---- parameters ---------------------------------------------------------- */

static int parse_word(struct params *p, const char *w)
{
    static const char *const names[] = { "dirty_mb=", "dirty_rate=", "dirty_report=",
                                         "dirty_busy_s=", "dirty_idle_s=" };
    unsigned long *slots[] = { &p->mb, &p->rate, &p->report, &p->busy, &p->quiet };

    if (strncmp(w, "dirty_mode=", 11) == 0) {
        for (int m = MODE_IDLE; m <= MODE_PHASES; m++)
            if (strcmp(w + 11, mode_names[m]) == 0) {
                p->mode = (enum mode)m;
                return 0;
            }
        fprintf(stderr, "dirtier: unknown %s\n", w);
        return -1;
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t n = strlen(names[i]);
        char *end;
        if (strncmp(w, names[i], n) != 0)
            continue;
        errno = 0;
        unsigned long v = strtoul(w + n, &end, 10);
        if (errno || end == w + n || *end) {
            fprintf(stderr, "dirtier: bad number in %s\n", w);
            return -1;
        }
        *slots[i] = v;
        return 0;
    }
    return 0; /* some other kernel parameter */
}

static int parse_cmdline(struct params *p)
{
    char buf[4096];
    FILE *f = fopen("/proc/cmdline", "r");
    size_t n;

    if (!f) {
        perror("dirtier: /proc/cmdline");
        return -1;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *save = NULL;
    for (char *w = strtok_r(buf, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save))
        if (parse_word(p, w) < 0)
            return -1;
    return 0;
}

/* ---- workloads ----------------------------------------------------------- */

static void run_idle(struct heart *h, struct limiter *l)
{
    go(h, l);
    for (;;) {
        sleep_for(h->next - now());
        heart_check(h, now());
    }
}

/* The dirty_mb working set of loop and phases, every page touched once. */
static volatile unsigned char *working_set(const struct params *p)
{
    size_t size = p->mb * MIB;
    volatile unsigned char *buf = malloc(size);

    if (!buf) {
        fprintf(stderr, "dirtier: cannot allocate %lu MiB\n", p->mb);
        exit(1);
    }
    for (size_t off = 0; off < size; off += PAGE)
        *(volatile uint64_t *)(buf + off) = 0;
    return buf;
}

static void run_loop(const struct params *p, struct heart *h, struct limiter *l)
{
    size_t size = p->mb * MIB;
    volatile unsigned char *buf = working_set(p);

    go(h, l);
    for (;;)
        for (size_t off = 0; off < size; off += STEP) {
            size_t end = off + STEP < size ? off + STEP : size;
            for (size_t pg = off; pg < end; pg += PAGE)
                (*(volatile uint64_t *)(buf + pg))++;
            throttle(l, h, end - off);
        }
}

static void run_phases(const struct params *p, struct heart *h, struct limiter *l)
{
    size_t size = p->mb * MIB;
    volatile unsigned char *buf = working_set(p);

    go(h, l);
    for (;;) {
        double until = now() + (double)p->busy;
        size_t off = 0;
        while (now() < until) {
            size_t end = off + STEP < size ? off + STEP : size;
            for (size_t pg = off; pg < end; pg += PAGE)
                (*(volatile uint64_t *)(buf + pg))++;
            throttle(l, h, end - off);
            off = end < size ? end : 0;
        }
        until = now() + (double)p->quiet;
        while (now() < until) {
            sleep_for(until - now() < 0.2 ? until - now() : 0.2);
            heart_check(h, now());
        }
        l->start = now(); /* no catching up on the quiet spell */
        l->done = 0;
    }
}

static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void run_fresh(const struct params *p, struct heart *h, struct limiter *l)
{
    size_t slots = p->mb / 4 ? p->mb / 4 : 1;
    uint64_t **ring = calloc(slots, sizeof(*ring));
    uint64_t seed = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(now() * 1e9);
    size_t head = 0;

    if (!ring) {
        fprintf(stderr, "dirtier: out of memory\n");
        exit(1);
    }
    /* Chunks come from (and go back to) mmap, so each is fresh memory as with
     * `stress --vm`; otherwise glibc would recycle the same heap pages. */
    mallopt(M_MMAP_THRESHOLD, (int)MIB);

    go(h, l);
    for (;;) {
        free(ring[head]); /* the oldest chunk, once the ring is full */
        ring[head] = malloc(CHUNK);
        if (!ring[head]) {
            fprintf(stderr, "dirtier: cannot allocate a 4 MiB chunk\n");
            exit(1);
        }
        uint64_t *c = ring[head];
        for (size_t off = 0; off < CHUNK; off += STEP) {
            for (size_t i = off / 8; i < (off + STEP) / 8; i++)
                c[i] = xorshift64(&seed);
            throttle(l, h, STEP);
        }
        head = (head + 1) % slots;
    }
}

int main(int argc, char **argv)
{
    struct params p = { MODE_IDLE, 64, 0, 1, 15, 15 };
    struct heart h = { 0 };
    struct limiter l = { 0 };

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            if (parse_word(&p, argv[i]) < 0)
                return 2;
    } else if (parse_cmdline(&p) < 0) {
        return 2;
    }
    if (p.report == 0)
        p.report = 1;
    if (p.mb == 0 && p.mode != MODE_IDLE) {
        fprintf(stderr, "dirtier: dirty_mb must be > 0 for mode %s\n", mode_names[p.mode]);
        return 2;
    }
    printf("converge-dirtier start mode=%s dirty_mb=%lu dirty_rate=%lu dirty_report=%lu\n",
           mode_names[p.mode], p.mb, p.rate, p.report);

    h.mode = mode_names[p.mode];
    h.period = (double)p.report;
    l.rate = (double)p.rate * (double)MIB;
    switch (p.mode) {
    case MODE_IDLE:
        run_idle(&h, &l);
        break;
    case MODE_LOOP:
        run_loop(&p, &h, &l);
        break;
    case MODE_FRESH:
        run_fresh(&p, &h, &l);
        break;
    case MODE_PHASES:
        run_phases(&p, &h, &l);
        break;
    }
    return 0;
}
