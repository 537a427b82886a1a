/*
 * fuzz.h — the libFuzzer entry point shared by every target in tests/fuzz/.
 * Built with clang -fsanitize=fuzzer (PSP_FUZZ=ON) the targets are fuzzers;
 * built with the normal compiler they link tests/fuzz/replay.c instead, a
 * main() that feeds the committed regression inputs through the same entry
 * point on every `make test`.
 */
#ifndef PSP_FUZZ_H
#define PSP_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
