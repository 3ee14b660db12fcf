/*
 * bench -- throughput and memory of libglow on two reference configs.
 *
 *   bench [fashion|cifar|memory|all] [--seconds S]
 *
 * fashion: 28x28x1, L=2, K=8, hidden 128, batch 64
 * cifar:   32x32x3, L=3, K=32, hidden 512, batch 16 (the paper's CIFAR-10)
 * For each: images/s of forward, inverse, sampling and a training step
 * (forward + backward; in each backward mode), and the process's peak
 * resident memory.  "memory" prints the activation memory of one training
 * step of the cifar shape at K = 8 and K = 32: the growth of the resident
 * set during the step, above the model's own parameters and gradients.
 * Each measurement runs in a child process so that peaks do not mix.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <glow.h>

typedef struct {
  const char *name;
  int32_t h, w, c, levels, depth, hidden, batch;
} bench_config;

static const bench_config configs[] = {
    {"fashion", 28, 28, 1, 2, 8, 128, 64},
    {"cifar", 32, 32, 3, 3, 32, 512, 16},
};

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Resident set now, and its peak, in MiB (Linux /proc). */
static double proc_status_mib(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  double kb = -1;
  size_t n = strlen(key);
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, key, n))
      kb = atof(line + n + 1);
  if (f)
    fclose(f);
  return kb / 1024.0;
}

static void reset_peak(void) {
  FILE *f = fopen("/proc/self/clear_refs", "w");
  if (f) {
    fputs("5", f); /* resets VmHWM to the current resident set */
    fclose(f);
  }
}

static void check(int rc, const char *what) {
  if (rc) {
    fprintf(stderr, "bench: %s: %s\n", what, glow_last_error());
    exit(1);
  }
}

static glow_model *make(const bench_config *b, int32_t depth, float **x) {
  glow_config cfg;
  glow_config_init(&cfg);
  cfg.height = b->h;
  cfg.width = b->w;
  cfg.channels = b->c;
  cfg.levels = b->levels;
  cfg.depth = depth;
  cfg.hidden = b->hidden;
  glow_model *m = NULL;
  check(glow_model_create(&cfg, &m), "create");
  int64_t d = glow_model_dim(m);
  size_t count = (size_t)(b->batch * d);
  uint8_t *px = malloc(count);
  *x = malloc(sizeof(float) * count);
  for (size_t i = 0; i < count; i++) /* smooth-ish synthetic images */
    px[i] = (uint8_t)(128 + 100 * sin(0.05 * (double)i));
  check(glow_preprocess(m, px, b->batch, 1, *x), "preprocess");
  check(glow_data_init(m, *x, NULL, b->batch), "data_init");
  free(px);
  return m;
}

/* Median seconds per call of `op` over at least `seconds` of runs. */
typedef int (*op_fn)(glow_model *m, const bench_config *b, float *x,
                     float *y);

static int op_forward(glow_model *m, const bench_config *b, float *x,
                      float *y) {
  return glow_forward(m, x, NULL, b->batch, y, NULL);
}
static int op_inverse(glow_model *m, const bench_config *b, float *x,
                      float *y) {
  return glow_inverse(m, x, NULL, b->batch, y);
}
static int op_sample(glow_model *m, const bench_config *b, float *x,
                     float *y) {
  (void)x;
  return glow_sample(m, b->batch, 0.7f, 3, NULL, y);
}
static int op_train(glow_model *m, const bench_config *b, float *x,
                    float *y) {
  (void)y;
  float loss;
  glow_zero_grad(m);
  return glow_backward(m, x, NULL, b->batch, &loss);
}

static int cmp_double(const void *a, const void *b) {
  double d = *(const double *)a - *(const double *)b;
  return (d > 0) - (d < 0);
}

static double time_op(op_fn op, glow_model *m, const bench_config *b,
                      float *x, float *y, double seconds) {
  double t[256];
  int n = 0;
  check(op(m, b, x, y), "warm-up");
  double start = now();
  while (n < 256 && (n < 3 || now() - start < seconds)) {
    double t0 = now();
    check(op(m, b, x, y), "timed call");
    t[n++] = now() - t0;
  }
  qsort(t, (size_t)n, sizeof t[0], cmp_double);
  return t[n / 2];
}

static void run_speed(const bench_config *b, double seconds) {
  float *x;
  glow_model *m = make(b, b->depth, &x);
  int64_t d = glow_model_dim(m);
  float *y = malloc(sizeof(float) * (size_t)(b->batch * d));
  struct {
    const char *name;
    op_fn fn;
    int mode;
  } ops[] = {{"forward", op_forward, -1},
             {"inverse", op_inverse, -1},
             {"sample", op_sample, -1},
             {"train step (recompute)", op_train, GLOW_BACKWARD_RECOMPUTE},
             {"train step (store)", op_train, GLOW_BACKWARD_STORE}};
  printf("%s: %dx%dx%d, L=%d, K=%d, hidden %d, batch %d, %lld parameters\n",
         b->name, b->h, b->w, b->c, b->levels, b->depth, b->hidden, b->batch,
         (long long)glow_param_count(m));
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    if (ops[i].mode >= 0)
      check(glow_set_option(m, GLOW_OPT_BACKWARD_MODE, ops[i].mode),
            "set_option");
    double s = time_op(ops[i].fn, m, b, x, y, seconds);
    printf("  %-24s %9.1f images/s  (%.1f ms per batch)\n", ops[i].name,
           b->batch / s, 1e3 * s);
  }
  printf("  peak resident memory     %9.1f MiB\n", proc_status_mib("VmHWM"));
  free(y);
  free(x);
  glow_model_free(m);
}

/* Growth of the resident set during one training step. */
static void run_memory(const bench_config *b, int32_t depth, int mode) {
  float *x;
  glow_model *m = make(b, depth, &x);
  check(glow_set_option(m, GLOW_OPT_BACKWARD_MODE, mode), "set_option");
  float loss;
  check(glow_backward(m, x, NULL, b->batch, &loss), "backward");
  /* The model may keep a training workspace between calls; count it. */
  double base = proc_status_mib("VmRSS");
  reset_peak();
  check(glow_backward(m, x, NULL, b->batch, &loss), "backward");
  double peak = proc_status_mib("VmHWM");
  double params = 2.0 * (double)glow_param_count(m) * 4 / (1 << 20);
  printf("  K=%-3d %-10s params+grads %7.1f MiB, training step peak %7.1f "
         "MiB above a resident set of %7.1f MiB\n",
         depth, mode == GLOW_BACKWARD_STORE ? "store" : "recompute", params,
         peak - base, base);
  free(x);
  glow_model_free(m);
}

/* Run `fn` in a child so that each peak is its own. */
static void isolated(void (*fn)(const void *), const void *arg) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    fn(arg);
    fflush(stdout);
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status))
    fprintf(stderr, "bench: a measurement failed\n");
}

static double g_seconds = 3.0;

static void speed_child(const void *arg) { run_speed(arg, g_seconds); }

typedef struct {
  int32_t depth;
  int mode;
} mem_arg;

static void memory_child(const void *arg) {
  const mem_arg *a = arg;
  run_memory(&configs[1], a->depth, a->mode);
}

int main(int argc, char **argv) {
  const char *what = "all";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
      g_seconds = atof(argv[++i]);
    else
      what = argv[i];
  }
  printf("libglow %s\n", glow_version_string());
  for (int i = 0; i < 2; i++)
    if (!strcmp(what, "all") || !strcmp(what, configs[i].name))
      isolated(speed_child, &configs[i]);
  if (!strcmp(what, "all") || !strcmp(what, "memory")) {
    printf("activation memory, cifar shape, batch %d:\n", configs[1].batch);
    const mem_arg args[] = {{8, GLOW_BACKWARD_RECOMPUTE},
                            {32, GLOW_BACKWARD_RECOMPUTE},
                            {8, GLOW_BACKWARD_STORE},
                            {32, GLOW_BACKWARD_STORE}};
    for (int i = 0; i < 4; i++)
      isolated(memory_child, &args[i]);
  }
  return 0;
}
