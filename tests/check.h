/* tests/check.h — the assertion macro shared by the test executables.
 *
 * CHECK(cond, fmt, ...) prints "FAIL file:line: cond: message" to stdout and counts the failure in
 * g_fail; every test's main returns g_fail ? 1 : 0 (and 77 only where it cannot run at all).
 * Include once, from the test's .c file.
 */
#ifndef MS_TESTS_CHECK_H
#define MS_TESTS_CHECK_H

#include <stdio.h>

static int g_fail;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                 \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            g_fail++;                                                                              \
        }                                                                                          \
    } while (0)

#endif
