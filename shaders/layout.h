/* shaders/layout.h — lets one header declare structs for both C and GLSL.
 *
 * Layout headers (shaders/<op>.h) declare push-constant structs with MS_STRUCT_BEGIN/END and
 * fields of type MS_U32/MS_F32 only (4-byte scalars: identical layout in C and in std430 push
 * constants). On the C side each header adds _Static_asserts on sizes.
 */
#ifndef MS_SHADERS_LAYOUT_H
#define MS_SHADERS_LAYOUT_H

#ifdef GL_core_profile
#define MS_GLSL 1
#define MS_U32 uint
#define MS_F32 float
#define MS_STRUCT_BEGIN(name) struct name {
#define MS_STRUCT_END(name) };
#else
#include <stdint.h>
#define MS_U32 uint32_t
#define MS_F32 float
#define MS_STRUCT_BEGIN(name) typedef struct name {
#define MS_STRUCT_END(name) } name;
#endif

#endif
