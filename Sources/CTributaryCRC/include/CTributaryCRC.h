#ifndef C_TRIBUTARY_CRC_H
#define C_TRIBUTARY_CRC_H

#include <stddef.h>
#include <stdint.h>

/// 1 when this CPU computes CRC-32C in hardware (x86-64 with SSE 4.2), else 0.
int tributary_crc32c_hardware(void);

/// CRC-32C (Castagnoli) of `length` bytes at `bytes`, continuing from `crc` (the register, not
/// inverted: start with 0xFFFFFFFF and invert the result). Only when `tributary_crc32c_hardware()`.
uint32_t tributary_crc32c_update(uint32_t crc, const void *bytes, size_t length);

#endif
