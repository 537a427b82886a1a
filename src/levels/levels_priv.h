/*
 * levels_priv.h — what the files of src/levels share beyond levels.h: the
 * override items (parsed in overrides.c, applied in levels.c).
 */
#ifndef PSP_LEVELS_PRIV_H
#define PSP_LEVELS_PRIV_H

#include "levels/levels.h"

typedef struct ov_item {
  char name[16]; /* canonical ("L4/L5") */
  int half;
  int64_t file_slice;
} ov_item;

struct psp_level_overrides {
  ov_item *items;
  size_t n, cap;
};

#endif
