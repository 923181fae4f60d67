/* incr_job: a job for incremental checkpoints (slurm_ckpt_incremental), run by
 * examples/serial-job/serial-job.sbatch in place of serial-job, with its arguments and its
 * output's form:
 *
 *   incr_job [STEPS [MS_PER_STEP [ANSWER_FILE]]]
 *
 * It fills 32 MiB once at the start (pages an incremental set refers to in its chain's full
 * set) and then, every step, mixes a small state (8 KB, written each step) and reads one
 * word of the big block. The answer covers both: digests of the state and the whole block, so a restore that reads a page of the block from the wrong dump of the chain
 * writes another answer than an uninterrupted run.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define SMALL_WORDS 1024
#define BIG_WORDS (32u << 20) / 8u

static uint64_t small[SMALL_WORDS];
static uint64_t big[BIG_WORDS];

static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The state written every step: 8 KB, each word mixed with its neighbour. */
static void advance(uint64_t step) {
    for (int i = 0; i < SMALL_WORDS; i++) small[i] = mix(small[i] ^ small[(i + 1) % SMALL_WORDS] ^ step);
}

static uint64_t digest(const uint64_t *words, uint64_t n) {
    uint64_t d = 0;
    for (uint64_t i = 0; i < n; i++) d = mix(d ^ words[i]);
    return d;
}

int main(int argc, char **argv) {
    const char *answer_path = argc > 3 ? argv[3] : "answer.txt";
    long ms = argc > 2 ? atol(argv[2]) : 100, steps = argc > 1 ? atol(argv[1]) : 600;
    if (steps <= 0 || ms < 0) {
        fprintf(stderr, "usage: incr_job [STEPS [MS_PER_STEP [ANSWER_FILE]]]\n");
        return 2;
    }
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (uint64_t i = 0; i < BIG_WORDS; i++) big[i] = mix(i);
    printf("start: %ld steps, pid %d\n", steps, (int)getpid());

    uint64_t seen = 0;
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
    for (long step = 1; step <= steps; step++) {
        advance((uint64_t)step);
        seen += big[((uint64_t)step * 7919u) % BIG_WORDS];
        if (step % 10 == 0) printf("step %ld of %ld, checksum %016llx\n", step, steps, (unsigned long long)digest(small, SMALL_WORDS));
        if (ms > 0) nanosleep(&pause, NULL);
    }
    FILE *out = fopen(answer_path, "w");
    if (!out) {
        perror(answer_path);
        return 1;
    }
    fprintf(out, "steps %ld state %016llx seen %llu block %016llx\n", steps, (unsigned long long)digest(small, SMALL_WORDS),
            (unsigned long long)seen, (unsigned long long)digest(big, BIG_WORDS));
    if (fclose(out) != 0) {
        perror(answer_path);
        return 1;
    }
    printf("done: answer in %s\n", answer_path);
    return 0;
}
