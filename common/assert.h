/* common/assert.h — assertions for programmer bugs only (never for bad input: return an error).
 *
 * MS_ASSERT is always on; MS_DASSERT only when MS_DEBUG is defined (debug builds, -DMOESTREAM_DEBUG
 * checks). A failed assertion logs file:line and the expression, then aborts.
 */
#ifndef MS_COMMON_ASSERT_H
#define MS_COMMON_ASSERT_H

_Noreturn void ms_assert_fail(const char *expr, const char *file, int line);

#define MS_ASSERT(x) ((x) ? (void)0 : ms_assert_fail(#x, __FILE__, __LINE__))

#ifdef MS_DEBUG
#define MS_DASSERT(x) MS_ASSERT(x)
#else
#define MS_DASSERT(x) ((void)sizeof(x))
#endif

#endif
