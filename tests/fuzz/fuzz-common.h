#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

/* What every fuzz target shares: Dovecot's lib set up once, a reader
   that turns the tail of an input into parameters, and a failure that
   libFuzzer records as a crash. */

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Sets up Dovecot's lib (once) and a fixed time zone, so that a crash
   input reproduces on another machine. */
void fuzz_init(void);

/* Prints the broken promise and abort()s: libFuzzer saves the input. */
void fuzz_fail(const char *fmt, ...) ATTR_FORMAT(1, 2) ATTR_NORETURN;
#define FUZZ_ASSERT(cond) \
	STMT_START { \
		if (unlikely(!(cond))) \
			fuzz_fail("%s:%d: %s", __FILE__, __LINE__, #cond); \
	} STMT_END

/* Parameters read from the fuzzer's bytes. Past the end every read
   gives zeros, so that any input is a valid one. */
struct fuzz_reader {
	const uint8_t *data;
	size_t size, pos;
};

void fuzz_reader_init(struct fuzz_reader *reader, const void *data,
		      size_t size);
bool fuzz_reader_eof(const struct fuzz_reader *reader);
uint8_t fuzz_u8(struct fuzz_reader *reader);
uint16_t fuzz_u16(struct fuzz_reader *reader);
uint32_t fuzz_u32(struct fuzz_reader *reader);
/* Returns up to max_size bytes (a length byte, then the bytes). */
const uint8_t *fuzz_bytes(struct fuzz_reader *reader, size_t max_size,
			  size_t *size_r);

/* Splits an input at its first NUL: the text before, and in *rest_r
   what follows (empty if there is no NUL). */
const char *fuzz_split_nul(const uint8_t *data, size_t size,
			   const uint8_t **rest_r, size_t *rest_size_r);

/* A small deterministic generator for piece sizes and offsets. */
uint32_t fuzz_next_random(uint32_t *state);

#endif
