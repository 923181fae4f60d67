/* serial-job: a computation whose only state is in memory, for trying checkpoint/restart.
 *
 *   serial-job [STEPS [MS_PER_STEP [ANSWER_FILE]]]     defaults: 600 steps, 100 ms, answer.txt
 *
 * It relaxes a 1-D heat equation on 100000 points (1 MB of doubles) for STEPS steps,
 * sleeping MS_PER_STEP between steps so that a run lasts long enough to be checkpointed,
 * prints its progress every 10 steps, and writes the final answer (step count and a
 * checksum of the field) to ANSWER_FILE. Nothing is saved along the way: a run that resumes
 * from a checkpoint continues its step count, a run that starts over prints "start" again
 * and begins at step 0. The answer depends only on STEPS, so an interrupted and resumed run
 * must write the same answer as an uninterrupted one.
 *
 * It ignores SIGUSR1 and SIGUSR2: with sbatch --signal=USR1@SECS Slurm sends them to every
 * process of the job's steps before the time limit, and ckpt's agent takes a final
 * checkpoint then; the computation itself has nothing to do.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define POINTS 100000

static double field[POINTS], next[POINTS];

static void relax(void) {
    for (int i = 1; i < POINTS - 1; i++)
        next[i] = field[i] + 0.25 * (field[i - 1] - 2.0 * field[i] + field[i + 1]);
    next[0] = 1.0;          /* a hot boundary */
    next[POINTS - 1] = 0.0; /* a cold one */
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
        fprintf(stderr, "usage: serial-job [STEPS [MS_PER_STEP [ANSWER_FILE]]]\n");
        return 2;
    }
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("start: %ld steps, pid %d\n", steps, (int)getpid());

    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
    for (long step = 1; step <= steps; step++) {
        relax();
        if (step % 10 == 0) printf("step %ld of %ld, checksum %.6f\n", step, steps, checksum());
        if (ms > 0) nanosleep(&pause, NULL);
    }

    FILE *out = fopen(answer_path, "w");
    if (!out) {
        perror(answer_path);
        return 1;
    }
    fprintf(out, "steps %ld checksum %.9f\n", steps, checksum());
    if (fclose(out) != 0) {
        perror(answer_path);
        return 1;
    }
    printf("done: answer in %s\n", answer_path);
    return 0;
}
