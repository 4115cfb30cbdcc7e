/* Shared by the fuzz targets. */

#include "lib.h"
#include "fuzz-common.h"

#include <stdio.h>
#include <time.h>

/* Linked with -Wl,--wrap=pool_alloconly_create (see fuzz.mk): the
   plugins' own pools become pools of separate malloc()s, so that
   AddressSanitizer sees an overflow of one allocation into the next,
   which inside an alloconly block it can't. Only references from the
   plugin and fuzzer objects are wrapped; libdovecot keeps its pools.
   Freed memory is really freed here, so a pointer kept across a
   p_realloc() shows up as a use after free. */
pool_t __wrap_pool_alloconly_create(const char *name, size_t size);
pool_t __wrap_pool_alloconly_create_clean(const char *name, size_t size);

pool_t __wrap_pool_alloconly_create(const char *name,
				    size_t size ATTR_UNUSED)
{
	return pool_allocfree_create(name);
}

pool_t __wrap_pool_alloconly_create_clean(const char *name,
					  size_t size ATTR_UNUSED)
{
	return pool_allocfree_create_clean(name);
}

void fuzz_init(void)
{
	static bool initialized = FALSE;

	if (initialized)
		return;
	initialized = TRUE;
	/* the access rules' time windows are local time */
	if (setenv("TZ", "UTC", 1) < 0)
		abort();
	tzset();
	lib_init();
}

void fuzz_fail(const char *fmt, ...)
{
	va_list args;

	fprintf(stderr, "FUZZ ASSERTION FAILED: ");
	va_start(args, fmt);
	vfprintf(stderr, fmt, args);
	va_end(args);
	fputc('\n', stderr);
	fflush(stderr);
	abort();
}

void fuzz_reader_init(struct fuzz_reader *reader, const void *data,
		      size_t size)
{
	reader->data = data;
	reader->size = size;
	reader->pos = 0;
}

bool fuzz_reader_eof(const struct fuzz_reader *reader)
{
	return reader->pos >= reader->size;
}

uint8_t fuzz_u8(struct fuzz_reader *reader)
{
	if (reader->pos >= reader->size)
		return 0;
	return reader->data[reader->pos++];
}

uint16_t fuzz_u16(struct fuzz_reader *reader)
{
	uint16_t value = fuzz_u8(reader);

	return (value << 8) | fuzz_u8(reader);
}

uint32_t fuzz_u32(struct fuzz_reader *reader)
{
	uint32_t value = fuzz_u16(reader);

	return (value << 16) | fuzz_u16(reader);
}

const uint8_t *fuzz_bytes(struct fuzz_reader *reader, size_t max_size,
			  size_t *size_r)
{
	const uint8_t *p;
	size_t size = fuzz_u8(reader);

	size = I_MIN(size, max_size);
	size = I_MIN(size, reader->size - I_MIN(reader->pos, reader->size));
	p = reader->data + I_MIN(reader->pos, reader->size);
	reader->pos += size;
	*size_r = size;
	return p;
}

const char *fuzz_split_nul(const uint8_t *data, size_t size,
			   const uint8_t **rest_r, size_t *rest_size_r)
{
	const uint8_t *nul = memchr(data, '\0', size);

	if (nul == NULL) {
		*rest_r = data + size;
		*rest_size_r = 0;
		return t_strndup(data, size);
	}
	*rest_r = nul + 1;
	*rest_size_r = size - (nul + 1 - data);
	return t_strdup_until(data, nul);
}

uint32_t fuzz_next_random(uint32_t *state)
{
	/* xorshift: the same sequence on every machine */
	uint32_t x = *state == 0 ? 0x9e3779b9U : *state;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*state = x;
	return x;
}
