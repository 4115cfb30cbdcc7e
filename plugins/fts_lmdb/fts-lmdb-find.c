/* Substring search by a filter on the key's first and last bytes, 16
   positions at a time (SSE2, which every x86-64 CPU has): only where
   both match are the bytes between compared. On token text, where a
   pair of bytes rarely lines up, that beats glibc's memmem(), which is
   built for the worst case of long keys (docs/fts-bench.md). */

/* memmem() */
#define _GNU_SOURCE
#include "lib.h"
#include "fts-lmdb-find.h"

#ifdef __SSE2__
#  include <emmintrin.h>

const void *fts_lmdb_find(const void *data, size_t size,
			  const void *key, size_t key_size)
{
	const unsigned char *p = data, *q = key;
	__m128i first, last, a, b;
	unsigned int mask, bit;
	size_t i = 0, end;

	if (key_size < 2 || key_size > size)
		return memmem(data, size, key, key_size);
	first = _mm_set1_epi8((char)q[0]);
	last = _mm_set1_epi8((char)q[key_size - 1]);
	/* the last start where the key fits */
	end = size - key_size;
	for (; i + 16 <= end + 1; i += 16) {
		a = _mm_loadu_si128((const __m128i *)(p + i));
		b = _mm_loadu_si128((const __m128i *)(p + i + key_size - 1));
		mask = _mm_movemask_epi8(_mm_and_si128(_mm_cmpeq_epi8(a, first),
						       _mm_cmpeq_epi8(b, last)));
		for (; mask != 0; mask &= mask - 1) {
			bit = __builtin_ctz(mask);
			if (memcmp(p + i + bit + 1, q + 1, key_size - 2) == 0)
				return p + i + bit;
		}
	}
	/* fewer than 16 starts are left */
	return memmem(p + i, size - i, key, key_size);
}
#else
const void *fts_lmdb_find(const void *data, size_t size,
			  const void *key, size_t key_size)
{
	return memmem(data, size, key, key_size);
}
#endif
