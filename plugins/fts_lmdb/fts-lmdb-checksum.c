/* CRC32C, with SSE4.2's crc32 instruction when the CPU has it. Dovecot's
   own crc32 goes a byte at a time through a table: with it, checksumming
   the token text (then a separate vocabulary) made a median search at 6,046 messages take 17 ms
   instead of 4 (docs/fts-bench.md). */

#include "lib.h"
#include "fts-lmdb-checksum.h"

#define FTS_LMDB_CRC32C_POLY 0x82f63b78U

static uint32_t fts_lmdb_crc32c_table[256];
static bool fts_lmdb_crc32c_table_ready = FALSE;

static void fts_lmdb_crc32c_table_init(void)
{
	uint32_t c;
	unsigned int i, j;

	for (i = 0; i < 256; i++) {
		c = i;
		for (j = 0; j < 8; j++)
			c = (c >> 1) ^ ((c & 1) != 0 ? FTS_LMDB_CRC32C_POLY : 0);
		fts_lmdb_crc32c_table[i] = c;
	}
	fts_lmdb_crc32c_table_ready = TRUE;
}

static uint32_t
fts_lmdb_crc32c_sw(uint32_t c, const unsigned char *p, size_t size)
{
	if (!fts_lmdb_crc32c_table_ready)
		fts_lmdb_crc32c_table_init();
	for (; size > 0; size--, p++)
		c = fts_lmdb_crc32c_table[(c ^ *p) & 0xff] ^ (c >> 8);
	return c;
}

/* a * b modulo the polynomial, bit-reflected as the CRC is (bit 31 is
   x^0) */
static uint32_t fts_lmdb_crc32c_mult(uint32_t a, uint32_t b)
{
	uint32_t m = 1U << 31, prod = 0;

	for (; m != 0; m >>= 1) {
		if ((a & m) != 0)
			prod ^= b;
		b = (b & 1) != 0 ? (b >> 1) ^ FTS_LMDB_CRC32C_POLY : b >> 1;
	}
	return prod;
}

/* x^(8 * size): what running the CRC over size zero bytes multiplies the
   register by */
static uint32_t fts_lmdb_crc32c_zeros(size_t size)
{
	/* x^(2^k) for k = 3.. (x^8, x^16, ...) by squaring */
	uint32_t power = 1U << (31 - 8), result = 1U << 31;

	for (; size != 0; size >>= 1) {
		if ((size & 1) != 0)
			result = fts_lmdb_crc32c_mult(power, result);
		power = fts_lmdb_crc32c_mult(power, power);
	}
	return result;
}

#if defined(__x86_64__) && defined(__GNUC__)
/* Below this, one stream is as fast as three and their combining. */
#define FTS_LMDB_CRC32C_STREAMS_MIN (16 * 1024)

__attribute__((target("sse4.2")))
static uint32_t
fts_lmdb_crc32c_hw(uint32_t c, const unsigned char *p, size_t size)
{
	uint64_t c64 = c, c1 = 0, c2 = 0, word, word1, word2;
	uint32_t shift;
	size_t i, len;

	/* The instruction has a latency of three cycles and a throughput
	   of one: three independent streams over the three thirds, joined
	   by multiplying the earlier ones by x^(8 * len) (the CRC is
	   linear). A scan checksums megabytes of token blocks. */
	if (size >= FTS_LMDB_CRC32C_STREAMS_MIN) {
		len = (size / 3) & ~(size_t)(sizeof(word) - 1);
		for (i = 0; i < len; i += sizeof(word)) {
			memcpy(&word, p + i, sizeof(word));
			memcpy(&word1, p + len + i, sizeof(word));
			memcpy(&word2, p + 2 * len + i, sizeof(word));
			c64 = __builtin_ia32_crc32di(c64, word);
			c1 = __builtin_ia32_crc32di(c1, word1);
			c2 = __builtin_ia32_crc32di(c2, word2);
		}
		shift = fts_lmdb_crc32c_zeros(len);
		c64 = fts_lmdb_crc32c_mult(shift, (uint32_t)c64) ^ (uint32_t)c1;
		c64 = fts_lmdb_crc32c_mult(shift, (uint32_t)c64) ^ (uint32_t)c2;
		p += 3 * len;
		size -= 3 * len;
	}
	for (; size >= sizeof(word); size -= sizeof(word), p += sizeof(word)) {
		memcpy(&word, p, sizeof(word));
		c64 = __builtin_ia32_crc32di(c64, word);
	}
	c = (uint32_t)c64;
	for (; size > 0; size--, p++)
		c = __builtin_ia32_crc32qi(c, *p);
	return c;
}

static bool fts_lmdb_crc32c_have_hw(void)
{
	static int have = -1;

	if (have < 0) {
		__builtin_cpu_init();
		have = __builtin_cpu_supports("sse4.2") ? 1 : 0;
	}
	return have == 1;
}
#endif

uint32_t fts_lmdb_checksum(uint32_t crc, const void *data, size_t size)
{
	uint32_t c = ~crc;

#if defined(__x86_64__) && defined(__GNUC__)
	if (fts_lmdb_crc32c_have_hw())
		return ~fts_lmdb_crc32c_hw(c, data, size);
#endif
	return ~fts_lmdb_crc32c_sw(c, data, size);
}

uint32_t fts_lmdb_checksum_portable(uint32_t crc, const void *data,
				    size_t size)
{
	return ~fts_lmdb_crc32c_sw(~crc, data, size);
}
