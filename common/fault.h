/* common/fault.h — turning a SIGBUS from a mapped input file into a message that names the file.
 *
 * A file mapped with mmap that shrinks while mapped (truncated, or rewritten in place by another
 * program) makes every later access to the lost pages raise SIGBUS; the user would see only "Bus
 * error". No size check done at open can prevent that, so mappings of input files are registered
 * here and a program that wants the message calls ms_fault_install_sigbus() once at start-up. The
 * handler looks the faulting address up, writes
 *   "moestream: FILE changed while in use: it is now N bytes, it was M when opened ..."
 * to stderr with async-signal-safe calls only, and ends the process with exit status 1. A SIGBUS
 * at an address that is not in a registered mapping gets the default action (a core dump).
 *
 * Libraries register and unregister (storage/ does, for every mapping it makes); only programs
 * install the handler (libraries never take over signals). Thread-safe: registration takes a lock;
 * the handler reads the table without one (each slot is published with a release store).
 */
#ifndef MS_COMMON_FAULT_H
#define MS_COMMON_FAULT_H

#include <stddef.h>
#include <stdint.h>

#define MS_FAULT_MAX_MAPS 4096 /* V4-Pro's official checkpoint has 64 shards */

/* Remembers [addr, addr + len) as a mapping of path (opened as fd, size bytes at the time). path
 * must stay valid until ms_fault_unregister. Returns 0, or -MS_E_RANGE when the table is full (the
 * mapping then works as before, only without the message). */
int ms_fault_register(const void *addr, size_t len, const char *path, int fd, uint64_t size);
void ms_fault_unregister(const void *addr); /* no-op for an unknown address */

/* Installs the SIGBUS handler (idempotent). Returns 0 or -errno. */
int ms_fault_install_sigbus(void);

#endif
