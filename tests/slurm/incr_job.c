/* incr_job: a job for incremental checkpoints (slurm_ckpt_incremental), run by
 * examples/serial-job/serial-job.sbatch in place of serial-job, with its arguments and its
 * output's form:
 *
 *   incr_job [STEPS [MS_PER_STEP [ANSWER_FILE]]]
 *
 * It fills 32 MiB once at the start (pages an incremental set refers to in its chain's full
 * set) and then, every step, relaxes a small field (8 KB, written each step) and reads one
 * word of the big block. The answer covers both: the field's checksum and a sum over the
 * whole block, so a restore that reads a page of the block from the wrong dump of the chain
 * writes another answer than an uninterrupted run.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define POINTS 1000
#define BIG_WORDS (32u << 20) / 8u

static double field[POINTS], next[POINTS];
static uint64_t big[BIG_WORDS];

static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void relax(void) {
    for (int i = 1; i < POINTS - 1; i++)
        next[i] = field[i] + 0.25 * (field[i - 1] - 2.0 * field[i] + field[i + 1]);
    next[0] = 1.0;
    next[POINTS - 1] = 0.0;
    for (int i = 0; i < POINTS; i++) field[i] = next[i];
}

static double checksum(void) {
    double sum = 0.0;
    for (int i = 0; i < POINTS; i++) sum += field[i] * (double)(i % 97 + 1);
    return sum;
}

int main(int argc, char **argv) {
    long steps = argc > 1 ? atol(argv[1]) : 600;
    long ms = argc > 2 ? atol(argv[2]) : 100;
    const char *answer_path = argc > 3 ? argv[3] : "answer.txt";
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
        relax();
        seen += big[((uint64_t)step * 7919u) % BIG_WORDS];
        if (step % 10 == 0) printf("step %ld of %ld, checksum %.6f\n", step, steps, checksum());
        if (ms > 0) nanosleep(&pause, NULL);
    }
    uint64_t sum = 0;
    for (uint64_t i = 0; i < BIG_WORDS; i++) sum += big[i] ^ (i * 0x100000001b3ull);

    FILE *out = fopen(answer_path, "w");
    if (!out) {
        perror(answer_path);
        return 1;
    }
    fprintf(out, "steps %ld checksum %.9f seen %llu block %llu\n", steps, checksum(), (unsigned long long)seen,
            (unsigned long long)sum);
    if (fclose(out) != 0) {
        perror(answer_path);
        return 1;
    }
    printf("done: answer in %s\n", answer_path);
    return 0;
}
