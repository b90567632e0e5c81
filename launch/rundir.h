/* launch/rundir: a training run's directory: created on start, it holds the merged config
 * (config.yaml), the command line (command.txt), the metrics (metrics.jsonl: one JSON object
 * per logged step, appended and flushed as they come; written by rank 0), the student's weights
 * (student-step-NNNNNNN.safetensors and student_ema-step-NNNNNNN.safetensors at intervals,
 * student.safetensors and student_ema.safetensors at the end) and, with sample.every > 0, the
 * sample grids (samples/step-NNNNNNN.png, launch/train_grid.h). */
#ifndef ADDC_LAUNCH_RUNDIR_H
#define ADDC_LAUNCH_RUNDIR_H

#include <stdio.h>

#include "core/error.h"

#define RUNDIR_PATH_MAX 1024

typedef struct RunDir {
    char path[RUNDIR_PATH_MAX - 256]; /* room for "/file" in RUNDIR_PATH_MAX */
    FILE *metrics; /* metrics.jsonl, append */
} RunDir;

/* Creates dir (and its parents), appends argv to command.txt (a resumed run adds a line), opens
 * metrics.jsonl for appending. dir NULL or "": runs/<name>-<YYYYmmdd-HHMMSS>. Rank 0 only. */
Status rundir_open(RunDir *r, const char *dir, const char *name, int argc, char **argv);
/* The other ranks: the path rank 0 opened, no files (metrics appends are no-ops). */
void rundir_attach(RunDir *r, const char *path);
void rundir_close(RunDir *r);
/* dir/file into out (RUNDIR_PATH_MAX). */
char *rundir_file(const RunDir *r, const char *file, char *out);
/* Appends one line (a JSON object without the newline) to metrics.jsonl and flushes it. */
Status rundir_metrics_append(RunDir *r, const char *json);

#endif
