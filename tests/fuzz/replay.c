/*
 * replay.c -- run the fuzz target over files and directories without
 * libFuzzer, so that the corpus is an ordinary test under any compiler.
 *
 *   fuzz_replay [--expect-valid] PATH...
 *
 * Each PATH is a file or a directory (its regular files, in name order).
 * Every input goes through LLVMFuzzerTestOneInput, which aborts on a broken
 * property.  With --expect-valid every input must also load: the seed
 * corpus must stay a set of valid model files, both so that the fuzzer
 * starts from deep inside the format and so that files written by earlier
 * releases keep loading.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "glow.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int expect_valid;
static int n_run, n_bad;

static void run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "%s: cannot open\n", path);
    n_bad++;
    return;
  }
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  /* Exactly the input's size, so that ASan sees any read past its end. */
  uint8_t *b = malloc(len > 0 ? (size_t)len : 1);
  if (!b || fread(b, 1, (size_t)len, f) != (size_t)len) {
    fprintf(stderr, "%s: cannot read\n", path);
    n_bad++;
    fclose(f);
    free(b);
    return;
  }
  fclose(f);
  LLVMFuzzerTestOneInput(b, (size_t)len);
  n_run++;
  if (expect_valid) {
    glow_model *m = NULL;
    int rc = glow_model_load_buffer(b, (size_t)len, &m);
    if (rc != GLOW_OK) {
      fprintf(stderr, "%s: does not load: %s\n", path, glow_last_error());
      n_bad++;
    }
    glow_model_free(m);
  }
  free(b);
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) {
    fprintf(stderr, "%s: cannot open directory\n", dir);
    n_bad++;
    return;
  }
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.')
      continue;
    if (n == cap) {
      cap = cap ? 2 * cap : 64;
      char **grown = realloc(names, cap * sizeof *names);
      if (!grown)
        abort();
      names = grown;
    }
    size_t len = strlen(dir) + strlen(e->d_name) + 2;
    names[n] = malloc(len);
    if (!names[n])
      abort();
    snprintf(names[n++], len, "%s/%s", dir, e->d_name);
  }
  closedir(d);
  qsort(names, n, sizeof *names, by_name);
  for (size_t i = 0; i < n; i++) {
    struct stat st;
    if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode))
      run_file(names[i]);
    free(names[i]);
  }
  free(names);
}

int main(int argc, char **argv) {
  int paths = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--expect-valid")) {
      expect_valid = 1;
      continue;
    }
    struct stat st;
    if (stat(argv[i], &st) != 0) {
      fprintf(stderr, "%s: no such file or directory\n", argv[i]);
      return 2;
    }
    paths++;
    if (S_ISDIR(st.st_mode))
      run_dir(argv[i]);
    else
      run_file(argv[i]);
  }
  if (!paths) {
    fprintf(stderr, "usage: %s [--expect-valid] PATH...\n", argv[0]);
    return 2;
  }
  printf("replayed %d inputs, %d failed\n", n_run, n_bad);
  /* An empty corpus proves nothing. */
  return n_bad || n_run == 0 ? 1 : 0;
}
