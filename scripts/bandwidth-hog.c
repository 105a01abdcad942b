// A memory-bandwidth hog for one core: copies 256 MiB back and forth until killed. The sweep of
// data/history/vm-b-hog.db ran beside it to give a worker a third, bandwidth-starved profile
// (data/history/README.md): cc -O2 -o /tmp/hog scripts/bandwidth-hog.c && /tmp/hog &
#include <stdlib.h>
#include <string.h>

int main(void) {
  const size_t n = (size_t)256 << 20;
  char *a = malloc(n), *b = malloc(n);
  if (!a || !b) return 1;
  memset(a, 1, n);
  memset(b, 2, n);
  for (;;) {
    memcpy(b, a, n);
    memcpy(a, b, n);
  }
}
