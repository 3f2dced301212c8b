/* What this machine charges for the two things process start-up does most: a page fault
 * on fresh anonymous memory and a `cpuid` instruction (glibc, libgcc and Rust's feature
 * detection run dozens at every start). On a virtual machine both can exit to the
 * hypervisor. Build and run: cc -O2 -o /tmp/vmcost bench/vmcost.c && /tmp/vmcost */
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

static double us_since(struct timespec a) {
    struct timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3;
}

int main(void) {
    struct timespec t;
    int pages = 4000;
    char *p = mmap(0, (size_t)pages * 4096, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t);
    for (int i = 0; i < pages; i++) p[(size_t)i * 4096] = 1;
    printf("page fault (anonymous, first write): %.2f us\n", us_since(t) / pages);
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d, n = 2000;
    clock_gettime(CLOCK_MONOTONIC, &t);
    for (unsigned i = 0; i < n; i++) __cpuid_count(4, i & 3, a, b, c, d);
    printf("cpuid: %.2f us\n", us_since(t) / n);
#endif
    return 0;
}
