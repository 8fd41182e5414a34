/* PID 1 of the Linux half of the hwbp/Linux comparison (tests/linux-compare).
 *
 * Booted by run.sh under QEMU TCG with -icount shift=0,sleep=off, where rdtsc
 * reads QEMU's virtual clock, which advances one tick per guest instruction
 * (and jumps ahead while every vCPU is idle). It measures, as medians over
 * many repetitions, what Linux's perf breakpoint code costs in guest
 * instructions, prints one "figure" line per operation and powers off.
 *
 * Output format (one line each, parsed by table.py):
 *   figure <key> <median> reps=<n> min=<m> max=<M>   guest instructions
 *   check <name> ok|FAIL <details>                   a sanity check
 *   calib <name> <value> ...                         the rdtsc/icount checks
 *   linux-compare: done <failed checks>              last line
 * Everything is written to the console (ttyS0) with write(2), unbuffered.
 *
 * Built with gcc -static (Debian's libc6-dev); no busybox, no shell.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/hw_breakpoint.h>
#include <linux/perf_event.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static int failed_checks;

static void out(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof buf - 1)
        n = sizeof buf - 1;
    for (int off = 0; off < n;) {
        ssize_t w = write(1, buf + off, n - off);
        if (w <= 0)
            break;
        off += w;
    }
}

static void check(const char *name, int ok, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    out("check %s %s %s\n", name, ok ? "ok" : "FAIL", buf);
    if (!ok)
        failed_checks++;
}

static void power_off(void)
{
    sync();
    reboot(RB_POWER_OFF);
    for (;;)
        pause();
}

/* rdtsc: under TCG with icount, QEMU ends the translation block at rdtsc and
 * counts the instructions executed so far exactly. */
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)::"memory");
    return ((uint64_t)hi << 32) | lo;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

struct stats {
    uint64_t median, min, max;
    int n;
};

static struct stats stats_of(uint64_t *v, int n)
{
    qsort(v, n, sizeof *v, cmp_u64);
    struct stats s = {v[n / 2], v[0], v[n - 1], n};
    return s;
}

static void figure(const char *key, uint64_t median, struct stats raw)
{
    out("figure %s %llu reps=%d min=%llu max=%llu\n", key,
        (unsigned long long)median, raw.n, (unsigned long long)raw.min,
        (unsigned long long)raw.max);
}

static long perf_event_open(struct perf_event_attr *attr, pid_t pid, int cpu,
                            int group_fd, unsigned long flags)
{
    return syscall(SYS_perf_event_open, attr, pid, cpu, group_fd, flags);
}

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY);
    if (fd < 0) {
        out("note cannot open %s: %s\n", path, strerror(errno));
        return;
    }
    if (write(fd, text, strlen(text)) < 0)
        out("note cannot write %s to %s: %s\n", text, path, strerror(errno));
    close(fd);
}

static void print_file(const char *label, const char *path)
{
    char buf[512];
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = 0;
    while (n > 0 && buf[n - 1] == '\n')
        buf[--n] = 0;
    out("info %s %s\n", label, buf);
}

/* ---- timing primitives ------------------------------------------------- */

/* K iterations of "dec; jnz": exactly 2K instructions. */
static uint64_t timed_loop(uint64_t k)
{
    uint64_t t0 = rdtsc();
    __asm__ volatile("1: dec %0\n\tjnz 1b" : "+r"(k)::"cc");
    return rdtsc() - t0;
}

/* n 8-byte stores to *p: "mov; dec; jnz" per store. */
static void store_loop(volatile uint64_t *p, uint64_t n)
{
    __asm__ volatile("1: movq %1, (%2)\n\tdec %0\n\tjnz 1b"
                     : "+r"(n)
                     : "r"(n), "r"(p)
                     : "cc", "memory");
}

static uint64_t overhead; /* median of rdtsc(); rdtsc() */

/* ---- calibration: does rdtsc count guest instructions? ----------------- */

static void calibrate(void)
{
    enum { REPS = 201 };
    static uint64_t v[REPS];
    for (int i = 0; i < REPS; i++) {
        uint64_t t0 = rdtsc();
        v[i] = rdtsc() - t0;
    }
    struct stats s = stats_of(v, REPS);
    overhead = s.median;
    out("calib empty %llu min=%llu max=%llu\n", (unsigned long long)s.median,
        (unsigned long long)s.min, (unsigned long long)s.max);

    /* 2K instructions should read as 2K + a constant, for every K. */
    static const uint64_t ks[] = {1000, 10000, 100000, 1000000};
    for (unsigned j = 0; j < sizeof ks / sizeof ks[0]; j++) {
        for (int i = 0; i < 51; i++)
            v[i] = timed_loop(ks[j]);
        struct stats l = stats_of(v, 51);
        out("calib loop k=%llu instructions=%llu median=%llu min=%llu "
            "max=%llu\n",
            (unsigned long long)ks[j], (unsigned long long)(2 * ks[j]),
            (unsigned long long)l.median, (unsigned long long)l.min,
            (unsigned long long)l.max);
    }

    /* While every vCPU is idle, sleep=off jumps the clock to the next timer:
     * a 1 ms nanosleep reads as about 1,000,000 (virtual nanoseconds), not as
     * the few thousand instructions it executes. Timed operations therefore
     * must not block. */
    for (int i = 0; i < 11; i++) {
        struct timespec ts = {0, 1000000};
        uint64_t t0 = rdtsc();
        nanosleep(&ts, NULL);
        v[i] = rdtsc() - t0;
    }
    struct stats sl = stats_of(v, 11);
    out("calib sleep_1ms median=%llu min=%llu max=%llu\n",
        (unsigned long long)sl.median, (unsigned long long)sl.min,
        (unsigned long long)sl.max);

    /* rdtsc against CLOCK_MONOTONIC: under icount shift=0 both are QEMU's
     * virtual clock, 1 tick = 1 ns = 1 instruction. */
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    uint64_t t0 = rdtsc();
    timed_loop(5000000);
    uint64_t dt = rdtsc() - t0;
    clock_gettime(CLOCK_MONOTONIC, &b);
    long long ns = (b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
    out("calib monotonic loop_10M_instructions rdtsc=%llu monotonic_ns=%lld\n",
        (unsigned long long)dt, ns);
}

/* ---- 1. perf_event_open + close of a breakpoint event ------------------ */

static uint64_t watched_u64 __attribute__((aligned(64)));
static uint64_t unwatched_u64 __attribute__((aligned(64)));

static void bp_attr(struct perf_event_attr *attr, void *addr, int type, int len)
{
    memset(attr, 0, sizeof *attr);
    attr->type = PERF_TYPE_BREAKPOINT;
    attr->size = sizeof *attr;
    attr->bp_addr = (uintptr_t)addr;
    attr->bp_type = type;
    attr->bp_len = len;
    attr->exclude_kernel = 1;
    attr->exclude_hv = 1;
}

static void bench_open_close(void)
{
    enum { REPS = 1001 };
    static uint64_t v[REPS];
    struct perf_event_attr attr;
    bp_attr(&attr, &watched_u64, HW_BREAKPOINT_W, HW_BREAKPOINT_LEN_8);
    int bad = 0;
    for (int i = 0; i < REPS; i++) {
        uint64_t t0 = rdtsc();
        int fd = perf_event_open(&attr, 0, -1, -1, 0);
        if (fd >= 0)
            close(fd);
        else
            bad = errno ? errno : -1;
        v[i] = rdtsc() - t0 - overhead;
    }
    check("open_close", !bad, "perf_event_open errno=%d", bad);
    struct stats s = stats_of(v, REPS);
    figure("open_close", s.median, s);
}

/* ---- 2. counted watchpoint hit ----------------------------------------- */

enum { HITS = 64, HIT_REPS = 301 };

static struct stats time_stores(volatile uint64_t *p, uint64_t *v)
{
    for (int i = 0; i < HIT_REPS; i++) {
        uint64_t t0 = rdtsc();
        store_loop(p, HITS);
        v[i] = rdtsc() - t0;
    }
    return stats_of(v, HIT_REPS);
}

static uint64_t per_hit(struct stats w, struct stats u)
{
    return w.median > u.median ? (w.median - u.median + HITS / 2) / HITS : 0;
}

static void bench_counted_hit(void)
{
    static uint64_t vw[HIT_REPS], vu[HIT_REPS];
    struct perf_event_attr attr;
    bp_attr(&attr, &watched_u64, HW_BREAKPOINT_W, HW_BREAKPOINT_LEN_8);
    int fd = perf_event_open(&attr, 0, -1, -1, 0);
    check("counted_open", fd >= 0, "errno=%d", fd >= 0 ? 0 : errno);
    if (fd < 0)
        return;
    /* Interleave nothing: first the unwatched address, then the watched one,
     * with the event open throughout (same code, only the trap differs). */
    struct stats u = time_stores(&unwatched_u64, vu);
    struct stats w = time_stores(&watched_u64, vw);
    uint64_t count = 0;
    ssize_t n = read(fd, &count, sizeof count);
    close(fd);
    uint64_t want = (uint64_t)HITS * HIT_REPS;
    check("counted_hits", n == sizeof count && count == want,
          "expected=%llu counted=%llu (the watchpoint fires under TCG)",
          (unsigned long long)want, (unsigned long long)count);
    out("raw counted_hit watched_median=%llu unwatched_median=%llu hits=%d\n",
        (unsigned long long)w.median, (unsigned long long)u.median, HITS);
    figure("counted_hit", per_hit(w, u), w);
}

/* ---- 3. watchpoint hit delivered as a sample record -------------------- */

static void bench_sampled_hit(void)
{
    static uint64_t vw[HIT_REPS], vu[HIT_REPS];
    struct perf_event_attr attr;
    bp_attr(&attr, &watched_u64, HW_BREAKPOINT_W, HW_BREAKPOINT_LEN_8);
    attr.sample_period = 1;
    attr.sample_type = PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_ADDR;
    attr.disabled = 1;
    int fd = perf_event_open(&attr, 0, -1, -1, 0);
    check("sampled_open", fd >= 0, "errno=%d", fd >= 0 ? 0 : errno);
    if (fd < 0)
        return;
    const size_t page = 4096, data_pages = 16;
    size_t len = page * (1 + data_pages);
    void *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    check("sampled_mmap", map != MAP_FAILED, "errno=%d",
          map != MAP_FAILED ? 0 : errno);
    if (map == MAP_FAILED) {
        close(fd);
        return;
    }
    struct perf_event_mmap_page *meta = map;
    const unsigned char *data = (const unsigned char *)map + page;
    const uint64_t data_size = page * data_pages;
    ioctl(fd, PERF_EVENT_IOC_ENABLE, 0);

    uint64_t samples = 0, others = 0, bad_ip = 0;
    struct stats u = time_stores(&unwatched_u64, vu);
    for (int i = 0; i < HIT_REPS; i++) {
        uint64_t t0 = rdtsc();
        store_loop(&watched_u64, HITS);
        vw[i] = rdtsc() - t0;
        /* Consume the records outside the timed part. */
        uint64_t head = __atomic_load_n(&meta->data_head, __ATOMIC_ACQUIRE);
        uint64_t tail = meta->data_tail;
        while (tail < head) {
            struct perf_event_header h;
            for (size_t b = 0; b < sizeof h; b++)
                ((unsigned char *)&h)[b] = data[(tail + b) % data_size];
            if (h.type == PERF_RECORD_SAMPLE) {
                uint64_t addr = 0;
                /* ip, pid/tid, addr */
                for (size_t b = 0; b < 8; b++)
                    ((unsigned char *)&addr)[b] =
                        data[(tail + sizeof h + 16 + b) % data_size];
                samples++;
                if (addr != (uintptr_t)&watched_u64)
                    bad_ip++;
            } else {
                others++;
            }
            if (!h.size)
                break;
            tail += h.size;
        }
        __atomic_store_n(&meta->data_tail, tail, __ATOMIC_RELEASE);
    }
    /* vw was overwritten in place; sort it. */
    struct stats w = stats_of(vw, HIT_REPS);
    ioctl(fd, PERF_EVENT_IOC_DISABLE, 0);
    munmap(map, len);
    close(fd);
    uint64_t want = (uint64_t)HITS * HIT_REPS;
    check("sampled_records", samples == want && others == 0 && bad_ip == 0,
          "expected=%llu samples=%llu other_records=%llu wrong_addr=%llu",
          (unsigned long long)want, (unsigned long long)samples,
          (unsigned long long)others, (unsigned long long)bad_ip);
    out("raw sampled_hit watched_median=%llu unwatched_median=%llu hits=%d\n",
        (unsigned long long)w.median, (unsigned long long)u.median, HITS);
    figure("sampled_hit", per_hit(w, u), w);
}

/* ---- 4. perf bench breakpoint enable -p N ------------------------------ */
/* tools/perf/bench/breakpoint.c, bench_breakpoint_enable: one inheritable
 * breakpoint (HW_BREAKPOINT_RW, len 1, exclude_kernel) opened on the process
 * before N passive threads are created (each inherits a child event and
 * blocks on a futex); then PERF_EVENT_IOC_DISABLE + PERF_EVENT_IOC_ENABLE on
 * the parent's fd, which walk every child. We time each disable+enable pair
 * with rdtsc instead of the whole loop with gettimeofday. */

static unsigned int done_flag;
static char enable_watched;

static void *passive_thread(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&done_flag, __ATOMIC_ACQUIRE))
        syscall(SYS_futex, &done_flag, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    /* One write per thread: its inherited event counts it, and the count is
     * summed into the parent when the thread exits. */
    *(volatile char *)&enable_watched = 1;
    return NULL;
}

static void bench_enable(int nthreads, int reps)
{
    static uint64_t v[1001];
    char key[64];
    snprintf(key, sizeof key, "enable_disable_%d", nthreads);
    if (reps > 1001)
        reps = 1001;

    struct perf_event_attr attr;
    bp_attr(&attr, &enable_watched, HW_BREAKPOINT_RW, HW_BREAKPOINT_LEN_1);
    attr.inherit = 1;
    int fd = perf_event_open(&attr, 0, -1, -1, 0);
    check(key, fd >= 0, "perf_event_open errno=%d", fd >= 0 ? 0 : errno);
    if (fd < 0)
        return;

    pthread_t *threads = calloc(nthreads, sizeof *threads);
    pthread_attr_t pa;
    pthread_attr_init(&pa);
    pthread_attr_setstacksize(&pa, 64 * 1024);
    __atomic_store_n(&done_flag, 0, __ATOMIC_RELEASE);
    int created = 0;
    for (int i = 0; i < nthreads; i++) {
        if (pthread_create(&threads[i], &pa, passive_thread, NULL))
            break;
        created++;
    }
    struct timespec ts = {0, 10000000};
    nanosleep(&ts, NULL); /* let the threads block, as the bench does */

    int bad = 0;
    for (int i = 0; i < reps; i++) {
        uint64_t t0 = rdtsc();
        if (ioctl(fd, PERF_EVENT_IOC_DISABLE, 0))
            bad = errno;
        if (ioctl(fd, PERF_EVENT_IOC_ENABLE, 0))
            bad = errno;
        v[i] = rdtsc() - t0 - overhead;
    }
    __atomic_store_n(&done_flag, 1, __ATOMIC_RELEASE);
    syscall(SYS_futex, &done_flag, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    for (int i = 0; i < created; i++)
        pthread_join(threads[i], NULL);
    free(threads);
    uint64_t count = 0;
    ssize_t n = read(fd, &count, sizeof count);
    close(fd);
    check(key, created == nthreads && !bad && n == sizeof count &&
                   count == (uint64_t)nthreads,
          "threads=%d/%d ioctl_errno=%d inherited_hits=%llu (one per thread)",
          created, nthreads, bad, (unsigned long long)count);
    struct stats s = stats_of(v, reps);
    figure(key, s.median, s);
}

/* ---- main ---------------------------------------------------------------- */

int main(void)
{
    /* The cpio carries dev/console; if the console is still not open, mount
     * devtmpfs and open it ourselves. */
    if (fcntl(1, F_GETFD) < 0) {
        mkdir("/dev", 0755);
        mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
        int fd = open("/dev/console", O_RDWR);
        if (fd < 0)
            fd = open("/dev/ttyS0", O_RDWR);
        if (fd >= 0) {
            dup2(fd, 0);
            dup2(fd, 1);
            dup2(fd, 2);
        }
    }
    mkdir("/proc", 0755);
    mkdir("/sys", 0755);
    mount("proc", "/proc", "proc", 0, NULL);
    mount("sysfs", "/sys", "sysfs", 0, NULL);

    struct utsname u;
    uname(&u);
    out("linux-compare: start %s %s\n", u.release, u.version);
    out("info cpus_online %ld\n", sysconf(_SC_NPROCESSORS_ONLN));
    print_file("cmdline", "/proc/cmdline");
    print_file("meltdown", "/sys/devices/system/cpu/vulnerabilities/meltdown");
    print_file("spectre_v2", "/sys/devices/system/cpu/vulnerabilities/spectre_v2");
    print_file("clocksource", "/sys/devices/system/clocksource/clocksource0/current_clocksource");

    /* Sampling at one record per hit would be throttled at the default
     * perf_event_max_sample_rate (100000/s; with icount a virtual second is
     * 1e9 instructions): raise it, then turn the CPU-time limit off. */
    write_file("/proc/sys/kernel/perf_event_max_sample_rate", "100000000");
    write_file("/proc/sys/kernel/perf_cpu_time_max_percent", "0");
    print_file("perf_event_paranoid", "/proc/sys/kernel/perf_event_paranoid");
    print_file("perf_event_max_sample_rate", "/proc/sys/kernel/perf_event_max_sample_rate");

    calibrate();
    bench_open_close();
    bench_counted_hit();
    bench_sampled_hit();
    bench_enable(64, 201);
    bench_enable(1000, 31);

    out("linux-compare: done %d failed checks\n", failed_checks);
    power_off();
    return 0;
}
