/* N threads stat() one path TOTAL/N times each; prints calls per second (wall clock).
 * Used by bench/stat_threads.sh.  cc -O2 -pthread -o stat_threads stat_threads.c */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

static const char *path;
static long per_thread;

static void *work(void *arg) {
  struct stat st;
  (void)arg;
  for (long i = 0; i < per_thread; i++)
    if (stat(path, &st) != 0) {
      perror(path);
      exit(1);
    }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s PATH THREADS TOTAL\n", argv[0]);
    return 2;
  }
  path = argv[1];
  int n = atoi(argv[2]);
  long total = atol(argv[3]);
  if (n < 1 || n > 256 || total < n) return 2;
  per_thread = total / n;
  pthread_t t[256];
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < n; i++)
    if (pthread_create(&t[i], NULL, work, NULL) != 0) return 1;
  for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
  clock_gettime(CLOCK_MONOTONIC, &b);
  double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
  printf("%.0f\n", (double)(per_thread * n) / s);
  return 0;
}
