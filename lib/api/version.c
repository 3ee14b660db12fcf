/*
 * version.c -- the library's version at run time, which may differ from
 * the GLOW_VERSION_* macros a program was compiled with.
 */
#include "core.h"

const char *glow_version_string(void) { return GLOW__VERSION_TEXT; }

uint32_t glow_version_number(void) { return GLOW_VERSION_NUMBER; }
