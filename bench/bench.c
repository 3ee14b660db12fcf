/*
 * bench -- throughput and memory of libglow on two reference configs.
 *
 *   bench [fashion|cifar|memory|all] [--seconds S] [--json] [--only OP]
 *         [--min-calls N] [--[no-]keep-workspace] [--blas] [--threads N]
 *         [--batch N]
 *         [--model FILE] [--save-model FILE]
 *
 * fashion: 28x28x1, L=2, K=8, hidden 128, batch 64
 * cifar:   32x32x3, L=3, K=32, hidden 512, batch 16 (the paper's CIFAR-10)
 * For each: images/s of forward, inverse, sampling and a training step
 * (forward + backward; in each backward mode), and the process's peak
 * resident memory.  "memory" prints the activation memory of one training
 * step of the cifar shape at K = 8 and K = 32: the growth of the resident
 * set during the step, above the model's own parameters and gradients.
 * Each measurement runs in a child process so that peaks do not mix.
 *
 * Options (for scripts such as bench/compare; without them the output is
 * the human-readable table above):
 *   --json            one JSON object per measurement on stdout, nothing
 *                     else: config, op, batch, median seconds per batch,
 *                     images/s, number of timed calls, their mean and 90th
 *                     percentile seconds (mean_s, p90_s), the resident set
 *                     after setup and its peak during the op (the peak is
 *                     reset after setup, so model creation or loading does
 *                     not count; "peak_rss_total_mib" is the whole
 *                     process's).
 *   --only OP         measure one op: forward, inverse, sample,
 *                     train-recompute or train-store.
 *   --min-calls N     at least N timed calls per op (default 3), after one
 *                     warm-up call, even beyond --seconds.
 *   --keep-workspace  every op runs with GLOW_OPT_KEEP_WORKSPACE = 1 (the
 *                     default); --no-keep-workspace: with 0.
 *   --blas            GLOW_OPT_GEMM = GLOW_GEMM_BLAS: the CBLAS computes
 *                     the products (default: automatic).
 *   --threads N       GLOW_OPT_THREADS = N (default 0, automatic).
 *   --batch N         N images per call instead of the config's batch
 *                     (latency: --batch 1).
 *   --model FILE      load the model from FILE (it must have the config's
 *                     shape) instead of creating and data-initialising one.
 *   --save-model FILE create the config's model as the benchmark does
 *                     (data-dependent init on the synthetic batch), save it
 *                     to FILE and exit without measuring.
 */
#define _POSIX_C_SOURCE 200809L

#include <malloc.h>
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

static int g_json = 0, g_keep_ws = -1, g_min_calls = 3; /* -1: default */
static int g_gemm = GLOW_GEMM_AUTO, g_threads = 0;
static const char *g_only = NULL, *g_model_path = NULL, *g_save_path = NULL;

static bench_config configs[] = {
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

/* The synthetic batch for the model m. */
static float *make_input(glow_model *m, const bench_config *b) {
  int64_t d = glow_model_dim(m);
  size_t count = (size_t)(b->batch * d);
  uint8_t *px = malloc(count);
  float *x = malloc(sizeof(float) * count);
  for (size_t i = 0; i < count; i++) /* smooth-ish synthetic images */
    px[i] = (uint8_t)(128 + 100 * sin(0.05 * (double)i));
  check(glow_preprocess(m, px, b->batch, 1, x), "preprocess");
  free(px);
  return x;
}

/* The model of --model FILE, checked against the config's shape. */
static glow_model *load(const bench_config *b, float **x) {
  glow_model *m = NULL;
  check(glow_model_load(g_model_path, &m), g_model_path);
  glow_config cfg;
  glow_config_init(&cfg);
  check(glow_model_config(m, &cfg), "model_config");
  if (cfg.height != b->h || cfg.width != b->w || cfg.channels != b->c ||
      cfg.levels != b->levels || cfg.depth != b->depth ||
      cfg.hidden != b->hidden) {
    fprintf(stderr, "bench: %s is not a model of the %s config\n", g_model_path,
            b->name);
    exit(1);
  }
  *x = make_input(m, b);
  return m;
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
  *x = make_input(m, b);
  check(glow_data_init(m, *x, NULL, b->batch), "data_init");
  return m;
}

/* Median seconds per call of `op` over at least `seconds` of runs. */
typedef int (*op_fn)(glow_model *m, const bench_config *b, float *x, float *y);

static int op_forward(glow_model *m, const bench_config *b, float *x,
                      float *y) {
  return glow_forward(m, x, NULL, b->batch, y, NULL);
}
static int op_inverse(glow_model *m, const bench_config *b, float *x,
                      float *y) {
  return glow_inverse(m, x, NULL, b->batch, y);
}
static int op_sample(glow_model *m, const bench_config *b, float *x, float *y) {
  (void)x;
  return glow_sample(m, b->batch, 0.7f, 3, NULL, y);
}
static int op_train(glow_model *m, const bench_config *b, float *x, float *y) {
  (void)y;
  float loss;
  glow_zero_grad(m);
  return glow_backward(m, x, NULL, b->batch, &loss);
}

static int cmp_double(const void *a, const void *b) {
  double d = *(const double *)a - *(const double *)b;
  return (d > 0) - (d < 0);
}

/* Timed calls of op: the median seconds; *calls, *mean and *p90 (the
 * 90th percentile) when not NULL.  The mean and the tail show what a
 * median hides when calls take one of two times. */
static double time_op(op_fn op, glow_model *m, const bench_config *b, float *x,
                      float *y, double seconds, int *calls, double *mean,
                      double *p90) {
  double t[256];
  int n = 0;
  const int min_calls = g_min_calls < 256 ? g_min_calls : 256;
  check(op(m, b, x, y), "warm-up");
  double start = now();
  while (n < 256 && (n < min_calls || now() - start < seconds)) {
    double t0 = now();
    check(op(m, b, x, y), "timed call");
    t[n++] = now() - t0;
  }
  qsort(t, (size_t)n, sizeof t[0], cmp_double);
  double sum = 0;
  for (int i = 0; i < n; i++)
    sum += t[i];
  if (calls)
    *calls = n;
  if (mean)
    *mean = sum / n;
  if (p90)
    *p90 = t[n * 9 / 10];
  return t[n / 2];
}

static void run_speed(const bench_config *b, double seconds) {
  float *x;
  glow_model *m = g_model_path ? load(b, &x) : make(b, b->depth, &x);
  int64_t d = glow_model_dim(m);
  float *y = malloc(sizeof(float) * (size_t)(b->batch * d));
  struct {
    const char *name, *key;
    op_fn fn;
    int mode;
  } ops[] = {
      {"forward", "forward", op_forward, -1},
      {"inverse", "inverse", op_inverse, -1},
      {"sample", "sample", op_sample, -1},
      {"train step (recompute)", "train-recompute", op_train,
       GLOW_BACKWARD_RECOMPUTE},
      {"train step (store)", "train-store", op_train, GLOW_BACKWARD_STORE}};
  if (g_keep_ws >= 0)
    check(glow_set_option(m, GLOW_OPT_KEEP_WORKSPACE, g_keep_ws), "set_option");
  int64_t keep = 0;
  check(glow_get_option(m, GLOW_OPT_KEEP_WORKSPACE, &keep), "get_option");
  check(glow_set_option(m, GLOW_OPT_GEMM, g_gemm), "set_option");
  check(glow_set_option(m, GLOW_OPT_THREADS, g_threads), "set_option");
  if (!g_json)
    printf("%s: %dx%dx%d, L=%d, K=%d, hidden %d, batch %d, %lld "
           "parameters\n",
           b->name, b->h, b->w, b->c, b->levels, b->depth, b->hidden, b->batch,
           (long long)glow_param_count(m));
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    if (g_only && strcmp(g_only, ops[i].key))
      continue;
    if (ops[i].mode >= 0)
      check(glow_set_option(m, GLOW_OPT_BACKWARD_MODE, ops[i].mode),
            "set_option");
    double setup = proc_status_mib("VmRSS"), total = proc_status_mib("VmHWM");
    if (g_json)
      reset_peak();
    int calls = 0;
    double mean = 0, p90 = 0;
    double s = time_op(ops[i].fn, m, b, x, y, seconds, &calls, &mean, &p90);
    if (!g_json) {
      printf("  %-24s %9.1f images/s  (%.1f ms per batch)\n", ops[i].name,
             b->batch / s, 1e3 * s);
      continue;
    }
    double peak = proc_status_mib("VmHWM");
    printf("{\"impl\": \"libglow\", \"version\": \"%s\", \"config\": "
           "\"%s\", \"op\": \"%s\", \"batch\": %d, \"median_s\": %.6g, "
           "\"images_per_s\": %.6g, \"calls\": %d, \"mean_s\": %.6g, "
           "\"p90_s\": %.6g, \"keep_workspace\": %d, "
           "\"setup_rss_mib\": %.1f, \"peak_rss_mib\": %.1f, "
           "\"peak_rss_total_mib\": %.1f}\n",
           glow_version_string(), b->name, ops[i].key, b->batch, s,
           b->batch / s, calls, mean, p90, (int)keep, setup, peak,
           peak > total ? peak : total);
  }
  if (!g_json)
    printf("  peak resident memory     %9.1f MiB\n", proc_status_mib("VmHWM"));
  free(y);
  free(x);
  glow_model_free(m);
}

/* Growth of the resident set during one training step. */
static void run_memory(const bench_config *b, int32_t depth, int mode) {
  /* Large blocks always from mmap, so that freed workspaces leave the
   * resident set (glibc otherwise raises its threshold after the first
   * free and keeps them in the heap, which blurs the baseline). */
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  float *x;
  glow_model *m = make(b, depth, &x);
  check(glow_set_option(m, GLOW_OPT_BACKWARD_MODE, mode), "set_option");
  /* The shards, so that their gradient buffers can be told apart: --threads
   * or one per CPU, as the automatic setting picks on this machine. */
  long threads = g_threads > 0 ? g_threads : sysconf(_SC_NPROCESSORS_ONLN);
  if (threads < 1)
    threads = 1;
  if (threads > b->batch)
    threads = b->batch;
  check(glow_set_option(m, GLOW_OPT_THREADS, threads), "set_option");
  float loss;
  check(glow_zero_grad(m), "zero_grad"); /* the gradients' pages, now */
  double base = proc_status_mib("VmRSS");
  reset_peak();
  check(glow_backward(m, x, NULL, b->batch, &loss), "backward");
  double peak = proc_status_mib("VmHWM") - base;
  /* glow_backward sums each shard's gradients in a scratch buffer the size
   * of the parameters and adds them to glow_grads() only if all are
   * finite; the rest of the growth is the activation workspace. */
  double params = (double)glow_param_count(m) * 4 / (1 << 20);
  double scratch = (double)threads * params;
  printf("  K=%-3d %-10s %ld shards: growth during the step %7.1f MiB = "
         "gradient scratch %6.1f + activations %6.1f; model: parameters "
         "%6.1f, gradients %6.1f\n",
         depth, mode == GLOW_BACKWARD_STORE ? "store" : "recompute", threads,
         peak, scratch, peak - scratch, params, params);
  free(x);
  glow_model_free(m);
}

/* Run `fn` in a child so that each peak is its own. */
static int isolated(void (*fn)(const void *), const void *arg) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    fn(arg);
    fflush(stdout);
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status)) {
    fprintf(stderr, "bench: a measurement failed\n");
    return 1;
  }
  return 0;
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
    else if (!strcmp(argv[i], "--json"))
      g_json = 1;
    else if (!strcmp(argv[i], "--only") && i + 1 < argc)
      g_only = argv[++i];
    else if (!strcmp(argv[i], "--min-calls") && i + 1 < argc)
      g_min_calls = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--no-keep-workspace"))
      g_keep_ws = 0;
    else if (!strcmp(argv[i], "--keep-workspace"))
      g_keep_ws = 1;
    else if (!strcmp(argv[i], "--blas"))
      g_gemm = GLOW_GEMM_BLAS;
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      g_threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
      const int32_t batch = atoi(argv[++i]);
      for (int c = 0; c < 2; c++)
        configs[c].batch = batch > 0 ? batch : configs[c].batch;
    } else if (!strcmp(argv[i], "--model") && i + 1 < argc)
      g_model_path = argv[++i];
    else if (!strcmp(argv[i], "--save-model") && i + 1 < argc)
      g_save_path = argv[++i];
    else if (argv[i][0] == '-') {
      fprintf(stderr, "bench: unknown or incomplete option %s\n", argv[i]);
      return 2;
    } else
      what = argv[i];
  }
  if (g_only && strcmp(g_only, "forward") && strcmp(g_only, "inverse") &&
      strcmp(g_only, "sample") && strcmp(g_only, "train-recompute") &&
      strcmp(g_only, "train-store")) {
    fprintf(stderr, "bench: --only takes forward, inverse, sample, "
                    "train-recompute or train-store\n");
    return 2;
  }
  if (g_min_calls < 1)
    g_min_calls = 1;
  if (g_save_path || g_model_path || g_json) {
    const bench_config *b = NULL;
    for (int i = 0; i < 2; i++)
      if (!strcmp(what, configs[i].name))
        b = &configs[i];
    if (!b) {
      fprintf(stderr, "bench: --json, --model and --save-model need the "
                      "config: fashion or cifar\n");
      return 2;
    }
    if (g_save_path) {
      float *x;
      glow_model *m = make(b, b->depth, &x);
      check(glow_model_save(m, g_save_path), g_save_path);
      free(x);
      glow_model_free(m);
      return 0;
    }
    return isolated(speed_child, b);
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
