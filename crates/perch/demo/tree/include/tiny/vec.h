/* A header-only library stored in the repository. */
#ifndef TINY_VEC_H
#define TINY_VEC_H
static inline double tiny_dot(const double *a, const double *b, int n) {
  double s = 0;
  for (int i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}
#endif
