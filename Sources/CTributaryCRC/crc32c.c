// The spool checksums every record twice (written, read back): with SSE 4.2's crc32 instruction
// that is about a tenth of the table-driven cost. Other CPUs use the Swift tables (CRC32C).
#include "CTributaryCRC.h"

#include <string.h>

#if defined(__x86_64__)

int tributary_crc32c_hardware(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") ? 1 : 0;
}

__attribute__((target("sse4.2")))
uint32_t tributary_crc32c_update(uint32_t crc, const void *bytes, size_t length) {
    const unsigned char *next = bytes;
    uint64_t wide = crc;
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, next, 8);
        wide = __builtin_ia32_crc32di(wide, word);
        next += 8;
        length -= 8;
    }
    uint32_t narrow = (uint32_t)wide;
    while (length > 0) {
        narrow = __builtin_ia32_crc32qi(narrow, *next);
        next += 1;
        length -= 1;
    }
    return narrow;
}

#else

int tributary_crc32c_hardware(void) { return 0; }

uint32_t tributary_crc32c_update(uint32_t crc, const void *bytes, size_t length) {
    (void)bytes;
    (void)length;
    return crc;
}

#endif
