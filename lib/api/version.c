/*
 * version.c -- the library's version at run time, which may differ from
 * the GLOW_VERSION_* macros a program was compiled with.
 */
#include "core.h"

#define GLOW__STR2(x) #x
#define GLOW__STR(x) GLOW__STR2(x)

const char *glow_version_string(void) {
  return GLOW__STR(GLOW_VERSION_MAJOR) "." GLOW__STR(
      GLOW_VERSION_MINOR) "." GLOW__STR(GLOW_VERSION_PATCH);
}

uint32_t glow_version_number(void) { return GLOW_VERSION_NUMBER; }
